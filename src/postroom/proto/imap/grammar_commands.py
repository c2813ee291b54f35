"""The typed IMAP commands `grammar.parse_command` produces: one frozen dataclass per command,
wrapped with its tag in a `Request`. Mailbox names are wire names (see `grammar`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from postroom.proto.imap.grammar_base import SequenceSet
from postroom.proto.imap.grammar_fetch import FetchItem
from postroom.proto.imap.grammar_search import SearchKey, SearchReturn
from postroom.proto.imap.reader import LiteralData, StreamedLiteral

StatusItem = Literal[
    "MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "DELETED"
]
STATUS_ITEMS: dict[str, StatusItem] = {
    name: name
    for name in (
        "MESSAGES",
        "RECENT",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "HIGHESTMODSEQ",  # RFC 7162 §3.1.10
        "SIZE",  # RFC 8438
        "DELETED",  # RFC 9051 §6.3.11
    )
}
SortKeyName = Literal[
    "ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"
]
SORT_KEYS: dict[str, SortKeyName] = {
    name: name
    for name in (
        "ARRIVAL",
        "CC",
        "DATE",
        "FROM",
        "SIZE",
        "SUBJECT",
        "TO",
        "DISPLAYFROM",  # RFC 5957 §3
        "DISPLAYTO",
    )
}
# RFC 6154 §2: the special-use attributes a client may ask CREATE to set.
SPECIAL_USES = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)


# -- commands without arguments ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Logout:
    pass


@dataclass(frozen=True, slots=True)
class StartTLS:
    pass


@dataclass(frozen=True, slots=True)
class Check:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    pass


@dataclass(frozen=True, slots=True)
class Unselect:
    pass


@dataclass(frozen=True, slots=True)
class Idle:
    pass


@dataclass(frozen=True, slots=True)
class Namespace:
    pass


# -- not authenticated ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticate:
    mechanism: str  # upper-case
    initial_response: bytes | None = None  # RFC 4959 §3: decoded; "=" is b""


@dataclass(frozen=True, slots=True)
class Login:
    username: str
    password: str


# -- mailboxes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QResync:
    """RFC 7162 §3.2.5: QRESYNC (uidvalidity modseq [known-uids] [(seq-set uid-set)])."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None  # (sequence numbers, their UIDs)


@dataclass(frozen=True, slots=True)
class Select:
    mailbox: str
    readonly: bool = False  # EXAMINE
    condstore: bool = False  # RFC 7162 §3.1.8 (CONDSTORE)
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class Create:
    mailbox: str
    special_use: tuple[str, ...] = ()  # RFC 6154 §3: CREATE name (USE (\Drafts))


@dataclass(frozen=True, slots=True)
class Delete:
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    mailbox: str
    new_name: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    mailbox: str


ListSelection = Literal["SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"]
ListReturn = Literal["SUBSCRIBED", "CHILDREN", "SPECIAL-USE"]


@dataclass(frozen=True, slots=True)
class List:
    """LIST, possibly in RFC 5258 extended form (selection options, several patterns, RETURN)."""

    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[ListSelection] = frozenset()
    returns: frozenset[ListReturn] = frozenset()
    status: tuple[StatusItem, ...] | None = None  # RFC 5819 RETURN (STATUS (...))
    extended: bool = False  # selection options, a pattern list or RETURN were given


@dataclass(frozen=True, slots=True)
class Lsub:
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Status:
    mailbox: str
    items: tuple[StatusItem, ...]


@dataclass(frozen=True, slots=True)
class AppendMessage:
    flags: tuple[str, ...]
    internal_date: dt.datetime | None
    data: LiteralData | StreamedLiteral  # streamed: the bytes came as LiteralChunk events


@dataclass(frozen=True, slots=True)
class Append:
    mailbox: str
    messages: tuple[AppendMessage, ...]  # RFC 3502: more than one with MULTIAPPEND


# -- selected state ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expunge:
    uids: SequenceSet | None = None  # RFC 4315 §2.1: UID EXPUNGE set


@dataclass(frozen=True, slots=True)
class Search:
    uid: bool
    key: SearchKey
    charset: str | None = None
    returns: SearchReturn | None = None  # None: plain SEARCH response; else ESEARCH


@dataclass(frozen=True, slots=True)
class Fetch:
    uid: bool
    sequence: SequenceSet
    items: tuple[FetchItem, ...]
    changedsince: int | None = None  # RFC 7162 §3.1.4.1
    vanished: bool = False  # RFC 7162 §3.2.6 (UID FETCH only, with CHANGEDSINCE)


@dataclass(frozen=True, slots=True)
class Store:
    uid: bool
    sequence: SequenceSet
    mode: Literal["replace", "add", "remove"]
    flags: tuple[str, ...]
    silent: bool = False
    unchangedsince: int | None = None  # RFC 7162 §3.1.3


@dataclass(frozen=True, slots=True)
class Copy:
    uid: bool
    sequence: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class Move:
    uid: bool
    sequence: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class SortCriterion:
    key: SortKeyName
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class Sort:
    uid: bool
    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey
    returns: SearchReturn | None = None  # RFC 5267 ESORT


@dataclass(frozen=True, slots=True)
class Thread:
    uid: bool
    algorithm: Literal["ORDEREDSUBJECT", "REFERENCES"]
    charset: str
    key: SearchKey


# -- any state -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enable:
    capabilities: tuple[str, ...]  # upper-case


@dataclass(frozen=True, slots=True)
class Id:
    parameters: tuple[tuple[str, str | None], ...] | None  # None: "ID NIL"


Command = (
    Capability
    | Noop
    | Logout
    | StartTLS
    | Check
    | Close
    | Unselect
    | Idle
    | Namespace
    | Authenticate
    | Login
    | Select
    | Create
    | Delete
    | Rename
    | Subscribe
    | Unsubscribe
    | List
    | Lsub
    | Status
    | Append
    | Expunge
    | Search
    | Fetch
    | Store
    | Copy
    | Move
    | Sort
    | Thread
    | Enable
    | Id
)


@dataclass(frozen=True, slots=True)
class Request:
    tag: str
    command: Command
