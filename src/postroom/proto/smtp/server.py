"""The SMTP server engine (RFC 5321 + ESMTP): bytes in → events out, decisions in → bytes out.

No sockets, no asyncio, no storage: the driver feeds `receive_data`, pulls `next_event` until it
gets NEED_DATA, answers decision events through `accept`/`reject` and friends, and writes
`data_to_send`. Which command is legal in which phase is the `ALLOWED` table below; the reply
for a command out of sequence is the `SEQUENCE_REPLIES` table.
"""

from __future__ import annotations

import base64
import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from postroom.proto import sasl
from postroom.proto.lines import LineProblem, LineSplitter
from postroom.proto.sasl import wire as sasl_wire
from postroom.proto.sasl.exchange import Finished, Next, SaslExchange, StoreAnswer
from postroom.proto.smtp import events as ev
from postroom.proto.smtp import params, replies
from postroom.proto.smtp.data import ChunkReader, DataReader, LineEndingChecker
from postroom.proto.smtp.replies import ClientError, Reply, SmtpError

# How an AUTH exchange that did not succeed (or fail on credentials) is answered.
_AUTH_ENDINGS = {
    "malformed": replies.AUTH_MALFORMED,
    "cancelled": replies.AUTH_CANCELLED,  # RFC 4954 §4: the client sent "*"
    "unavailable": replies.AUTH_TEMPORARY,  # RFC 4954 §6: the store failed, not the client
}


@dataclass(frozen=True, slots=True)
class ServerSettings:
    hostname: str
    max_message_size: int = 52428800
    max_recipients: int = 1000
    max_line_length: int = 4096
    max_errors: int = 20
    tls_available: bool = False
    require_auth: bool = False  # submission (RFC 6409 §4.3): AUTH before MAIL
    allow_insecure_auth: bool = False
    auth_mechanisms: tuple[str, ...] = sasl.MECHANISMS


class Phase(enum.Enum):
    GREETED = "greeted"  # connected, no HELO/EHLO yet
    READY = "ready"  # HELO/EHLO done, no transaction
    MAIL = "mail"  # reverse-path accepted
    RCPT = "rcpt"  # at least one forward-path accepted
    CHUNKING = "chunking"  # at least one BDAT chunk received (RFC 3030)


class Mode(enum.Enum):
    COMMAND = "command"
    DATA = "data"
    BDAT = "bdat"
    AUTH = "auth"
    TLS = "tls"  # waiting for the driver to finish the TLS handshake
    CLOSED = "closed"


_ANY = frozenset(Phase)
# RFC 5321 §4.1.4 (command order) as data: the phases in which each command is legal.
ALLOWED: dict[str, frozenset[Phase]] = {
    "HELO": _ANY,
    "EHLO": _ANY,
    "RSET": _ANY,
    "NOOP": _ANY,
    "QUIT": _ANY,
    "HELP": _ANY,
    "VRFY": _ANY,
    "EXPN": _ANY,
    "MAIL": frozenset({Phase.READY}),
    "RCPT": frozenset({Phase.MAIL, Phase.RCPT}),
    "DATA": frozenset({Phase.RCPT}),
    "BDAT": frozenset({Phase.RCPT, Phase.CHUNKING}),
    "STARTTLS": frozenset({Phase.GREETED, Phase.READY}),
    "AUTH": frozenset({Phase.READY}),
    "ETRN": frozenset({Phase.READY}),
}
# The reply for a command in a phase where it is not allowed (default: BAD_SEQUENCE).
SEQUENCE_REPLIES: dict[tuple[str, Phase], Reply] = {
    ("MAIL", Phase.GREETED): replies.NEED_HELO,
    ("MAIL", Phase.MAIL): replies.NESTED_MAIL,
    ("MAIL", Phase.RCPT): replies.NESTED_MAIL,
    ("MAIL", Phase.CHUNKING): replies.NESTED_MAIL,
    ("RCPT", Phase.GREETED): replies.NEED_MAIL,
    ("RCPT", Phase.READY): replies.NEED_MAIL,
    ("DATA", Phase.GREETED): replies.NEED_MAIL,
    ("DATA", Phase.READY): replies.NEED_MAIL,
    ("DATA", Phase.MAIL): replies.NO_VALID_RECIPIENTS,  # RFC 5321 §3.3: 503 or 554
    ("DATA", Phase.CHUNKING): replies.DATA_AFTER_BDAT,
    ("BDAT", Phase.GREETED): replies.NEED_MAIL,
    ("BDAT", Phase.READY): replies.NEED_MAIL,
    ("BDAT", Phase.MAIL): replies.NO_VALID_RECIPIENTS,
    ("AUTH", Phase.GREETED): replies.NEED_HELO,
    ("AUTH", Phase.MAIL): replies.AUTH_IN_TRANSACTION,
    ("AUTH", Phase.RCPT): replies.AUTH_IN_TRANSACTION,
    ("AUTH", Phase.CHUNKING): replies.AUTH_IN_TRANSACTION,
    ("ETRN", Phase.GREETED): replies.NEED_HELO,
}


