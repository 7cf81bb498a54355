"""Text people type, as the system accepts it: one rule for every field, at every edge.

Names, occupations and reasons reach the system through forms, spreadsheets and the command line.
What is stored must print on a certificate, sit in PostgreSQL and read the same to everyone:
- normalised to NFC, so 张 typed as one code point or composed from parts is one name;
- no NUL or other control characters (C0, DEL, C1), except tab and line breaks in a field that
  is multi-line (reasons, notes, explanations); PostgreSQL cannot even store a NUL in text;
- no Unicode bidirectional controls (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C),
  which make a name display as something other than its characters ("Trojan Source");
- no lone surrogates, which are not characters and cannot be encoded;
- no Unicode tag characters (U+E0000–U+E007F), invisible letters that smuggle text past a reader;
- not only invisible characters where text is expected: a value needs one letter, digit,
  punctuation or symbol that shows (zero-width spaces, the BOM, variation selectors, combining
  marks with no base, Hangul fillers and the blank braille cell do not).
Zero-width joiners, variation selectors and combining marks inside other text stay: some scripts
and emoji need them. U+2028 and U+2029 are line breaks like any other.
"""

from __future__ import annotations

import re
import unicodedata

MULTILINE_ALLOWED = frozenset("\t\n\r\u2028\u2029")
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
# Letters and symbols by category that nonetheless show nothing.
BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800")


# What a name may hold that draws nothing of its own: variation selectors (葛 U+E0100 asks for a variant of 葛 no font
# here has) and zero-width spaces, joiners and non-joiners, the word joiner and the byte-order mark.
INVISIBLE = "".join(chr(c) for c in [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0), 0x200B, 0x200C, 0x200D,
                                     0x2060, 0xFEFF])  # fmt: skip
_INVISIBLE = frozenset(INVISIBLE)
# The middle dots a name's parts are typed with (阿卜杜·热合曼): one and the same to a reader, not to a computer.
NAME_DOTS = "·・‧•"


def prints_nothing(ch: str) -> bool:
    """Printing and certificates' subjects leave such a character out (INVISIBLE); the base character stays."""
    return ch in _INVISIBLE


def name_key(value: str) -> str:
    """A name as a reader tells names apart: NFC, trimmed, what prints nothing left out (葛 U+E0100 亮 is 葛亮 on
    paper), every middle dot the same. What a score book's or a search's name is compared by."""
    kept = "".join(ch for ch in unicodedata.normalize("NFC", value).strip() if not prints_nothing(ch))
    return kept.translate({ord(d): "·" for d in NAME_DOTS})


# The JSON Schema mark of a field whose text may hold tabs and line breaks.
MULTILINE = {"x-multiline": True}


def _name(ch: str) -> str:
    return f"U+{ord(ch):04X}" + (f" ({unicodedata.name(ch)})" if unicodedata.name(ch, "") else "")


# Every character the loop in `problem` stops at (line breaks and tabs included), found by one search
# in C: most text holds none, and the loop, character by character in Python, cost the API about 70 µs
# per registration form (44 strings). Only text holding one is walked, to say which and where.
_STOPS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\U000e0000-\U000e007f"
                    + "".join(sorted(BIDI_CONTROLS)) + "]")  # fmt: skip


def problem(value: str, multiline: bool = False) -> str | None:
    """Why this text is refused, naming the character and where it is; None when it is acceptable."""
    if _STOPS.search(value) is None:
        return _invisible(value)
    for i, ch in enumerate(value, start=1):
        code = ord(ch)
        if ch in MULTILINE_ALLOWED:
            if not multiline:
                return f"contains a line break or tab ({_name(ch)}) at character {i}; this field is one line"
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            return f"contains the control character U+{code:04X} at character {i}"
        elif ch in BIDI_CONTROLS:
            return f"contains the bidirectional control {_name(ch)} at character {i}, which changes how text displays"
        elif 0xD800 <= code <= 0xDFFF:
            return f"contains a lone surrogate U+{code:04X} at character {i}, which is not a character"
        elif 0xE0000 <= code <= 0xE007F:
            return f"contains the invisible tag character U+{code:04X} at character {i}"
    return _invisible(value)


def _invisible(value: str) -> str | None:
    if value and not any(_shows(ch) for ch in value):
        return "holds only invisible characters"
    return None


def _shows(ch: str) -> bool:
    # Unassigned (to this Python's Unicode) counts as showing: a newer CJK extension may be a name.
    return (
        unicodedata.category(ch)[0] in "LNPSC"
        and unicodedata.category(ch) not in ("Cc", "Cf", "Cs")
        and ch not in BLANK
    )


# Punctuation found in people's names: the middle dots of names like 买买提·艾力 (as typed: U+00B7, U+30FB, U+2022,
# U+2027), the hyphen, apostrophe and full stop of foreign ones.
NAME_PUNCTUATION = frozenset("·・•‧-‐'’.．")


def name_problem(value: str) -> str | None:
    """Why this is no person's name, naming the character; None when it may be one. Symbols (emoji among them) and
    punctuation other than a name's are refused: no ID card carries them, and no certificate could print them.
    Letters of any script are accepted, unassigned ones too (a newer CJK extension may hold a name's character)."""
    for i, ch in enumerate(value, start=1):
        kind = unicodedata.category(ch)
        if kind[0] == "S" or (kind[0] == "P" and ch not in NAME_PUNCTUATION):
            return f"contains {_name(ch)} at character {i}, which is no part of a person's name"
        # Format characters (zero-width spaces and joiners, the soft hyphen, a byte-order mark), the combining
        # grapheme joiner and the letters that show nothing (Hangul fillers, BLANK) print nothing: 王 U+200B 芳 was
        # stored and listed as a name that differs invisibly from 王芳 (an outside review). Variation selectors stay:
        # 葛 U+E0100 asks for a variant of 葛 that an ID card may print.
        if kind == "Cf" or ch == "\u034f" or ch in BLANK:
            return f"contains {_name(ch)} at character {i}, which prints nothing: type the name without it"
    return None


def trim(value: str) -> str:
    """Spaces at either end left out, and the zero-width spaces and byte-order marks a paste from a spreadsheet or a
    web page leaves there (张三 U+FEFF was stored as a name that differed invisibly from 张三)."""
    while (trimmed := value.strip().strip("\u200b\u2060\ufeff")) != value:
        value = trimmed
    return value


def normalise(value: str) -> str:
    return unicodedata.normalize("NFC", value)


def accept(value: str, multiline: bool = False) -> str:
    """The text NFC-normalised, or ValueError saying what is wrong with it."""
    if (why := problem(value, multiline)) is not None:
        raise ValueError(why)
    return normalise(value)


def id_number(value: str) -> str:
    """An ID number as it is keyed and compared: full-width characters as their ASCII forms (NFKC: an input method's
    ４４０３… is 4403…), no spaces anywhere, upper case. Without it the same person's number typed two ways was two
    people: registered twice in a plan, and a disqualification's integrity record missed."""
    return "".join(unicodedata.normalize("NFKC", value).split()).upper()
