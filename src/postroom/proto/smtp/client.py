"""The SMTP client engine (RFC 5321 + ESMTP): replies in → events out, commands in → bytes out.

No sockets, no asyncio, no queue: the driver feeds the server's bytes to `receive_data`, pulls
`next_event` until it gets NEED_DATA, calls commands when the engine is idle, and writes
`data_to_send`. The driving protocol, in order:

    client = SmtpClient("relay.example")      # then connect
    Greeting(reply)                           # 220, or 554/421 (then quit / give up)
    client.ehlo()      → Capabilities(reply, extensions)   or CommandReply("EHLO", 5xx)
    client.helo()      → Capabilities(reply, {})           (fallback when EHLO got 5xx)
    client.starttls()  → StartTlsReady(reply)  → handshake → client.tls_established() → ehlo()
                       or CommandReply("STARTTLS", 4xx/5xx)
    client.auth_plain(user, password) / client.auth_login(user, password) → AuthResult(reply)
    client.send_envelope(sender, [Recipient(...)], MailParams(...))
                       → MailResult(reply), RecipientResult(index, reply) per recipient,
                         EnvelopeResult(mail, recipients, data, ready)
    client.send_message(content)     (only when EnvelopeResult.ready) → MessageResult(reply)
    client.rset() / client.noop() / client.quit() → CommandReply(verb, reply)

Commands may only be issued while the engine is idle (`client.idle`); misuse raises
RuntimeError. After an EnvelopeResult with ready=False the engine has already ended any open
transaction (RSET, or "." after an unwanted 354), so the next envelope may follow at once.

A 421 reply, a malformed reply or `connection_closed()` ends the session: every command still
waiting for its reply (and a message waiting to be sent) gets the 421 as its result — so each
recipient left over classifies as temporary — then ServiceClosing or ProtocolError is emitted.
`classify(reply)` maps any reply to "ok", "temporary" or "permanent".
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from postroom.proto.smtp.params import MailParams, encode_xtext
from postroom.proto.smtp.replies import Reply

# Bounds on what a server may make us hold (RFC 5321 §4.5.3.1.5 allows 512-octet reply lines;
# real servers send more, so be generous but finite).
MAX_REPLY_BYTES = 64 * 1024
MAX_REPLY_LINES = 1000

# RFC 5321 §4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF )
#                              Reply-code [ SP textstring ] CRLF, Reply-code = %x32-35 %x30-35 DIGIT
_REPLY_LINE = re.compile(rb"([2-5][0-5][0-9])(?:([ -])(.*))?", re.DOTALL)
# RFC 3463 §2 / RFC 2034 §4: status-code = class "." subject "." detail, then a space.
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


class NeedData:
    """Sentinel: the engine needs more input before it can go on."""


NEED_DATA = NeedData()


class Recipient(NamedTuple):
    """One forward-path with its RFC 3461 DSN parameters (`RcptParams` shape)."""

    address: str
    notify: tuple[str, ...] | None = None  # ("NEVER",) or a subset of SUCCESS/FAILURE/DELAY
    orcpt: str | None = None  # "addr-type;address" decoded (as `params.parse_rcpt` stores it)


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's opening reply (RFC 5321 §4.3.1): 220, or 554 (then quit)."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class Capabilities:
    """EHLO (or HELO) succeeded; `extensions` maps keyword → parameter text ("" if none)."""

    reply: Reply
    extensions: dict[str, str]


@dataclass(frozen=True, slots=True)
class CommandReply:
    """The reply to a simple command (EHLO/HELO/STARTTLS refusals, RSET, NOOP, QUIT)."""

    command: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class StartTlsReady:
    """220 to STARTTLS: do the handshake now, then call `tls_established` (RFC 3207 §4)."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The final reply of an AUTH exchange (235 on success; RFC 4954 §6)."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class MailResult:
    """The reply to MAIL FROM (or a locally made refusal when nothing was sent)."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The outcome of recipient `index`: its RCPT reply, or MAIL's reply if MAIL was refused."""

    index: int
    reply: Reply


