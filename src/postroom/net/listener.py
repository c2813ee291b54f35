"""TCP listeners: accept connections, enforce connection limits, shut down gracefully.

On shutdown, idle sessions are woken and answered 421; sessions in the middle of a transaction
finish it first; new connections get 421 until the last session is gone (or the grace period
ends and the stragglers are cut off).

A listener behind a load balancer (`[listen] proxy_protocol`) accepts connections itself and
serves each only once its PROXY header named the client (net/proxy_protocol.py); the others
never take that path.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from postroom.net.proxy_protocol import ProxiedStream, ProxyGate
from postroom.net.stream import ByteStream

log = logging.getLogger("postroom.net")

Handler = Callable[[ByteStream], Coroutine[Any, Any, None]]

TLS_HANDSHAKE_TIMEOUT = 30.0
SWEEP_INTERVAL = 0.5  # seconds; the granularity of command and data timeouts


class ListenError(OSError):
    """A service's listening socket could not be opened; errno and strerror are the OS's."""

    def __init__(self, service: str, host: str, port: int, cause: OSError) -> None:
        # asyncio's bind error wraps strerror in a sentence; name lookups have negative codes.
        code = cause.errno
        super().__init__(code, os.strerror(code) if code and code > 0 else str(cause))
        self.service = service
        self.address = show_address(host, port)


def show_address(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets (`[::1]:25`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listening_socket(host: str, port: int, backlog: int = 512) -> socket.socket:
    """A TCP socket bound to host:port, listening, non-blocking. An IPv6 socket takes IPv6
    only (IPV6_V6ONLY, RFC 3493 §5.3), so "[::]:25" and "0.0.0.0:25" are bound side by side and
    IPv4 clients are never seen as ::ffff: addresses (by SPF, DNS lists, per-IP limits)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class ShutdownFlag:
    """Set once the server stops: every service's sessions look at it between commands."""

    active: bool = False


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
        proxy: ProxyGate | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._handler = handler
        self._ssl = ssl_context
        self._max_per_ip = max_per_ip
        self._max_total = max_total
        self._refuse = refuse
        self._proxy = proxy
        self._per_ip: collections.Counter[str] = collections.Counter()
        self.streams: set[ByteStream] = set()
        self._total = 0
        self._server: asyncio.Server | None = None
        self._socket: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the listening socket; raises ListenError (port in use, not allowed, ...)."""
        try:
            await self._open()
        except OSError as error:
            raise ListenError(self.name, self.host, self.port, error) from None
        log.info("listening service=%s address=%s", self.name, show_address(self.host, self.port))

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        sock = listening_socket(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        if self._proxy is not None:  # the PROXY header comes first, TLS or not
            self._socket = sock
            self._acceptor = loop.create_task(self._accept_proxied(self._socket, self._proxy))
        elif self._ssl is None:
            self._server = await loop.create_server(lambda: ByteStream(self._guarded), sock=sock)
        else:
            self._socket = sock
            self._acceptor = loop.create_task(self._accept_tls(self._socket, self._ssl))
        self._sweeper = loop.create_task(self._sweep())

    def set_limits(self, max_per_ip: int, max_total: int) -> None:
        """New connection limits (a reloaded config); connections already open stay."""
        self._max_per_ip = max_per_ip
        self._max_total = max_total

    def _reserve(self, ip: str) -> bool:
        if self._per_ip[ip] >= self._max_per_ip or self._total >= self._max_total:
            return False
        self._per_ip[ip] += 1
        self._total += 1
        return True

    def _release(self, ip: str) -> None:
        self._total -= 1
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]

    async def _guarded(self, stream: ByteStream) -> None:
        """Plaintext listeners: the connection is counted when the session starts."""
        ip = stream.peer[0]
        if not self._reserve(ip):
            stream.write(self._refuse("too many connections"))
            return
        try:
            await self._serve(stream)
        finally:
            self._release(ip)

    async def _accept_tls(self, listening: socket.socket, context: ssl.SSLContext) -> None:
        """Implicit TLS (RFC 8314): count the connection at accept time, before the handshake,
        so half-open handshakes cannot get past the per-IP limit."""
        loop = asyncio.get_running_loop()
        while True:
            conn, address = await loop.sock_accept(listening)
            ip = str(address[0])
            if not self._reserve(ip):
                conn.close()  # a plaintext 421 would be garbage to a TLS client
                continue
            task = loop.create_task(self._handshake(conn, ip, context))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _accept_proxied(self, listening: socket.socket, gate: ProxyGate) -> None:
        """A listener behind a load balancer: each connection's PROXY header is read before
        anything else, and the client it names is counted, limited and served."""
        loop = asyncio.get_running_loop()
        while True:
            conn, address = await loop.sock_accept(listening)
            task = loop.create_task(self._proxied(conn, (str(address[0]), int(address[1])), gate))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _proxied(self, conn: socket.socket, peer: tuple[str, int], gate: ProxyGate) -> None:
        client = await gate.admit(conn, peer)
        if client is None:
            return
        if self._ssl is not None:
            if not self._reserve(client[0]):
                conn.close()
                return
            await self._handshake(conn, client[0], self._ssl, ProxiedStream(self._serve, client))
            return
        stream = ProxiedStream(self._guarded, client)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: stream, conn)
        except OSError as error:
            log.debug("connection lost service=%s client=%s: %s", self.name, client[0], error)
            conn.close()
            return
        if stream.task is not None:
            await stream.task

    async def _handshake(
        self,
        conn: socket.socket,
        ip: str,
        context: ssl.SSLContext,
        stream: ByteStream | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        # With ssl=, loops return their TLS wrapper protocol: keep our own stream at hand.
        stream = stream or ByteStream(self._serve)
        try:
            await loop.connect_accepted_socket(
                lambda: stream,
                conn,
                ssl=context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
            )
            if stream.task is not None:
                await stream.task
        except (OSError, ssl.SSLError, TimeoutError) as error:
            log.debug("tls handshake failed service=%s client=%s: %s", self.name, ip, error)
            conn.close()
        finally:
            self._release(ip)

    async def _serve(self, stream: ByteStream) -> None:
        ip = stream.peer[0]
        self.streams.add(stream)
        try:
            await self._handler(stream)
        except (ConnectionError, ssl.SSLError, TimeoutError) as error:
            log.debug("connection error service=%s client=%s: %s", self.name, ip, error)
        except Exception:
            log.exception("session crashed service=%s client=%s", self.name, ip)
        finally:
            self.streams.discard(stream)

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
        if self._acceptor is not None:
            self._acceptor.cancel()
        if self._socket is not None:
            self._socket.close()
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
