"""Clients that trickle a request a byte at a time, over real sockets: each of SMTP, POP3 and
IMAP cuts them off once the request has taken the service's timeout, although no single wait
between two bytes ever reaches it (net/deadline.py)."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable

from .conftest import ALICE, HOST, Postroom

SERVICES = ("smtp", "pop3", "imap")
TIMEOUTS = {"command_timeout": 1, "data_timeout": 1, "pop3_timeout": 1, "imap_timeout": 1}
GAP = 0.2  # seconds between two bytes: well within the 1 s idle timeout
GIVE_UP = 20.0  # the server has not cut the trickle off by then: the test fails


def connect(server: Postroom, service: str) -> socket.socket:
    sock = socket.create_connection((HOST, server.ports[service]), timeout=15)
    greeting = sock.recv(4096)
    assert greeting.startswith((b"220 ", b"+OK", b"* OK")), greeting
    return sock


def converse(sock: socket.socket, line: bytes, answer: bytes) -> None:
    """Send a whole line; read until the server's reply holds `answer`."""
    sock.sendall(line)
    got = b""
    while answer not in got:
        chunk = sock.recv(4096)
        assert chunk, f"closed while waiting for {answer!r}; got {got!r}"
        got += chunk


def trickle(sock: socket.socket, data: bytes) -> bytes:
    """Send `data` (then more of it, forever) one byte every GAP seconds, until the server
    closes the connection; return everything it said meanwhile."""
    said = b""
    deadline = time.monotonic() + GIVE_UP
    sent = 0
    while True:
        if time.monotonic() > deadline:
            raise AssertionError(f"still served after {GIVE_UP:g} s of trickling; got {said!r}")
        # Waiting for the server to speak is the pause between two bytes.
        readable, _, _ = select.select([sock], [], [], GAP)
        if readable:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                return said
            if not chunk:
                return said
            said += chunk
            continue
        try:
            sock.send(data[sent % len(data) : sent % len(data) + 1])
        except (BrokenPipeError, ConnectionResetError):
            with contextlib.suppress(OSError):
                said += sock.recv(4096)
            return said
        sent += 1


def test_smtp_command_line_and_message(postroom_factory: Callable[..., Postroom]) -> None:
    server = postroom_factory(services=SERVICES, limits=TIMEOUTS)
    with connect(server, "smtp") as sock:
        said = trickle(sock, b"EHLO client.example.net ")
    assert said == b"421 4.4.2 Timeout exceeded, closing connection\r\n"
    with connect(server, "smtp") as sock:
        converse(sock, b"EHLO client.example.net\r\n", b"250 ")
        converse(sock, f"MAIL FROM:<x@y.test>\r\nRCPT TO:<{ALICE}>\r\n".encode(), b"250 2.1.5")
        converse(sock, b"DATA\r\n", b"354 ")
        said = trickle(sock, b"Subject: slow\r\n\r\nand slower\r\n")
    assert said.startswith(b"421 4.4.2 "), said
    assert server.queue_list().strip() == ""  # nothing queued (an empty list into a pipe)


def test_pop3_command_line(postroom_factory: Callable[..., Postroom]) -> None:
    server = postroom_factory(services=SERVICES, limits=TIMEOUTS)
    with connect(server, "pop3") as sock:
        said = trickle(sock, b"CAPA CAPA ")
    assert said == b"-ERR Disconnected for inactivity\r\n"


def test_imap_command_and_literal(postroom_factory: Callable[..., Postroom]) -> None:
    server = postroom_factory(services=SERVICES, limits=TIMEOUTS)
    with connect(server, "imap") as sock:
        said = trickle(sock, b"a NOOP NOOP ")
    assert said == b"* BYE Command not completed in time\r\n"
    with connect(server, "imap") as sock:
        converse(sock, b"a LOGIN {4000}\r\n", b"+ OK\r\n")
        said = trickle(sock, b"x")
    assert said == b"* BYE Command not completed in time\r\n"
