"""A slide's name swapped for a FIFO or a link between the server's check and its reader's open.

Ninth attack on issue 13: a FIFO renamed in and out of an added slide's name in a tight loop raced
the check (the readers opened the name again): 12 threads for 60 s blocked all 40 API threads; a
link swapped in the same way served 101 thumbnails of another folder's slide in 30 s. The readers
now open the file the server opened and checked (``slide_file``'s pin), never the name again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fifo_waits import BLOCKED_S, release, within

from slidelabel.services import tiles
from slidelabel.services.slide_paths import slide_file
from slidelabel.store.models import Slide


@pytest.fixture
def swap_slide(client, admin_headers, project, settings, cmu_slide) -> tuple[str, Path]:
    """The API URL of a CMU slide added from the slide folder, and its file."""
    path = settings.slide_folders[0] / "swap.svs"
    shutil.copy(cmu_slide, path)
    url = f"/api/v1/projects/{project['id']}/slides"
    [slide] = client.post(url, headers=admin_headers, json={"path": str(path)}).json()["added"]
    return f"{url}/{slide['id']}", path


def test_a_fifo_swapped_in_after_the_check_is_not_opened_by_the_reader(app, swap_slide, tmp_path):
    url, path = swap_slide
    with app.state.database.session() as session:
        checked = slide_file(session.get(Slide, int(url.rsplit("/", 1)[1])))
    path.rename(tmp_path / "away.svs")
    os.mkfifo(path)  # swapped in after the check, before the reader opens the slide
    opened = within(lambda: tiles.slide_source(checked), path,
                    "the reader opened the slide's name again and waited on the FIFO")
    assert tiles.TileGrid.of(opened).width == 2220


def test_names_swapped_in_a_loop_never_block_a_request_nor_show_another_slide(client, admin_headers, swap_slide,
                                                                             tcga_slide, tmp_path):
    url, path = swap_slide
    fifo, link, real = tmp_path / "fifo", tmp_path / "link", tmp_path / "real.svs"
    os.mkfifo(fifo)
    link.symlink_to(tcga_slide)  # a slide of a folder the project may not read
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for other in (fifo, link):
                os.rename(path, real)
                os.rename(other, path)
                os.rename(path, other)
                os.rename(real, path)

    def ask(number: int):
        if number % 2:
            return client.get(f"{url}/tiles", headers=admin_headers)
        return client.get(f"{url}/thumbnail.jpg?width={64 << (number // 2 % 6)}", headers=admin_headers)

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    pool = ThreadPoolExecutor(8)
    try:
        futures = [pool.submit(ask, number) for number in range(120)]
        answers = [future.result(timeout=BLOCKED_S) for future in futures]
    except TimeoutError:
        pytest.fail("a request blocked: its reader opened the FIFO swapped in for the slide")
    finally:
        stop.set()
        swapper.join()
        for _ in range(64):
            release(fifo)  # any reader still waiting (a failure above) goes
        pool.shutdown(cancel_futures=True)
    codes = {answer.status_code for answer in answers}
    assert codes <= {200, 409}, [answer.text for answer in answers if answer.status_code not in (200, 409)]
    widths = {answer.json()["width"] for answer in answers if answer.status_code == 200 and "json" in
              answer.headers["content-type"]}
    assert widths <= {2220}  # CMU, never TCGA's 4443
    assert client.get(f"{url}/tiles", headers=admin_headers).json()["width"] == 2220


def _open_deleted(name: str) -> list[str]:
    """This process's open files named ``name`` whose file was deleted."""
    found = []
    for entry in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(entry)
            if target.endswith(f"/{name} (deleted)"):
                found.append(target)
    return found


def test_a_deleted_slide_file_is_let_go(client, admin_headers, swap_slide, monkeypatch):
    """A pinned file keeps its disk space while open: once deleted, the server lets it go at its
    next look instead of holding a gigabyte slide until its caches turn over."""
    import gc

    from slidelabel.services import slide_paths

    url, path = swap_slide
    assert client.get(f"{url}/tiles/0/0/0.jpg", headers=admin_headers).status_code == 200
    path.unlink()
    assert _open_deleted("swap.svs")  # held by the open tile source
    monkeypatch.setattr(slide_paths, "DELETED_LOOK_S", 0.0)
    assert client.get(f"{url}/tiles", headers=admin_headers).status_code == 409
    gc.collect()
    assert _open_deleted("swap.svs") == []


def test_adding_a_slide_reads_the_file_it_checked(client, admin_headers, project, settings, cmu_slide, tmp_path,
                                                  monkeypatch):
    """The same race when a slide is added: its checks and its reader opened the name one after
    the other, so a FIFO swapped in between blocked the request."""
    from slidelabel.services import slides

    path = settings.slide_folders[0] / "added.svs"
    shutil.copy(cmu_slide, path)
    pin = slides.pin_file

    def pinned_then_swapped(name: Path, **options):
        pinned = pin(name, **options)
        name.rename(tmp_path / "away.svs")
        os.mkfifo(name)
        return pinned

    monkeypatch.setattr(slides, "pin_file", pinned_then_swapped)
    url = f"/api/v1/projects/{project['id']}/slides"
    added = within(lambda: client.post(url, headers=admin_headers, json={"path": str(path)}), path,
                   "adding the slide opened the FIFO swapped in for it")
    assert added.status_code == 201, added.text
    assert added.json()["added"][0]["width"] == 2220
