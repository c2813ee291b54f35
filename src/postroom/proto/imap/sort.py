"""IMAP SORT (RFC 5256 §3) and SORT=DISPLAY (RFC 5957): base subjects, sort keys, ordering.

Pure functions over `SortKeys`, a small record the caller fills from data computed at delivery.
String keys are compared in the i;unicode-casemap canonical form of RFC 5051 (titlecase each
character, then canonical decomposition), as Dovecot does; for ASCII text that is plain
upper-casing, so i;ascii-casemap results are a special case. The same records feed THREAD
(`postroom.proto.imap.thread`).
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class SortAddress:
    """The first address of an address header, as IMAP ENVELOPE would show it.

    For a group (`undisclosed: a@b, c@d;`) the first entry is the group marker: `mailbox` is the
    group name and `host` is empty (RFC 3501 §7.4.2). A bare local part ("From: d") has an
    empty host too.
    """

    mailbox: str = ""  # addr-mailbox: the local part (or the group name)
    host: str = ""  # addr-host: the domain, "" when absent
    name: str = ""  # display name, RFC 2047-decoded, "" when absent

    @property
    def addr_spec(self) -> str:
        """`mailbox@host`, or just the mailbox when there is no host."""
        return f"{self.mailbox}@{self.host}" if self.host else self.mailbox


@dataclass(frozen=True, slots=True)
class SortKeys:
    """What SORT and THREAD need to know about one message of the mailbox."""

    seq: int  # message sequence number
    uid: int
    arrival: float  # INTERNALDATE as a UTC timestamp
    date: float | None  # Date: header as a UTC timestamp, None if absent or unparsable
    size: int  # RFC822.SIZE
    subject: str = ""  # Subject:, RFC 2047-decoded, "" when absent
    from_: SortAddress | None = None  # first address of From:, None when there is none
    to: SortAddress | None = None
    cc: SortAddress | None = None
    message_id: str | None = None  # first valid msg-id of Message-ID:, without <>
    in_reply_to: str | None = None  # first valid msg-id of In-Reply-To:, without <>
    references: tuple[str, ...] = ()  # the valid msg-ids of References:, in order, without <>

    @property
    def sent_date(self) -> float:
        """RFC 5256 §2.2 "sent date": the Date: header, else the INTERNALDATE."""
        return self.arrival if self.date is None else self.date


class SortKey(enum.Enum):
    """The sort keys of RFC 5256 §3 and RFC 5957 §3."""

    ARRIVAL = "ARRIVAL"
    CC = "CC"
    DATE = "DATE"
    FROM = "FROM"
    SIZE = "SIZE"
    SUBJECT = "SUBJECT"
    TO = "TO"
    DISPLAYFROM = "DISPLAYFROM"
    DISPLAYTO = "DISPLAYTO"


@dataclass(frozen=True, slots=True)
class SortCriterion:
    key: SortKey
    reverse: bool = False


class BaseSubject(NamedTuple):
    text: str  # the base subject in i;unicode-casemap form
    reply_or_forward: bool  # a reply/forward leader, "(fwd)" trailer or "[fwd: ]" was removed


def casemap(text: str) -> str:
    """RFC 5051 §2 i;unicode-casemap canonical form: titlecase each character, then NFD."""
    if text.isascii():
        return text.upper()
    # str.title() applies the full (SpecialCasing) mapping; where that yields several
    # characters the simple titlecase mapping RFC 5051 asks for is the identity.
    titled = "".join(t if len(t := ch.title()) == 1 else ch for ch in text)
    return unicodedata.normalize("NFD", titled)


# RFC 5256 §2.1 (1): tabs, continuations and runs of spaces become one space.
_WHITESPACE = re.compile(r"[ \t\r\n]+")
# RFC 5256 §5: subj-blob = "[" *BLOBCHAR "]" *WSP (whitespace is already packed to one SP).
_BLOB = r"\[[^\[\]]*\] ?"
# RFC 5256 §5: subj-leader = (*subj-blob subj-refwd) / WSP,
#              subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
_LEADER = re.compile(rf"(?:{_BLOB})*(?:RE|FWD?) ?(?:{_BLOB})?:| ")
_BLOB_PREFIX = re.compile(_BLOB)
_FWD_TRAILER = "(FWD)"  # RFC 5256 §5: subj-trailer = "(fwd)" / WSP
_FWD_HDR = "[FWD:"  # RFC 5256 §5: subj-fwd-hdr
_FWD_TRL = "]"  # RFC 5256 §5: subj-fwd-trl


def base_subject_full(subject: str) -> BaseSubject:
    """RFC 5256 §2.1 base subject extraction, also saying whether it was a reply or forward."""
    text = _WHITESPACE.sub(" ", casemap(subject))
    reply = False
    while True:
        # RFC 5256 §2.1 (2): remove subj-trailer text, repeatedly.
        while text.endswith((" ", _FWD_TRAILER)):
            if text.endswith(" "):
                text = text[:-1]
            else:
                text = text[: -len(_FWD_TRAILER)]
                reply = True
        while True:
            changed = False
            # RFC 5256 §2.1 (3): remove subj-leader prefixes.
            while (leader := _LEADER.match(text)) is not None:
                reply = reply or leader.group() != " "
                text = text[leader.end() :]
                changed = True
            # RFC 5256 §2.1 (4): remove a subj-blob prefix if a non-empty subj-base remains.
            blob = _BLOB_PREFIX.match(text)
            if blob is not None and blob.end() < len(text):
                text = text[blob.end() :]
                changed = True
            # RFC 5256 §2.1 (5): repeat (3) and (4) until no matches remain.
            if not changed:
                break
        # RFC 5256 §2.1 (6): unwrap "[fwd: ... ]" and repeat from step (2).
        if len(text) > len(_FWD_HDR) and text.startswith(_FWD_HDR) and text.endswith(_FWD_TRL):
            text = text[len(_FWD_HDR) : -len(_FWD_TRL)]
            reply = True
            continue
        # RFC 5256 §2.1 (7): what remains is the base subject.
        return BaseSubject(text, reply)


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1 base subject of an (already RFC 2047-decoded) subject, case-mapped."""
    return base_subject_full(subject).text


