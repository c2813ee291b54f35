"""IMAP commands as typed values: `parse_command(line)` turns a framed `CommandLine` into a
`Request` (tag + one command dataclass) or raises `CommandParseError` carrying the tag.

Covers RFC 3501 and the extensions the server speaks: LITERAL+ (framing), SASL-IR (RFC 4959),
UIDPLUS UID EXPUNGE (RFC 4315), MULTIAPPEND (RFC 3502), BINARY (RFC 3516), LIST-EXTENDED
(RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154), ESEARCH (RFC 4731), SEARCHRES
(RFC 5182), SORT/THREAD (RFC 5256), SORT=DISPLAY (RFC 5957), ESORT (RFC 5267), PARTIAL (RFC 9394),
CONDSTORE/QRESYNC (RFC 7162), ENABLE (RFC 5161), ID (RFC 2971), IDLE (RFC 2177), NAMESPACE
(RFC 2342), UNSELECT (RFC 3691), MOVE (RFC 6851). Mailbox names stay in their wire form (modified
UTF-7 unless UTF8=ACCEPT is on; see `mutf7.decode`), except that INBOX is case-folded.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from functools import partial
from typing import Literal

from postroom.proto.imap.grammar_base import (
    MAX_NUMBER64,
    SYSTEM_FLAGS,
    CommandParseError,
    Cursor,
    SequenceSet,
)
from postroom.proto.imap.grammar_commands import (
    SORT_KEYS,
    SPECIAL_USES,
    STATUS_ITEMS,
    Append,
    AppendMessage,
    Authenticate,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    Delete,
    Enable,
    Expunge,
    Fetch,
    Id,
    Idle,
    List,
    ListReturn,
    ListSelection,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    QResync,
    Rename,
    Request,
    Search,
    Select,
    Sort,
    SortCriterion,
    SortKeyName,
    StartTLS,
    Status,
    StatusItem,
    Store,
    Subscribe,
    Thread,
    Unselect,
    Unsubscribe,
)
from postroom.proto.imap.grammar_fetch import (
    MACROS,
    FetchAttr,
    FetchBinary,
    FetchBinarySize,
    FetchBody,
    FetchItem,
    Section,
    parse_fetch_items,
)
from postroom.proto.imap.grammar_search import (
    CHARSETS,
    AllKey,
    AndKey,
    DateKey,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    NotKey,
    OrKey,
    SearchKey,
    SearchReturn,
    SequenceKey,
    SizeKey,
    TextKey,
    parse_charset,
    parse_return,
    parse_search_program,
)
from postroom.proto.imap.listing import MAX_PATTERNS
from postroom.proto.imap.reader import CommandLine, LiteralData, StreamedLiteral

__all__ = [
    "CHARSETS",
    "MACROS",
    "SORT_KEYS",
    "SPECIAL_USES",
    "STATUS_ITEMS",
    "SYSTEM_FLAGS",
    "AllKey",
    "AndKey",
    "Append",
    "AppendMessage",
    "Authenticate",
    "Capability",
    "Check",
    "Close",
    "Command",
    "CommandParseError",
    "Copy",
    "Create",
    "DateKey",
    "Delete",
    "Enable",
    "Expunge",
    "Fetch",
    "FetchAttr",
    "FetchBinary",
    "FetchBinarySize",
    "FetchBody",
    "FetchItem",
    "FlagKey",
    "HeaderKey",
    "Id",
    "Idle",
    "List",
    "ListReturn",
    "ListSelection",
    "Login",
    "Logout",
    "Lsub",
    "ModSeqKey",
    "Move",
    "Namespace",
    "Noop",
    "NotKey",
    "OrKey",
    "QResync",
    "Rename",
    "Request",
    "Search",
    "SearchKey",
    "SearchReturn",
    "Section",
    "Select",
    "SequenceKey",
    "SequenceSet",
    "SizeKey",
    "Sort",
    "SortCriterion",
    "SortKeyName",
    "StartTLS",
    "Status",
    "StatusItem",
    "Store",
    "Subscribe",
    "TextKey",
    "Thread",
    "Unselect",
    "Unsubscribe",
    "parse_command",
]

_Parser = Callable[[Cursor], Command]
_UidParser = Callable[[Cursor, bool], Command]


_NO_ARGS: dict[str, Command] = {
    "CAPABILITY": Capability(),
    "NOOP": Noop(),
    "LOGOUT": Logout(),
    "STARTTLS": StartTLS(),
    "CHECK": Check(),
    "CLOSE": Close(),
    "UNSELECT": Unselect(),
    "IDLE": Idle(),
    "NAMESPACE": Namespace(),
    "EXPUNGE": Expunge(),
}


def parse_command(line: CommandLine, *, utf8: bool = False) -> Request:
    """Parse one framed command line; `utf8` once the client enabled UTF8=ACCEPT."""
    tag: str | None = None
    try:
        cur = Cursor(line.parts, utf8=utf8)
        tag = cur.tag()
        cur.sp()
        name = cur.keyword("a command name")
        command = _parse_body(cur, name)
        cur.end()
    except CommandParseError as exc:
        exc.tag = tag
        raise
    return Request(tag, command)


def _parse_body(cur: Cursor, name: str) -> Command:
    if name in _NO_ARGS:
        return _NO_ARGS[name]
    if name == "UID":
        cur.sp()
        return _parse_uid(cur, cur.keyword("a UID command"))
    parser = _PARSERS.get(name)
    if parser is None:
        raise cur.error(f"unknown command {name}")
    cur.sp()
    return parser(cur)


def _parse_uid(cur: Cursor, name: str) -> Command:
    # RFC 3501 §6.4.8 UID COPY/FETCH/SEARCH/STORE; RFC 4315 UID EXPUNGE; RFC 6851 UID MOVE;
    # RFC 5256 UID SORT/THREAD.
    parser = _UID_PARSERS.get(name)
    if parser is None and name != "EXPUNGE":
        raise cur.error(f"UID {name} is not a command")
    cur.sp()
    if parser is None:
        return Expunge(cur.sequence_set())
    return parser(cur, True)


def _authenticate(cur: Cursor) -> Authenticate:
    mechanism = cur.keyword("a SASL mechanism")
    if not cur.maybe(b" "):
        return Authenticate(mechanism)
    # RFC 4959 §7: initial-response = base64 / "="
    text = cur.atom("an initial response")
    if text == "=":
        return Authenticate(mechanism, b"")
    try:
        return Authenticate(mechanism, base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise cur.error("initial response is not valid base64") from exc


def _login(cur: Cursor) -> Login:
    username = cur.astring()
    cur.sp()
    return Login(username, cur.astring())


def _select(cur: Cursor, readonly: bool) -> Select:
    mailbox = cur.mailbox()
    condstore = False
    qresync = None
    if cur.maybe(b" "):
        # RFC 4466 §2.1 select-params: SP "(" select-param *(SP select-param) ")"
        cur.expect(b"(", "SELECT parameters")
        while True:
            param = cur.keyword("a SELECT parameter")
            if param == "CONDSTORE":
                condstore = True
            elif param == "QRESYNC":
                cur.sp()
                qresync = _qresync(cur)
            else:
                raise cur.error(f"unknown SELECT parameter {param}")
            if cur.maybe(b")"):
                break
            cur.sp()
    return Select(mailbox, readonly, condstore, qresync)


def _qresync(cur: Cursor) -> QResync:
    cur.expect(b"(", "QRESYNC parameters")
    uidvalidity = cur.number(nonzero=True)
    cur.sp()
    modseq = cur.number(limit=MAX_NUMBER64, nonzero=True)
    known_uids = seq_match = None
    if cur.maybe(b" ") and not cur.startswith(b"("):
        known_uids = cur.sequence_set()
        if not cur.maybe(b" "):
            cur.expect(b")")
            return QResync(uidvalidity, modseq, known_uids)
    if cur.maybe(b"("):
        seqs = cur.sequence_set()
        cur.sp()
        seq_match = (seqs, cur.sequence_set())
        cur.expect(b")")
    cur.expect(b")")
    return QResync(uidvalidity, modseq, known_uids, seq_match)


def _create(cur: Cursor) -> Create:
    mailbox = cur.mailbox()
    uses: tuple[str, ...] = ()
    if cur.maybe(b" "):
        # RFC 4466 §2.2 create-params; RFC 6154 §6: "USE" SP "(" [use-attr *(SP use-attr)] ")"
        cur.expect(b"(", "CREATE parameters")
        if cur.keyword("a CREATE parameter") != "USE":
            raise cur.error("unknown CREATE parameter")
        cur.sp()
        known = {use.lower(): use for use in SPECIAL_USES}
        given = cur.flag_list()
        cur.expect(b")")
        unknown = [use for use in given if use.lower() not in known]
        if unknown:
            # RFC 6154 §3: an attribute the server cannot set is NO [USEATTR].
            raise CommandParseError(
                f"unsupported special-use {unknown[0]}", status="NO", code="USEATTR"
            )
        uses = tuple(known[use.lower()] for use in given)
    return Create(mailbox, uses)


def _rename(cur: Cursor) -> Rename:
    old = cur.mailbox()
    cur.sp()
    return Rename(old, cur.mailbox())


def _status_items(cur: Cursor) -> tuple[StatusItem, ...]:
    cur.expect(b"(", "a list of status items")
    items: list[StatusItem] = []
    while True:
        name = cur.keyword("a status item")
        if name not in STATUS_ITEMS:
            raise cur.error(f"unknown status item {name}")
        items.append(STATUS_ITEMS[name])
        if cur.maybe(b")"):
            return tuple(items)
        cur.sp()


def _status(cur: Cursor) -> Status:
    mailbox = cur.mailbox()
    cur.sp()
    return Status(mailbox, _status_items(cur))


_SELECTION: dict[str, ListSelection] = {
    "SUBSCRIBED": "SUBSCRIBED",
    "REMOTE": "REMOTE",
    "RECURSIVEMATCH": "RECURSIVEMATCH",
    "SPECIAL-USE": "SPECIAL-USE",  # RFC 6154 §5.1
}
_RETURNS: dict[str, ListReturn] = {
    "SUBSCRIBED": "SUBSCRIBED",
    "CHILDREN": "CHILDREN",
    "SPECIAL-USE": "SPECIAL-USE",
}


def _list(cur: Cursor) -> List:
    selection: set[ListSelection] = set()
    extended = False
    if cur.maybe(b"("):
        # RFC 5258 §6 list-select-opts
        extended = True
        while not cur.maybe(b")"):
            if selection:
                cur.sp()
            option = cur.keyword("a LIST selection option")
            if option not in _SELECTION:
                raise cur.error(f"unknown LIST selection option {option}")
            selection.add(_SELECTION[option])
        # RFC 5258 §3.1: RECURSIVEMATCH alone (or with REMOTE only) is an error.
        if "RECURSIVEMATCH" in selection and not selection & {"SUBSCRIBED", "SPECIAL-USE"}:
            raise cur.error("RECURSIVEMATCH needs another selection option")
        cur.sp()
    reference = cur.astring()
    cur.sp()
    if cur.maybe(b"("):
        extended = True
        patterns = [cur.list_mailbox()]
        while not cur.maybe(b")"):
            cur.sp()
            patterns.append(cur.list_mailbox())
    else:
        patterns = [cur.list_mailbox()]
    returns: set[ListReturn] = set()
    status = None
    if cur.maybe(b" "):
        extended = True
        if cur.keyword("RETURN") != "RETURN":
            raise cur.error("expected RETURN")
        cur.sp()
        cur.expect(b"(", "a list of RETURN options")
        while not cur.maybe(b")"):
            if returns or status is not None:
                cur.sp()
            option = cur.keyword("a LIST RETURN option")
            if option == "STATUS":
                cur.sp()
                status = _status_items(cur)
            elif option in _RETURNS:
                returns.add(_RETURNS[option])
            else:
                raise cur.error(f"unknown LIST RETURN option {option}")
    _check_patterns(cur, reference, patterns)
    return List(
        reference, tuple(patterns), frozenset(selection), frozenset(returns), status, extended
    )


def _lsub(cur: Cursor) -> Lsub:
    reference = cur.astring()
    cur.sp()
    pattern = cur.list_mailbox()
    _check_patterns(cur, reference, [pattern])
    return Lsub(reference, pattern)


def _check_patterns(cur: Cursor, reference: str, patterns: list[str]) -> None:
    # Each pattern is matched with the reference in front (RFC 3501 §6.3.8); RFC 3501 sets no
    # bound, ours keeps the work of one LIST small (listing.Matcher is linear in it).
    if sum(len(reference) + len(pattern) for pattern in patterns) > MAX_PATTERNS:
        raise cur.error(f"mailbox patterns too long (over {MAX_PATTERNS} characters)")


def _append(cur: Cursor) -> Append:
    mailbox = cur.mailbox()
    messages: list[AppendMessage] = []
    while not cur.at_end():
        cur.sp()
        flags: tuple[str, ...] = ()
        date = None
        if cur.peek() == ord("("):
            flags = cur.flag_list()
            cur.sp()
        if cur.peek() == ord('"'):
            date = cur.date_time()
            cur.sp()
        messages.append(AppendMessage(flags, date, _message_literal(cur)))
    if not messages:
        raise cur.error("APPEND needs a message literal")
    return Append(mailbox, tuple(messages))


def _message_literal(cur: Cursor) -> LiteralData | StreamedLiteral:
    if not cur.at_literal():
        raise cur.error("expected the message as a literal")
    part = cur.parts[cur.index + 1]
    if isinstance(part, LiteralData) and not part.binary and b"\x00" in part.data:
        # RFC 3516 §4.1: NUL octets need literal8 ("~{n}").
        raise cur.error("NUL in a message literal (use literal8)")
    cur.advance_literal()
    assert isinstance(part, LiteralData | StreamedLiteral)
    return part


def _search(cur: Cursor, uid: bool) -> Search:
    returns = None
    if cur.text[cur.pos : cur.pos + 7].upper() == b"RETURN ":
        cur.pos += 6
        returns = parse_return(cur)
        cur.sp()
    charset, key = parse_search_program(cur)
    return Search(uid, key, charset, returns)


def _fetch(cur: Cursor, uid: bool) -> Fetch:
    sequence = cur.sequence_set()
    cur.sp()
    items = parse_fetch_items(cur)
    changedsince = None
    vanished = False
    if cur.maybe(b" "):
        # RFC 4466 §2.4 fetch-modifiers; RFC 7162 §3.1.4.1 CHANGEDSINCE, §3.2.6 VANISHED
        cur.expect(b"(", "FETCH modifiers")
        while True:
            modifier = cur.keyword("a FETCH modifier")
            if modifier == "CHANGEDSINCE":
                cur.sp()
                changedsince = cur.number(limit=MAX_NUMBER64)
            elif modifier == "VANISHED" and uid:
                vanished = True
            else:
                raise cur.error(f"unknown FETCH modifier {modifier}")
            if cur.maybe(b")"):
                break
            cur.sp()
        if vanished and changedsince is None:
            raise cur.error("VANISHED requires CHANGEDSINCE")
    return Fetch(uid, sequence, items, changedsince, vanished)


def _store(cur: Cursor, uid: bool) -> Store:
    sequence = cur.sequence_set()
    cur.sp()
    unchangedsince = None
    if cur.maybe(b"("):
        # RFC 7162 §3.1.3: store-modifier UNCHANGEDSINCE
        if cur.keyword("a STORE modifier") != "UNCHANGEDSINCE":
            raise cur.error("unknown STORE modifier")
        cur.sp()
        unchangedsince = cur.number(limit=MAX_NUMBER64)
        cur.expect(b")")
        cur.sp()
    mode: Literal["replace", "add", "remove"] = "replace"
    if cur.maybe(b"+"):
        mode = "add"
    elif cur.maybe(b"-"):
        mode = "remove"
    item = cur.keyword("FLAGS or FLAGS.SILENT")
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise cur.error("expected FLAGS or FLAGS.SILENT")
    cur.sp()
    # RFC 3501 §9 store-att-flags: a flag list, or flags separated by SP.
    if cur.peek() == ord("("):
        flags = cur.flag_list()
    else:
        found = [cur.flag()]
        while cur.maybe(b" "):
            found.append(cur.flag())
        flags = tuple(found)
    return Store(uid, sequence, mode, flags, item == "FLAGS.SILENT", unchangedsince)


def _copy(cur: Cursor, uid: bool) -> Copy:
    sequence = cur.sequence_set()
    cur.sp()
    return Copy(uid, sequence, cur.mailbox())


def _move(cur: Cursor, uid: bool) -> Move:
    sequence = cur.sequence_set()
    cur.sp()
    return Move(uid, sequence, cur.mailbox())


def _sort(cur: Cursor, uid: bool) -> Sort:
    returns = None
    if cur.text[cur.pos : cur.pos + 7].upper() == b"RETURN ":
        cur.pos += 6
        returns = parse_return(cur)
        cur.sp()
    cur.expect(b"(", "a list of sort criteria")
    criteria: list[SortCriterion] = []
    while True:
        word = cur.keyword("a sort key")
        reverse = word == "REVERSE"
        if reverse:
            cur.sp()
            word = cur.keyword("a sort key")
        if word not in SORT_KEYS:
            raise cur.error(f"unknown sort key {word}")
        criteria.append(SortCriterion(SORT_KEYS[word], reverse))
        if cur.maybe(b")"):
            break
        cur.sp()
    cur.sp()
    charset = parse_charset(cur)
    cur.sp()
    _, key = parse_search_program(cur, charset_allowed=False)
    return Sort(uid, tuple(criteria), charset, key, returns)


def _thread(cur: Cursor, uid: bool) -> Thread:
    algorithm = cur.keyword("a threading algorithm")
    if algorithm not in ("ORDEREDSUBJECT", "REFERENCES"):
        raise cur.error(f"unsupported threading algorithm {algorithm}")
    cur.sp()
    charset = parse_charset(cur)
    cur.sp()
    _, key = parse_search_program(cur, charset_allowed=False)
    return Thread(
        uid, "REFERENCES" if algorithm == "REFERENCES" else "ORDEREDSUBJECT", charset, key
    )


def _enable(cur: Cursor) -> Enable:
    names = [cur.keyword("a capability")]
    while cur.maybe(b" "):
        names.append(cur.keyword("a capability"))
    return Enable(tuple(names))


def _id(cur: Cursor) -> Id:
    # RFC 2971 §4: id-params-list = "(" *(string SP nstring) ")" / nil
    if cur.is_nil():
        return Id(None)
    cur.expect(b"(", "a parameter list or NIL")
    pairs: list[tuple[str, str | None]] = []
    while not cur.maybe(b")"):
        if pairs:
            cur.sp()
        field = cur.string()
        cur.sp()
        pairs.append((field, cur.nstring()))
    return Id(tuple(pairs))


def _mailbox_command(kind: type[Delete | Subscribe | Unsubscribe]) -> _Parser:
    def parse(cur: Cursor) -> Command:
        return kind(cur.mailbox())

    return parse


def _plain(parse: _UidParser) -> _Parser:
    def parse_plain(cur: Cursor) -> Command:
        return parse(cur, False)

    return parse_plain


_PARSERS: dict[str, _Parser] = {
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "SELECT": partial(_select, readonly=False),
    "EXAMINE": partial(_select, readonly=True),
    "CREATE": _create,
    "DELETE": _mailbox_command(Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _mailbox_command(Subscribe),
    "UNSUBSCRIBE": _mailbox_command(Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "ENABLE": _enable,
    "ID": _id,
}
_UID_PARSERS: dict[str, _UidParser] = {
    "COPY": _copy,
    "FETCH": _fetch,
    "MOVE": _move,
    "SEARCH": _search,
    "SORT": _sort,
    "STORE": _store,
    "THREAD": _thread,
}
_PARSERS.update({name: _plain(parse) for name, parse in _UID_PARSERS.items()})
