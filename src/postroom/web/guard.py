"""What every HTTP request passes before any page sees it (an ASGI middleware).

- The Host header must name this server: its hostname, one of its domains or their
  mta-sts./autoconfig./autodiscover. names, localhost, or an IP literal (RFC 9110 §7.2);
  anything else is 421 Misdirected Request, so a page is never served under a name an
  attacker chose (DNS rebinding, poisoned absolute links).
- A request body larger than `[web] max_body` is refused with 413 (RFC 9110 §15.5.14) — at
  once when Content-Length says so, else when the chunked body grows past it — and the page
  that was reading it is abandoned, so nothing it meant to change is changed.
- A request head over 16 KiB or 100 fields is refused with 431 (RFC 6585 §5): h11 bounds only
  a head still arriving, not one that came in a single read.
- Every response carries headers that keep browsers from framing, sniffing or leaking it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
    ),
)
MAX_HOST_LENGTH = 300
NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
MAX_HEAD_BYTES = 16 * 1024
MAX_HEAD_FIELDS = 100


class BodyTooLarge(Exception):
    """The request body went past the limit while the page was reading it."""


def served_names(hostname: str, domains: Iterable[str]) -> frozenset[str]:
    """Every host name this server answers HTTP for (lower case, no trailing dot)."""
    names = {hostname.lower(), "localhost"}
    for domain in domains:
        domain = domain.lower()
        names.update({domain, f"mta-sts.{domain}", f"autoconfig.{domain}"})
        names.add(f"autodiscover.{domain}")
    return frozenset(names)


def host_name(value: bytes) -> str | None:
    """The name in a Host header value without its port, or None when it is malformed."""
    if not value or len(value) > MAX_HOST_LENGTH or not value.isascii():
        return None
    text = value.decode("ascii").strip().lower()
    if text.startswith("["):  # an IPv6 literal (RFC 3986 §3.2.2)
        literal, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return None
        return literal
    name, colon, port = text.partition(":")
    if colon and not (port.isdigit() and len(port) <= 5):
        return None
    if not name or not set(name) <= NAME_CHARACTERS:
        return None
    return name.removesuffix(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class RequestGuard:
    """The ASGI middleware applying the rules above around `app`."""

    def __init__(self, app: ASGIApp, names: frozenset[str], max_body: int) -> None:
        self.app = app
        self.names = names
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fields = scope["headers"]
        size = len(scope.get("raw_path") or b"") + sum(len(k) + len(v) + 4 for k, v in fields)
        if len(fields) > MAX_HEAD_FIELDS or size > MAX_HEAD_BYTES:
            await _plain(send, 431, b"The request header fields are too large.\n")
            return
        headers = dict(fields)
        host = headers.get(b"host")
        if host is not None:
            name = host_name(host)
            if name is None or (name not in self.names and not _is_ip(name)):
                await _plain(send, 421, b"This server does not serve that host name.\n")
                return
        length = headers.get(b"content-length")
        if length is not None and (
            not length.isdigit() or len(length) > 18 or int(length) > self.max_body
        ):
            await _plain(send, 413, b"The request body is too large.\n")
            return
        started = False
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge
            return message

        async def secured_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, limited_receive, secured_send)
        except BodyTooLarge:
            if not started:
                await _plain(send, 413, b"The request body is too large.\n")


async def _plain(send: Send, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
