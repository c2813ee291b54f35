"""The POP3 server engine: RFC 1939, CAPA and response codes (RFC 2449, 3206), STLS (RFC 2595)
and SASL AUTH (RFC 5034). Bytes in → events out, decisions in → bytes out.

No sockets, no asyncio, no storage: the driver feeds `receive_data`, pulls `next_event` until
it gets NEED_DATA, answers each decision event through the method its docstring names, and
writes `data_to_send`. Which command is legal in which state is the `ALLOWED` table below; the
answer to a command in the wrong state is the `WRONG_STATE` table.
"""

from __future__ import annotations

import base64
import enum
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postroom.proto import sasl
from postroom.proto.lines import LineProblem, LineSplitter
from postroom.proto.pop3 import events as ev
from postroom.proto.pop3 import replies
from postroom.proto.pop3.replies import Response
from postroom.proto.sasl import wire as sasl_wire
from postroom.proto.sasl.exchange import Finished, Next, SaslExchange, StoreAnswer, Unavailable

# RFC 2449 §4: a command line is at most 255 octets, CRLF included.
MAX_COMMAND_LINE = 255
# SASL responses are not commands; base64 of a long PLAIN or SCRAM message needs more room.
MAX_AUTH_LINE = 8192

# How an AUTH exchange that did not succeed is answered (RFC 5034 §4, RFC 3206 codes).
_AUTH_ENDINGS = {
    "failed": replies.LOGIN_FAILED,
    "malformed": replies.AUTH_MALFORMED,
    "cancelled": replies.AUTH_CANCELLED,  # the client sent "*"
    "unavailable": replies.AUTH_UNAVAILABLE,  # the store failed, not the client: [SYS/TEMP]
}


@dataclass(frozen=True, slots=True)
class Pop3Settings:
    hostname: str
    tls_available: bool = False  # STLS offered (the plaintext port with a certificate)
    # RFC 2595 §2.1: USER/PASS and AUTH only over TLS unless this is set (Dovecot's
    # disable_plaintext_auth = no).
    allow_plaintext_auth: bool = False
    auth_mechanisms: tuple[str, ...] = sasl.MECHANISMS
    max_errors: int = 20


class State(enum.Enum):
    AUTHORIZATION = "authorization"  # RFC 1939 §4
    TRANSACTION = "transaction"  # RFC 1939 §5
    UPDATE = "update"  # RFC 1939 §6: after QUIT, while deletions are committed


class Mode(enum.Enum):
    COMMAND = "command"
    AUTH = "auth"  # inside a SASL exchange: lines are base64 responses
    TLS = "tls"  # waiting for the driver to finish the TLS handshake
    CLOSED = "closed"


_AUTHORIZATION = frozenset({State.AUTHORIZATION})
_TRANSACTION = frozenset({State.TRANSACTION})
_BOTH = _AUTHORIZATION | _TRANSACTION
# RFC 1939 §4-§7, RFC 2449 §5, RFC 2595 §4, RFC 5034 §4 as data: where each command is legal.
ALLOWED: dict[str, frozenset[State]] = {
    "CAPA": _BOTH,
    "QUIT": _BOTH,
    "USER": _AUTHORIZATION,
    "PASS": _AUTHORIZATION,
    "AUTH": _AUTHORIZATION,
    "STLS": _AUTHORIZATION,
    "STAT": _TRANSACTION,
    "LIST": _TRANSACTION,
    "RETR": _TRANSACTION,
    "DELE": _TRANSACTION,
    "NOOP": _TRANSACTION,
    "RSET": _TRANSACTION,
    "TOP": _TRANSACTION,
    "UIDL": _TRANSACTION,
}
WRONG_STATE: dict[State, Response] = {
    State.AUTHORIZATION: replies.NOT_AUTHENTICATED,
    State.TRANSACTION: replies.ALREADY_AUTHENTICATED,
    State.UPDATE: replies.ALREADY_AUTHENTICATED,
}


