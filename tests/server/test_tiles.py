"""Slide tiles, superpixel index tiles, the superpixel table and superpixel pictures, on the CMU
sample with real superpixels (computed once for the module)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from slidelabel.pipelines.render import BOUNDARY_RGB
from slidelabel.pipelines.slides import Slide
from slidelabel.services import tiles as tiles_service
from slidelabel.store.label_map import read_labels
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Role
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, TABLE_FILE, read_manifest
from slidelabel.store.superpixel_table import read_table


def image(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def ids_of(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] | rgb[..., 1] << 8 | rgb[..., 2] << 16


def test_metadata_follows_large_image(client, admin_headers, slide_url):
    assert client.get(f"{slide_url}/tiles", headers=admin_headers).json() == {
        "levels": 5, "tile_width": 240, "tile_height": 240, "width": 2220, "height": 2967, "mpp": 0.499}


@pytest.mark.parametrize("x, y", [(1, 2), (9, 12)])  # (9, 12) is the bottom-right corner, mostly past the edge
def test_a_full_resolution_tile_is_the_slide_s_pixels(client, admin_headers, slide_url, cmu_slide, x, y):
    tile = image(client.get(f"{slide_url}/tiles/4/{x}/{y}.jpg", headers=admin_headers))
    with Slide(cmu_slide) as slide:
        expected = slide.read_region(x * 240, y * 240, 240, 240)  # white past the edge
    difference = np.abs(tile.astype(int) - expected)
    assert tile.shape == (240, 240, 3)
    assert difference.mean() < 3 and np.percentile(difference, 99) < 40


def test_tiles_outside_the_pyramid_are_404_and_unchanged_tiles_304(client, admin_headers, slide_url):
    assert image(client.get(f"{slide_url}/tiles/0/0/0.jpg", headers=admin_headers)).shape == (240, 240, 3)
    for z, x, y in ((5, 0, 0), (4, 10, 0), (0, 1, 0), (-1, 0, 0)):
        assert client.get(f"{slide_url}/tiles/{z}/{x}/{y}.jpg", headers=admin_headers).status_code == 404
    first = client.get(f"{slide_url}/tiles/4/0/0.jpg", headers=admin_headers)
    assert first.headers["cache-control"].startswith("private")
    revalidate = {**admin_headers, "If-None-Match": first.headers["etag"]}
    again = client.get(f"{slide_url}/tiles/4/0/0.jpg", headers=revalidate)
    assert again.status_code == 304 and again.content == b""


def test_thumbnail_has_the_slide_s_aspect_at_a_width_rounded_up_to_a_power_of_two(client, admin_headers, slide_url):
    """Seventh attack: each of 2,000 widths was a render; 40 in parallel took +0.9 GB."""
    thumbnail = image(client.get(f"{slide_url}/thumbnail.jpg?width=200", headers=admin_headers))
    assert thumbnail.shape[1] == 256 and abs(thumbnail.shape[0] - 256 * 2967 / 2220) <= 1
    same = client.get(f"{slide_url}/thumbnail.jpg?width=129", headers=admin_headers).content
    assert same == client.get(f"{slide_url}/thumbnail.jpg?width=256", headers=admin_headers).content


@pytest.mark.parametrize("z", [2, 3, 4])
def test_index_tiles_decode_to_the_label_map(client, admin_headers, slide_url, cmu_superpixels, z):
    """Level 3 is the working level (downsample 2), level 2 the label map's level 1, and level 4
    (full resolution) repeats each working pixel twice. The tile is the one at the slide's centre."""
    downsample = 2 ** (4 - z)
    x, y = 1110 // downsample // 240, 1483 // downsample // 240
    tile = ids_of(image(client.get(f"{slide_url}/superpixel-tiles/{z}/{x}/{y}.png", headers=admin_headers)))
    labels = cmu_superpixels / LABELS_FILE
    if z == 4:
        expected = read_labels(labels, left=x * 120, top=y * 120, width=120, height=120).repeat(2, 0).repeat(2, 1)
    else:
        expected = read_labels(labels, left=x * 240, top=y * 240, width=240, height=240, level=3 - z)
    assert tile.shape == (240, 240) and tile.any()
    np.testing.assert_array_equal(tile, expected)


def test_index_tiles_are_zero_past_the_slide(client, admin_headers, slide_url, cmu_superpixels):
    tile = ids_of(image(client.get(f"{slide_url}/superpixel-tiles/3/4/6.png", headers=admin_headers)))
    # Level 3 is 1110 x 1484 px: tile (4, 6) holds 150 x 44 px of it.
    expected = read_labels(cmu_superpixels / LABELS_FILE, left=960, top=1440, width=150, height=44)
    np.testing.assert_array_equal(tile[:44, :150], expected)
    assert not tile[44:].any() and not tile[:, 150:].any()


