"""The server's slide folders: which ones a user may read, the slide files in them, and the
paths and patterns inside them that name a slide.

Server folders (:attr:`Settings.slide_folders`) are the only places on the server's disk that a
project may read: every path is resolved (``..`` and symlinks) before it is compared with them,
and a file reached through a link out of them is named by that link, never by what lies behind it.
"""

from __future__ import annotations

import glob
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from slidelabel.errors import ParameterError, PermissionDeniedError
from slidelabel.pipelines.slide_readers import slide_extensions
from slidelabel.services.accounts import may_read_slide_folders, require_slide_folders
from slidelabel.services.names import unshown_character
from slidelabel.settings import Settings
from slidelabel.store.models import User

#: Most slide files listed per request of the folder browser, or matched by one pattern.
MAX_LISTED = 10_000
#: Most parts of a pattern with wildcards (``lab-*/case-*/*.svs``).
MAX_PATTERN_WILDCARDS = 3


@dataclass(frozen=True)
class FolderSlide:
    """A slide file in a server folder: ``path`` (as inside the folder), ``size_bytes``."""

    path: Path
    size_bytes: int


@dataclass(frozen=True)
class FolderListing:
    folder: Path
    slides: list[FolderSlide]
    truncated: bool
    """True when the folder holds more than :data:`MAX_LISTED` slide files."""
    warnings: list[str]
    """Files that cannot be offered, and why (names that are not UTF-8)."""


def shown_path(path: Path | str) -> str:
    """``path`` as text for a person: bytes of a name that are not UTF-8 appear as U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")


def _undecodable(path: Path | str) -> bool:
    """True when the file system gave ``path`` bytes that are not UTF-8 (Python keeps them as
    surrogates, which no JSON answer or database can hold)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def name_problem(path: Path) -> str | None:
    """Why the server-folder file ``path`` cannot be added under its name, else None: bytes that
    are not UTF-8, or a character a name may not hold (a bidi override shows others the name
    reversed, an escape sequence drives a terminal; uploads are refused the same)."""
    if _undecodable(path):
        return "its name is not valid UTF-8; rename the file to add it"
    if (bad := unshown_character(path.name)) is not None:
        return (f"its name holds U+{ord(bad):04X}, a control, invisible or unassigned character; rename the file to "
                "add it")
    return None


def named(path: Path) -> str:
    """``path`` for a message: as is, or escaped (its ``repr``) when its name has a problem."""
    return shown_path(path) if name_problem(path) is None else repr(shown_path(path))


def allowed_folders(settings: Settings) -> list[Path]:
    """The server's slide folders, resolved."""
    return [Path(folder).resolve() for folder in settings.slide_folders]


def inside(path: Path, folders: list[Path]) -> bool:
    return any(path.is_relative_to(folder) for folder in folders)


def resolve_in_folders(raw: str, folders: list[Path]) -> Path:
    """``raw`` with ``..`` and symlinks resolved, when that lies inside one of ``folders``.

    Raises :class:`ParameterError` for a relative path and :class:`PermissionDeniedError` for one
    that leads outside (whether or not it exists, so that nothing is learnt about other files).
    """
    if not folders:
        raise PermissionDeniedError("this server has no slide folders (SLIDELABEL_SLIDE_FOLDERS); upload the slide")
    names = ", ".join(map(str, folders))
    if not Path(raw).is_absolute():
        raise ParameterError(f"{raw!r} is not an absolute path; give one inside {names}")
    try:
        resolved = Path(raw).resolve()
    except ValueError:  # a NUL byte or a lone surrogate: no file can have that name
        raise ParameterError(f"{raw[:80]!r} is not a usable path (NUL byte or bad Unicode); "
                             f"give one inside {names}") from None
    if not inside(resolved, folders):
        raise PermissionDeniedError(f"{raw} is outside the slide folders this server may read: {names}")
    return resolved


def readable_folders(user: User, settings: Settings) -> list[Path]:
    """The slide folders ``user`` may read, resolved: all for the admin and the accounts granted
    them, else those shared with it (:attr:`Settings.slide_folder_readers`)."""
    if may_read_slide_folders(user):
        return allowed_folders(settings)
    return [Path(folder).resolve() for folder, names in settings.slide_folder_readers.items() if user.username in names]


def require_readable_folders(user: User, settings: Settings) -> list[Path]:
    """:func:`readable_folders`, or :class:`PermissionDeniedError` when ``user`` may read none of
    the server's slide folders (while it has some)."""
    folders = readable_folders(user, settings)
    if settings.slide_folders and not folders:
        require_slide_folders(user)
    return folders


def browse_folders(user: User, settings: Settings) -> list[FolderListing]:
    """The slide folders ``user`` may read (:func:`readable_folders`) and the slide files in them
    (recursively, hidden ones left out)."""
    folders, extensions = readable_folders(user, settings), slide_extensions()
    listings = []
    for folder in folders:
        found: list[FolderSlide] = []
        warnings: list[str] = []
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                path = Path(root) / name
                if name.startswith(".") or path.suffix.lower().lstrip(".") not in extensions:
                    continue
                if not path.is_file() or (path.is_symlink() and not inside(path.resolve(), folders)):
                    continue
                if problem := name_problem(path):
                    warnings.append(f"{named(path)}: {problem}")
                    continue
                found.append(FolderSlide(path, path.stat().st_size))
            if len(found) > MAX_LISTED:
                break
        listings.append(FolderListing(folder, found[:MAX_LISTED], len(found) > MAX_LISTED, warnings))
    return listings


def expand_pattern(raw: str, folders: list[Path]) -> list[Path]:
    """The slide files a folder or glob pattern inside the slide folders names, unresolved: at
    most :data:`MAX_LISTED`, from a pattern of at most :data:`MAX_PATTERN_WILDCARDS` wildcard
    parts (a link back into its folder makes each wildcard part double the paths to walk)."""
    parts = Path(raw).parts
    if ".." in parts:
        raise ParameterError(f"{raw!r}: a folder or pattern may not contain '..'")
    magic = [i for i, part in enumerate(parts) if glob.has_magic(part)]
    # The fixed part of a pattern must be inside, so that no pattern lists files elsewhere.
    resolve_in_folders(str(Path(*parts[:magic[0]])) if magic else raw, folders)
    if not magic:
        return _folder_files(Path(raw))
    if len(magic) > MAX_PATTERN_WILDCARDS:
        raise ParameterError(f"{raw!r}: at most {MAX_PATTERN_WILDCARDS} parts of a pattern may hold wildcards")
    matches = list(itertools.islice(glob.iglob(raw), MAX_LISTED + 1))
    if len(matches) > MAX_LISTED:
        raise ParameterError(f"{raw!r} matches more than {MAX_LISTED} files: narrow the pattern")
    return sorted(Path(match) for match in matches)


def _folder_files(folder: Path) -> list[Path]:
    """The slide files of ``folder`` (not its subfolders), links among them whether what they lead
    to exists or not, as a pattern's matches are: a link out of the slide folders is then skipped
    alike whatever lies behind it, and the answer tells nothing of files outside them."""
    if not folder.is_dir():
        return []
    extensions = slide_extensions()
    return sorted(path.absolute() for path in folder.iterdir()
                  if (path.is_symlink() or path.is_file()) and path.suffix.lower().lstrip(".") in extensions)


def link_out(path: Path, folders: list[Path]) -> Path:
    """The first part of ``path`` (a match inside ``folders``, unresolved) that resolves outside
    them: the link that leads out."""
    for part in (*reversed(path.parents), path):
        if not inside(part.resolve(), folders) and inside(part.parent.resolve(), folders):
            return part
    return path