class SmtpServer:
    """One SMTP server session. See the module docstring for the driving protocol."""

    def __init__(self, settings: ServerSettings, *, tls_active: bool = False) -> None:
        self.settings = settings
        self.tls_active = tls_active
        self.helo_name: str | None = None
        self.extended = False
        self.identity: str | None = None
        self.phase = Phase.GREETED
        self.mode = Mode.COMMAND
        self.errors = 0
        self._in = bytearray()
        self._out = bytearray()
        self._events: deque[ev.Event] = deque()
        self._pending: str | None = None  # which decision the engine waits for
        self._pending_value: str = ""
        self._lines = LineSplitter()
        self._data: DataReader | None = None
        self._chunk: ChunkReader | None = None
        self._chunk_last = False
        self._chunk_size = 0
        self._chunk_error: Reply | None = None
        self._rcpt_count = 0
        self._checker = LineEndingChecker()
        self._body_size = 0
        self._oversize = False
        self._mail_params = params.MailParams()
        self._sasl: SaslExchange | None = None

    # --- driver interface ---------------------------------------------------------------------

    def greet(self) -> None:
        self._send(replies.greeting(self.settings.hostname))

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
    def in_transaction(self) -> bool:
        return self.phase in (Phase.MAIL, Phase.RCPT, Phase.CHUNKING) or self.mode in (
            Mode.DATA,
            Mode.BDAT,
        )

    @property
    def buffered(self) -> int:
        return len(self._in)

    @property
    def mid_request(self) -> bool:
        """Part of a request is in, not all of it: a command line (or AUTH response) without
        its end, or a message (DATA, BDAT chunk) short of its end; the driver times that."""
        return bool(self._in) or self._lines.skipping or self.mode in (Mode.DATA, Mode.BDAT)

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

    def accept(self, response: Reply | None = None) -> None:
        """Accept the pending MailFrom/RcptTo/MessageComplete/Etrn; MessageComplete needs a
        reply."""
        if self._pending == "message" and response is None:
            # Checked before taking the decision, so the driver can still answer it.
            raise ValueError("accepting a message needs the reply with its queue ID")
        pending = self._take_pending(("mail", "rcpt", "message", "etrn"))
        if pending == "etrn":
            self._send(response or replies.etrn_started(self._pending_value))
        elif pending == "mail":
            self.phase = Phase.MAIL
            self._send(response or replies.sender_ok(self._pending_value))
        elif pending == "rcpt":
            self.phase = Phase.RCPT
            self._rcpt_count += 1
            self._send(response or replies.recipient_ok(self._pending_value))
        else:
            assert response is not None
            self._send(response)
            self._reset_transaction()

    def reject(self, response: Reply) -> None:
        pending = self._take_pending(("mail", "rcpt", "message", "etrn"))
        self._send(response)
        if pending == "message":
            self._reset_transaction()
        elif pending == "mail":
            self._mail_params = params.MailParams()

    def answered(self, answer: StoreAnswer) -> None:
        """The credential store's answer to `Verify` (UNAVAILABLE: 454, the session goes on)."""
        self._take_pending(("verify",))
        assert self._sasl is not None
        self._sasl_step(self._sasl.answered(answer))

    def tls_started(self) -> None:
        """The driver finished the TLS handshake: RFC 3207 §4.2, start over from scratch."""
        self._take_pending(("tls",))
        # CVE-2011-0411: plaintext fed between STARTTLS and the handshake is not TLS input.
        self._in.clear()
        self.tls_active = True
        self.mode = Mode.COMMAND
        self.phase = Phase.GREETED
        self.helo_name = None
        self.extended = False

    def shutdown(self, response: Reply) -> None:
        """Send `response` (a 421) and close, whatever the state."""
        if self.in_transaction:
            self._events.append(ev.TransactionAborted())
        self._out += response.to_bytes()
        self._close()

    # --- internals: input loop ----------------------------------------------------------------

    def _take_pending(self, allowed: tuple[str, ...]) -> str:
        if self._pending not in allowed:
            raise RuntimeError(f"no {'/'.join(allowed)} decision is pending ({self._pending})")
        pending = self._pending
        self._pending = None
        return pending

    def _wait(self, kind: str, event: ev.Event, value: str = "") -> None:
        self._pending = kind
        self._pending_value = value
        self._events.append(event)

    def _step(self) -> bool:
        """Process one unit of input; False when more input is needed."""
        if self.mode is Mode.DATA:
            return self._step_data()
        if self.mode is Mode.BDAT:
            return self._step_chunk()
        if self.mode is Mode.TLS:
            return False
        line = self._take_line()
        if line is None:
            return False
        if isinstance(line, Reply):
            self._send(line)
            return True
        if self.mode is Mode.AUTH:
            self._sasl_line(line)
        else:
            self._command(line)
        return True

    def _take_line(self) -> str | Reply | None:
        # RFC 5321 §4.5.3.1.4: refuse overlong lines.
        line = self._lines.take(self._in, self.settings.max_line_length)
        if line is LineProblem.TOO_LONG:
            return replies.LINE_TOO_LONG
        if line is LineProblem.BAD_ENCODING:
            return replies.BAD_ENCODING
        return line

    def _command(self, line: str) -> None:
        verb, _, argument = line.partition(" ")
        verb = verb.upper()
        handler = _HANDLERS.get(verb)
        if handler is None:
            self._send(replies.UNKNOWN_COMMAND)
            return
        if self.phase not in ALLOWED[verb]:
            response = SEQUENCE_REPLIES.get((verb, self.phase), replies.BAD_SEQUENCE)
            if verb == "BDAT":
                self._bdat_discard(argument, response)
            else:
                self._send(response)
            return
        try:
            handler(self, argument.strip())
        except SmtpError as error:
            self._send(error.reply)

    def _send(self, response: Reply) -> None:
        self._out += response.to_bytes()
        if response.is_error and response.code != 421:
            self.errors += 1
            if self.errors >= self.settings.max_errors:
                self.shutdown(replies.TOO_MANY_ERRORS)

    def _close(self) -> None:
        self.mode = Mode.CLOSED
        self._in.clear()
        self._pending = None
        self._events.append(ev.CloseConnection())

    def _reset_transaction(self) -> None:
        self.phase = Phase.READY if self.helo_name is not None else Phase.GREETED
        self._mail_params = params.MailParams()
        self._rcpt_count = 0
        self._data = None
        self._chunk = None
        self._checker = LineEndingChecker()
        self._body_size = 0
        self._oversize = False

    def _abort_transaction(self) -> None:
        if self.in_transaction:
            self._events.append(ev.TransactionAborted())
        self._reset_transaction()

    # --- commands -----------------------------------------------------------------------------

    def _helo(self, argument: str) -> None:
        self._hello(argument, extended=False)

    def _ehlo(self, argument: str) -> None:
        self._hello(argument, extended=True)

    def _hello(self, argument: str, *, extended: bool) -> None:
        name = argument.split(" ", 1)[0]
        if not name:
            raise ClientError(replies.syntax("HELO/EHLO requires a domain or address literal"))
        # RFC 5321 §4.1.4: EHLO/HELO in a transaction resets it, like RSET.
        self._abort_transaction()
        self.helo_name = name
        self.extended = extended
        self.phase = Phase.READY
        self._events.append(ev.Hello(name, extended))
        if extended:
            self._send(replies.ehlo_ok(self.settings.hostname, name, self._keywords()))
        else:
            self._send(replies.helo_ok(self.settings.hostname, name))

    def _keywords(self) -> list[str]:
        keywords = [
            "PIPELINING",  # RFC 2920
            f"SIZE {self.settings.max_message_size}",  # RFC 1870
            "8BITMIME",  # RFC 6152
            "SMTPUTF8",  # RFC 6531
            "ENHANCEDSTATUSCODES",  # RFC 2034
            "CHUNKING",  # RFC 3030
            "DSN",  # RFC 3461
        ]
        if self.settings.tls_available and not self.tls_active:
            keywords.append("STARTTLS")  # RFC 3207
        if self._auth_allowed():
            keywords.append("AUTH " + " ".join(self.settings.auth_mechanisms))  # RFC 4954
        keywords += ["HELP", "ETRN"]
        return keywords

    def _auth_allowed(self) -> bool:
        return bool(self.settings.auth_mechanisms) and (
            self.tls_active or self.settings.allow_insecure_auth
        )

    def _mail(self, argument: str) -> None:
        if self.settings.require_auth and self.identity is None:
            raise ClientError(replies.AUTH_REQUIRED)
        tail = _after_keyword(argument, "FROM")
        address, mail_params = params.parse_mail(tail, self.settings.max_message_size)
        self._mail_params = mail_params
        self._rcpt_count = 0
        self._wait("mail", ev.MailFrom(address, mail_params), address)

    def _rcpt(self, argument: str) -> None:
        if self._rcpt_count >= self.settings.max_recipients:
            # RFC 5321 §4.5.3.1.10: 452 for too many recipients.
            raise ClientError(replies.TOO_MANY_RECIPIENTS)
        tail = _after_keyword(argument, "TO")
        address, rcpt_params = params.parse_rcpt(tail, self._mail_params.smtputf8)
        self._wait("rcpt", ev.RcptTo(address, rcpt_params), address)

    def _data_command(self, argument: str) -> None:
        if argument:
            raise ClientError(replies.syntax("DATA takes no arguments"))
        self.mode = Mode.DATA
        self._data = DataReader(checker=self._checker)
        self._send(replies.START_DATA)

    def _bdat(self, argument: str) -> None:
        size, last = _parse_bdat(argument)
        if size is None:
            raise ClientError(replies.syntax("BDAT requires a chunk size and optional LAST"))
        self.phase = Phase.CHUNKING
        self.mode = Mode.BDAT
        self._chunk = ChunkReader(size, self._checker)
        self._chunk_size = size
        self._chunk_last = last
        self._chunk_error = None

    def _bdat_discard(self, argument: str, response: Reply) -> None:
        """RFC 3030 §2: a refused BDAT still has its chunk read (and thrown away)."""
        size, last = _parse_bdat(argument)
        if size is None:
            self._send(replies.syntax("BDAT requires a chunk size and optional LAST"))
            return
        self.mode = Mode.BDAT
        self._chunk = ChunkReader(size, LineEndingChecker())
        self._chunk_last = last
        self._chunk_error = response

    def _rset(self, argument: str) -> None:
        self._abort_transaction()
        self._send(replies.RESET_OK)

    def _noop(self, argument: str) -> None:
        self._send(replies.NOOP_OK)

    def _quit(self, argument: str) -> None:
        if self.in_transaction:
            self._events.append(ev.TransactionAborted())
        self._out += replies.BYE.to_bytes()
        self._close()

    def _help(self, argument: str) -> None:
        self._send(replies.HELP)

    def _vrfy(self, argument: str) -> None:
        if not argument:
            raise ClientError(replies.syntax("VRFY requires an address"))
        # RFC 5321 §3.5.3: 252 neither confirms nor denies; users are never revealed.
        self._send(replies.VRFY_CANNOT)

    def _expn(self, argument: str) -> None:
        if not argument:
            raise ClientError(replies.syntax("EXPN requires a list name"))
        self._send(replies.EXPN_REFUSED)

    def _etrn(self, argument: str) -> None:
        # RFC 1985 §5: ETRN <node> where node is a domain, "@domain" or "#queue".
        node = argument.strip()
        if not node or " " in node:
            raise ClientError(replies.syntax("ETRN requires a domain"))
        self._wait("etrn", ev.Etrn(node), node)

    def _starttls(self, argument: str) -> None:
        if argument:
            raise ClientError(replies.syntax("STARTTLS takes no arguments"))
        if self.tls_active:
            raise ClientError(replies.TLS_ALREADY_ACTIVE)
        if not self.settings.tls_available:
            raise ClientError(replies.TLS_NOT_AVAILABLE)
        self._send(replies.READY_FOR_TLS)
        # CVE-2011-0411: anything the client pipelined after STARTTLS is plaintext injection.
        self._in.clear()
        self._abort_transaction()
        self.identity = None
        self.mode = Mode.TLS
        self._wait("tls", ev.StartTls())

    def _auth(self, argument: str) -> None:
        if self.identity is not None:
            raise ClientError(replies.AUTH_ALREADY)
        if not self._auth_allowed():
            raise ClientError(replies.TLS_REQUIRED)
        try:
            begun = sasl_wire.start(argument, self.settings.auth_mechanisms)
        except sasl_wire.UnknownMechanism:
            raise ClientError(replies.AUTH_UNKNOWN_MECHANISM) from None
        except sasl_wire.Malformed:
            raise ClientError(replies.AUTH_MALFORMED) from None
        self._sasl = SaslExchange(begun.mechanism)
        self.mode = Mode.AUTH
        self._sasl_step(self._sasl.start(begun.initial))

    # --- SASL exchange ------------------------------------------------------------------------

    def _sasl_line(self, line: str) -> None:
        assert self._sasl is not None
        self._sasl_step(self._sasl.client_line(line))

    def _sasl_step(self, step: Next) -> None:
        assert self._sasl is not None
        if isinstance(step, sasl.Challenge):
            self._send(replies.auth_challenge(base64.b64encode(step.data).decode("ascii")))
        elif not isinstance(step, Finished):
            self._wait("verify", ev.Verify(self._sasl.name, step))
        elif step.result == "success":
            self.identity = step.authcid
            self._events.append(ev.Authenticated(step.authcid))
            self._end_sasl(replies.AUTH_OK)
        elif step.result == "failed":
            self._events.append(ev.AuthFailed(step.mechanism, step.authcid))
            self._end_sasl(replies.AUTH_FAILED)
        else:
            self._end_sasl(_AUTH_ENDINGS[step.result])

    def _end_sasl(self, response: Reply) -> None:
        self._sasl = None
        self.mode = Mode.COMMAND
        self._send(response)

    # --- message content ----------------------------------------------------------------------

    def _take_content(self, content: bytes) -> None:
        if not content:
            return
        self._body_size += len(content)
        limit = self.settings.max_message_size
        if limit and self._body_size > limit:
            self._oversize = True
        if not self._oversize:
            self._events.append(ev.MessageData(content))

    def _step_data(self) -> bool:
        assert self._data is not None
        content, done = self._data.feed(self._in)
        self._take_content(content)
        if done:
            self.mode = Mode.COMMAND
            self._finish_content()
            return True
        return bool(content)

    def _step_chunk(self) -> bool:
        assert self._chunk is not None
        content, done = self._chunk.feed(self._in)
        if self._chunk_error is None:
            self._take_content(content)
        if not done:
            return bool(content)
        self.mode = Mode.COMMAND
        if self._chunk_error is not None:
            self._send(self._chunk_error)
        elif self._oversize:
            # RFC 3030 §2: an error reply to a chunk fails the whole transaction.
            self._abort_transaction()
            self._send(replies.message_too_big(self.settings.max_message_size))
        elif self._chunk_last:
            self._finish_content()
        else:
            self._send(replies.chunk_ok(self._chunk_size))
        self._chunk = None
        return True

    def _finish_content(self) -> None:
        if self._oversize:
            self._abort_transaction()
            self._send(replies.message_too_big(self.settings.max_message_size))
        elif self._checker.finish():
            self._abort_transaction()
            self._send(replies.BARE_LINE_ENDING)
        else:
            self._wait("message", ev.MessageComplete(self._body_size))