def test_index_tiles_need_superpixels(client, admin_headers, project, slide_row):
    url = f"/api/v1/projects/{project['id']}/slides/{slide_row}"
    response = client.get(f"{url}/superpixel-tiles/0/0/0.png", headers=admin_headers)
    assert response.status_code == 404 and "superpixels" in response.json()["detail"]


def test_the_table_as_json_and_binary(client, admin_headers, slide_url, cmu_superpixels):
    table = read_table(cmu_superpixels / TABLE_FILE)
    n = read_manifest(cmu_superpixels / MANIFEST_FILE)["superpixels"]
    body = client.get(f"{slide_url}/superpixels", headers=admin_headers).json()
    assert body["ids"] == list(range(1, n + 1))
    np.testing.assert_array_equal(body["bbox_level0"], table.bbox_level0)
    np.testing.assert_allclose(body["centroid_level0"], table.centroid_level0, atol=0.01)
    assert body["area_px"] == table.area_px.tolist() and len(body["area_um2"]) == n
    response = client.get(f"{slide_url}/superpixels?format=binary", headers=admin_headers)
    assert response.headers["x-superpixels"] == str(n) and len(response.content) == 32 * n
    data = response.content
    ids = np.frombuffer(data, "<u4", n)
    bbox = np.frombuffer(data, "<i4", 4 * n, offset=4 * n).reshape(n, 4)
    centroid = np.frombuffer(data, "<f4", 2 * n, offset=20 * n).reshape(n, 2)
    area = np.frombuffer(data, "<u4", n, offset=28 * n)
    np.testing.assert_array_equal(ids, table.ids)
    np.testing.assert_array_equal(bbox, table.bbox_level0)
    np.testing.assert_allclose(centroid, table.centroid_level0, rtol=1e-6)
    np.testing.assert_array_equal(area, table.area_px)


def test_a_superpixel_picture_outlines_it(client, admin_headers, slide_url, cmu_superpixels):
    table = read_table(cmu_superpixels / TABLE_FILE)
    superpixel = int(np.argmax(table.tissue_fraction)) + 1
    picture = image(client.get(f"{slide_url}/superpixels/{superpixel}/thumbnail.png", headers=admin_headers))
    assert picture.shape == (192, 192, 3)
    outline = np.all(picture == BOUNDARY_RGB, axis=-1)
    rows, columns = np.nonzero(outline)
    # The superpixel's box is enlarged twice, so its outline lies in the middle half.
    assert outline.sum() > 50
    assert min(rows.min(), columns.min()) >= 40 and max(rows.max(), columns.max()) <= 152
    small = image(client.get(f"{slide_url}/superpixels/{superpixel}/thumbnail.png?size=64", headers=admin_headers))
    assert small.shape == (64, 64, 3)
    missing = client.get(f"{slide_url}/superpixels/{table.ids.size + 1}/thumbnail.png", headers=admin_headers)
    assert missing.status_code == 404


@pytest.mark.parametrize("role", [None, Role.viewer])
def test_viewers_read_tiles_and_outsiders_do_not_see_them(client, member_headers, slide_url, role):
    headers = member_headers(role)
    for path in ("tiles/0/0/0.jpg", "superpixel-tiles/0/0/0.png", "superpixels", "superpixels/1/thumbnail.png",
                 "thumbnail.jpg", "tiles"):
        assert client.get(f"{slide_url}/{path}", headers=headers).status_code == (200 if role else 404), path
    token = headers["Authorization"].removeprefix("Bearer ")
    assert client.get(f"{slide_url}/tiles/0/0/0.jpg?token={token}").status_code == (200 if role else 404)


def test_a_tile_is_made_once_per_version_and_still_checks_access(client, admin_headers, member_headers, project, slide_row,
                                                               slide_url, monkeypatch):
    made = []
    real = tiles_service.superpixel_index_tile
    monkeypatch.setattr(tiles_service, "superpixel_index_tile", lambda *args: made.append(args[2:]) or real(*args))
    first = client.get(f"{slide_url}/superpixel-tiles/3/1/1.png", headers=admin_headers)
    again = client.get(f"{slide_url}/superpixel-tiles/3/1/1.png?token=ignored", headers=admin_headers)
    assert first.content == again.content and made == [(3, 1, 1)]
    assert client.get(f"{slide_url}/superpixel-tiles/3/1/1.png", headers=member_headers(None)).status_code == 404
    # Recomputed superpixels (files replaced, so newer) are a new version: the tile is made again.
    folder = ProjectFiles(client.app.state.settings.data_dir, project["id"]).superpixels(slide_row)
    for name in (LABELS_FILE, MANIFEST_FILE):
        stat = (folder / name).stat()
        os.utime(folder / name, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    client.get(f"{slide_url}/superpixel-tiles/3/1/1.png", headers=admin_headers)
    assert made == [(3, 1, 1)] * 2
