"""A minimal asyncio byte stream over a Protocol, with flow control and a clean STARTTLS upgrade.

asyncio's StreamReader keeps its own buffer across `start_tls`, so plaintext a client pipelined
behind STARTTLS could survive the upgrade (CVE-2011-0411 class). Here the buffer is ours and is
dropped at the upgrade. Reading pauses the transport once `HIGH_WATER` bytes are waiting, so a
fast client cannot grow a session's memory (back-pressure).

A session that goes back to waiting after taking input it has not answered (an IMAP literal
before its closing CRLF) acknowledges that input at once (`_ack_now`), so a client with Nagle's
algorithm on does not stall for the delayed-ACK timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, cast

HIGH_WATER = 256 * 1024
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


log = logging.getLogger("postroom.net")


class ByteStream(asyncio.Protocol):
    """One accepted connection; `handler(stream)` runs as a task for its lifetime."""

    def __init__(self, handler: Callable[[ByteStream], Coroutine[Any, Any, None]]) -> None:
        self._handler = handler
        self.transport: asyncio.Transport | None = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._reader_paused = False
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._unanswered = False  # input arrived since the last write
        self.task: asyncio.Task[None] | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.read_deadline = math.inf
        self.wake_at = math.inf  # a pending `read` returns b"" from then on (IDLE's poll)

    # --- protocol callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (str(peer[0]), int(peer[1]))
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._handler(self)
        finally:
            self.close()

    def data_received(self, data: bytes) -> None:
        self._unanswered = True
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._reader_paused and self.transport:
            self._reader_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def _wake(self) -> None:
        if self._data_waiter is not None and not self._data_waiter.done():
            self._data_waiter.set_result(None)

    # --- API for the session -------------------------------------------------------------------

    @property
    def tls_object(self) -> ssl.SSLObject | None:
        if self.transport is None:
            return None
        obj = self.transport.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buffer

    def expire_if_late(self, now: float) -> None:
        """Fail a pending `read` with TimeoutError once its deadline has passed; wake it (b"")
        once `wake_at` has."""
        waiter = self._data_waiter
        if waiter is None or waiter.done():
            return
        if now >= self.read_deadline:
            waiter.set_exception(TimeoutError())
        elif now >= self.wake_at:
            waiter.set_result(None)

    def interrupt(self) -> None:
        """Wake a pending `read` early (it returns b"" without end of stream)."""
        self._wake()

    async def read(self, timeout: float) -> bytes:
        """All bytes waiting, or wait up to `timeout` for some; b"" at end of stream.
        TimeoutError at once when `timeout` is not positive: a deadline that has passed."""
        if timeout <= 0:
            raise TimeoutError()
        if not self._buffer and not self._eof:
            if self._unanswered:
                self._ack_now()
            loop = asyncio.get_running_loop()
            # No timer per read: the listener's sweeper expires reads past their deadline
            # (`expire_if_late`), which is much cheaper on this per-command path.
            self.read_deadline = loop.time() + timeout
            waiter = self._data_waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._data_waiter = None
                self.read_deadline = math.inf
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        if self._reader_paused and self.transport is not None:
            self._reader_paused = False
            self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self._unanswered = False  # the ACK rides on this answer
            self.transport.write(data)

    def _ack_now(self) -> None:
        """Send the ACK of input taken but not answered now, not after the delayed-ACK timer.

        RFC 1122 §4.2.3.2 lets a receiver delay an ACK (Linux: 40 ms); a client with Nagle's
        algorithm on (RFC 896, RFC 1122 §4.2.3.4) holds its next small segment until that ACK
        comes (imaplib sends a literal's closing CRLF on its own), so every such command would
        wait out the timer. Setting TCP_QUICKACK sends a pending ACK at once, and the flag lapses
        by itself once the connection turns interactive again (Dovecot sets it after its reads).
        """
        self._unanswered = False
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if _QUICKACK is None or sock is None:
            return
        # Not TCP (a UNIX socket), or the connection is already gone: nothing to acknowledge.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    async def drain(self, timeout: float) -> None:
        """Wait until the peer has taken our output; TimeoutError if it stops reading."""
        if self._write_paused and self.transport is not None and not self.transport.is_closing():
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):  # not wait_for: see queue/scheduler.py
                    await self._drain_waiter
            finally:
                self._drain_waiter = None

    @property
    def backed_up(self) -> bool:
        """More of our output waits in the transport than its high-water mark: `keep_up`."""
        return self._write_paused

    async def keep_up(self, timeout: float) -> bool:
        """After a write that left the stream `backed_up`: wait for the peer to take our output;
        a client that stopped reading is dropped (memory stays bounded) and False comes back.
        (Not awaited after every write: a coroutine per reply is measurable on the SMTP path.)"""
        try:
            await self.drain(timeout)
        except TimeoutError:
            log.info("client stopped reading, dropped client=%s", self.peer[0])
            self.abort()
            return False
        return True

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> None:
        """Upgrade to TLS as the server, dropping any plaintext still buffered (RFC 3207 §4.2)."""
        assert self.transport is not None
        self._buffer.clear()
        self._buffered = 0
        await self.drain(timeout)
        loop = asyncio.get_running_loop()
        new_transport = await loop.start_tls(
            self.transport, self, context, server_side=True, ssl_handshake_timeout=timeout
        )
        self.transport = new_transport

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
