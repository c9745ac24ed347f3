"""Sixth attack, F2: a viewer's ``GET .../superpixels?format=json`` built 24 MB of JSON through
Python lists for every distinct URL, because the response cache keyed on every query parameter,
junk ones included: ten parallel requests with junk parameters took +1.2 GB and 18 s, and each
body was kept apart in the cache. Now the cache keys on the values the route read (its declared
parameters, as parsed), the table's JSON is written a block of rows at a time, and a build holds
one of the export turns."""

from __future__ import annotations

import json
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import every_export_turn_taken

from slidelabel.services import exports
from slidelabel.services import tiles as tiles_service
from slidelabel.store.models import Role
from slidelabel.store.superpixel_table import SuperpixelTable


def former_table_json(table: SuperpixelTable) -> bytes:
    """services.tiles.table_json before the sixth attack: the reference of its bytes."""
    return json.dumps({
        "ids": table.ids.tolist(), "bbox_level0": table.bbox_level0.tolist(),
        "centroid_level0": np.round(table.centroid_level0, 2).tolist(), "area_px": table.area_px.tolist(),
        "area_um2": None if table.area_um2 is None else np.round(table.area_um2, 2).tolist(),
        "tissue_fraction": np.round(table.tissue_fraction, 3).tolist(),
    }, separators=(",", ":")).encode()




def counted(monkeypatch: pytest.MonkeyPatch, name: str) -> list:
    """Calls of ``services.tiles.<name>``, recorded."""
    made, real = [], getattr(tiles_service, name)
    monkeypatch.setattr(tiles_service, name, lambda *args: made.append(args[1:]) or real(*args))
    return made


def test_junk_query_parameters_are_served_from_the_cache(client, member_headers, slide_url, monkeypatch):
    viewer = member_headers(Role.viewer)
    tables, thumbnails, tiles = (counted(monkeypatch, name) for name in ("table_json", "slide_thumbnail",
                                                                         "slide_tile"))
    bodies = [client.get(f"{slide_url}/superpixels", headers=viewer, params=params) for params in (
        {"format": "json", "j": "1"}, {"format": "json", "j": "2"}, {"j": "3"}, {"format": ["binary", "json"]})]
    assert all(b.status_code == 200 for b in bodies) and len({b.content for b in bodies}) == 1
    assert len(tables) == 1
    binary = client.get(f"{slide_url}/superpixels", headers=viewer, params={"format": "binary", "j": "4"})
    assert binary.headers["content-type"] == "application/octet-stream" and binary.content != bodies[0].content
    # The parameters a route reads still tell bodies apart, as it parsed them.
    small = [client.get(f"{slide_url}/thumbnail.jpg", headers=viewer, params={"width": w, "junk": j}).content
             for w, j in (("64", "a"), ("064", "b"), ("64", "c"))]
    large = client.get(f"{slide_url}/thumbnail.jpg", headers=viewer, params={"width": "128"}).content
    assert len(set(small)) == 1 and large != small[0] and [w for (w,) in thumbnails] == [64, 128]
    for path in ("tiles/2/0/0.jpg", "tiles/02/0/00.jpg", "tiles/2/0/0.jpg?x=1"):
        assert client.get(f"{slide_url}/{path}", headers=viewer).status_code == 200
    assert tiles == [(2, 0, 0)]


def test_a_large_table_s_json_is_the_former_bytes_without_a_python_object_per_number():
    n = 200_000
    rng = np.random.default_rng(0)
    corner_N_2 = rng.integers(0, 100_000, (n, 2))
    table = SuperpixelTable(
        ids=np.arange(1, n + 1, dtype=np.uint32),
        bbox_level0=np.concatenate([corner_N_2, corner_N_2 + rng.integers(1, 40, (n, 2))], axis=1).astype(np.int64),
        centroid_level0=corner_N_2 + rng.uniform(0, 40, (n, 2)), area_px=rng.integers(1, 400, n).astype(np.int64),
        area_um2=rng.uniform(0, 1000, n), tissue_fraction=rng.uniform(0, 1, n).astype(np.float32))
    expected = former_table_json(table)
    tracemalloc.start()
    try:
        body = tiles_service.table_json(table)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert body == expected
    # Before: a Python object per number, about 13 times the body (10 MB here).
    assert peak < 3 * len(body), (peak, len(body))
    assert tiles_service.table_json(SuperpixelTable(
        np.zeros(0, np.uint32), np.zeros((0, 4), np.int64), np.zeros((0, 2)), np.zeros(0, np.int64), None,
        np.zeros(0, np.float32))) == b'{"ids":[],"bbox_level0":[],"centroid_level0":[],"area_px":[],"area_um2":null,' \
                                     b'"tissue_fraction":[]}'


def test_the_real_table_s_json_is_the_former_bytes(cmu_superpixels):
    table = tiles_service.superpixel_table(cmu_superpixels)
    assert tiles_service.table_json(table) == former_table_json(table)


def test_a_json_table_is_built_in_an_export_turn(client, member_headers, slide_url, monkeypatch):
    viewer = member_headers(Role.viewer)
    monkeypatch.setattr(exports, "EXPORT_WAIT_S", 0.05)
    with every_export_turn_taken():  # others' exports build
        busy = client.get(f"{slide_url}/superpixels", headers=viewer)
        binary = client.get(f"{slide_url}/superpixels", headers=viewer, params={"format": "binary"})
    assert busy.status_code == 503 and "busy" in busy.json()["detail"]
    assert binary.status_code == 200  # a few bytes a superpixel, copied: no turn needed
    assert client.get(f"{slide_url}/superpixels", headers=viewer).status_code == 200


def test_parallel_requests_for_a_table_build_its_json_at_most_once_per_turn(client, member_headers, slide_url,
                                                                           monkeypatch):
    viewer = member_headers(Role.viewer)
    made, real = [], tiles_service.table_json

    def slow(table: SuperpixelTable) -> bytes:
        made.append(1)
        time.sleep(0.5)
        return real(table)

    monkeypatch.setattr(tiles_service, "table_json", slow)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda junk: client.get(f"{slide_url}/superpixels", headers=viewer,
                                                        params={"junk": junk}), range(8)))
    assert [a.status_code for a in answers] == [200] * 8 and len({a.content for a in answers}) == 1
    assert 1 <= len(made) <= exports.EXPORTERS
