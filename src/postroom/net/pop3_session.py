"""The asyncio driver of one POP3 session: socket bytes ↔ engine, engine decisions ↔ maildrop.

Responses are written when the engine needs more input, so pipelined commands (RFC 2449 §6.6)
get their responses in one write. STLS is requested by the engine and performed here, with
any plaintext the client pipelined behind it discarded. The maildrop lock is released however
the session ends; only a QUIT commits deletions (RFC 1939 §6). A command line must arrive
whole within the timeout of its first byte (net/deadline.py).
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass

from postroom.net.listener import TLS_HANDSHAKE_TIMEOUT, ShutdownFlag
from postroom.net.stream import ByteStream
from postroom.net.turns import Turns
from postroom.proto.pop3 import events as ev
from postroom.proto.pop3 import replies
from postroom.proto.pop3.engine import Pop3Server, Pop3Settings
from postroom.services.maildrop import Maildrop, MaildropContext, MaildropInUse
from postroom.services.metrics import SessionMetrics
from postroom.storage.records import StorageFailure

log = logging.getLogger("postroom.pop3")

# The decisions timed one by one, by the command they answer (FetchMessage: RETR and TOP).
# A login's (PASS, AUTH) is timed with the maildrop opening after it.
_TIMED: dict[type, str] = {ev.FetchMessage: "RETR", ev.CommitDeletions: "QUIT", ev.StartTls: "STLS"}


@dataclass
class Pop3Service:
    """One POP3 listener's behaviour: pop3 (STLS) or pop3s (implicit TLS)."""

    name: str
    ctx: MaildropContext
    settings: Pop3Settings
    tls_context: ssl.SSLContext | None
    shutdown: ShutdownFlag
    timeout: float  # RFC 1939 §3: the inactivity autologout timer, at least 10 minutes
    metrics: SessionMetrics

    @staticmethod
    def refuse(why: str) -> bytes:
        return replies.err(f"Service unavailable: {why}", "SYS/TEMP").to_bytes()

    async def handle(self, stream: ByteStream) -> None:
        if self.shutdown.active:
            stream.write(replies.SHUTTING_DOWN.to_bytes())
            return
        engine = Pop3Server(self.settings, tls_active=stream.tls_object is not None)
        maildrop = Maildrop(self.ctx)
        engine.greet()
        self.metrics.sessions.inc()
        try:
            await self._loop(stream, engine, maildrop)
        finally:
            self.metrics.sessions.dec()
            maildrop.close()
            if engine.identity is not None:
                log.info(
                    "pop3 logout service=%s client=%s user=%s retrieved=%d deleted=%d",
                    self.name,
                    stream.peer[0],
                    engine.identity,
                    engine.retrieved,
                    engine.removed,
                )

    async def _loop(self, stream: ByteStream, engine: Pop3Server, maildrop: Maildrop) -> None:
        turns = Turns(stream, self.shutdown, self.timeout, replies.SHUTTING_DOWN, replies.TIMEOUT)
        # A login's credential check, observed together with the maildrop opening that follows
        # it at once: (its command, the seconds it took).
        login: tuple[str, float] | None = None
        commands = self.metrics.commands
        while True:
            event = engine.next_event()
            started = time.perf_counter()
            if login is not None and not isinstance(event, ev.OpenMaildrop):
                commands[login[0]].observe(login[1])
                login = None
            timed = _TIMED.get(type(event))
            if isinstance(event, ev.NeedData):
                if not await turns.take(engine):
                    return
            elif isinstance(event, ev.Verify):
                authenticator = self.ctx.authenticator
                engine.answered(await authenticator.answer(event.need, stream.peer[0]))
                command = "PASS" if event.mechanism == "USER" else "AUTH"
                login = (command, time.perf_counter() - started)
            elif isinstance(event, ev.AuthFailed):
                await self.ctx.authenticator.failed(
                    self.name, stream.peer[0], event.authcid, event.mechanism
                )
            elif isinstance(event, ev.OpenMaildrop):
                await self._open(stream, engine, maildrop, event.identity)
                command, spent = login or ("AUTH", 0.0)
                commands[command].observe(spent + time.perf_counter() - started)
                login = None
            elif isinstance(event, ev.FetchMessage):
                try:
                    content = await maildrop.fetch(event.key)
                except StorageFailure as failure:
                    log.warning("reading a message failed client=%s: %s", stream.peer[0], failure)
                    engine.fetch_failed()
                    continue
                except Exception:
                    log.exception("reading a message failed client=%s", stream.peer[0])
                    engine.fetch_failed()
                    continue
                engine.message_fetched(content)
            elif isinstance(event, ev.CommitDeletions):
                try:
                    await maildrop.commit(event.keys)
                except StorageFailure as failure:
                    log.warning("pop3 expunge failed user=%s: %s", engine.identity, failure)
                    engine.deletions_committed(False)
                    continue
                except Exception:
                    log.exception("pop3 expunge failed user=%s", engine.identity)
                    engine.deletions_committed(False)
                    continue
                engine.deletions_committed(True)
            elif isinstance(event, ev.StartTls):
                if not await self._start_tls(stream, engine):
                    return
            elif isinstance(event, ev.CloseConnection):
                stream.write(engine.data_to_send())
                return
            if timed is not None:
                commands[timed].observe(time.perf_counter() - started)

    async def _open(
        self, stream: ByteStream, engine: Pop3Server, maildrop: Maildrop, identity: str
    ) -> None:
        try:
            entries = await maildrop.open(identity)
        except MaildropInUse:
            log.info("pop3 maildrop in use client=%s user=%s", stream.peer[0], identity)
            engine.maildrop_refused(in_use=True)
            return
        except LookupError as error:
            log.info("pop3 no maildrop client=%s: %s", stream.peer[0], error)
            engine.maildrop_refused(in_use=False)
            return
        except StorageFailure as failure:
            log.warning("opening the maildrop failed user=%s: %s", identity, failure)
            engine.maildrop_refused(in_use=False)
            return
        except Exception:
            log.exception("opening the maildrop failed user=%s", identity)
            engine.maildrop_refused(in_use=False)
            return
        log.info(
            "pop3 login service=%s client=%s user=%s messages=%d tls=%s",
            self.name,
            stream.peer[0],
            identity,
            len(entries),
            "yes" if engine.tls_active else "no",
        )
        engine.maildrop_opened(entries)

    async def _start_tls(self, stream: ByteStream, engine: Pop3Server) -> bool:
        assert self.tls_context is not None
        stream.write(engine.data_to_send())
        try:
            await stream.start_tls(self.tls_context, TLS_HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as error:
            log.info("stls failed client=%s error=%s", stream.peer[0], error)
            return False
        engine.tls_started()
        return True
