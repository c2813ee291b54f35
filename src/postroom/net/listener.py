"""TCP listeners: accept connections, enforce connection limits, shut down gracefully.

On shutdown, idle sessions are woken and answered 421; sessions in the middle of a transaction
finish it first; new connections get 421 until the last session is gone (or the grace period
ends and the stragglers are cut off).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from postroom.net.stream import ByteStream

log = logging.getLogger("postroom.net")

Handler = Callable[[ByteStream], Coroutine[Any, Any, None]]

SWEEP_INTERVAL = 0.5  # seconds; the granularity of command and data timeouts


class Listener:
    """One listening socket for one service, with per-IP and total connection limits."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        handler: Handler,
        *,
        ssl_context: ssl.SSLContext | None,
        max_per_ip: int,
        max_total: int,
        refuse: Callable[[str], bytes],
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._handler = handler
        self._ssl = ssl_context
        self._max_per_ip = max_per_ip
        self._max_total = max_total
        self._refuse = refuse
        self._per_ip: collections.Counter[str] = collections.Counter()
        self.streams: set[ByteStream] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ByteStream(self._guarded),
            self.host,
            self.port,
            ssl=self._ssl,
            reuse_address=True,
            backlog=512,
        )
        self._sweeper = loop.create_task(self._sweep())
        sockname = self._server.sockets[0].getsockname()
        self.port = int(sockname[1])
        log.info("listening service=%s address=%s:%d", self.name, self.host, self.port)

    async def _guarded(self, stream: ByteStream) -> None:
        ip = stream.peer[0]
        if self._per_ip[ip] >= self._max_per_ip or len(self.streams) >= self._max_total:
            stream.write(self._refuse("too many connections"))
            return
        self._per_ip[ip] += 1
        self.streams.add(stream)
        try:
            await self._handler(stream)
        except (ConnectionError, ssl.SSLError) as error:
            log.debug("connection error service=%s client=%s: %s", self.name, ip, error)
        except Exception:
            log.exception("session crashed service=%s client=%s", self.name, ip)
        finally:
            self.streams.discard(stream)
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]

    async def _sweep(self) -> None:
        """Expire reads that waited past their timeout (checked every SWEEP_INTERVAL)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = loop.time()
            for stream in list(self.streams):
                stream.expire_if_late(now)

    def wake_all(self) -> None:
        for stream in list(self.streams):
            stream.interrupt()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()


async def drain_sessions(listeners: list[Listener], grace: float) -> None:
    """Wait (up to `grace` seconds) for every session to end, then cut off the rest."""
    for listener in listeners:
        listener.wake_all()
    deadline = asyncio.get_running_loop().time() + grace
    while any(listener.streams for listener in listeners):
        if asyncio.get_running_loop().time() >= deadline:
            for listener in listeners:
                for stream in list(listener.streams):
                    stream.abort()
            break
        await asyncio.sleep(0.05)
    for listener in listeners:
        listener.close()
