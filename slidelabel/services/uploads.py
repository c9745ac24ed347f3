"""Receiving an uploaded file: a ``multipart/form-data`` body streamed to disk within a size limit.

The body is parsed as it arrives (python-multipart's streaming parser), so a file of any size
passes through a few kilobytes of memory, and an upload past the limit is stopped as soon as it
is, not after it was received in full.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from slidelabel.errors import BusyError, NotFoundError, ParameterError, TooLargeError
from slidelabel.pipelines.window_cache import reserve_bytes
from slidelabel.services.names import shown_input, unshown_character
from slidelabel.services.turns import Turns

MB = 1 << 20
#: Longest slide file name: the hidden name it is received under adds 25 bytes, and file systems
#: take 255.
MAX_NAME_BYTES = 200
#: Room for the multipart framing around the file when judging a declared body size (bytes).
FORM_OVERHEAD_BYTES = 64 << 10
#: Start of the hidden name a file has while it is being received.
UNFINISHED_PREFIX = ".upload-"
#: Where uploads are received, under the data folder: slides, and slides' source files.
UPLOAD_FOLDERS = ("uploads/*", "projects/*/slides/*/sources")
#: Uploads received at once in an API process, and by one user: each may take the disk's room for
#: minutes (one owner could keep 100 uploads of 20 GB going at once, the twentieth attack).
UPLOADS, UPLOADS_PER_HOLDER = 64, 4
_UPLOADS = Turns(UPLOADS, per_holder=UPLOADS_PER_HOLDER)
#: Bytes written between two looks at the disk's free space.
FREE_SPACE_EVERY_BYTES = 64 * MB
#: Why an upload's file went while it was received: deleting a slide or project removes its folders.
REMOVED = "the slide or project this file was uploaded to was deleted while the file arrived; nothing was kept"


@contextmanager
def _parsing() -> Iterator[None]:
    try:
        yield
    except FormParserError as error:
        raise ParameterError(f"the upload is not valid multipart/form-data ({error}); send the file in the "
                             "form field 'file'") from None


def upload_name(filename: str) -> str:
    """The slide name of an uploaded file: its base name, which must be a plain visible file name
    of printable characters (:func:`~slidelabel.services.names.unshown_character`), as other
    names are: a slide's name is shown to the project's members."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name.startswith(".") or "\x00" in name or len(name.encode()) > MAX_NAME_BYTES:
        raise ParameterError(f"{filename[:80]!r} is not a usable file name (at most {MAX_NAME_BYTES} bytes, not hidden); "
                             "rename the file (e.g. slide.svs)")
    bad = unshown_character(name)
    if bad is not None:
        raise ParameterError(f"the file name {shown_input(name)} holds U+{ord(bad):04X}, a control, invisible or "
                             "unassigned character; names are printable text: rename the file (e.g. slide.svs)")
    return name


