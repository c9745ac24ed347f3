"""Pinned slide files: readers read the file that was checked, whatever its name becomes.

Ninth attack: a FIFO renamed in and out of an added slide's name raced the check of the name (the
readers opened the name again): 12 threads for 60 s blocked all 40 API threads; a link swapped in
the same way served another folder's slide.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fifo_waits import within

from slidelabel.errors import SlideUnreadableError
from slidelabel.pipelines import pinned_files
from slidelabel.pipelines.pinned_files import pin_file, without_links
from slidelabel.pipelines.slides import open_slide
from slidelabel.services import tiles

def _reads(read, fifo: Path):
    return within(read, fifo, "the reader opened the FIFO now named like the slide and waited for a writer")


@pytest.fixture
def folder_slide(tmp_path: Path, cmu_slide: Path) -> Path:
    folder = tmp_path / "slides"
    folder.mkdir()
    return Path(shutil.copy(cmu_slide, folder / "swap.svs")).resolve()


def test_a_fifo_swapped_in_after_the_check_is_never_opened(folder_slide: Path, tmp_path: Path) -> None:
    pinned = pin_file(folder_slide, links=False)
    expected = open_slide(folder_slide).read_region(100, 100, 64, 64)
    folder_slide.rename(tmp_path / "moved.svs")
    os.mkfifo(folder_slide)
    source = _reads(lambda: tiles.slide_source(pinned), folder_slide)
    assert tiles.TileGrid.of(source).width == 2220  # CMU-1-Small-Region
    with open_slide(pinned.reader_path) as slide:  # OpenSlide, tifffile and the checks all read it
        np.testing.assert_array_equal(_reads(lambda: slide.read_region(100, 100, 64, 64), folder_slide), expected)


def test_a_link_swapped_in_after_the_check_does_not_change_what_is_read(folder_slide: Path, tcga_slide: Path) -> None:
    pinned = pin_file(folder_slide, links=False)
    folder_slide.unlink()
    folder_slide.symlink_to(tcga_slide)
    assert not pinned.still_named()
    with open_slide(pinned.reader_path) as slide:
        assert (slide.info.width, slide.info.height) == (2220, 2967)  # still CMU, not TCGA (4443 x 3567)
    with pytest.raises(SlideUnreadableError, match="replaced by a link"):
        pin_file(folder_slide, links=False)


def test_a_folder_on_the_path_replaced_by_a_link_is_refused(folder_slide: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    folder_slide.parent.rename(elsewhere)
    folder_slide.parent.symlink_to(elsewhere)
    with pytest.raises(SlideUnreadableError, match="replaced by a link"):
        pin_file(folder_slide, links=False)
    assert pin_file(folder_slide, links=True).identity == pin_file(elsewhere / "swap.svs", links=False).identity


def test_fifos_and_folders_are_refused_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.svs")
    for path in (tmp_path / "fifo.svs", tmp_path):
        with pytest.raises(SlideUnreadableError, match="not a regular file"):
            _reads(lambda path=path: pin_file(path, links=False), tmp_path / "fifo.svs")


def test_the_link_goes_with_the_pin_and_is_named_like_the_slide(folder_slide: Path) -> None:
    pinned = pin_file(folder_slide, links=False)
    link = pinned.reader_path
    assert link.name == "swap.svs" and link != folder_slide and pinned.still_named()
    assert pin_file(folder_slide, links=False).reader_path != link  # a path is never used twice
    del pinned
    gc.collect()
    assert not os.path.lexists(link)


def test_folders_of_ended_processes_are_removed(tmp_path: Path) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = Path(tempfile.gettempdir()) / f"{pinned_files._FOLDER_PREFIX}{ended.stdout.strip()}-test"
    abandoned.mkdir()
    (abandoned / "1").mkdir()
    code = ("from pathlib import Path; from slidelabel.pipelines.pinned_files import pin_file; "
            f"print(pin_file(Path({str(tmp_path / 'a.svs')!r}), links=False).reader_path.parent.parent)")
    (tmp_path / "a.svs").write_bytes(b"x")
    mine = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert not abandoned.exists()
    assert not Path(mine).exists()  # removed at exit


def test_a_slide_named_like_a_format_of_several_files_is_read_through_its_pin_too(folder_slide: Path,
                                                                                    tmp_path: Path) -> None:
    """Eleventh attack: any SVS copied as ``x.dcm`` was read by its name (the formats of several
    files were), so the FIFO race came back through it (85 of 90 requests never answered)."""
    dicom_named = folder_slide.rename(folder_slide.with_suffix(".dcm"))
    pinned = pin_file(dicom_named, links=False)
    dicom_named.rename(tmp_path / "away.dcm")
    os.mkfifo(dicom_named)
    with open_slide(pinned.reader_path) as slide:
        assert _reads(lambda: slide.info.width, dicom_named) == 2220


def test_the_files_beside_a_dicom_slide_are_pinned_with_it_and_fifos_among_them_left_out(tmp_path: Path) -> None:
    folder = (tmp_path / "series").resolve()
    folder.mkdir()
    for name in ("level0.dcm", "level1.dcm", "notes.txt"):
        (folder / name).write_bytes(name.encode())
    os.mkfifo(folder / "trap.dcm")
    pinned = _reads(lambda: pin_file(folder / "level0.dcm", links=False), folder / "trap.dcm")
    assert sorted(entry.name for entry in pinned.reader_path.parent.iterdir()) == ["level0.dcm", "level1.dcm"]
    (folder / "level1.dcm").unlink()
    assert (pinned.reader_path.parent / "level1.dcm").read_bytes() == b"level1.dcm"  # the file that was checked
    for index in range(pinned_files.MAX_SIBLINGS + 1):
        (folder / f"copy{index}.dcm").write_bytes(b"x")
    with pytest.raises(SlideUnreadableError, match="folder of its own"):  # a descriptor each
        pin_file(folder / "level0.dcm", links=False)


def test_an_upload_is_read_alone(tmp_path: Path) -> None:
    """Thirteenth attack: a project's uploads share a folder, so every uploaded .dcm counted as a
    sibling of the others (the 65th upload was refused, and each open pinned them all)."""
    for index in range(pinned_files.MAX_SIBLINGS + 2):
        (tmp_path / f"upload{index}.dcm").write_bytes(b"x")
    pinned = pin_file(tmp_path / "upload0.dcm", links=True, siblings=False)
    assert [entry.name for entry in pinned.reader_path.parent.iterdir()] == ["upload0.dcm"]


@pytest.mark.parametrize("index", ["scan.vms", "scan.vmu", "scan.mrxs", ".vms", "SCAN.VMS"])
def test_slides_whose_index_names_other_files_are_not_read(tmp_path: Path, index: str) -> None:
    """Twelfth attack: a .vms naming ImageFile=../../../tmp/red.jpg showed a server file through
    its tiles, and one naming a FIFO hung every request thread."""
    (tmp_path / index).write_text("[Virtual Microscope Specimen]\nImageFile=../../../../tmp/red.jpg\n")
    with pytest.raises(SlideUnreadableError, match="pyramidal TIFF"):
        pin_file(tmp_path / index, links=True)


def test_readers_that_resolve_names_do_not_get_pinned_files(folder_slide: Path) -> None:
    """Eleventh attack: tifffile resolves the link back to a name (the slide's, or a FIFO named
    "<slide> (deleted)" once the slide's entry was replaced), and opened that in a slide job."""
    from slidelabel.pipelines.slide_readers import open_reader

    pinned = pin_file(folder_slide, links=False)
    with pytest.raises(SlideUnreadableError, match="opens files by name"):
        open_reader(pinned.reader_path, "tifffile")
    assert open_reader(folder_slide, "tifffile")[0] == "tifffile"  # a path of the user's own: any reader


def _vms_index(folder: Path, name: str) -> Path:
    """A Hamamatsu VMS index named ``name`` whose image is a red JPEG in ``folder/outside``."""
    from PIL import Image

    outside = folder / "outside"
    outside.mkdir(exist_ok=True)
    Image.new("RGB", (256, 256), (254, 0, 0)).save(outside / "red.jpg", restart_marker_blocks=1)
    Image.new("RGB", (64, 64)).save(outside / "map.jpg")
    (outside / "o.opt").write_bytes(bytes(8))
    index = folder / name
    index.write_text("[Virtual Microscope Specimen]\nNoLayers=1\nNoJpegColumns=1\nNoJpegRows=1\n"
                     "ImageFile=outside/red.jpg\nMapFile=outside/map.jpg\nOptimisationFile=outside/o.opt\n"
                     "PhysicalWidth=512000\nPhysicalHeight=512000\nSourceLens=20\n")
    return index


def test_an_index_is_known_by_its_content_whatever_its_name(tmp_path: Path) -> None:
    """Fourteenth attack: OpenSlide knows a Hamamatsu VMS index by its text, so one uploaded as
    "plain.svs" (or named "x.vms." or with a look-alike letter) showed a file outside the slide
    folders."""
    with pytest.raises(SlideUnreadableError, match="pyramidal TIFF"):
        pin_file(_vms_index(tmp_path, "plain.svs"), links=True)


def test_a_file_changed_in_place_is_checked_again(folder_slide: Path, tmp_path: Path) -> None:
    """Fifteenth attack: a slide rewritten in place as a VMS index, its size and modification time
    put back, kept its pin and was opened by a new reader without the content check."""
    from slidelabel.pipelines.slide_readers import open_reader

    pinned = pin_file(folder_slide, links=False)
    before = folder_slide.stat()
    with open(folder_slide, "r+b") as handle:
        handle.write(b"\0" * 64)  # same size
    os.utime(folder_slide, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not pinned.still_named()  # its change time moved

    slide = tmp_path / "slide.svs"
    slide.write_bytes(b"not yet an index")
    pinned = pin_file(slide, links=True)
    text = _vms_index(tmp_path, "index.txt").read_bytes()
    with open(pinned.reader_path, "r+b") as handle:  # the pinned file itself becomes the index
        handle.truncate(0)
        handle.write(text)
    with pytest.raises(SlideUnreadableError, match="pyramidal TIFF"):
        open_reader(pinned.reader_path, None)


def test_reader_links_in_a_message_read_as_the_slides_name(folder_slide: Path) -> None:
    pinned = pin_file(folder_slide, links=False)
    quoted = f"cannot read tile on {pinned.reader_path}: Source('{pinned.reader_path}'); {folder_slide}: kept"
    assert without_links(quoted) == f"cannot read tile on swap.svs: Source('swap.svs'); {folder_slide}: kept"