class Pop3Error(Exception):
    """A command failed; the engine answers with `response`."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.text)
        self.response = response


class Pop3Server:
    """One POP3 server session. See the module docstring for the driving protocol."""

    def __init__(self, settings: Pop3Settings, *, tls_active: bool = False) -> None:
        self.settings = settings
        self.tls_active = tls_active
        self.state = State.AUTHORIZATION
        self.mode = Mode.COMMAND
        self.identity: str | None = None
        self.errors = 0
        self.retrieved = 0  # RETR answered
        self.removed = 0  # messages removed in the UPDATE state
        self._in = bytearray()
        self._out = bytearray()
        self._events: deque[ev.Event] = deque()
        self._pending: str | None = None  # which decision the engine waits for
        self._lines = LineSplitter()
        self._user: str | None = None  # from USER, until PASS
        self._candidate = ""  # the identity being checked, then whose maildrop is opened
        self._sasl: SaslExchange | None = None
        self._entries: tuple[ev.MaildropEntry, ...] = ()
        self._deleted: set[int] = set()  # 0-based indices into _entries
        self._top_lines: int | None = None  # TOP's line count while a fetch is pending

    # --- driver interface ---------------------------------------------------------------------

    def greet(self) -> None:
        self._send(replies.ok(f"{self.settings.hostname} {replies.GREETING_TEXT}"))

    def receive_data(self, data: bytes) -> None:
        if self.mode is not Mode.CLOSED:
            self._in += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def closed(self) -> bool:
        return self.mode is Mode.CLOSED

    @property
    def buffered(self) -> int:
        return len(self._in)

    @property
    def mid_request(self) -> bool:
        """Part of a command line (or AUTH response) is in, not its end; the driver times it."""
        return bool(self._in) or self._lines.skipping

    def next_event(self) -> ev.Event | ev.NeedData | ev.Paused:
        while True:
            if self._events:
                return self._events.popleft()
            if self._pending is not None:
                return ev.PAUSED
            if self.mode is Mode.CLOSED:
                return ev.NEED_DATA
            if not self._step():
                return ev.NEED_DATA

    def answered(self, answer: StoreAnswer) -> None:
        """The credential store's answer to `Verify`; UNAVAILABLE: -ERR [SYS/TEMP] (RFC 3206),
        and the session stays in the AUTHORIZATION state."""
        self._take_pending("verify")
        if self._sasl is not None:
            self._sasl_step(self._sasl.answered(answer))
        elif isinstance(answer, Unavailable):
            self._send(replies.AUTH_UNAVAILABLE)
        elif answer is True:
            self._open_maildrop(self._candidate)
        else:
            self._events.append(ev.AuthFailed("USER", self._candidate))
            self._send(replies.LOGIN_FAILED)

    def maildrop_opened(self, entries: Sequence[ev.MaildropEntry]) -> None:
        """The maildrop is locked; `entries` is its content for this whole session."""
        self._take_pending("maildrop")
        self.identity = self._candidate
        self.state = State.TRANSACTION
        self._entries = tuple(entries)
        self._deleted.clear()
        self._send(replies.logged_in(*self._totals()))

    def maildrop_refused(self, *, in_use: bool) -> None:
        """RFC 1939 §4 / RFC 2449 §8.1.1: the lock is held elsewhere ([IN-USE]), or the store
        failed ([SYS/TEMP]). The session stays in the AUTHORIZATION state."""
        self._take_pending("maildrop")
        self._send(replies.MAILDROP_IN_USE if in_use else replies.MAILDROP_UNAVAILABLE)

    def message_fetched(self, content: bytes | None) -> None:
        """The message for RETR/TOP, or None when it vanished from the store meanwhile."""
        self._take_pending("fetch")
        lines, self._top_lines = self._top_lines, None
        if content is None:
            self._send(replies.MESSAGE_GONE)
        elif lines is None:
            self.retrieved += 1
            self._out += replies.ok(f"{len(content)} octets").to_bytes() + replies.stuff(content)
        else:
            head = replies.top_of(content, lines)
            self._out += replies.ok("Top of message follows").to_bytes() + replies.stuff(head)

    def fetch_failed(self) -> None:
        self._take_pending("fetch")
        self._top_lines = None
        self._send(replies.FETCH_FAILED)

    def deletions_committed(self, ok: bool) -> None:
        """End of the UPDATE state (RFC 1939 §6): answer QUIT and close."""
        self._take_pending("commit")
        if ok:
            self.removed = len(self._deleted)
        response = replies.signing_off(len(self._deleted)) if ok else replies.COMMIT_FAILED
        self._out += response.to_bytes()
        self._close()

    def tls_started(self) -> None:
        """The driver finished the TLS handshake (RFC 2595 §4): the session goes on in the
        AUTHORIZATION state, and nothing from before the handshake is kept."""
        self._take_pending("tls")
        self._in.clear()  # CVE-2011-0411: plaintext sent before the handshake is not TLS input
        self.tls_active = True
        self.mode = Mode.COMMAND

    def shutdown(self, response: Response) -> None:
        """Send `response` and close, whatever the state; nothing is deleted (RFC 1939 §6)."""
        self._out += response.to_bytes()
        self._close()

    # --- internals: input loop ----------------------------------------------------------------

    def _take_pending(self, kind: str) -> None:
        if self._pending != kind:
            raise RuntimeError(f"no {kind} decision is pending ({self._pending})")
        self._pending = None

    def _wait(self, kind: str, event: ev.Event) -> None:
        self._pending = kind
        self._events.append(event)

    def _step(self) -> bool:
        """Process one line of input; False when more input is needed."""
        if self.mode is Mode.TLS:
            return False
        line = self._take_line()
        if line is None:
            return False
        if isinstance(line, Response):
            if self.mode is Mode.AUTH:
                self._end_sasl(line)
            else:
                self._send(line)
        elif self.mode is Mode.AUTH:
            self._sasl_line(line)
        else:
            self._command(line)
        return True

    def _take_line(self) -> str | Response | None:
        # RFC 2449 §4: commands are at most 255 octets (SASL answers get more room).
        limit = MAX_AUTH_LINE if self.mode is Mode.AUTH else MAX_COMMAND_LINE
        line = self._lines.take(self._in, limit)
        if line is LineProblem.TOO_LONG:
            return replies.LINE_TOO_LONG
        if line is LineProblem.BAD_ENCODING:
            return replies.BAD_ENCODING
        return line

    def _command(self, line: str) -> None:
        # RFC 1939 §3: a case-insensitive keyword, then arguments separated by single spaces.
        keyword, _, argument = line.partition(" ")
        keyword = keyword.upper()
        handler = _HANDLERS.get(keyword)
        if handler is None:
            self._send(replies.UNKNOWN_COMMAND)
            return
        if self.state not in ALLOWED[keyword]:
            self._send(WRONG_STATE[self.state])
            return
        try:
            handler(self, argument if keyword == "PASS" else argument.strip())
        except Pop3Error as error:
            self._send(error.response)

    def _send(self, response: Response) -> None:
        self._out += response.to_bytes()
        if not response.ok:
            self.errors += 1
            if self.errors >= self.settings.max_errors:
                self.shutdown(replies.TOO_MANY_ERRORS)

    def _close(self) -> None:
        self.mode = Mode.CLOSED
        self._in.clear()
        self._pending = None
        self._events.append(ev.CloseConnection())

    def _auth_allowed(self) -> bool:
        return self.tls_active or self.settings.allow_plaintext_auth

    def _totals(self) -> tuple[int, int]:
        live = [e for i, e in enumerate(self._entries) if i not in self._deleted]
        return len(live), sum(e.size for e in live)

    def _message(self, text: str) -> int:
        """The 0-based index of a message-number argument that names a live message."""
        if not (text.isascii() and text.isdigit()) or len(text) > 10:
            raise Pop3Error(replies.BAD_MESSAGE_NUMBER)
        number = int(text)
        if not 1 <= number <= len(self._entries):
            raise Pop3Error(replies.NO_SUCH_MESSAGE)
        # RFC 1939 §5: a message marked as deleted may not be referred to.
        if number - 1 in self._deleted:
            raise Pop3Error(replies.MESSAGE_DELETED)
        return number - 1

    def _open_maildrop(self, identity: str) -> None:
        self._user = None
        self._candidate = identity
        self._wait("maildrop", ev.OpenMaildrop(identity))

    # --- AUTHORIZATION state ------------------------------------------------------------------

    def _capa(self, argument: str) -> None:
        # RFC 2449 §5: the capabilities of the current state.
        capabilities = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            if self._auth_allowed():
                capabilities.append("USER")
                if self.settings.auth_mechanisms:
                    capabilities.append("SASL " + " ".join(self.settings.auth_mechanisms))
            if self.settings.tls_available and not self.tls_active:
                capabilities.append("STLS")  # RFC 2595 §4
        capabilities.append("IMPLEMENTATION postroom")
        self._out += replies.multiline(replies.CAPABILITIES, capabilities)

    def _user_command(self, argument: str) -> None:
        if not self._auth_allowed():
            raise Pop3Error(replies.TLS_REQUIRED)
        if not argument:
            raise Pop3Error(replies.USER_MISSING)
        self._user = argument
        self._send(replies.USER_OK)

    def _pass(self, argument: str) -> None:
        if not self._auth_allowed():
            raise Pop3Error(replies.TLS_REQUIRED)
        user, self._user = self._user, None
        if user is None:
            raise Pop3Error(replies.USER_FIRST)
        # The same normalisation the SASL mechanisms apply, so stored hashes compare (RFC 4013).
        try:
            authcid = sasl.saslprep(user, allow_unassigned=True)
            password = sasl.saslprep(argument, allow_unassigned=True)
        except sasl.SASLprepError:
            raise Pop3Error(replies.LOGIN_FAILED) from None
        if not authcid or not password:
            raise Pop3Error(replies.LOGIN_FAILED)
        self._candidate = authcid
        self._wait("verify", ev.Verify("USER", sasl.CheckPassword(authcid, "", password)))

    def _stls(self, argument: str) -> None:
        if argument:
            raise Pop3Error(replies.NO_ARGUMENTS)
        if self.tls_active:
            raise Pop3Error(replies.TLS_ALREADY_ACTIVE)
        if not self.settings.tls_available:
            raise Pop3Error(replies.TLS_NOT_AVAILABLE)
        self._send(replies.STLS_OK)
        # CVE-2011-0411: anything pipelined after STLS is plaintext injection; drop it.
        self._in.clear()
        self._user = None
        self.mode = Mode.TLS
        self._wait("tls", ev.StartTls())

    def _auth(self, argument: str) -> None:
        if not self._auth_allowed():
            raise Pop3Error(replies.TLS_REQUIRED)
        if not argument:
            # Not in RFC 5034, but common (Dovecot, Cyrus): a bare AUTH lists the mechanisms.
            self._out += replies.multiline(replies.AUTH_MECHANISMS, self.settings.auth_mechanisms)
            return
        try:
            begun = sasl_wire.start(argument, self.settings.auth_mechanisms)
        except sasl_wire.UnknownMechanism:
            raise Pop3Error(replies.AUTH_UNKNOWN_MECHANISM) from None
        except sasl_wire.Malformed:
            raise Pop3Error(replies.AUTH_MALFORMED) from None
        self._user = None
        self._sasl = SaslExchange(begun.mechanism)
        self.mode = Mode.AUTH
        self._sasl_step(self._sasl.start(begun.initial))

    def _sasl_line(self, line: str) -> None:
        assert self._sasl is not None
        self._sasl_step(self._sasl.client_line(line))

    def _sasl_step(self, step: Next) -> None:
        assert self._sasl is not None
        if isinstance(step, sasl.Challenge):
            # RFC 5034 §4: a server challenge is "+" SP base64.
            self._out += b"+ " + base64.b64encode(step.data) + b"\r\n"
        elif not isinstance(step, Finished):
            self._candidate = step.authcid
            self._wait("verify", ev.Verify(self._sasl.name, step))
        elif step.result == "success":
            self._sasl = None
            self.mode = Mode.COMMAND
            self._open_maildrop(step.authcid)
        else:
            if step.result == "failed":
                self._events.append(ev.AuthFailed(step.mechanism, step.authcid))
            self._end_sasl(_AUTH_ENDINGS[step.result])

    def _end_sasl(self, response: Response) -> None:
        self._sasl = None
        self.mode = Mode.COMMAND
        self._send(response)

    # --- TRANSACTION state --------------------------------------------------------------------

    def _stat(self, argument: str) -> None:
        if argument:
            raise Pop3Error(replies.NO_ARGUMENTS)
        self._send(replies.stat(*self._totals()))

    def _list(self, argument: str) -> None:
        if argument:
            index = self._message(argument)
            self._send(replies.ok(f"{index + 1} {self._entries[index].size}"))
            return
        # RFC 1939 §5 LIST: one scan line per message not marked as deleted.
        lines = [f"{i + 1} {e.size}" for i, e in enumerate(self._entries) if i not in self._deleted]
        self._out += replies.multiline(replies.scan_listing(*self._totals()), lines)

    def _uidl(self, argument: str) -> None:
        if argument:
            index = self._message(argument)
            self._send(replies.ok(f"{index + 1} {self._entries[index].unique_id}"))
            return
        # RFC 1939 §7 UIDL: one "msg unique-id" line per message not marked as deleted.
        lines = [
            f"{i + 1} {e.unique_id}" for i, e in enumerate(self._entries) if i not in self._deleted
        ]
        self._out += replies.multiline(replies.ok("Unique-ID listing follows"), lines)

    def _retr(self, argument: str) -> None:
        index = self._message(argument)
        self._top_lines = None
        self._wait("fetch", ev.FetchMessage(self._entries[index].key))

    def _top(self, argument: str) -> None:
        parts = argument.split(" ")
        if len(parts) != 2:
            raise Pop3Error(replies.BAD_LINE_COUNT)
        index = self._message(parts[0])
        count = parts[1]
        # RFC 1939 §7 TOP: the line count is a non-negative number.
        if not (count.isascii() and count.isdigit()) or len(count) > 10:
            raise Pop3Error(replies.BAD_LINE_COUNT)
        self._top_lines = int(count)
        self._wait("fetch", ev.FetchMessage(self._entries[index].key))

    def _dele(self, argument: str) -> None:
        index = self._message(argument)
        # RFC 1939 §5 DELE: only marked; removed in the UPDATE state.
        self._deleted.add(index)
        self._send(replies.deleted(index + 1))

    def _noop(self, argument: str) -> None:
        self._send(replies.NOOP_OK)

    def _rset(self, argument: str) -> None:
        # RFC 1939 §5 RSET: unmark every message marked as deleted.
        self._deleted.clear()
        self._send(replies.scan_listing(*self._totals()))

    def _quit(self, argument: str) -> None:
        if self.state is State.TRANSACTION and self._deleted:
            # RFC 1939 §6: QUIT from TRANSACTION enters UPDATE and removes the marked messages.
            self.state = State.UPDATE
            keys = tuple(self._entries[i].key for i in sorted(self._deleted))
            self._wait("commit", ev.CommitDeletions(keys))
            return
        self._out += replies.BYE.to_bytes()
        self._close()


# Command dispatch by explicit table (never by looking up method names).
_HANDLERS: dict[str, Callable[[Pop3Server, str], None]] = {
    "CAPA": Pop3Server._capa,
    "QUIT": Pop3Server._quit,
    "USER": Pop3Server._user_command,
    "PASS": Pop3Server._pass,
    "AUTH": Pop3Server._auth,
    "STLS": Pop3Server._stls,
    "STAT": Pop3Server._stat,
    "LIST": Pop3Server._list,
    "RETR": Pop3Server._retr,
    "DELE": Pop3Server._dele,
    "NOOP": Pop3Server._noop,
    "RSET": Pop3Server._rset,
    "TOP": Pop3Server._top,
    "UIDL": Pop3Server._uidl,
}
