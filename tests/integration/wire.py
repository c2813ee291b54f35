"""Client-side helpers for the integration tests: a raw SMTP connection and message utilities.

`Wire` speaks SMTP over a real socket without any client library in between, so a test controls
every byte (case, spacing, pipelining, bare line endings) and sees every reply.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
import time
import uuid
from dataclasses import dataclass

HOST = "127.0.0.1"
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_QUEUED_AS = re.compile(r"queued as (\S+)")


@dataclass(frozen=True)
class Reply:
    """One (possibly multi-line) SMTP reply."""

    code: int
    lines: tuple[str, ...]  # text after "250-" / "250 "

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 enhanced status code of the last line, if there is one."""
        first = self.lines[-1].split(" ", 1)[0] if self.lines else ""
        return first if _ENHANCED.match(first) else None

    @property
    def queue_id(self) -> str | None:
        match = _QUEUED_AS.search(self.text)
        return match.group(1) if match else None

    @property
    def keywords(self) -> set[str]:
        """EHLO keywords (upper case, first word of every line but the greeting line)."""
        return {line.split(" ", 1)[0].upper() for line in self.lines[1:]}

    def __str__(self) -> str:
        return " | ".join(f"{self.code} {line}" for line in self.lines)


class SmtpProtocolError(AssertionError):
    pass


class Wire:
    """A raw SMTP client connection to 127.0.0.1:port (optionally TLS from the first byte)."""

    def __init__(
        self,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        timeout: float = 15.0,
        host: str = HOST,
    ) -> None:
        self.port = port
        self.timeout = timeout
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=HOST)
        self.sock: socket.socket = sock
        self.buffer = b""
        self.transcript: list[str] = []

    @classmethod
    def adopt(cls, sock: socket.socket, timeout: float = 15.0) -> Wire:
        """Wrap an already connected (possibly TLS) socket."""
        wire = cls.__new__(cls)
        wire.port = sock.getpeername()[1]
        wire.timeout = timeout
        sock.settimeout(timeout)
        wire.sock = sock
        wire.buffer = b""
        wire.transcript = []
        return wire

    # --- context manager -----------------------------------------------------------------------

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # --- bytes ---------------------------------------------------------------------------------

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.transcript.append(f"C: {data!r}")
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def read_line(self) -> bytes:
        """One line from the server, without its CRLF. Raises on EOF or timeout."""
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete line from the server; transcript: {self}")
            if not self._fill():
                raise ConnectionError(
                    f"server closed the connection (partial {self.buffer!r}); transcript: {self}"
                )
        line, _, self.buffer = self.buffer.partition(b"\n")
        if not line.endswith(b"\r"):
            raise SmtpProtocolError(f"server reply line without CRLF: {line!r}")
        return line[:-1]

    def reply(self) -> Reply:
        """Read one complete reply (all continuation lines)."""
        lines: list[str] = []
        code: int | None = None
        while True:
            raw = self.read_line().decode("utf-8")
            if len(raw) < 3 or not raw[:3].isdigit() or raw[3:4] not in ("", " ", "-"):
                raise SmtpProtocolError(f"malformed reply line {raw!r}")
            this_code = int(raw[:3])
            if code is not None and this_code != code:
                raise SmtpProtocolError(f"reply code changed inside a multi-line reply: {raw!r}")
            code = this_code
            lines.append(raw[4:])
            if raw[3:4] != "-":
                break
        reply = Reply(code, tuple(lines))
        self.transcript.append(f"S: {reply}")
        return reply

    def cmd(self, line: str | bytes, expect: int | None = None) -> Reply:
        """Send one command line (CRLF added) and read its reply."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        reply = self.reply()
        if expect is not None and reply.code != expect:
            raise SmtpProtocolError(
                f"{line!r}: expected {expect}, got {reply}; transcript:\n{self}"
            )
        return reply

    def expect(self, code: int) -> Reply:
        reply = self.reply()
        if reply.code != code:
            raise SmtpProtocolError(f"expected {code}, got {reply}; transcript:\n{self}")
        return reply

    def starttls(self, context: ssl.SSLContext) -> None:
        """Upgrade the connection after a 220 to STARTTLS (nothing may be buffered)."""
        if self.buffer:
            raise SmtpProtocolError(f"server sent data after its STARTTLS 220: {self.buffer!r}")
        self.sock = context.wrap_socket(self.sock, server_hostname=HOST)
        self.transcript.append("-- TLS established --")

    def read_until_closed(self, timeout: float | None = None) -> bytes:
        """Everything the server sends until it closes the connection."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not close the connection; got {self.buffer!r}")
            try:
                if not self._fill():
                    break
            except (ConnectionResetError, ssl.SSLError):
                break
        data, self.buffer = self.buffer, b""
        return data

    def __str__(self) -> str:
        return "\n".join(self.transcript)


# --- SMTP conversations used by many tests ----------------------------------------------------


def auth_plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")


def open_session(port: int, helo: str = "client.example.net", **kwargs: object) -> Wire:
    """Connect, read the greeting, EHLO."""
    wire = Wire(port, **kwargs)  # type: ignore[arg-type]
    wire.expect(220)
    wire.cmd(f"EHLO {helo}", 250)
    return wire


def send_message(
    wire: Wire, sender: str, recipients: list[str], content: bytes, *, params: str = ""
) -> Reply:
    """One transaction on an open session; `content` must use CRLF and be dot-stuffed already."""
    wire.cmd(f"MAIL FROM:<{sender}>{params}", 250)
    for rcpt in recipients:
        wire.cmd(f"RCPT TO:<{rcpt}>", 250)
    wire.cmd("DATA", 354)
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    wire.send(content + b".\r\n")
    return wire.reply()


# --- messages ----------------------------------------------------------------------------------


def new_token(prefix: str = "tok") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def simple_message(token: str, sender: str = "x@y.test", to: str = "alice@example.test") -> bytes:
    """A small RFC 5322 message (CRLF line endings) whose Subject carries `token`."""
    return (
        f"From: <{sender}>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {token}\r\n"
        f"Message-ID: <{token}@y.test>\r\n"
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        "\r\n"
        f"Body of {token}.\r\n"
    ).encode()


def to_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def split_trace(content: bytes) -> tuple[list[bytes], bytes]:
    """Split leading Return-Path/Received fields (with folded lines) off a stored message.

    Works on LF or CRLF content; returns (the trace fields, the rest, unchanged).
    """
    fields: list[bytes] = []
    rest = content
    while True:
        match = re.match(rb"(?i)(return-path|received):[^\n]*\n(?:[ \t][^\n]*\n)*", rest)
        if match is None:
            return fields, rest
        fields.append(match.group(0))
        rest = rest[match.end() :]


def header_value(content: bytes, name: str) -> list[bytes]:
    """Values of a header field in the header section (unfolded, stripped)."""
    head = to_lf(content).split(b"\n\n", 1)[0]
    unfolded = re.sub(rb"\n[ \t]+", b" ", head)
    prefix = name.lower().encode() + b":"
    return [
        line[len(prefix) :].strip()
        for line in unfolded.split(b"\n")
        if line.lower().startswith(prefix)
    ]


def with_token(messages: list[bytes], token: str) -> list[bytes]:
    needle = token.encode()
    return [m for m in messages if needle in m]


def subjects(messages: list[bytes]) -> list[str]:
    return [
        value.decode("utf-8", "replace") for m in messages for value in header_value(m, "subject")
    ]