@dataclass(frozen=True, slots=True)
class EnvelopeResult:
    """The envelope is settled. `ready`: the server sent 354, call `send_message` now.

    Otherwise `failure` is the transaction-level reply that stopped it (None when simply no
    recipient was accepted); recipients accepted at RCPT share that failure.
    """

    mail: Reply
    recipients: tuple[Reply, ...]
    data: Reply | None  # the reply to DATA, when DATA was sent
    ready: bool

    @property
    def accepted(self) -> tuple[int, ...]:
        return tuple(i for i, r in enumerate(self.recipients) if 200 <= r.code < 300)

    @property
    def failure(self) -> Reply | None:
        if not 200 <= self.mail.code < 300:
            return self.mail
        if self.data is not None and self.data.code != 354:
            return self.data
        return None


@dataclass(frozen=True, slots=True)
class MessageResult:
    """The reply after the message content (RFC 5321 §4.1.1.4): it covers every accepted RCPT."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class ServiceClosing:
    """The session is over (421, or the connection closed); results above carry the reply."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The server sent something that is not an SMTP reply; the session is over."""

    description: str


Event = (
    Greeting
    | Capabilities
    | CommandReply
    | StartTlsReady
    | AuthResult
    | MailResult
    | RecipientResult
    | EnvelopeResult
    | MessageResult
    | ServiceClosing
    | ProtocolError
)


class Mode(enum.Enum):
    GREETING = "greeting"  # connected, waiting for the greeting
    READY = "ready"  # commands may be sent when nothing is in flight
    DATA = "data"  # 354 received, waiting for `send_message`
    TLS = "tls"  # waiting for the driver to finish the TLS handshake
    CLOSED = "closed"


def classify(reply: Reply) -> Literal["ok", "temporary", "permanent"]:
    """RFC 5321 §4.2.1: 2yz/3yz positive, 4yz transient, 5yz permanent (421 is 4yz)."""
    if reply.code < 400:
        return "ok"
    if reply.code >= 500:
        return "permanent"
    return "temporary"


# Local replies for envelopes the engine refuses without sending anything.
def _too_big(limit: int) -> Reply:
    # RFC 1870 §6 / RFC 3463 5.3.4: the peer's declared limit is below the message size.
    return Reply(552, "5.3.4", (f"Message size exceeds the remote limit of {limit} octets",))


# RFC 6531 §3.4: an SMTPUTF8 message cannot go to a peer without SMTPUTF8 (5.6.7).
_NO_SMTPUTF8 = Reply(553, "5.6.7", ("Remote server does not support SMTPUTF8",))


