"""The milter client: calls the configured mail filters during one SMTP session, as Postfix does.

One `MilterSession` per SMTP session holds one connection per configured milter, opened on
first need (at the first MAIL FROM: the milter then gets OPTNEG, CONNECT, HELO and MAIL in one
go) and closed with QUIT when the session ends. Every stage returns a typed decision (a `Reply`
to refuse, None to go on); `end_of_message` sends the content (DATA, each header, EOH, body
chunks, EOB) to each milter in order, applies its changes before the next one sees the message
(headers, body, sender, recipients, quarantine), and returns what ingress must do.

Failure of a milter (cannot connect, timeout, protocol error, the milter hangs up) follows its
`on_error`: "tempfail" answers 451 4.7.1 from then on in this session, "accept" leaves that
milter out of the rest of the session. Each action a milter takes is logged on one line.

Choices where the protocol leaves room (Postfix's behaviour unless said otherwise):
- a reject or tempfail at CONNECT or HELO is answered at MAIL FROM (the engine has already
  greeted and answered HELO; Postfix's smtpd_delay_reject does the same for its own checks);
- DATA, headers and body reach the milters when the whole message is in, before it is queued;
- a milter's `X-Spam: Yes` header (rspamd's "add header" action) or a quarantine files the
  message in the recipients' Junk mailbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from postroom.config_milter import MilterConfig
from postroom.proto.milter import codec, edit
from postroom.proto.milter.codec import MilterProtocolError, Negotiated
from postroom.proto.smtp import replies
from postroom.proto.smtp.params import MailParams, RcptParams, encode_xtext
from postroom.proto.smtp.replies import Reply

log = logging.getLogger("postroom.milter")

TEMPFAIL = replies.reply(451, "4.7.1", "Service unavailable - try again later")
REJECT = replies.reply(550, "5.7.1", "Command rejected")
MESSAGE_REJECT = replies.reply(550, "5.7.1", "Message content rejected")
MAX_REPLIES = 100_000  # modification packets accepted at end of message from one milter

# Macros Postfix sends by default at each stage (milter_*_macros); a milter's SETSYMLIST
# request replaces the list for its stage (any macro known at that point may be asked for).
DEFAULT_MACROS: dict[bytes, tuple[str, ...]] = {
    codec.C_CONNECT: ("j", "{daemon_name}", "{daemon_addr}", "v", "_", "{client_addr}"),
    codec.C_HELO: ("{tls_version}", "{cipher}", "{cipher_bits}"),
    codec.C_MAIL: ("i", "{auth_type}", "{auth_authen}", "{mail_addr}", "{mail_host}"),
    codec.C_RCPT: ("{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"),
    codec.C_DATA: ("i",),
    codec.C_EOH: ("i",),
    codec.C_BODYEOB: ("i",),
}
_STAGE_OF = {command: stage for stage, command in codec.STAGE_COMMAND.items()}


class MilterFailure(Exception):
    """The milter cannot be used (unreachable, timed out, protocol error, hung up)."""


@dataclass(frozen=True, slots=True)
class ClientFacts:
    """What milters are told about the connection."""

    service: str  # {daemon_name}
    hostname: str  # {j}
    client_addr: str
    client_port: int = 0
    daemon_addr: str = ""
    local_domains: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class MailFacts:
    """What is known when MAIL FROM arrives."""

    helo: str
    tls: str  # net.tls.describe(): "TLSv1.3 with cipher NAME (256/256 bits)", or ""
    identity: str | None  # the authenticated user
    queue_id: str  # the {i} macro; ingress queues the message under this ID


@dataclass(slots=True)
class Outcome:
    """What the milters decided at end of message, for ingress to apply."""

    reply: Reply | None = None  # refuse the message with this
    discard: bool = False  # answer 250, keep nothing
    junk: bool = False  # quarantined, or X-Spam: Yes: to the recipients' Junk mailbox
    message: bytes | None = None  # the whole new message when headers or body changed
    sender: str | None = None  # a new envelope sender
    added: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)  # for the queued log line


class _Connection:
    """One milter for one SMTP session."""

    def __init__(self, config: MilterConfig, facts: ClientFacts) -> None:
        self.config = config
        self.facts = facts
        self.name = config.address
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.packets = codec.PacketReader()
        self.negotiated = Negotiated(codec.VERSION, 0, 0)
        self.failed = False
        self.session_reply: Reply | None = None  # reject/tempfail at connect or helo
        self.session_accept = False  # accept at connect or helo: left out of the session
        self.message_accept = False  # accept during a transaction: left out of its rest
        self.discard = False
        self.in_message = False
        self.helo_sent: str | None = None
        self.macros: dict[str, str] = {}

    @property
    def skipped(self) -> bool:
        return self.session_accept or (self.failed and self.config.on_error == "accept")

    # --- I/O ----------------------------------------------------------------------------------

    async def open(self) -> None:
        timeout = self.config.connect_timeout
        try:
            if self.config.path is not None:
                opening = asyncio.open_unix_connection(str(self.config.path))
            else:
                opening = asyncio.open_connection(self.config.host, self.config.port)
            reader, writer = await asyncio.wait_for(opening, timeout)
            self.reader, self.writer = reader, writer
            writer.write(codec.optneg())
            command, data = await self._packet(timeout)
            self.negotiated = codec.parse_optneg(command, data)
        except (OSError, TimeoutError, MilterProtocolError) as error:
            raise MilterFailure(f"connect: {_describe(error)}") from None

    async def _packet(self, timeout: float) -> tuple[bytes, bytes]:
        assert self.reader is not None
        while True:
            try:
                got = self.packets.next_packet()
            except MilterProtocolError as error:
                raise MilterFailure(str(error)) from None
            if got is not None:
                return got
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except (OSError, TimeoutError) as error:
                raise MilterFailure(_describe(error)) from None
            if not data:
                raise MilterFailure("the milter closed the connection")
            self.packets.feed(data)

    async def _send(self, data: bytes, timeout: float) -> None:
        assert self.writer is not None
        self.writer.write(data)
        try:
            await asyncio.wait_for(self.writer.drain(), timeout)
        except (OSError, TimeoutError) as error:
            raise MilterFailure(_describe(error)) from None

    async def ask(self, command: bytes, data: bytes, timeout: float) -> codec.Reply | None:
        """Send one stage (its macros first); the final answer, None when the negotiated
        protocol skips the stage or has no reply for it."""
        n = self.negotiated
        if not n.sends(command):
            return None
        out = self._macro_packet(command) + data
        if not n.replies(command):
            assert self.writer is not None
            self.writer.write(out)
            return None
        await self._send(out, timeout)
        return await self.final(timeout, None)

    async def final(
        self, timeout: float, modifications: list[codec.Modification] | None
    ) -> codec.Reply:
        """Read up to the final answer; modifications only where a list is given (EOB)."""
        count = 0
        while True:
            command, data = await self._packet(timeout)
            try:
                reply = codec.parse_reply(command, data)
            except MilterProtocolError as error:
                raise MilterFailure(str(error)) from None
            if isinstance(reply, codec.Progress):
                continue  # the timeout starts again
            if isinstance(reply, (codec.Verdict, codec.ReplyCode)):
                return reply
            action = codec.MODIFICATION_ACTION[command]
            if modifications is None:
                raise MilterFailure(f"modification {command!r} outside end of message")
            if not self.negotiated.may(action):
                raise MilterFailure(f"modification {command!r} was not negotiated")
            count += 1
            if count > MAX_REPLIES:
                raise MilterFailure("too many modifications")
            modifications.append(reply)

    def _macro_packet(self, command: bytes) -> bytes:
        wanted = self.negotiated.symlists.get(_STAGE_OF.get(command, -1))
        names = wanted if wanted is not None else DEFAULT_MACROS.get(command, ())
        values = [(name, self.macros[name]) for name in names if self.macros.get(name)]
        return codec.macro(command, values) if values else b""

    def write(self, data: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)

    def close(self) -> None:
        if self.writer is not None:
            self.write(codec.quit())
            self.writer.close()
        self.writer = None
        self.reader = None


class MilterSession:
    """The configured milters, in order, for one SMTP session."""

    def __init__(
        self, milters: Sequence[MilterConfig], facts: ClientFacts, max_size: int = 0
    ) -> None:
        self.facts = facts
        self.max_size = max_size or 64 * 1024 * 1024
        self._connections = [_Connection(m, facts) for m in milters]

    # --- stages -------------------------------------------------------------------------------

    async def mail(self, sender: str, params: MailParams, mail: MailFacts) -> Reply | None:
        """CONNECT and HELO when not sent yet, then MAIL; a refusal ends the loop."""
        self.abort()
        for conn in self._connections:
            if conn.skipped:
                continue
            if conn.failed:
                return self._failed_reply(conn, "mail")
            conn.message_accept = False
            conn.discard = False
            _set_mail_macros(conn.macros, self.facts, sender, mail)
            try:
                refusal = await self._begin(conn, mail)
                if refusal is not None:
                    return refusal
                if conn.skipped:
                    continue
                conn.in_message = True
                answer = await conn.ask(
                    codec.C_MAIL, codec.mail(sender, _mail_args(params)), _cmd(conn)
                )
            except MilterFailure as failure:
                refusal = self._fail(conn, "mail", failure)
                if refusal is not None:
                    return refusal
                continue
            refusal = self._verdict(conn, "mail", answer, REJECT)
            if refusal is not None:
                return refusal
        return None

    async def _begin(self, conn: _Connection, mail: MailFacts) -> Reply | None:
        """Open the connection (OPTNEG, CONNECT) and send HELO when it changed."""
        timeout = _cmd(conn)
        if conn.writer is None:
            await conn.open()
            facts = self.facts
            family = "6" if ":" in facts.client_addr else "4" if facts.client_addr else "U"
            answer = await conn.ask(
                codec.C_CONNECT,
                codec.connect("unknown", facts.client_addr, facts.client_port, family),
                timeout,
            )
            self._session_verdict(conn, "connect", answer)
        if conn.session_reply is not None:
            return conn.session_reply
        if conn.helo_sent != mail.helo and not conn.skipped:
            conn.helo_sent = mail.helo
            answer = await conn.ask(codec.C_HELO, codec.helo(mail.helo), timeout)
            self._session_verdict(conn, "helo", answer)
        return conn.session_reply

    async def rcpt(self, address: str, params: RcptParams) -> Reply | None:
        for conn in self._connections:
            if conn.skipped or conn.message_accept or not conn.in_message:
                continue
            domain = address.rpartition("@")[2].lower()
            conn.macros["{rcpt_addr}"] = address
            conn.macros["{rcpt_host}"] = domain
            conn.macros["{rcpt_mailer}"] = "local" if domain in self.facts.local_domains else "smtp"
            try:
                answer = await conn.ask(
                    codec.C_RCPT, codec.rcpt(address, _rcpt_args(params)), _cmd(conn)
                )
            except MilterFailure as failure:
                refusal = self._fail(conn, "rcpt", failure)
                if refusal is not None:
                    return refusal
                continue
            refusal = self._verdict(conn, "rcpt", answer, REJECT)
            if refusal is not None:
                return refusal
        return None

    @property
    def wants_message(self) -> bool:
        """Whether end_of_message has anything to do (some milter is in the transaction)."""
        return any(c.in_message or (c.failed and not c.skipped) for c in self._connections)

    async def end_of_message(self, queue_id: str, message: bytes) -> Outcome:
        """DATA, headers, EOH, body, EOB to each milter in turn; its changes applied before
        the next milter sees the message."""
        outcome = Outcome()
        changed = False
        try:
            for conn in self._connections:
                if conn.skipped:
                    continue
                if conn.failed:
                    outcome.reply = self._failed_reply(conn, "eom")
                    return outcome
                if not conn.in_message:
                    continue
                if conn.discard:
                    outcome.discard = True
                    return outcome
                if conn.message_accept:
                    continue
                conn.macros["i"] = queue_id
                try:
                    answer, mods = await self._content(conn, message)
                except MilterFailure as failure:
                    outcome.reply = self._fail(conn, "eom", failure)
                    if outcome.reply is not None:
                        return outcome
                    continue
                finally:
                    conn.in_message = False
                if answer is not None and _kind(answer) == "discard":
                    self._log(conn, "eom", "discard", "")
                    outcome.discard = True
                    return outcome
                refusal = self._verdict(conn, "eom", answer, MESSAGE_REJECT)
                if refusal is not None:
                    outcome.reply = refusal
                    return outcome
                new = self._apply(conn, message, mods, outcome)
                if new is not None:
                    message, changed = new, True
        finally:
            for conn in self._connections:
                conn.in_message = False
        if changed:
            outcome.message = message
        return outcome

    async def _content(
        self, conn: _Connection, message: bytes
    ) -> tuple[codec.Reply | None, list[codec.Modification]]:
        """The message to one milter; (its final answer, its modifications)."""
        timeout = conn.config.content_timeout
        n = conn.negotiated
        answer = await conn.ask(codec.C_DATA, codec.data(), timeout)
        if _stops(answer):
            return answer, []
        fields, body = edit.split_message(message)
        if n.sends(codec.C_HEADER):
            for f in fields:
                value = edit.value_for_milter(f.raw, n.leading_space)
                answer = await conn.ask(codec.C_HEADER, codec.header(f.name, value), timeout)
                if _stops(answer):
                    return answer, []
        answer = await conn.ask(codec.C_EOH, codec.eoh(), timeout)
        if _stops(answer):
            return answer, []
        if n.sends(codec.C_BODY):
            view = memoryview(body)
            for start in range(0, len(body), codec.BODY_CHUNK):
                chunk = bytes(view[start : start + codec.BODY_CHUNK])
                answer = await conn.ask(codec.C_BODY, codec.body(chunk), timeout)
                if answer is not None and _kind(answer) == "skip":
                    break  # SMFIR_SKIP: the milter has seen enough of the body
                if _stops(answer):
                    return answer, []
        mods: list[codec.Modification] = []
        await conn._send(conn._macro_packet(codec.C_BODYEOB) + codec.end_of_body(), timeout)
        answer = await conn.final(timeout, mods)
        return answer, mods

    def _apply(
        self, conn: _Connection, message: bytes, mods: list[codec.Modification], out: Outcome
    ) -> bytes | None:
        """Envelope changes into `out`; the new message when headers or body changed."""
        header_mods: list[codec.Modification] = []
        body_parts: list[bytes] | None = None
        size = 0
        for mod in mods:
            if isinstance(mod, (codec.AddHeader, codec.InsertHeader, codec.ChangeHeader)):
                header_mods.append(mod)
                self._log(conn, "eom", type(mod).__name__.lower(), f"header={mod.name}")
                if mod.name.lower() == "x-spam" and mod.value.strip().lower() in ("yes", "true"):
                    out.junk = True
                    out.actions.append(f"spam:{conn.name}")
            elif isinstance(mod, codec.ReplaceBody):
                body_parts = body_parts if body_parts is not None else []
                size += len(mod.chunk)
                if size > self.max_size:
                    raise MilterFailure("replacement body larger than the message size limit")
                body_parts.append(mod.chunk)
            elif isinstance(mod, codec.ChangeFrom):
                out.sender = mod.sender
                self._log(conn, "eom", "chgfrom", f"from=<{mod.sender}>")
            elif isinstance(mod, codec.AddRecipient):
                out.added.append((mod.recipient, mod.args))
                self._log(conn, "eom", "addrcpt", f"to=<{mod.recipient}>")
            elif isinstance(mod, codec.DeleteRecipient):
                out.deleted.append(mod.recipient)
                self._log(conn, "eom", "delrcpt", f"to=<{mod.recipient}>")
            elif isinstance(mod, codec.Quarantine):
                out.junk = True
                out.actions.append(f"quarantine:{conn.name}")
                self._log(conn, "eom", "quarantine", f"reason={mod.reason!r}")
        if body_parts is not None:
            self._log(conn, "eom", "replbody", f"size={size}")
        if not header_mods and body_parts is None:
            return None
        fields, body = edit.split_message(message)
        new_body = b"".join(body_parts) if body_parts is not None else None
        return edit.apply(fields, body, header_mods, new_body, conn.negotiated.leading_space)

    def abort(self) -> None:
        """The transaction ended without a message (RSET, a new MAIL, HELO, QUIT): ABORT to
        every milter in it."""
        for conn in self._connections:
            if conn.in_message:
                conn.write(codec.abort())
                conn.in_message = False

    def close(self) -> None:
        """The SMTP session is over: QUIT and close every connection."""
        self.abort()
        for conn in self._connections:
            conn.close()

    # --- verdicts -----------------------------------------------------------------------------

    def _session_verdict(self, conn: _Connection, stage: str, answer: codec.Reply | None) -> None:
        if answer is None:
            return
        kind = _kind(answer)
        if kind == "accept":
            conn.session_accept = True
            self._log(conn, stage, "accept", "")
        elif kind in ("reject", "tempfail"):
            conn.session_reply = _refusal(answer, REJECT)
            self._log(conn, stage, kind, _show(conn.session_reply))
        elif kind in ("shutdown", "conn_fail"):
            raise MilterFailure(f"{kind} at {stage}")
        elif kind != "continue":
            self._log(conn, stage, f"{kind} (ignored here)", "")

    def _verdict(
        self, conn: _Connection, stage: str, answer: codec.Reply | None, default: Reply
    ) -> Reply | None:
        if answer is None:
            return None
        kind = _kind(answer)
        if kind in ("continue", "skip"):
            return None
        if kind == "accept":
            conn.message_accept = True
            self._log(conn, stage, "accept", "")
            return None
        if kind == "discard":
            conn.discard = True
            self._log(conn, stage, "discard", "")
            return None
        if kind in ("shutdown", "conn_fail"):
            return self._fail(conn, stage, MilterFailure(f"{kind} at {stage}"))
        refusal = _refusal(answer, default)
        self._log(conn, stage, kind, _show(refusal))
        return refusal

    def _fail(self, conn: _Connection, stage: str, failure: MilterFailure) -> Reply | None:
        conn.failed = True
        conn.in_message = False
        conn.close()
        action = "accept (skipped)" if conn.config.on_error == "accept" else "tempfail 451 4.7.1"
        log.warning(
            "milter %s stage=%s client=%s failed: %s; on_error=%s",
            conn.name,
            stage,
            self.facts.client_addr,
            failure,
            action,
        )
        return None if conn.config.on_error == "accept" else TEMPFAIL

    def _failed_reply(self, conn: _Connection, stage: str) -> Reply:
        self._log(conn, stage, "tempfail", "milter unavailable earlier in this session")
        return TEMPFAIL

    def _log(self, conn: _Connection, stage: str, action: str, detail: str) -> None:
        log.info(
            "milter %s stage=%s action=%s client=%s%s",
            conn.name,
            stage,
            action,
            self.facts.client_addr,
            f" {detail}" if detail else "",
        )


# --- helpers -----------------------------------------------------------------------------------


def _cmd(conn: _Connection) -> float:
    return conn.config.command_timeout


def _kind(answer: codec.Reply) -> str:
    if isinstance(answer, codec.ReplyCode):
        return "reject" if answer.code >= 500 else "tempfail"
    assert isinstance(answer, codec.Verdict)
    return answer.kind


def _stops(answer: codec.Reply | None) -> bool:
    """A final answer that ends this milter's part in the message (anything but continue)."""
    return answer is not None and _kind(answer) not in ("continue", "skip")


