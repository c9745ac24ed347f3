"""Rules for text that people give and others read: names shown beside each other (usernames,
category names) and the inputs an error message names.

A name is read, not parsed: two names that look the same must be the same name, so a name holds
only printable characters, never a control, format (zero-width, bidi), surrogate, private-use,
separator-line or unassigned character (a noncharacter such as U+FFFF among them), and names that
must differ are compared as they look (:func:`look_alike_key`: 'ＡＤＭＩＮ', Cyrillic 'аdmin' and
'admin' are one name). An error
message names a caller's input so that they see which one is wrong, never the whole of a large
one: :func:`shown_input` gives a short prefix and the length.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from slidelabel.errors import ParameterError

#: Unicode general categories a name may not hold: control (Cc), format (Cf: zero-width and bidi
#: marks), surrogate (Cs), private use (Co), line and paragraph separators (Zl, Zp) and unassigned
#: (Cn, which holds the noncharacters U+FFFE, U+FFFF, U+FDD0...).
UNSHOWN = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp", "Cn"})
#: Characters of other categories that show nothing: the combining grapheme joiner, the Hangul
#: and Khmer fillers that Unicode marks ignorable, and the blank Braille pattern (a name of them
#: looked empty, seventeenth attack).
INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")
#: The controls a longer text (a description) may hold: line ends and tabs.
TEXT_CONTROLS = "\n\r\t"
#: Characters of an input an error message shows (then "..." and the input's length).
SHOWN_CHARS = 40


def unshown_character(text: str, *, allowed: str = "") -> str | None:
    """The first character of ``text`` that a name may not hold (see :data:`UNSHOWN` and
    :data:`INVISIBLE`) and is not one of ``allowed``, or None.

    >>> unshown_character("alice\\u200b")
    '\\u200b'
    >>> unshown_character("Tumour (grade 2)") is None
    True
    """
    return next((c for c in text if (c in INVISIBLE or unicodedata.category(c) in UNSHOWN) and c not in allowed),
                None)


def check_printable_text(text: str, *, what: str) -> str:
    """``text`` (a description: lines of printable text); :class:`ParameterError` naming ``what``
    when it holds a character of :data:`UNSHOWN` other than a line end or a tab (a bidi override
    would turn what others read around, an escape sequence drive their terminal)."""
    bad = unshown_character(text, allowed=TEXT_CONTROLS)
    if bad is not None:
        raise ParameterError(f"{what} holds U+{ord(bad):04X}, a control, invisible or unassigned character; "
                             "write printable text (line ends and tabs are fine)")
    return text


def check_printable_name(name: str, *, what: str, max_chars: int) -> str:
    """``name`` stripped; :class:`ParameterError` naming ``what`` ("category name", "username")
    unless it has 1 to ``max_chars`` characters, all printable (none of :data:`UNSHOWN`)."""
    name = name.strip()
    if not name:
        raise ParameterError(f"empty {what}: it needs a name of 1 to {max_chars} printable characters")
    bad = unshown_character(name)
    if bad is not None:
        raise ParameterError(f"{what} {shown_input(name)} holds U+{ord(bad):04X}, a control, invisible or unassigned "
                             "character; names are printable text")
    if len(name) > max_chars:
        raise ParameterError(f"{what} {shown_input(name, limit=20)} has {len(name):,} characters; names have at "
                             f"most {max_chars} characters")
    return name


def shown_input(value: object, *, limit: int = SHOWN_CHARS) -> str:
    """``value`` as an error message names it: its ``repr`` when short, else the ``repr`` of its
    first ``limit`` characters, "..." and its length, so that an answer never echoes a large input.
    ``repr`` escapes what JSON could not carry (a lone surrogate) and shows invisible characters.

    >>> shown_input("resnet")
    "'resnet'"
    >>> shown_input("x" * 3_000_000, limit=5)
    "'xxxxx'... (3,000,000 characters)"
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


#: Letters drawn like Latin ones, as the Latin letter they are compared as (the common confusables
#: of Unicode's UTS #39, case folded: names are compared case-folded, and a capital such as Cyrillic
#: 'В' folds to 'в', Cherokee's small letters to its capitals): Cyrillic, Greek, Armenian, Coptic,
#: Cherokee and Lisu letters, Latin small capitals, alpha and dotless i (the twenty-fourth attack
#: found 'ɑlice', 'alıce', 'bօb', 'bⲟb', 'ᴀlice' and Lisu 'ꓡ' accepted beside the names they copy).
_LATIN_LOOKALIKES = str.maketrans(
    "авекмнорстухіјѕһԁԛԝӏүɡ" "αβεηικνορτυχζμϲ" "օսոցհ" "ⲟⲣⲥⲁ" "ᎪᏴᏟᎠᎬᏀᎻᏆᎫᏦᏞᎷᏑᏢᏒᏚᎢᏙᏔᏃ"
    "ꓮꓐꓚꓓꓰꓝꓖꓧꓲꓙꓗꓡꓟꓠꓳꓑꓣꓢꓔꓴꓦꓪꓫꓬꓜ" "ᴀʙᴄᴅᴇɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ" "ɑıȷɩǀƅьϳ" "‐‑‒–—−",
    "abekmhopctyxijshdqwlyg" "abehiknoptuxzmc" "ounqh" "opca" "abcdeghijklmnprstvwz"
    "abcdefghijklmnoprstuvwxyz" "abcdeghijklmnoprstuvwyz" "aijilbbj" "------",
)
#: Variation selectors (U+FE00-FE0F, U+E0100-E01EF): they change nothing of a letter's look.
_VARIATION_SELECTORS = dict.fromkeys([*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)])


def look_alike_key(name: str) -> str:
    """What ``name`` is compared as when names must not look the same: compatibility forms read as
    their letters (fullwidth, mathematical bold, ligatures: NFKC), case folded, variation
    selectors dropped, letters of other scripts drawn like Latin ones read as those and runs of
    white space as one space.

    >>> look_alike_key("ＡＤＭＩＮ") == look_alike_key("\\U0001d41a\\U0001d41d\\U0001d426\\U0001d422\\U0001d427")
    True
    >>> look_alike_key("\\u0430dmin\\ufe0f")
    'admin'
    """
    folded = unicodedata.normalize("NFKC", name).casefold().translate(_VARIATION_SELECTORS)
    # Decomposed, so that a letter with a mark is mapped too (NFKC composes Cyrillic 'ё', 'ї').
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", folded)).translate(_LATIN_LOOKALIKES)
    return " ".join(unicodedata.normalize("NFC", decomposed).split())


def look_alike(name: str, others: Iterable[str]) -> str | None:
    """The first of ``others`` that looks like ``name`` (the same :func:`look_alike_key`), or None."""
    key = look_alike_key(name)
    return next((other for other in others if look_alike_key(other) == key), None)
