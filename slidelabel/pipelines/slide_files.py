"""Checks of a slide file before any reader opens it: missing, a folder, empty, truncated."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import tifffile

from slidelabel.errors import SlideNotFoundError, SlideUnreadableError

# The truncation check reads broken files on purpose; tifffile's complaints about them would
# otherwise reach stderr ahead of slidelabel's own message. Configured handlers still get them.
logging.getLogger("tifffile").addHandler(logging.NullHandler())


def _tiff_problem(path: Path, size: int) -> str | None:
    """Why a TIFF-based file (SVS, TIFF, NDPI...) of ``size`` bytes cannot be used, else None.

    Readers open a file cut after its first levels and fail only when a job reaches the missing
    part, so the IFD chain must end (next offset 0) and all pixel data must lie within the file.
    The full-resolution image must hold 8-bit samples: OpenSlide opens 16-bit images as generic
    TIFFs and returns meaningless pixels.
    """
    try:
        with tifffile.TiffFile(path) as tiff:
            pages = list(tiff.pages)  # stops quietly where the chain leaves the file
            for page in pages:
                pages.extend(page.pages or ())  # sub-IFDs: the pyramid levels of OME-TIFF
            data_ends = [
                offset + count
                for page in pages
                for offset, count in zip(page.dataoffsets, page.databytecounts)
            ]
            bits = pages[0].bitspersample if pages else 8
            pointer_at, pointer_size = tiff.pages.next_page_offset, tiff.tiff.offsetsize
            tiff.filehandle.seek(pointer_at)
            raw_pointer = tiff.filehandle.read(pointer_size)
    except (ValueError, struct.error):  # TiffFileError is a ValueError
        return None  # not a TIFF, or one tifffile cannot parse: the readers judge it
    if len(raw_pointer) < pointer_size:
        needed_for_chain = pointer_at + pointer_size
    else:
        next_ifd = struct.unpack(tiff.tiff.offsetformat, raw_pointer)[0]
        needed_for_chain = next_ifd + 1 if next_ifd else 0
    if bits != 8:
        return f"has {bits}-bit samples; slidelabel reads 8-bit RGB slides (convert it, e.g. to an 8-bit pyramidal TIFF)"
    needed = max(data_ends + [needed_for_chain])
    if needed > size:
        return f"the file is truncated: it has {size} bytes but its TIFF structure needs {needed}"
    return None


def check_slide_file(path: Path) -> None:
    """Raise when ``path`` is missing, a directory, empty, unreadable, or a truncated or 16-bit TIFF."""
    if not path.exists():
        raise SlideNotFoundError(path, "no such file")
    if path.is_dir():
        raise SlideUnreadableError(path, "is a directory, not a slide file")
    try:
        size = path.stat().st_size
        if size == 0:
            raise SlideUnreadableError(path, "the file is empty (0 bytes)")
        problem = _tiff_problem(path, size)
    except OSError as error:
        raise SlideUnreadableError(path, f"cannot be read: {error.strerror or error}") from error
    if problem:
        raise SlideUnreadableError(path, problem)
