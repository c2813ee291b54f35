"""Building blocks of the IMAP command grammar (RFC 3501 §9, RFC 9051 §9).

A `Cursor` walks a command line as the reader framed it (text segments and literal contents) and
offers the terminals: SP, atoms, numbers, quoted strings, literals, astrings, nstrings, flags,
dates, sequence sets. Every syntax error raises `CommandParseError`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from postroom.proto.imap.reader import LiteralData, Part, StreamedLiteral

MAX_NUMBER = 2**32 - 1  # RFC 3501 §9: number is an unsigned 32-bit integer
MAX_NUMBER64 = 2**63 - 1  # RFC 9051 §9 number64; RFC 7162 §7 mod-sequence-value


class CommandParseError(Exception):
    """A command the engine must refuse: "TAG BAD message" (or NO with a response code)."""

    def __init__(
        self,
        message: str,
        *,
        tag: str | None = None,
        status: Literal["BAD", "NO"] = "BAD",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.tag = tag  # None: the line had no parsable tag, answer "* BAD"
        self.status = status
        self.code = code  # response code without brackets, e.g. "BADCHARSET (US-ASCII UTF-8)"


# RFC 3501 §9: ATOM-CHAR is any CHAR except atom-specials (CTL, SP, "(", ")", "{", "%", "*",
# DQUOTE, "\", "]"); ASTRING-CHAR adds "]"; list-char (LIST patterns) adds "%", "*" and "]".
_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\\]]+")
_ASTRING_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\]+")
_LIST_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){\"\\]+")
_TAG = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+")
_DIGITS = re.compile(rb"[0-9]+")
# RFC 3501 §9 QUOTED-CHAR: any TEXT-CHAR except quoted-specials, or "\" quoted-specials.
_QUOTED_BODY = re.compile(rb'(?:[^"\\\r\n\x00]|\\["\\])*')
_QUOTED_PAIR = re.compile(rb"\\(.)")  # RFC 3501 §9: a quoted-special escaped by "\\"

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# RFC 3501 §9 date-text: date-day "-" date-month "-" date-year.
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
# RFC 3501 §9 date-time: DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
_DATE_TIME = re.compile(
    rb'"([ 0-9]?[0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{4})"'
)

SYSTEM_FLAGS = {
    f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """RFC 3501 §9 sequence-set with "*" kept symbolic (None), or RFC 5182 "$" (`saved`)."""

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def resolve(self, largest: int) -> tuple[tuple[int, int], ...]:
        """Ascending, merged, inclusive ranges with "*" read as `largest` (the message count,
        or the highest UID); ranges wholly below 1 are dropped. RFC 3501 §6.4.8: "n:*" always
        includes `largest`, even when n is above it.
        """
        if self.saved:
            raise ValueError("the saved search result ($) must be substituted first")
        spans = []
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            a, b = min(a, b), max(a, b)
            if b >= 1:
                spans.append((max(a, 1), b))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return tuple(merged)

    def contains(self, value: int, largest: int) -> bool:
        """Whether `value` lies in the set, "*" read as `largest`."""
        return any(a <= value <= b for a, b in self.resolve(largest))

    def values(self, largest: int) -> Iterator[int]:
        """Every value in the set, ascending (beware of huge UID ranges: prefer `resolve`)."""
        for a, b in self.resolve(largest):
            yield from range(a, b + 1)

    def __str__(self) -> str:
        if self.saved:
            return "$"

        def one(n: int | None) -> str:
            return "*" if n is None else str(n)

        return ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in self.ranges)


class Cursor:
    """Position in a framed command line; terminals consume input or raise."""

    def __init__(self, parts: tuple[Part, ...], *, utf8: bool = False) -> None:
        if not parts or not isinstance(parts[0], bytes):
            raise CommandParseError("empty command")
        self.parts = parts
        self.utf8 = utf8  # RFC 6855 §3: UTF8=ACCEPT enabled, UTF-8 allowed in quoted strings
        self.index = 0
        self.text: bytes = parts[0]
        self.pos = 0
        self.depth = 0  # nesting of parenthesised search keys

    # -- position ---------------------------------------------------------------------------

    def peek(self) -> int | None:
        """The next byte of the current text segment, None at its end."""
        return self.text[self.pos] if self.pos < len(self.text) else None

    def at_end(self) -> bool:
        return self.pos >= len(self.text) and self.index == len(self.parts) - 1

    def at_literal(self) -> bool:
        return self.pos >= len(self.text) and self.index < len(self.parts) - 1

    def startswith(self, prefix: bytes) -> bool:
        return self.text.startswith(prefix, self.pos)

    def error(self, message: str) -> CommandParseError:
        return CommandParseError(message)

    def expect(self, token: bytes, what: str | None = None) -> None:
        if not self.text.startswith(token, self.pos):
            raise self.error(f"expected {what or repr(token.decode())}")
        self.pos += len(token)

    def maybe(self, token: bytes) -> bool:
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def sp(self) -> None:
        # RFC 3501 §9: arguments are separated by exactly one SP.
        self.expect(b" ", "a space")

    def end(self) -> None:
        if not self.at_end():
            raise self.error("unexpected extra arguments")

    def _match(self, pattern: re.Pattern[bytes]) -> bytes | None:
        match = pattern.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match[0]

    # -- atoms and numbers ------------------------------------------------------------------

    def atom(self, what: str = "an atom") -> str:
        value = self._match(_ATOM)
        if value is None:
            raise self.error(f"expected {what}")
        return value.decode("ascii")

    def keyword(self, what: str = "a keyword") -> str:
        return self.atom(what).upper()

    def tag(self) -> str:
        value = self._match(_TAG)
        if value is None:
            raise self.error("missing or invalid tag")
        return value.decode("ascii")

    def number(self, *, limit: int = MAX_NUMBER, nonzero: bool = False) -> int:
        digits = self._match(_DIGITS)
        if digits is None:
            raise self.error("expected a number")
        # RFC 3501 §9: number is 32-bit, RFC 7162 §7 mod-sequence values 63-bit; RFC 3501 §9
        # also allows leading zeros. The digits are counted before any conversion, so a run of
        # thousands of them is refused without converting it.
        significant = digits.lstrip(b"0") or b"0"
        value = int(significant) if len(significant) <= len(str(limit)) else None
        if value is None or value > limit or (nonzero and value == 0):
            shown = digits[:24].decode() + ("..." if len(digits) > 24 else "")
            raise self.error(f"number out of range: {shown}")
        return value

    # -- strings ----------------------------------------------------------------------------

    def _decode(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error("string is not valid UTF-8") from exc

    def quoted(self) -> bytes:
        self.expect(b'"', "a quoted string")
        body = self._match(_QUOTED_BODY) or b""
        if not self.maybe(b'"'):
            raise self.error("unterminated or invalid quoted string")
        value = _QUOTED_PAIR.sub(rb"\1", body) if b"\\" in body else body
        if not value.isascii():
            # RFC 3501 §9: quoted strings are 7-bit; RFC 6855 §3 allows UTF-8 once enabled.
            if not self.utf8:
                raise self.error("8-bit characters in a quoted string (use a literal)")
            self._decode(value)
        return value

    def literal(self, *, binary_ok: bool = False) -> LiteralData:
        if not self.at_literal():
            raise self.error("expected a literal")
        part = self.parts[self.index + 1]
        if isinstance(part, StreamedLiteral):
            raise self.error("literal too large here")
        assert isinstance(part, LiteralData)
        if part.binary and not binary_ok:
            # RFC 3516 §4.1: literal8 is only allowed for message data.
            raise self.error("literal8 not allowed here")
        if not part.binary and b"\x00" in part.data:
            # RFC 3501 §9: literal = "{" number "}" CRLF *CHAR8, and CHAR8 excludes NUL.
            raise self.error("NUL in a literal")
        self.advance_literal()
        return part

    def advance_literal(self) -> Part:
        part = self.parts[self.index + 1]
        self.index += 2
        text = self.parts[self.index]
        assert isinstance(text, bytes)
        self.text = text
        self.pos = 0
        return part

    def string_bytes(self) -> bytes:
        if self.peek() == ord('"'):
            return self.quoted()
        return self.literal().data

    def string(self) -> str:
        return self._decode(self.string_bytes())

    def astring_bytes(self) -> bytes:
        if self.peek() == ord('"') or self.at_literal():
            return self.string_bytes()
        value = self._match(_ASTRING_ATOM)
        if value is None:
            raise self.error("expected an atom or a string")
        return value

    def astring(self) -> str:
        return self._decode(self.astring_bytes())

    def is_nil(self) -> bool:
        if self.text[self.pos : self.pos + 3].upper() == b"NIL" and not _ATOM.match(
            self.text, self.pos + 3
        ):
            self.pos += 3
            return True
        return False

    def nstring(self) -> str | None:
        return None if self.is_nil() else self.string()

    def list_mailbox(self) -> str:
        # RFC 3501 §9: list-mailbox = 1*list-char / string
        if self.peek() == ord('"') or self.at_literal():
            return self.string()
        value = self._match(_LIST_ATOM)
        if value is None:
            raise self.error("expected a mailbox pattern")
        return value.decode("ascii")

    def mailbox(self) -> str:
        name = self.astring()
        # RFC 3501 §5.1: the name INBOX is case-insensitive.
        return "INBOX" if name.upper() == "INBOX" else name

    # -- flags, dates, sets -----------------------------------------------------------------

    def flag(self) -> str:
        # RFC 3501 §9: flag = system flag / flag-keyword (atom) / flag-extension ("\" atom).
        if self.maybe(b"\\"):
            name = "\\" + self.atom("a flag name")
            return SYSTEM_FLAGS.get(name.lower(), name)
        return self.atom("a flag")

    def flag_list(self) -> tuple[str, ...]:
        self.expect(b"(", "a flag list")
        flags: list[str] = []
        if not self.maybe(b")"):
            flags.append(self.flag())
            while not self.maybe(b")"):
                self.sp()
                flags.append(self.flag())
        return tuple(flags)

    def date(self) -> dt.date:
        # RFC 3501 §9: date = date-text / DQUOTE date-text DQUOTE
        quoted = self.maybe(b'"')
        match = _DATE.match(self.text, self.pos)
        if match is None:
            raise self.error("expected a date like 1-Feb-1994")
        self.pos = match.end()
        if quoted:
            self.expect(b'"', "a closing quote")
        month = match[2].upper().decode("ascii")
        if month not in _MONTHS:
            raise self.error("invalid month in date")
        try:
            return dt.date(int(match[3]), _MONTHS.index(month) + 1, int(match[1]))
        except ValueError as exc:
            raise self.error("invalid date") from exc

    def date_time(self) -> dt.datetime:
        match = _DATE_TIME.match(self.text, self.pos)
        if match is None:
            raise self.error('expected a date-time like "17-Jul-1996 02:44:25 -0700"')
        self.pos = match.end()
        day, mon, year, hh, mm, ss, sign, zone = (g.decode("ascii") for g in match.groups())
        if mon.upper() not in _MONTHS:
            raise self.error("invalid month in date-time")
        offset = dt.timedelta(hours=int(zone[:2]), minutes=int(zone[2:]))
        if offset >= dt.timedelta(hours=24) or int(zone[2:]) >= 60:
            raise self.error("invalid time zone in date-time")
        try:
            return dt.datetime(
                int(year),
                _MONTHS.index(mon.upper()) + 1,
                int(day),
                int(hh),
                int(mm),
                int(ss),
                tzinfo=dt.timezone(-offset if sign == "-" else offset),
            )
        except ValueError as exc:
            raise self.error("invalid date-time") from exc

    def _seq_number(self) -> int | None:
        if self.maybe(b"*"):
            return None
        return self.number(nonzero=True)

    def is_sequence_set(self) -> bool:
        byte = self.peek()
        return byte is not None and (byte in b"*$" or 0x30 <= byte <= 0x39)

    def sequence_set(self) -> SequenceSet:
        # RFC 5182 §2.1: "$" is the result of the last SEARCH ... RETURN (SAVE).
        if self.maybe(b"$"):
            return SequenceSet(saved=True)
        ranges: list[tuple[int | None, int | None]] = []
        while True:
            lo = self._seq_number()
            hi = self._seq_number() if self.maybe(b":") else lo
            ranges.append((lo, hi))
            if not self.maybe(b","):
                return SequenceSet(tuple(ranges))
