"""The file of a project's slide, opened and checked by the server, and what its readers open.

A slide added from a server folder was checked then: inside the folders its adder may read, a
regular file. Whoever can write to a shared folder could afterwards put a link to a slide of
another folder in its place (the project then showed that slide), or a FIFO (every request that
opened it waited forever, until the API had no thread left), and swap them in and out faster than
any check of the name. So every opener takes the slide from :func:`slide_file`: a
:class:`~slidelabel.pipelines.pinned_files.PinnedFile` whose ``reader_path`` reaches the file that
was checked, whatever its name becomes. A pin lasts while something holds it (a running job, an
open tile source) and its name still names the same unchanged file; a pin whose file was deleted
lets its source go at the next look (:data:`DELETED_LOOK_S`), so the disk space comes back.
"""

from __future__ import annotations

import threading
import time
import weakref
from pathlib import Path

from slidelabel.errors import ConflictError, SlideError
from slidelabel.pipelines.pinned_files import PinnedFile, pin_file
from slidelabel.services import tiles
from slidelabel.store.models import Slide

__all__ = ["DELETED_LOOK_S", "slide_file"]

#: Seconds between looks for pinned files that were deleted (one ``stat`` per pin).
DELETED_LOOK_S = 10.0

_PINS: weakref.WeakValueDictionary[str, PinnedFile] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()
_looked = time.monotonic()


def slide_file(slide: Slide) -> PinnedFile:
    """``slide``'s file, open and checked: a regular file and, for a slide added from a server
    folder (stored resolved), at the path it was added from with no link on the way;
    :class:`ConflictError` naming the slide otherwise (no server path). Hold the result while a
    reader uses its ``reader_path``."""
    _let_deleted_go()
    pin = _PINS.get(slide.path)
    if pin is None or not pin.still_named():
        pin = _pin(slide)
        _PINS[slide.path] = pin
    return pin


def _let_deleted_go() -> None:
    """At most every :data:`DELETED_LOOK_S`: when a pinned file was deleted, drop the open tile
    sources (they hold the pins; the others reopen at their next tile)."""
    global _looked
    with _LOCK:
        if time.monotonic() - _looked < DELETED_LOOK_S:
            return
        _looked = time.monotonic()
    if any(pin.deleted() for pin in list(_PINS.values())):
        tiles.slide_source.cache_clear()


def _pin(slide: Slide) -> PinnedFile:
    try:
        return pin_file(Path(slide.path), links=slide.uploaded, siblings=not slide.uploaded)
    except SlideError as error:
        problem = str(error).removeprefix(f"{error.path}: ")
        raise ConflictError(f"the file of slide {slide.name!r} {problem}; remove the slide and add its file again, "
                            "or restore the file") from None
