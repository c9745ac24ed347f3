"""Slide files opened once, checked on that descriptor, and read through it.

The slide readers (OpenSlide, libtiff, PIL) open a file by its name, again and again. A name in a
folder that others can write to may meanwhile have become a FIFO (the reader's open then waits
forever) or a link to another folder's slide. So a server opens each slide file itself, once,
without following links and without waiting (``O_NOFOLLOW | O_NONBLOCK``), checks what that
descriptor holds (a regular file, at the very path it was added from), and gives the readers a
name of its own for that descriptor: a link in a folder only this process writes to, pointing at
``/proc/self/fd/N``, and named like the file (readers choose by extension). Whatever later happens
to the slide's name, the readers read the file that was checked.

The link of a :class:`PinnedFile` lives as long as the object: hold it while a reader may open
its ``reader_path`` (OpenSlide reopens it for each new handle). Each link's path is used once, so
no reader's cache keyed by path can give one file's pixels for another.

Readers that resolve a name before opening it (tifffile's ``realpath`` turns the link back into
the slide's name, or into whatever a writer names "<slide> (deleted)") are not given pinned files
(:data:`NAME_RESOLVING_READERS`); slidelabel's own TIFF reading passes tifffile an open file
(:func:`open_tiff`). A format that reads the files of its folder (:data:`SIBLING_FORMATS`: DICOM)
gets those pinned and linked beside its link, each checked alike; formats whose index names files
anywhere (:data:`INDEX_FORMATS`: MIRAX, VMS) are not read.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import os
import re
import shutil
import stat
import struct
import tempfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import tifffile

try:
    import openslide
except ImportError:  # OpenSlide is large_image's optional reader
    openslide = None

from slidelabel.errors import SlideUnreadableError
from slidelabel.pipelines.tiff_structure import TIFF_MAGIC, open_tiff_file, structure_problem, unparsed_problem

__all__ = ["INDEX_FORMATS", "INDEX_REFUSED", "index_by_content", "NAME_RESOLVING_READERS", "NOT_REGULAR", "PinnedFile", "SIBLING_FORMATS", "is_reader_link", "open_tiff",
           "pin_file"]

#: Extensions of slides whose reader opens the other files of their folder like them (DICOM's
#: other instances of the series): those are pinned too.
SIBLING_FORMATS = frozenset({"dcm"})
#: Why an index format is refused.
INDEX_REFUSED = ("is the index of a slide made of files it names (MIRAX, Hamamatsu VMS), which slidelabel does not "
                 "read: convert it to a pyramidal TIFF (e.g. vips tiffsave in.mrxs out.tif --tile --pyramid "
                 "--compression jpeg)")
#: Most files pinned beside one slide (a DICOM series has a few levels, a label and an overview):
#: each is a descriptor held while the slide is open.
MAX_SIBLINGS = 64
#: Extensions of index files whose reader opens the files they name, wherever those are (MIRAX's
#: Slidedat.ini, Hamamatsu VMS's ImageFile): not read (a .vms naming ../../tmp/x.jpg showed a
#: server file; one naming a FIFO hung every request thread: twelfth attack).
INDEX_FORMATS = frozenset({"mrxs", "vms", "vmu"})
#: Readers that resolve the name they are given before opening it (tifffile's ``realpath``): a
#: pinned link would lead them back to the slide's name, so they do not read pinned files.
NAME_RESOLVING_READERS = frozenset({"tifffile"})

#: Why a FIFO, socket or device named like a slide is refused.
NOT_REGULAR = "is not a regular file (a FIFO, socket or device): only slide files are read"

_PROC_FD = Path("/proc/self/fd")
_FOLDER_PREFIX = "slidelabel-open-slides-"
#: The folders of a reader link in a text: a temporary folder, the process's folder, the pin's.
_LINK_FOLDERS = re.compile(r"/(?:[^\s'\"]*/)?" + re.escape(_FOLDER_PREFIX) + r"\d+-[^/\s'\"]+/\d+/")


@dataclass(frozen=True, eq=False)
class PinnedFile:
    """A slide file held open by this process (compared and hashed by identity).

    ``path`` is its name, for messages and keys; ``reader_path`` is what readers open (a link of
    this process to the open descriptor, or ``path`` where that cannot be had); ``identity`` is
    ``(st_dev, st_ino)``, ``version`` its modification time (ns) and size in hex, and ``links``
    whether ``path`` was allowed to be or go through a link.
    """

    path: Path
    reader_path: Path
    identity: tuple[int, int]
    version: str
    links: bool
    _release: weakref.finalize | None = field(default=None, repr=False)

    def still_named(self) -> bool:
        """Whether ``path`` still names this very file, unchanged, and its link is in place (a
        cheap test whether the pin can be used again; the pin is safe to read either way)."""
        try:
            now = os.stat(self.path, follow_symlinks=self.links)
        except OSError:
            return False
        return (stat.S_ISREG(now.st_mode) and (now.st_dev, now.st_ino) == self.identity
                and _version(now) == self.version and os.path.lexists(self.reader_path))


    def deleted(self) -> bool:
        """Whether the file has no name left anywhere (its disk space is held by this pin)."""
        try:
            return os.stat(self.reader_path).st_nlink == 0
        except OSError:
            return False


def extension(path: Path) -> str:
    """What follows the last '.' of ``path``'s name, in lower case, as OpenSlide reads it: ".vms"
    is a VMS index to it, though ``Path(".vms").suffix`` is empty (thirteenth attack).

    >>> extension(Path("/a/.vms")), extension(Path("/a/x.Tiff")), extension(Path("/a/x"))
    ('vms', 'tiff', '')
    """
    _, dot, after = path.name.rpartition(".")
    return after.lower() if dot else ""


def _version(status: os.stat_result) -> str:
    """Modification time, size and change time (ns, hex): a file rewritten in place with its old
    size and modification time put back still has a new change time (fifteenth attack)."""
    return f"{status.st_mtime_ns:x}-{status.st_size:x}-{status.st_ctime_ns:x}"


def pin_file(path: Path, *, links: bool, siblings: bool = True) -> PinnedFile:
    """Open ``path`` and check it: a regular file, and unless ``links``, at ``path`` itself (an
    absolute, resolved path) with no link on the way. Where ``siblings`` (not for an upload, read
    alone), the files its format reads beside it (:data:`SIBLING_FORMATS`) are opened and checked
    alike, and linked beside its link; those that are no regular file are left out, so no reader
    ever opens them. Index formats (:data:`INDEX_FORMATS`) are refused.

    Raises
    ------
    SlideUnreadableError
        A FIFO, socket, device or folder; a link where ``links`` is False; unreadable; more than
        :data:`MAX_SIBLINGS` files beside it; an index format.
    """
    if extension(path) in INDEX_FORMATS:
        raise SlideUnreadableError(path, INDEX_REFUSED)
    descriptor, status = _open_checked(path, links=links)
    descriptors, folder = [descriptor], None
    try:
        if not _PROC_FD.is_dir():  # no /proc: readers open the name, checked just now
            os.close(descriptor)
            return PinnedFile(path, path, (status.st_dev, status.st_ino), _version(status), links)
        folder = _own_folder() / str(next(_NUMBERS))
        folder.mkdir()
        reader_path = _link(folder, path.name, descriptor)
        for name, sibling in _siblings(path) if siblings else ():
            descriptors.append(_open_checked(sibling, links=links)[0])
            _link(folder, name, descriptors[-1])
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        for opened in descriptors:
            os.close(opened)
        raise
    pin = PinnedFile(path, reader_path, (status.st_dev, status.st_ino), _version(status), links)
    object.__setattr__(pin, "_release", weakref.finalize(pin, _unpin, descriptors, folder))
    if problem := _tiff_structure_problem(reader_path):  # before OpenSlide walks every image directory
        raise SlideUnreadableError(path, problem)
    if index_by_content(reader_path):
        raise SlideUnreadableError(path, INDEX_REFUSED)
    return pin




def _tiff_structure_problem(reader_path: Path) -> str | None:
    """Why the structure of the TIFF at ``reader_path`` cannot be read
    (:func:`~slidelabel.pipelines.tiff_structure.structure_problem`), else None (as for no TIFF):
    OpenSlide's format detection walks every image directory, a million of them in 11 s and 1.3 GB
    (the twenty-third attack)."""
    try:
        with open_tiff(reader_path) as tiff:
            return structure_problem(tiff)
    except (ValueError, struct.error) as error:  # a damaged TIFF is refused; another format's readers judge it
        with open(reader_path, "rb") as file:
            return unparsed_problem(file, error)
    except OSError:  # unreadable: said by the checks that read it
        return None


def index_by_content(reader_path: Path) -> bool:
    """Whether OpenSlide would read the pinned file as an index of other files whatever its name
    (it knows a Hamamatsu VMS by its text: fourteenth attack, "plain.svs" holding one); NDPI,
    Hamamatsu's TIFF, is no index."""
    if openslide is None:  # no OpenSlide, no reader of index formats
        return False
    vendor = openslide.OpenSlide.detect_format(str(reader_path))
    if vendor == "mirax":
        return True
    if vendor != "hamamatsu":
        return False
    with open(reader_path, "rb") as handle:
        return handle.read(4) not in TIFF_MAGIC


