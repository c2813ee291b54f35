"""Encoding of IMAP response values (RFC 3501 §4, §7, §9) and of whole response lines.

Strings go out quoted when that is possible and as literals otherwise; with UTF8=ACCEPT on
(RFC 6855 §3) quoted strings may carry UTF-8. Nested values (ENVELOPE, BODYSTRUCTURE, ID) are
built from Python values by `value()`: None is NIL, int a number, str/bytes a string, `Atom`
verbatim, a list or tuple a parenthesised list.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CRLF = b"\r\n"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UNQUOTABLE = re.compile(rb"[\r\n\x00]")
# RFC 3501 §9 ASTRING-CHAR: ATOM-CHAR or "]".
_ASTRING_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\]+")
MAX_QUOTED = 1024  # longer strings go out as literals, which clients read faster


@dataclass(frozen=True, slots=True)
class Atom:
    """Emitted verbatim: flags, keywords, numbers-as-text, already encoded fragments."""

    text: str


Value = None | int | str | bytes | Atom | Sequence["Value"]


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def literal(data: bytes, *, binary: bool = False) -> bytes:
    """RFC 3501 §4.3 literal, or RFC 3516 §4.2 literal8 ("~{n}") for binary content."""
    return b"%s{%d}\r\n%s" % (b"~" if binary else b"", len(data), data)


def string(data: str | bytes, *, utf8: bool = False) -> bytes:
    """A quoted string when possible, else a literal."""
    raw = _as_bytes(data)
    # RFC 3501 §9: QUOTED-CHAR is a TEXT-CHAR: no CR, LF or NUL, and 7-bit unless UTF8=ACCEPT.
    if len(raw) <= MAX_QUOTED and not _UNQUOTABLE.search(raw):
        if raw.isascii():
            return _quote(raw)
        if utf8:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return literal(raw)
            return _quote(raw)
    return literal(raw)


def _quote(raw: bytes) -> bytes:
    # RFC 3501 §9: quoted-specials (DQUOTE and "\") are escaped with "\".
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def nstring(data: str | bytes | None, *, utf8: bool = False) -> bytes:
    """NIL for None, else `string()`."""
    return b"NIL" if data is None else string(data, utf8=utf8)


def astring(data: str | bytes, *, utf8: bool = False) -> bytes:
    """An atom when the text allows it (never NIL, which would read as nil), else `string()`."""
    raw = _as_bytes(data)
    if _ASTRING_ATOM.fullmatch(raw) is not None and raw.upper() != b"NIL":
        return raw
    return string(raw, utf8=utf8)


def flag_list(flags: Iterable[str]) -> bytes:
    """RFC 3501 §9 flag-list: "(\\Seen $Label)"."""
    return b"(" + " ".join(flags).encode("ascii") + b")"


def internal_date(when: dt.datetime) -> bytes:
    """RFC 3501 §9 date-time, quoted: "17-Jul-1996 02:44:25 -0700" (day padded with a space)."""
    if when.tzinfo is None:
        raise ValueError("INTERNALDATE needs an aware datetime")
    offset = when.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    text = (
        f'"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} '
        f'{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{hours:02d}{mins:02d}"'
    )
    return text.encode("ascii")


def sequence_set(values: Iterable[int]) -> str:
    """Compact numbers into a sequence set: [1, 2, 3, 7] -> "1:3,7" ("" for none)."""
    return ordered_sequence_set(sorted(set(values)))


def ordered_sequence_set(numbers: Sequence[int]) -> str:
    """A sequence set that keeps the given order (RFC 5267 ESORT): only ascending runs of
    consecutive numbers become ranges."""
    spans: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        spans.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(spans)


def value(item: Value, *, utf8: bool = False) -> bytes:
    """Encode a nested response value (see the module docstring)."""
    if item is None:
        return b"NIL"
    if isinstance(item, bool):
        raise TypeError("booleans have no IMAP encoding")
    if isinstance(item, int):
        return str(item).encode("ascii")
    if isinstance(item, Atom):
        return item.text.encode("utf-8")
    if isinstance(item, str | bytes):
        return string(item, utf8=utf8)
    return b"(" + b" ".join(value(sub, utf8=utf8) for sub in item) + b")"


def _text(text: str) -> bytes:
    # RFC 3501 §9 resp-text: text is TEXT-CHARs, so a line break can never end a response early.
    return re.sub(r"[\r\n\x00]", " ", text).encode("utf-8")


def _code(code: str | None) -> bytes:
    return b"" if code is None else b"[" + _text(code) + b"] "


def untagged(*parts: bytes | str) -> bytes:
    """ "* " + parts joined by SP + CRLF; str parts are encoded as UTF-8 verbatim."""
    return b"* " + b" ".join(_as_bytes(p) for p in parts) + CRLF


def untagged_status(status: str, text: str, code: str | None = None) -> bytes:
    """ "* OK [CODE] text" (also NO, BAD, BYE, PREAUTH)."""
    return b"* " + status.encode("ascii") + b" " + _code(code) + _text(text) + CRLF


def tagged(tag: str, status: str, text: str, code: str | None = None) -> bytes:
    """The completion: "TAG OK [CODE] text"."""
    return (
        tag.encode("ascii")
        + b" "
        + status.encode("ascii")
        + b" "
        + _code(code)
        + _text(text)
        + CRLF
    )


def continuation(text: str = "") -> bytes:
    """RFC 3501 §7.5 continuation request: "+ text"."""
    return b"+ " + _text(text) + CRLF
