"""The PROXY protocol on a listener: who may send the header, reading it, the relayed client.

A listener named in `[listen] proxy_protocol` accepts its connections itself and hands each
to :meth:`ProxyGate.admit` before any TLS or greeting: a peer outside `[listen] proxy_trusted`
is closed at once (a header from anywhere else is never believed), a trusted one must send a
complete header (`proto.proxy`) within :data:`HEADER_TIMEOUT`, else it is closed. The header
is taken off the socket exactly (peeked, then received to its last byte), so the client's
first bytes, a TLS ClientHello included, stay for the session. The relayed address becomes
the stream's `peer`, which is what every session uses for SPF, limits, logs and trace
headers. Listeners without the PROXY protocol never come here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from postroom.net.stream import ByteStream
from postroom.proto.proxy import MAX_HEADER, ProxyHeader, ProxyHeaderError, parse

log = logging.getLogger("postroom.net")

HEADER_TIMEOUT = 5.0  # seconds a trusted peer has to send the whole header

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyGate:
    """The trusted senders of one listener, and the reading of their headers."""

    def __init__(
        self, service: str, trusted: tuple[IPNetwork, ...], timeout: float = HEADER_TIMEOUT
    ) -> None:
        self.service = service
        self.trusted = trusted
        self.timeout = timeout

    def is_trusted(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return any(address in network for network in self.trusted)

    async def admit(self, conn: socket.socket, peer: tuple[str, int]) -> tuple[str, int] | None:
        """The client to serve on `conn` (the relayed one, or `peer` for UNKNOWN and LOCAL),
        or None after closing a connection that is untrusted, silent or malformed."""
        if not self.is_trusted(peer[0]):
            log.warning(
                "proxy protocol: untrusted peer refused service=%s peer=%s",
                self.service,
                peer[0],
            )
            conn.close()
            return None
        try:
            async with asyncio.timeout(self.timeout):
                header = await _read_header(conn)
        except (ProxyHeaderError, OSError, TimeoutError) as error:
            reason = str(error) or f"no complete header within {self.timeout:g}s"
            log.warning(
                "proxy protocol: header refused service=%s peer=%s: %s",
                self.service,
                peer[0],
                reason,
            )
            conn.close()
            return None
        return header.client or peer


async def _read_header(conn: socket.socket) -> ProxyHeader:
    """Peek at what has arrived; a complete header is received to its last byte and nothing
    more, an incomplete one is taken whole (all of it is header) and the rest awaited."""
    loop = asyncio.get_running_loop()
    taken = b""
    while True:
        await _readable(loop, conn)
        waiting = conn.recv(MAX_HEADER - len(taken), socket.MSG_PEEK)
        if not waiting:
            raise ProxyHeaderError("connection closed before the end of the header")
        header = parse(taken + waiting)
        if header is None:
            taken += _receive(conn, len(waiting))
            continue
        _receive(conn, header.length - len(taken))
        return header


def _receive(conn: socket.socket, count: int) -> bytes:
    """Bytes already peeked: the kernel holds them, so non-blocking reads return them all."""
    parts = []
    while count > 0:
        part = conn.recv(count)
        if not part:
            raise ProxyHeaderError("connection closed before the end of the header")
        parts.append(part)
        count -= len(part)
    return b"".join(parts)


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    waiter: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop.add_reader(conn.fileno(), ready)
    try:
        await waiter
    finally:
        loop.remove_reader(conn.fileno())


class ProxiedStream(ByteStream):
    """A stream whose `peer` is the client a PROXY header named, not the balancer."""

    def __init__(
        self,
        handler: Callable[[ByteStream], Coroutine[Any, Any, None]],
        client: tuple[str, int],
    ) -> None:
        super().__init__(handler)
        self._client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peer = self._client  # the session's task has not run yet: it sees only this