class SmtpClient:
    """One SMTP client session. See the module docstring for the driving protocol."""

    def __init__(self, hostname: str) -> None:
        _check_token(hostname, "hostname")
        self.hostname = hostname
        self.mode = Mode.GREETING
        self.extensions: dict[str, str] = {}
        self.greeted = False  # EHLO/HELO accepted (since the last TLS handshake)
        self.tls_active = False
        self.authenticated = False
        self._in = bytearray()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        # Replies we wait for, oldest first: (kind, recipient index).
        self._expect: deque[tuple[str, int]] = deque([("greeting", 0)])
        self._lines: list[tuple[int, str]] = []  # lines of the reply being read
        self._reply_bytes = 0
        self._closing: Reply | None = None
        self._auth_responses: deque[bytes] = deque()
        # The envelope in progress.
        self._pipelined = False
        self._recipients: list[Recipient] = []
        self._mail_reply: Reply | None = None
        self._rcpt_replies: list[Reply] = []
        self._data_reply: Reply | None = None
        self._stuffer: DotStuffer | None = None

    # --- driver interface ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        # After 220 to STARTTLS, plaintext before the handshake is injection (CVE-2011-0411).
        if self.mode not in (Mode.CLOSED, Mode.TLS):
            self._in += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | NeedData:
        while not self._events:
            if self.mode in (Mode.CLOSED, Mode.TLS) or not self._step():
                return NEED_DATA
        return self._events.popleft()

    @property
    def closed(self) -> bool:
        return self.mode is Mode.CLOSED

    @property
    def idle(self) -> bool:
        """True when a command may be issued."""
        return self.mode is Mode.READY and not self._expect

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    @property
    def size_limit(self) -> int | None:
        """RFC 1870 §4: the peer's SIZE value; None when not advertised or 0 (no limit)."""
        value = self.extensions.get("SIZE", "").strip()
        # RFC 1870 §3: 1*20DIGIT; anything else (or thousands of digits) is no usable limit.
        if not (value.isascii() and value.isdigit()) or len(value) > 20:
            return None
        return int(value) or None

    @property
    def auth_mechanisms(self) -> tuple[str, ...]:
        return tuple(self.extensions.get("AUTH", "").upper().split())

    def connection_closed(self) -> None:
        """The server closed the connection: everything in flight is a temporary failure."""
        if self.mode is not Mode.CLOSED:
            self._shut(Reply(421, "4.4.2", ("Connection closed by the server",)), None)

    # --- commands -----------------------------------------------------------------------------

    def ehlo(self) -> None:
        self._command_idle(f"EHLO {self.hostname}", "ehlo")

    def helo(self) -> None:
        self._command_idle(f"HELO {self.hostname}", "helo")

    def starttls(self) -> None:
        if self.tls_active:
            raise RuntimeError("TLS is already active")
        self._command_idle("STARTTLS", "starttls")

    def tls_established(self) -> None:
        """The handshake finished: RFC 3207 §4.2, forget all knowledge from the server."""
        if self.mode is not Mode.TLS:
            raise RuntimeError("tls_established() without a 220 reply to STARTTLS")
        self._in.clear()
        self.tls_active = True
        self.mode = Mode.READY
        self.extensions = {}
        self.greeted = False
        self.authenticated = False

    def auth_plain(self, user: str, password: str) -> None:
        # RFC 4616 §2: message = [authzid] NUL authcid NUL passwd; RFC 4954 §4 initial response.
        token = b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")
        self._auth_responses = deque()
        self._command_idle("AUTH PLAIN " + _b64(token), "auth")

    def auth_login(self, user: str, password: str) -> None:
        # draft-murchison-sasl-login: username, then password, each answering a 334 challenge.
        self._command_idle("AUTH LOGIN", "auth")
        self._auth_responses = deque([user.encode("utf-8"), password.encode("utf-8")])

    def send_envelope(
        self, sender: str, recipients: Sequence[Recipient], params: MailParams | None = None
    ) -> None:
        """MAIL, RCPT per recipient, DATA: one write with PIPELINING (RFC 2920), else in turn."""
        params = params or MailParams()
        self._require_idle()
        if not self.greeted:
            raise RuntimeError("send_envelope() before a successful EHLO/HELO")
        if not recipients:
            raise ValueError("an envelope needs at least one recipient")
        _check_path(sender)
        for recipient in recipients:
            _check_path(recipient.address)
        if params.body == "8BITMIME" and "8BITMIME" not in self.extensions:
            # RFC 6152 §3: the driver must downgrade the content to 7 bit first.
            raise ValueError("peer lacks 8BITMIME: convert the message to 7 bit first")
        self._recipients = [Recipient(*r) for r in recipients]
        self._mail_reply = None
        self._rcpt_replies = []
        self._data_reply = None
        limit = self.size_limit
        refusal = None
        if params.smtputf8 and "SMTPUTF8" not in self.extensions:
            refusal = _NO_SMTPUTF8
        elif limit is not None and params.size is not None and params.size > limit:
            refusal = _too_big(limit)
        if refusal is not None:
            self._pipelined = False
            self._handle("mail", 0, refusal)
            return
        self._pipelined = self.pipelining
        mail = f"MAIL FROM:<{sender}>{self._mail_params(params)}"
        if not self._pipelined:
            self._command(mail, "mail")
            return
        # RFC 2920 §3.1: MAIL and RCPT may be grouped; DATA is the last command of the group.
        self._command(mail, "mail")
        for index in range(len(self._recipients)):
            self._command(self._rcpt_line(index), "rcpt", index)
        self._command("DATA", "data")

    def send_message(self, content: bytes) -> None:
        """Send the whole content, dot-stuffed and ended with CRLF "." CRLF."""
        self.send_message_data(content)
        self.end_message()

    def send_message_data(self, content: bytes) -> None:
        """Send a piece of the content (streaming); finish with `end_message`."""
        if self.mode is not Mode.DATA:
            raise RuntimeError("message content without a 354 reply to DATA")
        if self._stuffer is None:
            self._stuffer = DotStuffer()
        self._out += self._stuffer.feed(content)

    def end_message(self) -> None:
        if self.mode is not Mode.DATA:
            raise RuntimeError("end_message() without a 354 reply to DATA")
        stuffer = self._stuffer or DotStuffer()
        self._stuffer = None
        self._out += stuffer.finish()
        self.mode = Mode.READY
        self._expect.append(("message", 0))

    def rset(self) -> None:
        self._command_idle("RSET", "rset")

    def noop(self) -> None:
        self._command_idle("NOOP", "noop")

    def quit(self) -> None:
        self._command_idle("QUIT", "quit")

    # --- internals: output --------------------------------------------------------------------

    def _require_idle(self) -> None:
        if not self.idle:
            raise RuntimeError(f"command issued while not idle (mode {self.mode.value})")

    def _command_idle(self, line: str, kind: str) -> None:
        self._require_idle()
        self._command(line, kind)

    def _command(self, line: str, kind: str, index: int = 0) -> None:
        # While the session is ending (`_shut`), a follow-up command is not written: it is
        # queued only to receive the closing reply (iteratively, however many recipients).
        if self._closing is None:
            self._out += line.encode("utf-8") + b"\r\n"
        self._expect.append((kind, index))

    def _mail_params(self, params: MailParams) -> str:
        ext = self.extensions
        out = ""
        if "SIZE" in ext and params.size is not None:
            out += f" SIZE={params.size}"  # RFC 1870 §6
        if "8BITMIME" in ext and params.body is not None:
            out += f" BODY={params.body}"  # RFC 6152 §2
        if params.smtputf8:
            out += " SMTPUTF8"  # RFC 6531 §3.4 (checked as advertised before)
        if "DSN" in ext:
            if params.ret is not None:
                out += f" RET={params.ret}"  # RFC 3461 §4.3
            if params.envid is not None:
                out += f" ENVID={encode_xtext(params.envid)}"  # RFC 3461 §4.4
        return out

    def _rcpt_line(self, index: int) -> str:
        recipient = self._recipients[index]
        line = f"RCPT TO:<{recipient.address}>"
        if "DSN" in self.extensions:
            if recipient.notify:
                line += " NOTIFY=" + ",".join(recipient.notify)  # RFC 3461 §4.1
            if recipient.orcpt:
                line += " ORCPT=" + _encode_orcpt(recipient.orcpt)  # RFC 3461 §4.2
        return line

    # --- internals: input ---------------------------------------------------------------------

    def _step(self) -> bool:
        """Read one reply line; False when more input is needed."""
        buf = self._in
        newline = buf.find(b"\n")
        if newline < 0:
            if self._reply_bytes + len(buf) > MAX_REPLY_BYTES:
                self._protocol_error("reply too long")
                return True
            return False
        raw = bytes(buf[:newline])
        del buf[: newline + 1]
        self._reply_bytes += newline + 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        match = _REPLY_LINE.fullmatch(raw)
        if match is None or b"\0" in raw:
            self._protocol_error(f"malformed reply line {raw[:80]!r}")
            return True
        code = int(match.group(1))
        if self._lines and self._lines[0][0] != code:
            # RFC 5321 §4.2.1: every line of a multi-line reply carries the same code.
            self._protocol_error("reply code changed inside a multi-line reply")
            return True
        self._lines.append((code, (match.group(3) or b"").decode("utf-8", "replace")))
        if self._reply_bytes > MAX_REPLY_BYTES or len(self._lines) > MAX_REPLY_LINES:
            self._protocol_error("reply too long")
            return True
        if match.group(2) == b"-":
            return True  # RFC 5321 §4.2.1: "code-" continues the reply
        texts = [text for _, text in self._lines]
        self._lines = []
        self._reply_bytes = 0
        self._dispatch(_make_reply(code, texts))
        return True

    def _dispatch(self, reply: Reply) -> None:
        if reply.code == 421:
            # RFC 5321 §3.8: the server is closing; the reply answers everything left.
            self._shut(reply, ServiceClosing(reply))
            return
        if not self._expect:
            self._protocol_error(f"unexpected reply {reply.code}")
            return
        kind, index = self._expect.popleft()
        self._handle(kind, index, reply)
        if self.mode is Mode.TLS:
            self._in.clear()  # CVE-2011-0411: nothing read before the handshake is trusted

    def _protocol_error(self, description: str) -> None:
        reply = Reply(421, "4.5.0", (f"Protocol error: {description}",))
        self._shut(reply, ProtocolError(description))

    def _shut(self, reply: Reply, final: Event | None) -> None:
        self._closing = reply
        if self.mode is Mode.DATA:
            self._stuffer = None
            self._events.append(MessageResult(reply))
        while self._expect:
            kind, index = self._expect.popleft()
            self._handle(kind, index, reply)
        self._events.append(final or ServiceClosing(reply))
        self.mode = Mode.CLOSED
        self._in.clear()

    # --- internals: reply handlers ------------------------------------------------------------

    def _handle(self, kind: str, index: int, reply: Reply) -> None:
        ok = 200 <= reply.code < 300
        if kind == "greeting":
            self.mode = Mode.READY
            self._events.append(Greeting(reply))
        elif kind in ("ehlo", "helo"):
            if ok:
                self.greeted = True
                self.extensions = _parse_extensions(reply) if kind == "ehlo" else {}
                self._events.append(Capabilities(reply, dict(self.extensions)))
            else:
                self._events.append(CommandReply(kind.upper(), reply))
        elif kind == "starttls":
            if reply.code == 220 and self._closing is None:
                self.mode = Mode.TLS
                self._events.append(StartTlsReady(reply))
            else:
                self._events.append(CommandReply("STARTTLS", reply))
        elif kind == "auth":
            self._auth_reply(reply)
        elif kind == "mail":
            self._mail_result(reply)
        elif kind == "rcpt":
            self._rcpt_result(index, reply)
        elif kind == "data":
            self._data_result(reply)
        elif kind in ("abort", "reset"):
            self._finish_envelope(ready=False)
        elif kind == "message":
            self._events.append(MessageResult(reply))
        else:
            self._events.append(CommandReply(kind.upper(), reply))
            if kind == "quit":
                self.mode = Mode.CLOSED

    def _auth_reply(self, reply: Reply) -> None:
        if reply.code == 334 and self._closing is None:
            # RFC 4954 §4: answer the challenge; "*" cancels when we have nothing to say.
            if self._auth_responses:
                self._command(_b64(self._auth_responses.popleft()), "auth")
            else:
                self._command("*", "auth")
            return
        self._auth_responses.clear()
        self.authenticated = reply.code == 235
        self._events.append(AuthResult(reply))

    def _mail_result(self, reply: Reply) -> None:
        self._mail_reply = reply
        self._events.append(MailResult(reply))
        if 200 <= reply.code < 300:
            if not self._pipelined:
                self._command(self._rcpt_line(0), "rcpt", 0)
            return
        if self._pipelined:
            return  # the RCPT and DATA replies are still to come
        for index in range(len(self._recipients)):
            self._rcpt_result(index, reply)

    def _rcpt_result(self, index: int, reply: Reply) -> None:
        assert self._mail_reply is not None
        mail_ok = 200 <= self._mail_reply.code < 300
        # A refused MAIL decides every recipient (the RCPT replies are then mere 503s).
        effective = reply if mail_ok else self._mail_reply
        self._rcpt_replies.append(effective)
        self._events.append(RecipientResult(index, effective))
        if self._pipelined:
            return  # DATA's reply settles the envelope
        if not mail_ok:
            if index + 1 == len(self._recipients):
                self._finish_envelope(ready=False)
        elif index + 1 < len(self._recipients):
            self._command(self._rcpt_line(index + 1), "rcpt", index + 1)
        elif self._any_accepted():
            self._command("DATA", "data")
        else:
            self._command("RSET", "reset")  # end the open transaction cleanly

    def _data_result(self, reply: Reply) -> None:
        self._data_reply = reply
        mail_ok = self._mail_reply is not None and 200 <= self._mail_reply.code < 300
        if reply.code == 354:
            if mail_ok and self._any_accepted():
                self.mode = Mode.DATA
                self._finish_envelope(ready=True)
            else:
                # RFC 2920 §3.1: 354 after every RCPT failed; end the content at once.
                self._command(".", "abort")
        elif mail_ok:
            self._command("RSET", "reset")  # DATA refused: close the open transaction
        else:
            self._finish_envelope(ready=False)

    def _any_accepted(self) -> bool:
        return any(200 <= r.code < 300 for r in self._rcpt_replies)

    def _finish_envelope(self, *, ready: bool) -> None:
        assert self._mail_reply is not None
        self._events.append(
            EnvelopeResult(self._mail_reply, tuple(self._rcpt_replies), self._data_reply, ready)
        )


