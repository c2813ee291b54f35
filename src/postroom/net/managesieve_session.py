"""The asyncio driver of one ManageSieve session (RFC 5804): socket bytes ↔ engine, engine
decisions ↔ credential checks and the script store (services/sieve_scripts.py).

Responses are written when the engine needs more input. STARTTLS is requested by the engine and
performed here, with any plaintext the client pipelined behind it discarded (net/stream.py).
A command must arrive whole within the timeout of its first byte (net/deadline.py); an idle
session is closed with BYE after `timeout`. Failed logins go through `Authenticator.failed`
(the fail2ban line and the login throttle); each login and logout is one log line.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from postroom.net.listener import TLS_HANDSHAKE_TIMEOUT, ShutdownFlag
from postroom.net.stream import ByteStream
from postroom.net.turns import Turns
from postroom.proto.managesieve import ManageSieveServer, ManageSieveSettings
from postroom.proto.managesieve import engine as ms
from postroom.proto.managesieve import events as ev
from postroom.services.sieve_scripts import ManageSieveContext, perform

log = logging.getLogger("postroom.managesieve")

_SCRIPT_OPS = (
    ev.ListScripts,
    ev.GetScript,
    ev.PutScript,
    ev.HaveSpace,
    ev.SetActive,
    ev.DeleteScript,
    ev.RenameScript,
)


@dataclass
class ManageSieveService:
    """One ManageSieve listener's behaviour."""

    name: str
    ctx: ManageSieveContext
    settings: ManageSieveSettings
    tls_context: ssl.SSLContext | None
    shutdown: ShutdownFlag
    timeout: float  # seconds of silence before the session is closed

    @staticmethod
    def refuse(why: str) -> bytes:
        return ms.bye(f"Service unavailable: {why}", "TRYLATER").to_bytes()

    async def handle(self, stream: ByteStream) -> None:
        if self.shutdown.active:
            stream.write(ms.SHUTTING_DOWN.to_bytes())
            return
        engine = ManageSieveServer(self.settings, tls_active=stream.tls_object is not None)
        engine.greet()
        try:
            await self._loop(stream, engine)
        finally:
            if engine.identity is not None:
                self._logout(stream, engine.identity)

    def _logout(self, stream: ByteStream, identity: str) -> None:
        log.info(
            "managesieve logout service=%s client=%s user=%s", self.name, stream.peer[0], identity
        )

    async def _loop(self, stream: ByteStream, engine: ManageSieveServer) -> None:
        turns = Turns(stream, self.shutdown, self.timeout, ms.SHUTTING_DOWN, ms.TIMEOUT)
        while True:
            event = engine.next_event()
            if isinstance(event, ev.NeedData):
                if not await turns.take(engine):
                    return
            elif isinstance(event, ev.Verify):
                authenticator = self.ctx.authenticator
                engine.answered(await authenticator.answer(event.need, stream.peer[0]))
            elif isinstance(event, ev.AuthFailed):
                await self.ctx.authenticator.failed(
                    self.name, stream.peer[0], event.authcid, event.mechanism
                )
            elif isinstance(event, ev.LoggedIn):
                log.info(
                    "managesieve login service=%s client=%s user=%s method=%s tls=%s",
                    self.name,
                    stream.peer[0],
                    event.identity,
                    event.mechanism,
                    "yes" if engine.tls_active else "no",
                )
            elif isinstance(event, ev.LoggedOut):
                self._logout(stream, event.identity)
            elif isinstance(event, _SCRIPT_OPS):
                assert engine.identity is not None
                try:
                    result = await perform(self.ctx.store, engine.identity, event)
                except Exception:
                    log.exception("sieve script operation failed user=%s", engine.identity)
                    result = ms.STORE_FAILED
                engine.script_done(result)
            elif isinstance(event, ev.StartTls):
                if not await self._start_tls(stream, engine):
                    return
            elif isinstance(event, ev.CloseConnection):
                stream.write(engine.data_to_send())
                return

    async def _start_tls(self, stream: ByteStream, engine: ManageSieveServer) -> bool:
        assert self.tls_context is not None
        stream.write(engine.data_to_send())
        try:
            await stream.start_tls(self.tls_context, TLS_HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as error:
            log.info("managesieve starttls failed client=%s error=%s", stream.peer[0], error)
            return False
        engine.tls_started()
        return True
