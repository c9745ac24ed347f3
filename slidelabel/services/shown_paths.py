"""What a viewer who is not the admin reads of the server's paths: the last name only.

Job messages and logs, job parameters and some errors name files of the server (a slide file's
folder, the data folder); :func:`names_only` and :func:`shown_params` give others the names
without the folders.
"""

from __future__ import annotations

import re
from pathlib import PurePath

#: A ``file://`` URI's scheme (in any case) and host, which go with the path that follows.
_FILE_URI = r"(?i:file)://[^/\s'\"]*"
#: A separator of a path's parts: '/', or '\' of a Windows path (doubled where the text is a repr).
_SEPARATOR = r"[\\/]+"
#: A line end inside a folder name: taken as one where the next line goes on to a separator with
#: no space first (a line of prose, or the next log line after its time, has one).
_LINE_END_IN_FOLDER = r"[\n\r]+(?=[^\s\\/]*[\\/])"
#: A folder of an absolute path: any characters but separators and line ends (spaces, quotes and
#: commas included: a folder may be "Patient Smith, 2024"), but not ": " or "; ", which end a path in
#: "PATH: error" messages, and not ending in a space, ',', ':', ';' or "..." (a following '/' then
#: begins another path, or is prose such as "POST .../slides/{s}").
_FOLDER = rf"(?:[^\\/\n\r:;]|[:;](?![\s]|$)|{_LINE_END_IN_FOLDER})+(?<![\s,:;])(?<!\.\.\.){_SEPARATOR}"
#: The root of a POSIX path: '/', escaped as JSON may escape it ('\/srv\/lab'), or doubled
#: ('//srv', which POSIX reads as '/srv') where no ':' comes before (a URL: 'https://host/a').
_ROOT = r"(?:(?<!:)/{2,}|\\?/)"
#: A path's last part as written unquoted: it stops at a space, quote, bracket or punctuation.
_LAST_PART = r"[^\s\\/'\":,;()]*"
#: Where a path starts that needs no folder to be one: a home folder ("~/", "~user/"), a Windows
#: drive ("C:\", "c:/") or share ("\\server").
_OTHER_ROOT = rf"~(?:[A-Za-z_][\w.-]*)?/|[A-Za-z]:{_SEPARATOR}|\\\\+"
#: An absolute path (or file URI) in quotes, closed by the line's last quote of its kind that a
#: word does not follow: a folder may hold that quote ('/srv/a"/b.svs'), so any earlier one may
#: be inside the path (a name lost, never a folder shown).
_QUOTED_PATH = re.compile(rf"""(['"])((?:(?:{_FILE_URI})?{_ROOT}|{_OTHER_ROOT})[^\n\r]*)\1(?!\w)""")
#: An absolute path (or file URI) not in quotes: a root that no word, '.', '~', '-' or separator
#: comes right before (so not "and/or", ".../slides" or a URL's host), its folders (one at least
#: after a bare '/'), its last part.
_ABSOLUTE_PATH = re.compile(rf"(?<![\w.~/\\-])(?:(?:{_FILE_URI})?{_ROOT}{_FOLDER}|{_OTHER_ROOT})(?:{_FOLDER})*{_LAST_PART}")


def names_only(text: str) -> str:
    """``text`` with each absolute path (or ``file://`` URI in any case, home-relative ``~/`` or
    ``~user/`` path, Windows drive or share path) replaced by its last part, the name of a file or
    folder: a viewer learns no folder of the server. A folder may hold spaces, quotes, commas and
    line ends; where a path's end is unsure, more is taken as path (a name lost, never a folder
    shown).

    >>> names_only("/srv/lab/slides/t.svs: no pixel size; see POST .../slides/{s}/sources")
    't.svs: no pixel size; see POST .../slides/{s}/sources'
    >>> names_only("cannot read '/srv/lab/slides/t.svs'")
    "cannot read 't.svs'"
    >>> names_only("/srv/A/Patient Smith 2024/biopsy.svs: no such file")
    'biopsy.svs: no such file'
    >>> names_only("/srv/x.svs,/srv/y.svs and file:///srv/z%20w/u.svs")
    'x.svs,y.svs and u.svs'
    >>> names_only('cannot read "/srv/a"/b.svs"; FILE:///srv/c.svs; ~ann/d.svs')
    'cannot read "b.svs"; c.svs; d.svs'
    >>> names_only(r"C:\\slides\\e.svs and \\\\server\\share\\f.svs: no such file")
    'e.svs and f.svs: no such file'
    """
    text = _QUOTED_PATH.sub(lambda match: match.group(1) + _name(match.group(2)) + match.group(1), text)
    return _ABSOLUTE_PATH.sub(lambda match: _name(match.group()), text)


def _name(path: str) -> str:
    """The last part of an absolute path or file URI; the path itself where it has none ("/")."""
    return re.split(_SEPARATOR, re.sub(rf"^{_FILE_URI}", "", path).rstrip("\\/"))[-1] or path


def shown_params(params: object, *, admin: bool) -> object:
    """A job's parameters as ``admin`` or another viewer may see them: for others every absolute
    path is its file or folder name (an upload kept in the data folder, a server folder)."""
    if admin:
        return params
    if isinstance(params, dict):
        return {key: shown_params(value, admin=False) for key, value in params.items()}
    if isinstance(params, list):
        return [shown_params(value, admin=False) for value in params]
    return PurePath(params).name if isinstance(params, str) and PurePath(params).is_absolute() else params
