"""SEARCH keys as a typed tree, and the RETURN options of ESEARCH/ESORT.

RFC 3501 §6.4.4 keys, RFC 7162 §3.1.5 MODSEQ, RFC 5182 "$", RFC 4731 §3.1 / RFC 5267 §3 RETURN
(MIN MAX ALL COUNT SAVE) and RFC 9394 §3.1 PARTIAL. Shorthands are expanded where RFC 3501 defines
them by other keys: NEW is RECENT UNSEEN, OLD is NOT RECENT, FROM/TO/CC/BCC/SUBJECT are header
searches. A list of keys is an `AndKey`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from postroom.proto.imap.grammar_base import (
    MAX_NUMBER64,
    CommandParseError,
    Cursor,
    SequenceSet,
)

# RFC 3501 §6.4.4 / RFC 6855 §3: the charsets this server searches in.
CHARSETS = ("US-ASCII", "UTF-8")
MAX_DEPTH = 64  # nesting of NOT/OR/parentheses: bounds recursion on hostile input


@dataclass(frozen=True, slots=True)
class AllKey:
    """ALL: every message."""


@dataclass(frozen=True, slots=True)
class FlagKey:
    """A flag (system flag like "\\Seen" or a keyword) that must be set (or unset)."""

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class HeaderKey:
    """Substring of a header field's value; an empty value matches any message with the field."""

    field: str  # upper-case field name: "FROM", "SUBJECT", "X-EXTRA", ...
    value: str


@dataclass(frozen=True, slots=True)
class TextKey:
    """BODY (the body only) or TEXT (header and body) contains the string."""

    where: Literal["BODY", "TEXT"]
    value: str


@dataclass(frozen=True, slots=True)
class DateKey:
    """BEFORE/ON/SINCE (internal date) or SENTBEFORE/SENTON/SENTSINCE (Date: header)."""

    field: Literal["INTERNALDATE", "SENT"]
    relation: Literal["BEFORE", "ON", "SINCE"]
    date: dt.date


@dataclass(frozen=True, slots=True)
class SizeKey:
    """LARGER (size > n) or SMALLER (size < n), RFC822.SIZE."""

    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class SequenceKey:
    """A sequence set of message numbers, or of UIDs after the UID key."""

    sequence: SequenceSet
    uid: bool


@dataclass(frozen=True, slots=True)
class ModSeqKey:
    """RFC 7162 §3.1.5: MODSEQ [entry-name entry-type] mod-sequence-valzer (matches >=)."""

    modseq: int
    entry: str | None = None  # e.g. "/flags/\\seen"
    entry_type: str | None = None  # "PRIV", "SHARED" or "ALL"


@dataclass(frozen=True, slots=True)
class NotKey:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class OrKey:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class AndKey:
    keys: tuple[SearchKey, ...]


SearchKey = (
    AllKey
    | FlagKey
    | HeaderKey
    | TextKey
    | DateKey
    | SizeKey
    | SequenceKey
    | ModSeqKey
    | NotKey
    | OrKey
    | AndKey
)

ReturnOption = Literal["MIN", "MAX", "ALL", "COUNT", "SAVE"]


@dataclass(frozen=True, slots=True)
class SearchReturn:
    """RETURN options; an empty list means ALL (RFC 4731 §3.1)."""

    options: frozenset[ReturnOption]
    partial: tuple[int, int] | None = None  # RFC 9394: (first, last), negative from the end


_FLAG_KEYS: dict[str, FlagKey] = {
    "ANSWERED": FlagKey("\\Answered"),
    "DELETED": FlagKey("\\Deleted"),
    "DRAFT": FlagKey("\\Draft"),
    "FLAGGED": FlagKey("\\Flagged"),
    "RECENT": FlagKey("\\Recent"),
    "SEEN": FlagKey("\\Seen"),
    "UNANSWERED": FlagKey("\\Answered", False),
    "UNDELETED": FlagKey("\\Deleted", False),
    "UNDRAFT": FlagKey("\\Draft", False),
    "UNFLAGGED": FlagKey("\\Flagged", False),
    "UNSEEN": FlagKey("\\Seen", False),
}
_CONSTANT_KEYS: dict[str, SearchKey] = {
    **_FLAG_KEYS,
    "ALL": AllKey(),
    # RFC 3501 §6.4.4: NEW is "RECENT UNSEEN", OLD is "NOT RECENT".
    "NEW": AndKey((FlagKey("\\Recent"), FlagKey("\\Seen", False))),
    "OLD": FlagKey("\\Recent", False),
}
_HEADER_SHORTHANDS = frozenset({"BCC", "CC", "FROM", "SUBJECT", "TO"})
_DATE_KEYS: dict[str, tuple[Literal["INTERNALDATE", "SENT"], Literal["BEFORE", "ON", "SINCE"]]] = {
    "BEFORE": ("INTERNALDATE", "BEFORE"),
    "ON": ("INTERNALDATE", "ON"),
    "SINCE": ("INTERNALDATE", "SINCE"),
    "SENTBEFORE": ("SENT", "BEFORE"),
    "SENTON": ("SENT", "ON"),
    "SENTSINCE": ("SENT", "SINCE"),
}
_ARGUMENT_KEYS = (
    _HEADER_SHORTHANDS
    | _DATE_KEYS.keys()
    | {
        "HEADER",
        "BODY",
        "TEXT",
        "KEYWORD",
        "UNKEYWORD",
        "LARGER",
        "SMALLER",
        "UID",
        "MODSEQ",  # RFC 7162 §3.1.5
    }
)
_RETURN_OPTIONS: dict[str, ReturnOption] = {
    "MIN": "MIN",
    "MAX": "MAX",
    "ALL": "ALL",
    "COUNT": "COUNT",
    "SAVE": "SAVE",
}