class UploadReceiver:
    """Writes the file of a ``multipart/form-data`` body to a hidden file as the body arrives.

    The first part with a file name goes to ``folder/.upload-<random>-<name>`` (the extension is
    kept: readers are chosen by it) chunk by chunk; other parts are ignored. The receiver holds a
    lock (``flock``) on that file from its creation until :meth:`discard`, through its checks and
    its rename into place: :func:`sweep_unfinished_uploads` removes only unlocked ones. More than
    ``limit_bytes`` of file, a body larger than that and the form's overhead, or a declared body
    that cannot fit, is a :class:`TooLargeError`.

    ``folder`` is made when the receiver is (once the request's form passed its checks), and never
    again: a delete of its slide or project while the body arrives removes it, and the upload then
    ends in a :class:`NotFoundError`, instead of making the deleted folder again and keeping the
    file in it, or failing to move the file out of a folder that went.
    """

    def __init__(self, content_type: str, folder: Path, *, limit_bytes: int, declared_bytes: int | None,
                 holder: Hashable | None = None) -> None:
        mime, options = parse_options_header(content_type)
        if mime != b"multipart/form-data" or not options.get(b"boundary"):
            raise ParameterError("send the file as multipart/form-data, the file in the field 'file'")
        self.folder, self.limit_bytes = folder, limit_bytes
        if declared_bytes is not None and declared_bytes > limit_bytes + FORM_OVERHEAD_BYTES:
            self._refuse()
        folder.mkdir(parents=True, exist_ok=True)
        self._reserve = reserve_bytes(folder)
        self._check_room(declared_bytes or 0)
        self.name: str | None = None
        self.path: Path | None = None
        self._file: BinaryIO | None = None
        self._locked: BinaryIO | None = None  # the file written, open (and locked) until discard()
        self._finished = False
        self._written = self._received = 0
        self._header: list[bytes] = [b"", b""]
        self._headers: dict[bytes, bytes] = {}
        with _parsing():  # refuses a boundary longer than 256 bytes
            self._parser = MultipartParser(options[b"boundary"], callbacks={
                "on_part_begin": self._headers.clear,
                "on_header_field": lambda data, start, end: self._add_header(0, data[start:end]),
                "on_header_value": lambda data, start, end: self._add_header(1, data[start:end]),
                "on_header_end": self._end_header,
                "on_headers_finished": self._start_part,
                "on_part_data": self._write,
                "on_part_end": self._end_part,
            })
        # Last: a receiver made is discarded, which gives the turn back.
        if not _UPLOADS.take_now(holder):
            raise BusyError(f"you have {UPLOADS_PER_HOLDER} uploads arriving already (or the server {UPLOADS}): send "
                            "this one when one of them has ended")
        self._holder, self._holding = holder, True

    def _check_room(self, coming_bytes: int) -> None:
        """:class:`TooLargeError` when ``coming_bytes`` more would leave the upload folder's file
        system less free space than it keeps (5%, at least 1 GB: a full disk fails every write
        of the server, the database's too)."""
        free = shutil.disk_usage(self.folder).free
        if free - coming_bytes < self._reserve:
            raise TooLargeError(f"the server's disk has {free / 2**30:.1f} GB free and keeps "
                                f"{self._reserve / 2**30:.1f} GB free: this upload does not fit; ask the admin to "
                                "make room, or to put the slide in a slide folder")

    def _refuse(self) -> None:
        raise TooLargeError(f"the slide is larger than this server's upload limit of {self.limit_bytes // MB} MB; "
                            "ask the admin to raise SLIDELABEL_UPLOAD_LIMIT_MB or to put it in a slide folder")

    def _add_header(self, which: int, data: bytes) -> None:
        self._header[which] += data

    def _end_header(self) -> None:
        self._headers[self._header[0].strip().lower()] = self._header[1].strip()
        self._header = [b"", b""]

    def _start_part(self) -> None:
        _, disposition = parse_options_header(self._headers.get(b"content-disposition", b""))
        filename = disposition.get(b"filename")
        if filename and self.path is None:
            self.name = upload_name(filename.decode("utf-8", "replace"))
            while True:
                path = self.folder / f"{UNFINISHED_PREFIX}{secrets.token_hex(8)}-{self.name}"
                try:
                    file = open(path, "xb")  # noqa: SIM115 - closed by discard()
                except FileNotFoundError:
                    raise NotFoundError(REMOVED) from None
                try:
                    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a sweep took it first, and removes it: another name
                    file.close()
                    continue
                if os.fstat(file.fileno()).st_nlink:
                    break
                file.close()  # a sweep removed it before the lock was taken
            self._file = self._locked = file
            self.path = path

    def _write(self, data: bytes, start: int, end: int) -> None:
        if self._file is None:
            return
        before, self._written = self._written, self._written + end - start
        if self._written > self.limit_bytes:
            self._refuse()
        if before // FREE_SPACE_EVERY_BYTES != self._written // FREE_SPACE_EVERY_BYTES:
            self._check_room(FREE_SPACE_EVERY_BYTES)
        # A local write of one chunk takes microseconds; a thread hop per chunk would cost more.
        self._file.write(data[start:end])

    def _end_part(self) -> None:
        if self._file is not None:
            self._file.flush()  # kept open: its lock holds the file until discard()
            self._file, self._finished = None, True

    def feed(self, chunk: bytes) -> None:
        """Parse the next chunk of the body, writing what it holds of the file. The whole body
        counts against the limit, its other parts too."""
        self._received += len(chunk)
        if self._received > self.limit_bytes + FORM_OVERHEAD_BYTES:
            self._refuse()
        with _parsing():
            self._parser.write(chunk)

    def finish(self) -> tuple[str, Path]:
        """The uploaded file's name and the hidden file holding it, once the body has ended."""
        with _parsing():
            self._parser.finalize()
        if not self._finished:
            raise ParameterError("the request holds no complete file; send the file in the form field 'file'")
        if not self.path.exists():  # written to the end, but its folder was removed meanwhile
            raise NotFoundError(REMOVED)
        return self.name, self.path

    def discard(self) -> None:
        """Remove the hidden file (nothing happens once it was renamed into place), then close it,
        which ends its lock."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        if self._locked is not None:
            self._locked.close()
            self._file = self._locked = None
        if self._holding:
            _UPLOADS.give_back(self._holder)
            self._holding = False


def sweep_unfinished_uploads(data_dir: Path) -> list[Path]:
    """Remove the files that uploads cut off by a process that ended (a stopped server, a killed
    API process) left half received (in :data:`UPLOAD_FOLDERS`); the removed paths. A file whose
    lock a living process holds (:class:`UploadReceiver`) is an upload in progress, of this server
    or of another one on the same data folder: it is left."""
    return [path for folder in UPLOAD_FOLDERS for path in sorted(data_dir.glob(f"{folder}/{UNFINISHED_PREFIX}*"))
            if _remove_abandoned(path)]


def _remove_abandoned(path: Path) -> bool:
    """Remove ``path`` if no process holds its lock (or it is a link: no upload writes through
    one); whether it was removed."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:  # removed or renamed into place meanwhile
        return False
    except OSError as error:
        if error.errno != errno.ELOOP:
            return False
        with contextlib.suppress(OSError):
            path.unlink()
            return True
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        opened, named = os.fstat(descriptor), os.stat(path, follow_symlinks=False)
        if (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
            return False
        path.unlink()  # with the lock held: a receiver that takes it next sees the file gone
        return True
    except OSError:  # locked by a living upload (BlockingIOError), gone meanwhile, a folder
        return False
    finally:
        os.close(descriptor)
