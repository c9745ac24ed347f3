"""The file of a project's slide, checked each time the server opens it.

A slide added from a server folder was checked then: inside the folders its adder may read, a
regular file. Whoever can write to a shared folder could afterwards put a link to a slide of
another folder in its place (the project then showed that slide), or a FIFO (every request that
opened it waited forever, until the API had no thread left). So every opener takes the path from
:func:`slide_file`.
"""

from __future__ import annotations

from pathlib import Path

from slidelabel.errors import ConflictError, SlideError
from slidelabel.pipelines.slide_files import check_regular_file
from slidelabel.store.models import Slide

__all__ = ["slide_file"]


def slide_file(slide: Slide) -> Path:
    """The path of ``slide``'s file, after checking that it is a regular file and, for a slide
    added from a server folder (stored resolved), that no link has taken its place since;
    :class:`ConflictError` naming the slide otherwise (no server path)."""
    path = Path(slide.path)
    try:
        check_regular_file(path)
    except SlideError as error:
        problem = str(error).removeprefix(f"{error.path}: ")
        raise ConflictError(f"the file of slide {slide.name!r} {problem}; remove the slide or restore its file") from None
    try:
        replaced = not slide.uploaded and path.resolve() != path
    except (OSError, RuntimeError):  # a link loop, or the file changing while it is resolved
        replaced = True
    if replaced:
        raise ConflictError(f"the file of slide {slide.name!r} was replaced by a link since it was added; "
                            "remove the slide and add the file again") from None
    return path