class DotStuffer:
    """Turns content into DATA wire form, across chunk borders (RFC 5321 §4.5.2, §2.3.8).

    Every bare CR, bare LF and CRLF becomes CRLF, so relayed content can never carry a
    smuggling sequence such as LF "." LF (CVE-2023-51764 class); a line starting with "."
    gets one more; `finish` adds the missing final CRLF and the "." CRLF terminator.
    """

    __slots__ = ("_at_line_start", "_pending_cr")

    def __init__(self) -> None:
        self._at_line_start = True
        self._pending_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            # It may be the CR of a CRLF cut by the chunk border: decide with the next chunk.
            self._pending_cr = True
            chunk = chunk[:-1]
        if not chunk:
            return b""
        text = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        stuffed = text.replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and stuffed[:1] == b".":
            stuffed = b"." + stuffed
        self._at_line_start = text.endswith(b"\r\n")
        return stuffed

    def finish(self) -> bytes:
        out = b""
        if self._pending_cr:
            out = b"\r\n"
        elif not self._at_line_start:
            out = b"\r\n"  # RFC 5321 §4.1.1.4: the content ends with CRLF before "."
        self._pending_cr = False
        self._at_line_start = True
        return out + b".\r\n"


# --- helpers ----------------------------------------------------------------------------------