# Command dispatch by explicit table (never by looking up method names).
_HANDLERS: dict[str, Callable[[SmtpServer, str], None]] = {
    "HELO": SmtpServer._helo,
    "EHLO": SmtpServer._ehlo,
    "MAIL": SmtpServer._mail,
    "RCPT": SmtpServer._rcpt,
    "DATA": SmtpServer._data_command,
    "BDAT": SmtpServer._bdat,
    "RSET": SmtpServer._rset,
    "NOOP": SmtpServer._noop,
    "QUIT": SmtpServer._quit,
    "HELP": SmtpServer._help,
    "VRFY": SmtpServer._vrfy,
    "EXPN": SmtpServer._expn,
    "ETRN": SmtpServer._etrn,
    "STARTTLS": SmtpServer._starttls,
    "AUTH": SmtpServer._auth,
}


def _after_keyword(argument: str, keyword: str) -> str:
    """Return what follows "FROM:"/"TO:", tolerating spaces around the colon (seed forms)."""
    head, colon, tail = argument.partition(":")
    if not colon or head.strip().upper() != keyword:
        usage = "MAIL FROM:<address>" if keyword == "FROM" else "RCPT TO:<address>"
        raise ClientError(replies.syntax(f"Syntax: {usage}"))
    return tail


def _parse_bdat(argument: str) -> tuple[int | None, bool]:
    # RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ], chunk-size = 1*DIGIT;
    # ASCII digits only (str.isdigit also takes "²"), counted before the conversion.
    parts = argument.split()
    if not parts or len(parts) > 2 or len(parts[0]) > 18:
        return None, False
    if not (parts[0].isascii() and parts[0].isdigit()):
        return None, False
    if len(parts) == 2 and parts[1].upper() != "LAST":
        return None, False
    return int(parts[0]), len(parts) == 2