def _mailbox_key(address: SortAddress | None) -> str:
    # RFC 5256 §3: FROM/TO/CC compare the addr-mailbox of the first address.
    return casemap(address.mailbox) if address is not None else ""


def _display_key(address: SortAddress | None) -> str:
    # RFC 5957 §3: the display name if present and non-empty, else the addr-spec.
    if address is None:
        return ""
    return casemap(address.name or address.addr_spec)


def sort_value(item: SortKeys, key: SortKey) -> str | float:
    """The value `key` compares for `item` (strings in i;unicode-casemap form)."""
    if key is SortKey.ARRIVAL:
        return item.arrival  # RFC 5256 §3: internal date and time
    if key is SortKey.DATE:
        return item.sent_date  # RFC 5256 §3: sent date, INTERNALDATE when Date: is unusable
    if key is SortKey.SIZE:
        return item.size  # RFC 5256 §3: RFC822.SIZE
    if key is SortKey.SUBJECT:
        return base_subject(item.subject)  # RFC 5256 §3: base subject text
    if key is SortKey.FROM:
        return _mailbox_key(item.from_)
    if key is SortKey.TO:
        return _mailbox_key(item.to)
    if key is SortKey.CC:
        return _mailbox_key(item.cc)
    if key is SortKey.DISPLAYFROM:
        return _display_key(item.from_)
    return _display_key(item.to)  # SortKey.DISPLAYTO


def _value_getter(key: SortKey) -> Callable[[SortKeys], str | float]:
    return lambda item: sort_value(item, key)


def sort_messages(items: Iterable[SortKeys], criteria: Sequence[SortCriterion]) -> list[int]:
    """RFC 5256 §3 SORT: the sequence numbers of `items` in the order `criteria` give.

    Messages that compare equal on every criterion are in sequence number order; REVERSE only
    reverses its own key, never that final tie-break.
    """
    ordered = sorted(items, key=lambda item: item.seq)
    # Stable sorts from the least to the most significant criterion; `reverse=True` keeps
    # equal elements in their previous order, so the sequence number tie-break survives.
    for criterion in reversed(criteria):
        ordered.sort(key=_value_getter(criterion.key), reverse=criterion.reverse)
    return [item.seq for item in ordered]


def parse_sort_criteria(atoms: Sequence[str]) -> tuple[SortCriterion, ...]:
    """RFC 5256 §5 sort-criteria from its atoms (e.g. `["REVERSE", "DATE", "SUBJECT"]`).

    Case-insensitive. Raises ValueError for an empty list, an unknown key or a REVERSE that is
    not followed by a key.
    """
    criteria: list[SortCriterion] = []
    reverse = False
    for atom in atoms:
        word = atom.upper()
        if word == "REVERSE" and not reverse:
            reverse = True
            continue
        try:
            key = SortKey(word)
        except ValueError:
            raise ValueError(f"unknown sort key {atom!r}") from None
        criteria.append(SortCriterion(key, reverse))
        reverse = False
    if reverse or not criteria:
        raise ValueError("sort criteria must end with a sort key")
    return tuple(criteria)