def parse_charset(cur: Cursor) -> str:
    """RFC 3501 §6.4.4: a charset the server does not know is NO [BADCHARSET], not BAD."""
    charset = cur.astring().upper()
    if charset not in CHARSETS:
        raise CommandParseError(
            f"unsupported charset {charset}",
            status="NO",
            code=f"BADCHARSET ({' '.join(CHARSETS)})",
        )
    return charset


def parse_return(cur: Cursor) -> SearchReturn:
    """`RETURN (...)` after SEARCH or SORT, the "RETURN" keyword already consumed."""
    cur.sp()
    cur.expect(b"(", "a RETURN option list")
    options: set[ReturnOption] = set()
    partial: tuple[int, int] | None = None
    first = True
    while not cur.maybe(b")"):
        if not first:
            cur.sp()
        first = False
        name = cur.keyword("a RETURN option")
        if name == "PARTIAL":
            cur.sp()
            partial = _partial_range(cur)
        elif name in _RETURN_OPTIONS:
            options.add(_RETURN_OPTIONS[name])
        else:
            raise cur.error(f"unknown RETURN option {name}")
    if partial is not None and "ALL" in options:
        raise cur.error("PARTIAL and ALL are mutually exclusive")
    return SearchReturn(frozenset(options), partial)


def _partial_range(cur: Cursor) -> tuple[int, int]:
    # RFC 9394 §5: partial-range = partial-range-first / partial-range-last; first:last with both
    # ends positive, or both negative (counted from the end).
    negative = cur.maybe(b"-")
    first = cur.number(nonzero=True)
    cur.expect(b":", "a PARTIAL range like 1:100")
    if negative:
        cur.expect(b"-", "a negative end of the PARTIAL range")
    last = cur.number(nonzero=True)
    return (-first, -last) if negative else (first, last)


def parse_search_program(
    cur: Cursor, *, charset_allowed: bool = True
) -> tuple[str | None, SearchKey]:
    """[CHARSET charset SP] search-key *(SP search-key), after the SP that precedes it."""
    charset = None
    if charset_allowed and cur.text[cur.pos : cur.pos + 8].upper() == b"CHARSET ":
        cur.pos += 8
        charset = parse_charset(cur)
        cur.sp()
    return charset, parse_key_list(cur, until_end=True)


def parse_key_list(cur: Cursor, *, until_end: bool) -> SearchKey:
    keys = [parse_key(cur)]
    while not (cur.at_end() if until_end else cur.peek() == ord(")")):
        cur.sp()
        keys.append(parse_key(cur))
    return keys[0] if len(keys) == 1 else AndKey(tuple(keys))


def parse_key(cur: Cursor) -> SearchKey:
    cur.depth += 1
    if cur.depth > MAX_DEPTH:
        raise cur.error("search keys nested too deeply")
    try:
        return _parse_key(cur)
    finally:
        cur.depth -= 1


def _parse_key(cur: Cursor) -> SearchKey:
    if cur.maybe(b"("):
        key = parse_key_list(cur, until_end=False)
        cur.expect(b")")
        return key
    if cur.is_sequence_set():
        return SequenceKey(cur.sequence_set(), uid=False)
    name = cur.keyword("a search key")
    constant = _CONSTANT_KEYS.get(name)
    if constant is not None:
        return constant
    if name == "NOT":
        cur.sp()
        return NotKey(parse_key(cur))
    if name == "OR":
        cur.sp()
        left = parse_key(cur)
        cur.sp()
        return OrKey(left, parse_key(cur))
    if name not in _ARGUMENT_KEYS:
        raise cur.error(f"unknown search key {name}")
    cur.sp()
    if name in _HEADER_SHORTHANDS:
        return HeaderKey(name, cur.astring())
    if name == "HEADER":
        field = cur.astring().upper()
        cur.sp()
        return HeaderKey(field, cur.astring())
    if name in ("BODY", "TEXT"):
        return TextKey("BODY" if name == "BODY" else "TEXT", cur.astring())
    if name in ("KEYWORD", "UNKEYWORD"):
        return FlagKey(cur.atom("a keyword"), present=name == "KEYWORD")
    if name in _DATE_KEYS:
        field, relation = _DATE_KEYS[name]
        return DateKey(field, relation, cur.date())
    if name in ("LARGER", "SMALLER"):
        return SizeKey(name == "LARGER", cur.number(limit=MAX_NUMBER64))
    if name == "UID":
        return SequenceKey(cur.sequence_set(), uid=True)
    return _modseq_key(cur)


def _modseq_key(cur: Cursor) -> ModSeqKey:
    # RFC 7162 §3.1.5: "MODSEQ" [SP entry-name SP entry-type-req] SP mod-sequence-valzer
    entry = entry_type = None
    if cur.peek() == ord('"'):
        entry = cur.string()
        cur.sp()
        entry_type = cur.keyword("an entry type")
        if entry_type not in ("PRIV", "SHARED", "ALL"):
            raise cur.error("MODSEQ entry type must be priv, shared or all")
        cur.sp()
    return ModSeqKey(cur.number(limit=MAX_NUMBER64), entry, entry_type)
