"""ByteStream acknowledges input it takes without answering before it waits for more.

A client with Nagle's algorithm on (imaplib sends an IMAP literal and its closing CRLF in two
sends) holds its small last segment until the server's ACK comes; the kernel delays that ACK
unless the server answers or sets TCP_QUICKACK. These tests pin when the stream asks for the
immediate ACK: after unanswered input, and not after an answer (which carries the ACK).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from postroom.net.stream import ByteStream

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux only"
)


class _Socket:
    def __init__(self) -> None:
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))


class _Transport:
    """What ByteStream uses of an asyncio transport, with a socket that records options."""

    def __init__(self) -> None:
        self.sock = _Socket()
        self.written: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"socket": self.sock, "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


QUICKACK = (socket.IPPROTO_TCP, getattr(socket, "TCP_QUICKACK", -1), 1)


async def _session(steps: list[str]) -> list[tuple[int, int, int]]:
    """Run `steps` on a stream: "in" (bytes arrive), "read", "write"; return the options set."""
    finished = asyncio.Event()

    async def handler(stream: ByteStream) -> None:
        await finished.wait()

    stream = ByteStream(handler)
    transport = _Transport()
    stream.connection_made(transport)  # type: ignore[arg-type]
    for step in steps:
        if step == "in":
            stream.data_received(b"a1 APPEND INBOX {5}\r\n")
        elif step == "write":
            stream.write(b"+ OK\r\n")
        else:
            reading = asyncio.ensure_future(stream.read(5.0))
            await asyncio.sleep(0)  # let the read start (and wait when nothing is buffered)
            if not reading.done():
                stream.data_received(b"hello")
            await reading
    finished.set()
    assert stream.task is not None
    await stream.task
    return transport.sock.options


def test_unanswered_input_is_acknowledged_before_waiting() -> None:
    # The literal came in, nothing was said: waiting for the CRLF asks for the ACK now.
    assert asyncio.run(_session(["in", "read", "read"])) == [QUICKACK]


def test_an_answer_carries_the_ack() -> None:
    # Input answered ("+ OK") before the next wait: no extra ACK, no system call.
    assert asyncio.run(_session(["in", "read", "write", "read"])) == []


def test_buffered_input_is_read_without_asking() -> None:
    assert asyncio.run(_session(["in", "in", "read"])) == []
