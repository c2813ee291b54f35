"""The asyncio driver of one SMTP session: socket bytes ↔ engine, engine decisions ↔ ingress.

Replies are written when the engine needs more input, so pipelined commands (RFC 2920) get
their replies in one write. STARTTLS is requested by the engine and performed here. Reads wait
up to the idle timeout between commands, and no longer than a request's deadline inside one
(net/deadline.py).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass

from postroom.net import pregreet
from postroom.net import tls as tlsinfo
from postroom.net.deadline import RequestDeadline
from postroom.net.listener import TLS_HANDSHAKE_TIMEOUT, ShutdownFlag
from postroom.net.stream import ByteStream
from postroom.proto.smtp import events as ev
from postroom.proto.smtp import replies
from postroom.proto.smtp.server import Mode, ServerSettings, SmtpServer
from postroom.services.ingress import IngressContext, IngressSession, SessionInfo
from postroom.services.metrics import SmtpMetrics

log = logging.getLogger("postroom.smtp")

# The decisions whose time `postroom_command_seconds` measures, by the command they answer
# (MessageComplete: the end of DATA, or of the last BDAT chunk).
TIMED: dict[type, str] = {
    ev.MailFrom: "MAIL",
    ev.RcptTo: "RCPT",
    ev.MessageComplete: "DATA",
    ev.Verify: "AUTH",
    ev.StartTls: "STARTTLS",
    ev.Etrn: "ETRN",
}


@dataclass
class SmtpService:
    """One SMTP listener's behaviour: smtp (MX), submission (STARTTLS) or submissions (TLS)."""

    name: str
    ctx: IngressContext
    settings: ServerSettings
    tls_context: ssl.SSLContext | None
    shutdown: ShutdownFlag
    metrics: SmtpMetrics

    async def handle(self, stream: ByteStream) -> None:
        self.metrics.connections.inc()
        if self.shutdown.active:
            stream.write(replies.service_unavailable(self.settings.hostname).to_bytes())
            return
        engine = SmtpServer(self.settings, tls_active=stream.tls_object is not None)
        session = IngressSession(
            self.ctx, service=self.name, client_addr=stream.peer[0], client_port=stream.peer[1]
        )
        try:
            refusal = await session.connect_refusal()  # a network blocked (antispam.py)
            if refusal is not None:
                stream.write(refusal.to_bytes())
                return
            delay = self.ctx.config.antispam.greet_delay
            if delay and not await pregreet.wait(stream, self.settings.hostname, delay):
                return
            engine.greet()
            await self._loop(stream, engine, session)
        finally:
            session.close()

    async def _loop(self, stream: ByteStream, engine: SmtpServer, session: IngressSession) -> None:
        limits = self.ctx.config.limits
        loop = asyncio.get_running_loop()
        deadline = RequestDeadline()
        received = 0
        commands = self.metrics.commands
        while True:
            event = engine.next_event()
            timed = TIMED.get(type(event))
            started = time.perf_counter() if timed is not None else 0.0
            if isinstance(event, ev.NeedData):
                stream.write(engine.data_to_send())
                if stream.backed_up and not await stream.keep_up(limits.command_timeout):
                    return
                if engine.closed:
                    return
                if self.shutdown.active and not engine.in_transaction and not engine.buffered:
                    engine.shutdown(replies.service_unavailable(self.settings.hostname))
                    continue
                timeout = (
                    limits.data_timeout
                    if engine.mode in (Mode.DATA, Mode.BDAT)
                    else limits.command_timeout
                )
                # RFC 5321 §4.5.3.2: the timeouts; a request must also arrive whole in time.
                wait = deadline.wait_for(
                    mid_request=engine.mid_request,
                    received=received,
                    timeout=timeout,
                    now=loop.time(),
                )
                try:
                    data = await stream.read(wait)
                except TimeoutError:
                    engine.shutdown(replies.TIMEOUT)
                    continue
                if not data and stream.at_eof:
                    return
                received = len(data)
                engine.receive_data(data)
            elif isinstance(event, ev.MessageData):
                session.data(event.data)
            elif isinstance(event, ev.MailFrom):
                refusal = await session.mail(event, engine.identity)
                if refusal is None and session.milter is not None:
                    info = self._info(stream, engine)
                    refusal = await session.milter_mail(event, info)
                self._decide(engine, session, "from", event.address, refusal)
            elif isinstance(event, ev.RcptTo):
                refusal = await session.rcpt(event, engine.identity)
                if refusal is None and session.milter is not None:
                    refusal = await session.milter_rcpt(event)
                self._decide(engine, session, "to", event.address, refusal)
            elif isinstance(event, ev.MessageComplete):
                response = await session.complete(self._info(stream, engine))
                self.metrics.message(response.code)
                if response.code == 250:
                    engine.accept(response)
                else:
                    engine.reject(response)
            elif isinstance(event, ev.TransactionAborted):
                session.abort()
            elif isinstance(event, ev.Verify):
                authenticator = self.ctx.authenticator
                engine.answered(await authenticator.answer(event.need, stream.peer[0]))
            elif isinstance(event, ev.AuthFailed):
                await self.ctx.authenticator.failed(
                    self.name, stream.peer[0], event.authcid, event.mechanism
                )
            elif isinstance(event, ev.Authenticated):
                log.info("authenticated client=%s user=%s", stream.peer[0], event.identity)
            elif isinstance(event, ev.StartTls):
                if not await self._start_tls(stream, engine):
                    return
            elif isinstance(event, ev.Etrn):
                # RFC 1985: run that node's queue now (at most so often: services/etrn.py).
                refusal = await self.ctx.etrn(event.node, stream.peer[0])
                engine.accept() if refusal is None else engine.reject(refusal)
            elif isinstance(event, ev.CloseConnection):
                stream.write(engine.data_to_send())
                return
            if timed is not None:
                commands[timed].observe(time.perf_counter() - started)

    @staticmethod
    def _info(stream: ByteStream, engine: SmtpServer) -> SessionInfo:
        return SessionInfo(
            helo=engine.helo_name or "",
            extended=engine.extended,
            tls=tlsinfo.describe(stream.tls_object),
            identity=engine.identity,
        )

    def _decide(
        self,
        engine: SmtpServer,
        session: IngressSession,
        what: str,
        address: str,
        refusal: replies.Reply | None,
    ) -> None:
        if refusal is None:
            engine.accept()
        else:
            session.rejected(what, address, refusal)
            engine.reject(refusal)

    async def _start_tls(self, stream: ByteStream, engine: SmtpServer) -> bool:
        assert self.tls_context is not None
        stream.write(engine.data_to_send())
        try:
            await stream.start_tls(self.tls_context, TLS_HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as error:
            log.info("starttls failed client=%s error=%s", stream.peer[0], error)
            return False
        engine.tls_started()
        return True