def _open_checked(path: Path, *, links: bool) -> tuple[int, os.stat_result]:
    """A descriptor of ``path`` and its status: a regular file, reached through no link unless
    ``links``; :class:`SlideUnreadableError` otherwise (nothing waited for: ``O_NONBLOCK``)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if links else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SlideUnreadableError(path, "was replaced by a link since it was added") from None
        raise SlideUnreadableError(path, f"cannot be read: {error.strerror or error}") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise SlideUnreadableError(path, NOT_REGULAR)
        if not links and _opened_name(descriptor, path) != str(path):
            raise SlideUnreadableError(path, "was replaced by a link since it was added (a folder on its path)")
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor, status


def _siblings(path: Path) -> list[tuple[str, Path]]:
    """``(name under the link's folder, path)`` of the regular files ``path``'s format reads beside
    it (a DICOM series' other instances); a FIFO, socket, folder or link among them is left out,
    so no reader opens it."""
    kind = extension(path)
    if kind not in SIBLING_FORMATS:
        return []
    try:
        found = [(entry.name, Path(entry.path)) for entry in os.scandir(path.parent)
                 if entry.name.lower().endswith(f".{kind}") and entry.name != path.name
                 and entry.is_file(follow_symlinks=False)]
    except OSError as error:
        raise SlideUnreadableError(path, f"the files beside it cannot be listed: {error.strerror or error}") from None
    if len(found) > MAX_SIBLINGS:
        raise SlideUnreadableError(path, f"has {len(found):,} files beside it of its format, more than the "
                                         f"{MAX_SIBLINGS} slidelabel reads for one slide: give it a folder of its own")
    return sorted(found)


def _opened_name(descriptor: int, path: Path) -> str:
    """The path the kernel holds for ``descriptor`` (every link resolved); ``path`` itself where
    this system does not say."""
    try:
        return os.readlink(_PROC_FD / str(descriptor))
    except OSError:
        return str(path)


def _link(folder: Path, name: str, descriptor: int) -> Path:
    """A link ``folder/name`` to ``descriptor`` (its folders made)."""
    link = folder / name
    link.parent.mkdir(exist_ok=True)
    os.symlink(f"/proc/self/fd/{descriptor}", link)
    return link


def _unpin(descriptors: list[int], folder: Path) -> None:
    """Remove the links, then close the descriptors they name (never the other way round: a
    reused descriptor number must not be reachable through an old link)."""
    shutil.rmtree(folder, ignore_errors=True)
    for descriptor in descriptors:
        os.close(descriptor)


def without_links(text: str) -> str:
    """``text`` with each reader link of a pin (``<temp>/slidelabel-open-slides-<pid>-<x>/<n>/<name>``,
    as readers' errors quote them) replaced by its name: the slide file's."""
    return _LINK_FOLDERS.sub("", text)


def is_reader_link(path: Path) -> bool:
    """Whether ``path`` is a link of this process to a pinned file (what readers that resolve
    names before opening them must not be given)."""
    return _folder is not None and _folder[0] == os.getpid() and Path(path).is_relative_to(_folder[1])


_NUMBERS = itertools.count()
_FOLDER_LOCK = threading.Lock()
_folder: tuple[int, Path] | None = None


def _own_folder() -> Path:
    """This process's folder of links (mode 0700 in the temporary folder), made at first use and
    again in a forked child; folders of processes that ended without removing theirs go then."""
    global _folder
    with _FOLDER_LOCK:
        if _folder is None or _folder[0] != os.getpid():
            _remove_abandoned_folders()
            folder = Path(tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-"))
            atexit.register(shutil.rmtree, folder, True)
            _folder = (os.getpid(), folder)
        return _folder[1]


def _remove_abandoned_folders() -> None:
    """Remove this user's link folders whose process is gone (killed workers leave theirs)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_FOLDER_PREFIX}*-*"):
        pid = folder.name.removeprefix(_FOLDER_PREFIX).partition("-")[0]
        with contextlib.suppress(OSError, ValueError):
            if folder.lstat().st_uid == os.getuid() and not _alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def open_tiff(path: Path) -> Iterator[tifffile.TiffFile]:
    """``tifffile.TiffFile`` of an open ``path``: given a name, tifffile resolves it first and
    would open the slide's name rather than a :class:`PinnedFile`'s link."""
    with open(path, "rb") as handle, open_tiff_file(handle) as tiff:
        yield tiff
