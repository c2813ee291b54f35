"""The asyncio driver of one IMAP session: socket bytes ↔ command reader ↔ session handlers.

The reader frames commands and literals; this driver answers literal announcements (RFC 3501
§7.5 "+" for synchronising literals, RFC 7888 for LITERAL+, limits per command that are
stricter before login: proto/imap/literals.py), streams large APPEND literals into spool
buffers, parses each command and runs it. STARTTLS drops any plaintext pipelined behind the
command before the handshake (the CVE-2011-0411 class). A command, literals included, must
arrive within the autologout time of its first byte (net/deadline.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from dataclasses import dataclass

from postroom.net.deadline import RequestDeadline
from postroom.net.listener import TLS_HANDSHAKE_TIMEOUT, ShutdownFlag
from postroom.net.stream import ByteStream
from postroom.proto.imap import grammar_commands as cmd
from postroom.proto.imap import literals
from postroom.proto.imap import reader as rd
from postroom.proto.imap.grammar import parse_command
from postroom.proto.imap.grammar_base import CommandParseError
from postroom.services.imap import commands
from postroom.services.imap.session import WOKEN, ImapContext, ImapSession, Woken
from postroom.services.metrics import OTHER, SessionMetrics
from postroom.storage.buffer import ContentBuffer

log = logging.getLogger("postroom.imap")

MAX_COMMAND_LINE = 64 * 1024
SHUTDOWN_BYE = b"* BYE [UNAVAILABLE] Server shutting down.\r\n"


@dataclass
class ImapService:
    """One IMAP listener: imap (STARTTLS) or imaps (implicit TLS)."""

    name: str
    ctx: ImapContext
    tls_context: ssl.SSLContext | None
    shutdown: ShutdownFlag
    timeout: float  # [limits] imap_timeout: RFC 3501 §5.4 autologout, at least 30 minutes
    metrics: SessionMetrics

    @staticmethod
    def refuse(why: str) -> bytes:
        return f"* BYE [UNAVAILABLE] {why}\r\n".encode()

    async def handle(self, stream: ByteStream) -> None:
        if self.shutdown.active:
            stream.write(b"* BYE [UNAVAILABLE] Server shutting down.\r\n")
            return
        connection = _Connection(stream, self)
        session = ImapSession(self.ctx, connection, tls_active=stream.tls_object is not None)
        self.metrics.sessions.inc()
        try:
            stream.write(session.greeting())
            await connection.serve(session)
        finally:
            self.metrics.sessions.dec()
            session.close()
            connection.discard_streams()


class _Connection:
    """What the session sees of the connection (`ImapIO`), and the read loop."""

    def __init__(self, stream: ByteStream, service: ImapService) -> None:
        self.stream = stream
        self.service = service
        self.peer = stream.peer[0]
        self.listener = service.name
        self.reader = rd.CommandReader(max_line=MAX_COMMAND_LINE)
        self.deadline = RequestDeadline()
        self._received = 0  # bytes of the last read
        self.woken = False  # the last read ended with no input (`_more`)
        self.streams: list[ContentBuffer] = []
        self._current: ContentBuffer | None = None

    @property
    def secure(self) -> bool:
        """Passwords only travel under TLS, as for SMTP AUTH and POP3."""
        return self.stream.tls_object is not None

    async def write(self, data: bytes) -> None:
        # A client that stops reading for the autologout time is dropped (memory stays
        # bounded); the read loop then sees the end of the connection.
        self.stream.write(data)
        if self.stream.backed_up:
            await self.stream.keep_up(self.service.timeout)

    async def _more(self) -> bool:
        """Read more input; TimeoutError after the autologout time between commands, or when
        a command has not arrived whole in that time (net/deadline.py). A read woken with no
        input (`wake`, the poll time, shutdown) sets `woken` and feeds nothing."""
        wait = self.deadline.wait_for(
            mid_request=self.reader.mid_command,
            received=self._received,
            timeout=self.service.timeout,
            now=asyncio.get_running_loop().time(),
        )
        data = await self.stream.read(wait)
        if not data:
            if self.stream.at_eof:
                return False
            self.woken = True
            return True
        self._received = len(data)
        self.reader.feed(data)
        return True

    def timed_out(self) -> bytes:
        """The BYE for a read that timed out: RFC 3501 §5.4's autologout, or a late command."""
        if self.reader.mid_command:
            return b"* BYE Command not completed in time\r\n"
        return b"* BYE Autologout; idle for too long\r\n"

    async def read_line(self) -> bytes | None:
        line = await self._raw_line(wakeable=False)
        assert line is not WOKEN
        return line

    async def idle_line(self, poll: float) -> bytes | Woken | None:
        self.stream.wake_at = asyncio.get_running_loop().time() + poll
        try:
            return await self._raw_line(wakeable=True)
        finally:
            self.stream.wake_at = math.inf

    def wake(self) -> None:
        self.stream.interrupt()

    async def _raw_line(self, *, wakeable: bool) -> bytes | Woken | None:
        self.reader.expect_raw_line()
        self.woken = False
        while True:
            event = self.reader.next_event()
            if isinstance(event, rd.RawLine):
                return event.data
            if isinstance(event, rd.LineTooLong):
                return b""
            if isinstance(event, rd.NeedData):
                try:
                    if not await self._more():
                        return None
                except TimeoutError:
                    await self.write(self.timed_out())  # in IDLE or AUTHENTICATE too
                    return None
                if self.woken and self.service.shutdown.active:
                    await self.write(SHUTDOWN_BYE)  # IDLE ends at once, not cut off later
                    return None
                if self.woken and wakeable:
                    return WOKEN

    async def start_tls(self) -> bool:
        context = self.service.tls_context
        assert context is not None
        dropped = self.reader.discard_buffered()
        if dropped:
            log.info("plaintext after STARTTLS dropped client=%s bytes=%d", self.peer, dropped)
        try:
            await self.stream.start_tls(context, TLS_HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as error:
            log.info("starttls failed client=%s error=%s", self.peer, error)
            return False
        return True

    def discard_streams(self) -> None:
        for buffer in self.streams:
            buffer.discard()
        self.streams.clear()
        if self._current is not None:
            self._current.discard()
            self._current = None

    async def serve(self, session: ImapSession) -> None:
        reader = self.reader
        while True:
            event = reader.next_event()
            if isinstance(event, rd.NeedData):
                await session.flush()
                if self.service.shutdown.active:
                    await self.write(SHUTDOWN_BYE)
                    return
                try:
                    if not await self._more():
                        return
                except TimeoutError:
                    await self.write(self.timed_out())
                    return
            elif isinstance(event, rd.NeedContinuation):
                if not await self._literal(session, event):
                    return
            elif isinstance(event, rd.LiteralChunk):
                if self._current is None:
                    name = f"imap-{id(self):x}-{len(self.streams)}"
                    self._current = session.ctx.store.new_buffer(name)
                self._current.write(event.data)
                if event.last:
                    self.streams.append(self._current)
                    self._current = None
            elif isinstance(event, rd.LineTooLong):
                tag = event.tag or "*"
                await self.write(f"{tag} BAD Command line too long\r\n".encode())
            elif isinstance(event, rd.CommandLine):
                if not await self._command(session, event):
                    return
            elif isinstance(event, rd.RawLine):
                continue

    async def _literal(self, session: ImapSession, event: rd.NeedContinuation) -> bool:
        """Accept or refuse a literal (see proto/imap/literals.py); False: hang up."""
        authenticated = session.state in ("auth", "selected")
        verdict = literals.judge(
            event, authenticated=authenticated, max_append=session.ctx.max_append
        )
        if verdict.refusal:
            if verdict.close:
                log.info("literal refused before login, closing client=%s", self.peer)
            else:
                self.reader.reject_literal()
            session.send(verdict.refusal)
            await session.flush()
            return not verdict.close
        self.reader.accept_literal()
        if event.synchronizing:
            await session.flush()
            await self.write(b"+ OK\r\n")
        return True

    async def _command(self, session: ImapSession, line: rd.CommandLine) -> bool:
        try:
            request = parse_command(line)
        except CommandParseError as error:
            self.discard_streams()
            tag = error.tag or "*"
            code = f"[{error.code}] " if error.code else ""
            session.send(f"{tag} {error.status} {code}{error.message}\r\n".encode())
            await session.flush()
            return True
        session.streamed = self.streams
        self.streams = []
        command = request.command
        started = time.perf_counter()
        try:
            return await commands.run(session, request.tag, command)
        finally:
            if not isinstance(command, cmd.Idle):  # IDLE lasts as long as the client wants
                latency = self.service.metrics.commands
                name = type(command).__name__.upper()
                latency.get(name, latency[OTHER]).observe(time.perf_counter() - started)
            for buffer in session.streamed:
                buffer.discard()
            session.streamed = []
