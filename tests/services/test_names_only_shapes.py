"""What a viewer reads of server paths in job messages: the last name only, whatever the path's
shape (a security review found these shown whole or with a folder). A name lost is acceptable, a
folder shown is not."""

from __future__ import annotations

import pytest

from slidelabel.services.shown_paths import names_only


@pytest.mark.parametrize("text, shown", [
    # A folder holding a double quote, a quote that a word does not follow.
    ('/srv/a"b/c.svs: no such file', "c.svs: no such file"),
    ('cannot read "/srv/a"/c.svs" now', 'cannot read "c.svs" now'),
    ('cannot read "/srv/a", b/c.svs"', 'cannot read "c.svs"'),
    ('cannot read "/srv/a" b/c.svs".', 'cannot read "c.svs".'),
    # A folder holding a line end.
    ("/srv/a\nb/c.svs: no such file", "c.svs: no such file"),
    ("cannot read '/srv/a\r\nb/c.svs'", "cannot read 'c.svs'"),
    # A file URI in any case.
    ("FILE:///srv/x.svs: no such file", "x.svs: no such file"),
    ("cannot read 'File://host/srv/x.svs'", "cannot read 'x.svs'"),
    # Home folders.
    ("~/slides/x.svs: no such file", "x.svs: no such file"),
    ("~user/x.svs: no such file", "x.svs: no such file"),
    ("cannot read '~/slides/Patient B/x.svs'", "cannot read 'x.svs'"),
    # Windows paths, also as a repr writes them (backslashes doubled).
    ("C:\\slides\\x.svs: no such file", "x.svs: no such file"),
    ("c:/slides/x.svs: no such file", "x.svs: no such file"),
    ("\\\\server\\share\\x.svs: no such file", "x.svs: no such file"),
    ("cannot read 'C:\\\\slides\\\\Patient B\\\\x.svs'", "cannot read 'x.svs'"),
    ("[Errno 2] No such file or directory: '\\\\\\\\server\\\\share\\\\x.svs'",
     "[Errno 2] No such file or directory: 'x.svs'"),
    # A doubled root (POSIX reads '//srv' as '/srv'), and a path as JSON may escape it.
    ("//srv/slides/x.svs: no such file", "x.svs: no such file"),
    ("cannot read ///srv/slides/x.svs", "cannot read x.svs"),
    ('{"path": "\\/srv\\/slides\\/x.svs"}', '{"path": "x.svs"}'),
])
def test_a_viewer_reads_only_the_last_name(text, shown):
    assert names_only(text) == shown


@pytest.mark.parametrize("text", [
    "2026-12-06 00:00:01 read x.svs\n2026-12-06 00:00:02 wrote 3/4 tiles",
    "about ~5 s, ~3/4 done; and/or 1/2, http://host/a/b, see https://example.org/docs/x",
    "pattern \\d+/\\w+",
])
def test_prose_is_left_as_it_is(text):
    assert names_only(text) == text
