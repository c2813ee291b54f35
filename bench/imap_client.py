"""A small blocking IMAP client for the benchmark, the same for every server.

One command at a time over a TLS socket (no pipelining): ``command()`` sends a tagged line and
reads everything up to the tagged status, following ``{n}`` literals so the byte count
is exact.  APPEND uses LITERAL+ (RFC 7888) when the server offers it, so no round trip is
spent waiting for "+".  Also a SCRAM-SHA-256 client (RFC 5802 / RFC 7677) whose PBKDF2 result
is cached per salt, so thousands of logins cost the client only a few HMACs each.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import socket
import ssl
from dataclasses import dataclass, field

LITERAL_RE = re.compile(rb"\{(\d+)\+?\}\r\n$")


class ImapError(Exception):
    """A command got NO/BAD, or the connection broke."""


def client_tls_context() -> ssl.SSLContext:
    """TLS without certificate checks: both servers present the same self-signed certificate.

    No CA store is loaded (that alone costs milliseconds); make one and reuse it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Response:
    status: str
    text: bytes
    untagged: list[bytes] = field(default_factory=list)
    received: int = 0  # bytes read for this command, literals included


def quote(text: str) -> bytes:
    """An IMAP quoted string (RFC 3501 §4.3)."""
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


class ImapClient:
    """One connection; ``ImapClient(host, port, context)`` connects and reads the greeting."""

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext, timeout: float = 120.0
    ) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.file = self.sock.makefile("rb", buffering=256 * 1024)
        self.counter = 0
        self.greeting = self._line()
        if not self.greeting.startswith(b"* OK"):
            raise ImapError(f"bad greeting {self.greeting[:200]!r}")
        self.capabilities: set[str] = set()
        match = re.search(rb"\[CAPABILITY ([^\]]*)\]", self.greeting)
        if match:
            self.capabilities = set(match.group(1).decode().upper().split())

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass

    def _line(self) -> bytes:
        """One response line with its literals inlined."""
        line = self.file.readline()
        if not line.endswith(b"\n"):
            raise ImapError("connection closed by the server")
        parts = [line]
        match = LITERAL_RE.search(line)
        while match:
            size = int(match.group(1))
            literal = self.file.read(size)
            if len(literal) != size:
                raise ImapError("connection closed inside a literal")
            line = self.file.readline()
            parts += [literal, line]
            match = LITERAL_RE.search(line)
        return b"".join(parts)

    def _tag(self) -> bytes:
        self.counter += 1
        return b"a%d" % self.counter

    def _finish(self, tag: bytes, check: bool) -> Response:
        untagged: list[bytes] = []
        received = 0
        while True:
            line = self._line()
            received += len(line)
            if line.startswith(tag + b" "):
                status, _, text = line[len(tag) + 1 :].partition(b" ")
                response = Response(status.decode(), text.rstrip(), untagged, received)
                if check and response.status != "OK":
                    raise ImapError(f"{tag.decode()} {status.decode()} {text[:300]!r}")
                return response
            if line.startswith(b"+"):
                raise ImapError(f"unexpected continuation {line[:200]!r}")
            untagged.append(line)

    def command(self, line: bytes, check: bool = True) -> Response:
        tag = self._tag()
        self.sock.sendall(tag + b" " + line + b"\r\n")
        return self._finish(tag, check)

    def _continue(self) -> None:
        line = self._line()
        if not line.startswith(b"+"):
            raise ImapError(f"expected continuation, got {line[:200]!r}")

    def append(self, mailbox: str, messages: list[tuple[bytes, str]], flags: str = "") -> Response:
        """APPEND one message, or several in one command (RFC 3502 MULTIAPPEND)."""
        plus = "LITERAL+" in self.capabilities
        tag = self._tag()
        head = tag + b" APPEND " + quote(mailbox)
        for data, internal_date in messages:
            head += b" (" + flags.encode() + b")"
            if internal_date:
                head += b" " + quote(internal_date)
            head += b" {%d%s}\r\n" % (len(data), b"+" if plus else b"")
            self.sock.sendall(head)
            if not plus:
                self._continue()
            self.sock.sendall(data)
            head = b""
        self.sock.sendall(b"\r\n")
        return self._finish(tag, True)

    def login(self, user: str, password: str) -> Response:
        """LOGIN; the capabilities become those the OK (or a CAPABILITY response) lists."""
        response = self.command(b"LOGIN " + quote(user) + b" " + quote(password))
        for text in [response.text, *response.untagged]:
            match = re.search(rb"(?:\[|^\* )CAPABILITY ([^\]\r]*)", text)
            if match:
                self.capabilities = set(match.group(1).decode().upper().split())
        return response


class ScramClient:
    """Client side of SCRAM-SHA-256 without channel binding, for one user and password."""

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.password = password.encode()
        self._salted: dict[tuple[bytes, int], bytes] = {}

    def first(self) -> tuple[bytes, bytes]:
        """(client-first-message, client nonce)."""
        nonce = base64.b64encode(os.urandom(18))
        return b"n,,n=" + self.user.encode() + b",r=" + nonce, nonce

    def final(self, first: bytes, nonce: bytes, server_first: bytes) -> bytes:
        """client-final-message for the server-first-message (RFC 5802 §3)."""
        attrs = dict(item.split(b"=", 1) for item in server_first.split(b","))
        combined, salt, iterations = attrs[b"r"], base64.b64decode(attrs[b"s"]), int(attrs[b"i"])
        if not combined.startswith(nonce):
            raise ImapError("SCRAM server nonce does not extend ours")
        key = (salt, iterations)
        if key not in self._salted:
            self._salted[key] = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
        client_key = hmac.new(self._salted[key], b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = b"c=biws,r=" + combined
        auth_message = first[3:] + b"," + server_first + b"," + without_proof
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return without_proof + b",p=" + base64.b64encode(proof)