def _refusal(answer: codec.Reply, default: Reply) -> Reply:
    if isinstance(answer, codec.ReplyCode):
        return Reply(answer.code, answer.enhanced, answer.lines or ("",))
    if isinstance(answer, codec.Verdict) and answer.kind == "tempfail":
        return TEMPFAIL
    return default


def _show(reply: Reply) -> str:
    return f"reply={reply.code} {reply.enhanced or ''} {' / '.join(reply.lines)}".rstrip()


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__


def _set_mail_macros(
    macros: dict[str, str], facts: ClientFacts, sender: str, mail: MailFacts
) -> None:
    macros.update(
        {
            "j": facts.hostname,
            "{daemon_name}": facts.service,
            "{daemon_addr}": facts.daemon_addr,
            "v": "postroom",
            "_": f"unknown [{facts.client_addr}]",
            "{client_addr}": facts.client_addr,
            "{client_port}": str(facts.client_port),
            "{client_name}": "unknown",
            "{client_ptr}": "unknown",
            "i": mail.queue_id,
            "{mail_addr}": sender,
            "{mail_host}": sender.rpartition("@")[2] if "@" in sender else "",
            "{mail_mailer}": "smtp",
            "{auth_type}": "",
            "{auth_authen}": mail.identity or "",
        }
    )
    if mail.identity:
        macros["{auth_type}"] = "PLAIN"  # the mechanism is not kept; any name marks a login
    version, _, rest = mail.tls.partition(" with cipher ")
    cipher, _, bits = rest.partition(" (")
    macros["{tls_version}"] = version if rest else ""
    macros["{cipher}"] = cipher
    macros["{cipher_bits}"] = bits.partition("/")[0]


def _mail_args(params: MailParams) -> list[str]:
    """The MAIL FROM ESMTP parameters, as the client gave them (RFC 1870, 6152, 3461, 6531)."""
    args = []
    if params.size is not None:
        args.append(f"SIZE={params.size}")
    if params.body:
        args.append(f"BODY={params.body}")
    if params.smtputf8:
        args.append("SMTPUTF8")
    if params.ret:
        args.append(f"RET={params.ret}")
    if params.envid:
        args.append(f"ENVID={encode_xtext(params.envid)}")
    return args


def _rcpt_args(params: RcptParams) -> list[str]:
    args = []
    if params.notify:
        args.append("NOTIFY=" + ",".join(params.notify))
    if params.orcpt:
        args.append(f"ORCPT={encode_xtext(params.orcpt)}")
    return args
