"""HTTP(S) listeners in the mail server's own event loop.

uvicorn's h11 protocol parses requests (its bounded incomplete-event buffer caps a request
head) and runs the ASGI app; the sockets, the TLS context (shared with the mail listeners, so
a renewed certificate reaches every listener at once), the connection limit and the shutdown
are ours. uvicorn's `Server` is not used: it would take over SIGINT/SIGTERM and logging.
A connection that negotiated ALPN "acme-tls/1" (a CA validating tls-alpn-01, net/alpn.py) is
closed once its handshake is done: it carries no HTTP (RFC 8737 §3).
A listener named in `[listen] proxy_protocol` accepts its connections itself and reads each
one's PROXY header first (net/proxy_protocol.py); the client it names is the request's client.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp
from uvicorn.server import ServerState

from postroom.net.alpn import ACME_TLS_ALPN
from postroom.net.listener import listening_socket, show_address
from postroom.net.proxy_protocol import ProxyGate

log = logging.getLogger("postroom.web")

MAX_REQUEST_HEAD = 16 * 1024  # bytes of request line + headers; more: 431/400 from h11
KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open
TLS_HANDSHAKE_TIMEOUT = 30.0
DRAIN_POLL = 0.05


class HttpListener:
    """One listening socket serving `app` over HTTP/1.1, with TLS when `ssl_context` is set."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        app: ASGIApp,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        proxy: ProxyGate | None = None,
    ) -> None:
        self.name = name
        self._proxy = proxy
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._config = uvicorn.Config(
            app,
            http="h11",
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,  # a client's X-Forwarded-For is never trusted
            limit_concurrency=max_connections,  # past it: 503
            timeout_keep_alive=KEEP_ALIVE,
            h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
        )
        self._config.load()
        self._state = ServerState()
        self._server: asyncio.Server | None = None
        self._socket: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._admitting: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        return len(self._state.connections)

    async def start(self) -> None:
        """Open the socket; OSError (port in use, not allowed) goes to the caller."""
        config = self._config
        state = self._state

        def protocol(client: tuple[str, int] | None = None) -> asyncio.Protocol:
            return _ClosingAcmeTls(
                config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=state, app_state={}
                ),
                self._ssl,
                client,
            )

        sock = listening_socket(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        loop = asyncio.get_running_loop()
        if self._proxy is not None:
            self._socket = sock
            self._acceptor = loop.create_task(self._accept_proxied(sock, self._proxy, protocol))
            log.info(
                "listening service=%s address=%s", self.name, show_address(self.host, self.port)
            )
            return
        self._server = await loop.create_server(
            protocol,
            sock=sock,
            ssl=self._ssl,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if self._ssl else None,
        )
        log.info("listening service=%s address=%s", self.name, show_address(self.host, self.port))

    async def _accept_proxied(
        self,
        listening: socket.socket,
        gate: ProxyGate,
        protocol: Callable[[tuple[str, int] | None], asyncio.Protocol],
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, address = await loop.sock_accept(listening)
            task = loop.create_task(
                self._admit(conn, (str(address[0]), int(address[1])), gate, protocol)
            )
            self._admitting.add(task)
            task.add_done_callback(self._admitting.discard)

    async def _admit(
        self,
        conn: socket.socket,
        peer: tuple[str, int],
        gate: ProxyGate,
        protocol: Callable[[tuple[str, int] | None], asyncio.Protocol],
    ) -> None:
        client = await gate.admit(conn, peer)
        if client is None:
            return
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: protocol(client),
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if self._ssl else None,
            )
        except (OSError, ssl.SSLError, TimeoutError) as error:
            log.debug("connection failed service=%s client=%s: %s", self.name, client[0], error)
            conn.close()

    async def stop(self, grace: float) -> None:
        """Stop accepting; let requests in flight finish for up to `grace` seconds."""
        if self._acceptor is not None and self._socket is not None:
            self._acceptor.cancel()
            self._socket.close()
            self._acceptor = self._socket = None
        elif self._server is None:
            return
        else:
            self._server.close()
        for connection in list(self._state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._state.connections and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL)
        for task in list(self._state.tasks):
            task.cancel()
        for connection in list(self._state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        self._server = None


class _ClosingAcmeTls(asyncio.Protocol):
    """The HTTP protocol, except on a connection that negotiated acme-tls/1 or was given a
    validation certificate (its SNI callback moved it off the listener's context): that one
    is closed after its handshake, unseen by the HTTP protocol (RFC 8737 §3)."""

    def __init__(
        self,
        http: asyncio.Protocol,
        context: ssl.SSLContext | None,
        client: tuple[str, int] | None = None,
    ) -> None:
        self._http: asyncio.Protocol | None = http
        self._context = context
        self._client = client  # named by a PROXY header: the request's client, not the socket's

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tls = transport.get_extra_info("ssl_object")
        if tls is not None and (
            tls.selected_alpn_protocol() == ACME_TLS_ALPN or tls.context is not self._context
        ):
            self._http = None
            transport.close()
            return
        assert self._http is not None
        self._http.connection_made(transport)
        if self._client is not None:
            # uvicorn's protocols keep the peer they read in connection_made as `client`,
            # the ASGI scope's client (request.client: logins, autoconfig, /metrics).
            cast(Any, self._http).client = self._client

    def connection_lost(self, exc: Exception | None) -> None:
        if self._http is not None:
            self._http.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._http is not None:
            self._http.pause_writing()

    def resume_writing(self) -> None:
        if self._http is not None:
            self._http.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self._http is not None:
            self._http.data_received(data)

    def eof_received(self) -> bool | None:
        return self._http.eof_received() if self._http is not None else None
