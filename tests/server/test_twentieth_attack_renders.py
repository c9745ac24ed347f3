"""Twentieth attack: a slide thumbnail or low-zoom tile asked many times at once was rendered once
per request (a 400 Mpx TIFF without a pyramid: 8 of one thumbnail took 78 s of CPU and +1.6 GB),
and renders took no turn (nor did a gallery link's, so 99 anonymous connections asking for random
tiles slowed a logged-in user's requests to 5 s). Now a body is made once at a time, its other
askers waiting on the event loop, and thumbnails, tiles read from a much larger stored level and
every gallery render take a render turn per user or link. On the CMU sample (OpenSlide, one stored
level: level z of its 5 reads 2 ** (4 - z) stored pixels per pixel sent)."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile

from slidelabel.pipelines.slide_readers import open_reader
from slidelabel.server.response_cache import ResponseCache
from slidelabel.services import gallery, tiles
from slidelabel.store.layout import ProjectFiles

API = "/api/v1"


class Counted:
    """A stand-in for a render that counts its calls and how many ran at once."""

    def __init__(self, render, pause_s: float = 0.3) -> None:
        self.render, self.pause_s = render, pause_s
        self.calls = self.running = self.most = 0
        self._lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.pause_s)
            return self.render(*args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


@contextmanager
def turns_taken(holder):
    held = [tiles._RENDERS.take_now(holder) for _ in range(tiles.RENDERS_PER_HOLDER)]
    assert all(held)
    try:
        yield
    finally:
        for _ in held:
            tiles._RENDERS.give_back(holder)


def test_a_key_asked_in_threads_and_on_event_loops_at_once_is_made_once():
    cache, made, started = ResponseCache(2**20), [], threading.Event()

    def make() -> bytes:
        made.append(1)
        started.set()
        time.sleep(0.3)
        return b"body"

    flight = cache.claim("k")
    assert flight is not None and cache.claim("k") is None

    async def waiter() -> bool:
        await cache.settled("k")
        return "k" in cache

    with ThreadPoolExecutor(8) as pool:
        maker = pool.submit(cache.get_or_make, "k", make, flight)
        assert started.wait(5)
        others = [pool.submit(cache.get_or_make, "k", make) for _ in range(4)]
        loops = [pool.submit(asyncio.run, waiter()) for _ in range(3)]
        assert maker.result() == b"body" and [other.result() for other in others] == [b"body"] * 4
        assert [loop.result() for loop in loops] == [True] * 3
    assert len(made) == 1 and cache.flying() == 0


def test_a_failed_make_lets_the_next_asker_make_it():
    cache = ResponseCache(2**20)

    def fail() -> bytes:
        raise OSError("unreadable")

    with pytest.raises(OSError):
        cache.get_or_make("k", fail)
    assert cache.flying() == 0 and cache.get_or_make("k", lambda: b"x") == b"x"


def test_stored_scale_follows_the_pyramid(cmu_slide: Path, tmp_path: Path):
    cmu = open_reader(cmu_slide, None)[1]
    assert [tiles.stored_scale(cmu, z) for z in range(cmu.levels)] == [16, 8, 4, 2, 1]
    assert [tiles.tile_is_cheap(cmu, z) for z in range(cmu.levels)] == [False, False, False, True, True]
    flat = tmp_path / "flat.tif"  # tiled, no pyramid: what the attack used, 4096 px
    tifffile.imwrite(flat, np.full((4096, 4096, 3), 200, np.uint8), tile=(256, 256), photometric="rgb")
    source = open_reader(flat, None)[1]
    assert [tiles.stored_scale(source, z) for z in range(source.levels)] == [16, 8, 4, 2, 1]


def test_one_thumbnail_asked_eight_times_at_once_is_rendered_once(client, admin_headers, slide_url, monkeypatch):
    counted = Counted(tiles.slide_thumbnail)
    monkeypatch.setattr(tiles, "slide_thumbnail", counted)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.get(f"{slide_url}/thumbnail.jpg?width=300", headers=admin_headers),
                                range(8)))
    assert [answer.status_code for answer in answers] == [200] * 8
    assert len({answer.content for answer in answers}) == 1
    assert counted.calls == 1, f"rendered {counted.calls} times"


def test_one_user_s_thumbnails_of_every_width_render_two_at_a_time(client, admin_headers, slide_url, monkeypatch):
    counted = Counted(tiles.slide_thumbnail, pause_s=0.2)
    monkeypatch.setattr(tiles, "slide_thumbnail", counted)
    widths = (64, 128, 256, 512, 1024, 2048)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda w: client.get(f"{slide_url}/thumbnail.jpg?width={w}", headers=admin_headers),
                                widths))
    assert [answer.status_code for answer in answers] == [200] * 6
    assert counted.calls == 6 and counted.most <= 2, f"{counted.most} at once"


def test_low_zoom_tiles_wait_for_a_turn_and_cheap_ones_do_not(client, admin_headers, slide_url, monkeypatch):
    me = client.get(f"{API}/auth/me", headers=admin_headers).json()["id"]
    monkeypatch.setattr(tiles, "RENDER_WAIT_S", 0.3)
    with turns_taken(me):
        thumbnail = client.get(f"{slide_url}/thumbnail.jpg", headers=admin_headers)
        low = client.get(f"{slide_url}/tiles/0/0/0.jpg", headers=admin_headers)
        assert thumbnail.status_code == low.status_code == 503
        assert "renders are busy" in low.json()["detail"]
        for z in (3, 4):  # read from a stored level at most twice as fine: no turn
            assert client.get(f"{slide_url}/tiles/{z}/0/0.jpg", headers=admin_headers).status_code == 200
        assert client.get(f"{slide_url}/tiles/9/0/0.jpg", headers=admin_headers).status_code == 404
    kept = client.get(f"{slide_url}/tiles/0/0/0.jpg", headers=admin_headers)
    assert kept.status_code == 200
    with turns_taken(me):  # kept, or held by the client: no turn
        assert client.get(f"{slide_url}/tiles/0/0/0.jpg", headers=admin_headers).status_code == 200
        revalidate = {**admin_headers, "If-None-Match": kept.headers["etag"]}
        assert client.get(f"{slide_url}/tiles/1/0/0.jpg", headers=revalidate).status_code == 304


def test_gallery_links_renders_take_the_turns_all_links_hold_together(app, client, admin_headers, project,
                                                                       slide_row, cmu_superpixels, monkeypatch):
    """Twenty-first attack: each link held two render turns of its own, so loops on two links took
    all four of the process's and a viewer's thumbnail got 503 after 30 s."""
    shutil.copytree(cmu_superpixels, ProjectFiles(app.state.settings.data_dir, project["id"]).superpixels(slide_row))
    response = client.post(f"{API}/projects/{project['id']}/gallery", headers=admin_headers, json={})
    assert response.status_code == 201, response.text
    link = response.json()
    base = f"{API}/gallery/{link['token']}/slides/{slide_row}"
    kept = client.get(f"{base}/tiles/4/1/1.jpg")
    assert kept.status_code == 200
    monkeypatch.setattr(tiles, "RENDER_WAIT_S", 0.3)
    with turns_taken(gallery.GALLERIES):
        for url in ("tiles/4/0/0.jpg", "thumbnail.jpg", "superpixel-tiles/3/0/0.png"):
            assert client.get(f"{base}/{url}").status_code == 503, url
        assert client.get(f"{base}/tiles/4/1/1.jpg").content == kept.content  # kept: no turn
        assert client.get(f"{base}/tiles/9/0/0.jpg").status_code == 404
        # the project's users render as before
        assert client.get(f"{API}/projects/{project['id']}/slides/{slide_row}/tiles/4/0/0.jpg",
                          headers=admin_headers).status_code == 200
    assert client.get(f"{base}/superpixel-tiles/3/0/0.png").status_code == 200
