"""One turn of a sans-IO engine's session: send what it answered, then read its next input
within the request deadline (net/deadline.py); shared by the POP3 and ManageSieve drivers.

The SMTP driver keeps its own turn: its timeout depends on the engine's mode (DATA) and it may
stop for a shutdown only outside a mail transaction.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from postroom.net.deadline import RequestDeadline
from postroom.net.listener import ShutdownFlag
from postroom.net.stream import ByteStream


class Engine(Protocol):
    """What a turn needs of an engine."""

    @property
    def closed(self) -> bool: ...

    @property
    def buffered(self) -> int: ...

    @property
    def mid_request(self) -> bool: ...

    def data_to_send(self) -> bytes: ...

    def receive_data(self, data: bytes) -> None: ...

    def shutdown(self, response: Any) -> None: ...


class Turns:
    """The turns of one session. `closing` is the engine's reply when the server shuts down,
    `timed_out` the one when the client let the timeout pass."""

    def __init__(
        self,
        stream: ByteStream,
        shutdown: ShutdownFlag,
        timeout: float,
        closing: Any,
        timed_out: Any,
    ) -> None:
        self.stream = stream
        self.shutdown = shutdown
        self.timeout = timeout
        self.closing = closing
        self.timed_out = timed_out
        self.deadline = RequestDeadline()
        self.received = 0  # what the last read brought (it earns the request more time)

    async def take(self, engine: Engine) -> bool:
        """Answer and read, or have the engine close (shutdown, timeout); False when the
        session is over (the client stopped reading, or left, or the engine closed)."""
        stream = self.stream
        stream.write(engine.data_to_send())
        if stream.backed_up and not await stream.keep_up(self.timeout):
            return False
        if engine.closed:
            return False
        if self.shutdown.active and not engine.buffered:
            engine.shutdown(self.closing)
            return True
        wait = self.deadline.wait_for(
            mid_request=engine.mid_request,
            received=self.received,
            timeout=self.timeout,
            now=asyncio.get_running_loop().time(),
        )
        try:
            data = await stream.read(wait)
        except TimeoutError:
            # The idle timer (RFC 1939 §3's autologout for POP3), or a request that did not
            # arrive whole in time: the engine says goodbye without doing more.
            engine.shutdown(self.timed_out)
            return True
        if not data and stream.at_eof:
            return False
        self.received = len(data)
        engine.receive_data(data)
        return True