def _make_reply(code: int, texts: list[str]) -> Reply:
    """Build a Reply, peeling an RFC 3463 enhanced code whose class matches the reply code."""
    first = _ENHANCED.match(texts[0])
    if first is None or first.group(1) != str(code)[0]:
        return Reply(code, None, tuple(texts))
    enhanced = ".".join(first.groups())
    prefix = enhanced + " "
    # RFC 2034 §4: the enhanced code prefixes every line of a multi-line reply.
    lines = tuple(
        t[len(prefix) :] if t.startswith(prefix) else ("" if t == enhanced else t) for t in texts
    )
    return Reply(code, enhanced, lines)


def _parse_extensions(reply: Reply) -> dict[str, str]:
    """RFC 5321 §4.1.1.1: ehlo-line = ehlo-keyword *( SP ehlo-param ), after the greet line."""
    extensions: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, value = line.strip().partition(" ")
        if keyword.upper().startswith("AUTH="):
            # Pre-RFC 4954 servers advertise "AUTH=LOGIN PLAIN"; use it only as a fallback.
            keyword, value = "AUTH", keyword[5:] + " " + value
            if "AUTH" in extensions:
                continue
        if keyword:
            extensions[keyword.upper()] = value.strip()
    return extensions


def _encode_orcpt(orcpt: str) -> str:
    addr_type, _, address = orcpt.partition(";")
    if addr_type.lower() == "utf-8":
        return orcpt  # RFC 6533 §3: stored already encoded
    if not address.isascii():
        # RFC 6533 §3: utf-8-addr-xtext = 1*(QCHAR / "\x{" HEXPOINT "}"), where QCHAR is
        # printable ASCII but "+", "=" and "\\"; everything else is spelled \x{HEX}.
        return "utf-8;" + "".join(
            ch if "!" <= ch <= "~" and ch not in "+=\\" else f"\\x{{{ord(ch):X}}}" for ch in address
        )
    return f"{addr_type};{encode_xtext(address)}"


def _b64(data: bytes) -> str:
    # RFC 4954 §4: an empty response is sent as "=".
    return base64.b64encode(data).decode("ascii") or "="


def _check_token(value: str, what: str) -> None:
    if not value or any(ch in value for ch in " \r\n\0"):
        raise ValueError(f"bad {what}: {value!r}")


def _check_path(address: str) -> None:
    # A path goes between "<" and ">" on one command line: no line breaks, no brackets.
    if any(ch in address for ch in "\r\n\0<>"):
        raise ValueError(f"bad address: {address!r}")
