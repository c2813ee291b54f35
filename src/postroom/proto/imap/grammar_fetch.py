"""FETCH data items (RFC 3501 §6.4.5, RFC 3516 §4.2 BINARY, RFC 7162 §3.1.4 MODSEQ) and
modifiers (RFC 7162 CHANGEDSINCE and VANISHED).

Macros are expanded (RFC 3501 §6.4.5: ALL, FAST, FULL); each item knows the name it carries in
the FETCH response (`response_name`), e.g. `BODY[HEADER.FIELDS (From)]<0>` for BODY.PEEK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from postroom.proto.imap.grammar_base import MAX_NUMBER64, Cursor

SimpleAttr = Literal[
    "ENVELOPE",
    "FLAGS",
    "INTERNALDATE",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.SIZE",
    "RFC822.TEXT",
    "BODY",
    "BODYSTRUCTURE",
    "UID",
    "MODSEQ",
]
SectionText = Literal["HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"]


@dataclass(frozen=True, slots=True)
class FetchAttr:
    """A data item without a section: ENVELOPE, FLAGS, UID, RFC822.SIZE, BODY, ..."""

    name: SimpleAttr

    @property
    def response_name(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Section:
    """RFC 3501 §6.4.5 section: a part path (1.2.3) and/or HEADER, HEADER.FIELDS[.NOT] (fields),
    TEXT, MIME. Empty part and no text is the whole message."""

    part: tuple[int, ...] = ()
    text: SectionText | None = None
    fields: tuple[str, ...] = ()  # as the client wrote them (echoed in the response)

    def __str__(self) -> str:
        pieces = [".".join(map(str, self.part))] if self.part else []
        if self.text is not None:
            pieces.append(self.text)
        spec = ".".join(pieces)
        if self.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True, slots=True)
class FetchBody:
    """BODY[section]<origin.count> or BODY.PEEK[...] (PEEK leaves \\Seen alone)."""

    section: Section
    peek: bool = False
    partial: tuple[int, int] | None = None  # (origin, count)

    @property
    def response_name(self) -> str:
        # RFC 3501 §7.4.2: only the origin octet is returned, and never ".PEEK".
        origin = f"<{self.partial[0]}>" if self.partial else ""
        return f"BODY[{self.section}]{origin}"


@dataclass(frozen=True, slots=True)
class FetchBinary:
    """RFC 3516 §4.2: BINARY[part]<origin.count>, content transfer decoding undone."""

    part: tuple[int, ...] = ()
    peek: bool = False
    partial: tuple[int, int] | None = None

    @property
    def response_name(self) -> str:
        origin = f"<{self.partial[0]}>" if self.partial else ""
        return f"BINARY[{'.'.join(map(str, self.part))}]{origin}"


@dataclass(frozen=True, slots=True)
class FetchBinarySize:
    """RFC 3516 §4.2: BINARY.SIZE[part], the decoded size."""

    part: tuple[int, ...] = ()

    @property
    def response_name(self) -> str:
        return f"BINARY.SIZE[{'.'.join(map(str, self.part))}]"


FetchItem = FetchAttr | FetchBody | FetchBinary | FetchBinarySize

_SIMPLE: dict[str, SimpleAttr] = {
    name: name
    for name in (
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
    )
}
_FAST: tuple[FetchItem, ...] = (
    FetchAttr("FLAGS"),
    FetchAttr("INTERNALDATE"),
    FetchAttr("RFC822.SIZE"),
)
# RFC 3501 §6.4.5: the macros.
MACROS: dict[str, tuple[FetchItem, ...]] = {
    "FAST": _FAST,
    "ALL": (*_FAST, FetchAttr("ENVELOPE")),
    "FULL": (*_FAST, FetchAttr("ENVELOPE"), FetchAttr("BODY")),
}


def parse_fetch_items(cur: Cursor) -> tuple[FetchItem, ...]:
    """A macro, one item, or a parenthesised list of items."""
    if cur.maybe(b"("):
        items = [parse_fetch_item(cur)]
        while not cur.maybe(b")"):
            cur.sp()
            items.append(parse_fetch_item(cur))
        return tuple(items)
    start = cur.pos
    name = _item_name(cur)
    if name in MACROS and cur.peek() != ord("["):
        return MACROS[name]
    cur.pos = start
    return (parse_fetch_item(cur),)


def _item_name(cur: Cursor) -> str:
    # Item and section names are ASCII atoms ("BODY.PEEK", "HEADER.FIELDS", "RFC822.SIZE").
    match = _ITEM_NAME.match(cur.text, cur.pos)
    if match is None:
        raise cur.error("expected a FETCH data item")
    cur.pos = match.end()
    return match[0].decode("ascii").upper()


_ITEM_NAME = re.compile(rb"[A-Za-z0-9.]+")


def parse_fetch_item(cur: Cursor) -> FetchItem:
    name = _item_name(cur)
    if cur.peek() != ord("["):
        simple = _SIMPLE.get(name)
        if simple is None:
            raise cur.error(f"unknown FETCH data item {name}")
        return FetchAttr(simple)
    if name in ("BODY", "BODY.PEEK"):
        section = _section(cur)
        return FetchBody(section, peek=name == "BODY.PEEK", partial=_partial(cur))
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        cur.expect(b"[")
        part = _part_numbers(cur) if cur.peek() != ord("]") else ()
        cur.expect(b"]", "']' after the BINARY section")
        if name == "BINARY.SIZE":
            return FetchBinarySize(part)
        return FetchBinary(part, peek=name == "BINARY.PEEK", partial=_partial(cur))
    raise cur.error(f"unknown FETCH data item {name}[")


def _part_numbers(cur: Cursor) -> tuple[int, ...]:
    # RFC 3501 §9: section-part = nz-number *("." nz-number)
    numbers = [cur.number(nonzero=True)]
    while cur.startswith(b".") and cur.text[cur.pos + 1 : cur.pos + 2].isdigit():
        cur.pos += 1
        numbers.append(cur.number(nonzero=True))
    return tuple(numbers)


def _section(cur: Cursor) -> Section:
    cur.expect(b"[")
    if cur.maybe(b"]"):
        return Section()
    part: tuple[int, ...] = ()
    byte = cur.peek()
    if byte is not None and 0x30 <= byte <= 0x39:
        part = _part_numbers(cur)
        if cur.maybe(b"]"):
            return Section(part)
        cur.expect(b".", "'.' or ']' in the section")
    word = _item_name(cur)
    fields: tuple[str, ...] = ()
    text: SectionText
    if word == "HEADER":
        text = "HEADER"
    elif word == "TEXT":
        text = "TEXT"
    elif word == "MIME" and part:
        # RFC 3501 §9: section-text (with MIME) only follows a part number.
        text = "MIME"
    elif word in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        text = "HEADER.FIELDS" if word == "HEADER.FIELDS" else "HEADER.FIELDS.NOT"
        cur.sp()
        fields = _header_list(cur)
    else:
        raise cur.error(f"invalid section {word}")
    cur.expect(b"]", "']' after the section")
    return Section(part, text, fields)


def _header_list(cur: Cursor) -> tuple[str, ...]:
    # RFC 3501 §9: header-list = "(" header-fld-name *(SP header-fld-name) ")"
    cur.expect(b"(", "a header field list")
    names = [cur.astring()]
    while not cur.maybe(b")"):
        cur.sp()
        names.append(cur.astring())
    return tuple(names)


def _partial(cur: Cursor) -> tuple[int, int] | None:
    # RFC 3501 §9: "<" number "." nz-number ">" (RFC 9051: number64 / nz-number64)
    if not cur.maybe(b"<"):
        return None
    origin = cur.number(limit=MAX_NUMBER64)
    cur.expect(b".", "'.' in the partial range")
    count = cur.number(limit=MAX_NUMBER64, nonzero=True)
    cur.expect(b">", "'>' after the partial range")
    return origin, count
