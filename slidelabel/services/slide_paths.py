"""The file of a project's slide, opened and checked by the server, and what its readers open.

A slide added from a server folder was checked then: inside the folders its adder may read, a
regular file. Whoever can write to a shared folder could afterwards put a link to a slide of
another folder in its place (the project then showed that slide), or a FIFO (every request that
opened it waited forever, until the API had no thread left), and swap them in and out faster than
any check of the name. So every opener takes the slide from :func:`slide_file`: a
:class:`~slidelabel.pipelines.pinned_files.PinnedFile` whose ``reader_path`` reaches the file that
was checked, whatever its name becomes. Pins are kept (per process, the most recent
:data:`PINNED_SLIDES`) while their name still names the same unchanged file.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from slidelabel.errors import ConflictError, SlideError
from slidelabel.pipelines.pinned_files import PinnedFile, pin_file
from slidelabel.store.models import Slide

__all__ = ["PINNED_SLIDES", "slide_file"]

#: Slide files a process keeps open between requests (a descriptor each).
PINNED_SLIDES = 256

_PINS: OrderedDict[str, PinnedFile] = OrderedDict()
_LOCK = threading.Lock()


def slide_file(slide: Slide) -> PinnedFile:
    """``slide``'s file, open and checked: a regular file and, for a slide added from a server
    folder (stored resolved), at the path it was added from with no link on the way;
    :class:`ConflictError` naming the slide otherwise (no server path). Hold the result while a
    reader uses its ``reader_path``."""
    with _LOCK:
        pin = _PINS.get(slide.path)
    if pin is None or not pin.still_named():
        pin = _pin(slide)
    with _LOCK:
        _PINS[slide.path] = pin
        _PINS.move_to_end(slide.path)
        while len(_PINS) > PINNED_SLIDES:
            _PINS.popitem(last=False)
    return pin


def _pin(slide: Slide) -> PinnedFile:
    try:
        return pin_file(Path(slide.path), links=slide.uploaded)
    except SlideError as error:
        problem = str(error).removeprefix(f"{error.path}: ")
        raise ConflictError(f"the file of slide {slide.name!r} {problem}; remove the slide and add its file again, "
                            "or restore the file") from None
