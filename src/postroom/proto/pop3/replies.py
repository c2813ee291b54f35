"""POP3 response catalogue and the multi-line framing (byte-stuffing) of RFC 1939 §3.

Responses are values (`Response`) rendered to wire bytes in one place. Error responses may
carry an RFC 2449 §8 response code such as `[IN-USE]`, or the RFC 3206 `[AUTH]`/`[SYS/TEMP]`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Response:
    """One status line: "+OK text" or "-ERR [CODE] text"."""

    ok: bool
    text: str
    code: str | None = None

    def to_bytes(self) -> bytes:
        status = "+OK" if self.ok else "-ERR"
        # RFC 2449 §8: the response code, in brackets, follows the status indicator.
        code = f" [{self.code}]" if self.code else ""
        text = f" {self.text}" if self.text else ""
        return f"{status}{code}{text}\r\n".encode()


def ok(text: str = "") -> Response:
    return Response(True, text)


def err(text: str, code: str | None = None) -> Response:
    return Response(False, text, code)


def stuff(content: bytes) -> bytes:
    """A message as the body of a multi-line response, terminator included (RFC 1939 §3).

    Every line that starts with "." gets one more "."; a message that does not end with a line
    ending gets one before the terminating ".". Bare LF line starts are stuffed too, so no
    client, however it splits lines, can see a premature terminator.
    """
    stuffed = content.replace(b"\n.", b"\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def multiline(first: Response, lines: Iterable[str]) -> bytes:
    """A status line, text lines (stuffed as needed) and the terminating "." line."""
    body = "".join(("." + line if line.startswith(".") else line) + "\r\n" for line in lines)
    return first.to_bytes() + body.encode() + b".\r\n"


def top_of(content: bytes, lines: int) -> bytes:
    """The header, the empty line after it and `lines` lines of the body (RFC 1939 §7 TOP)."""
    position = 0
    while True:  # the header, up to and including the first empty line
        newline = content.find(b"\n", position)
        if newline < 0:
            return content  # no empty line: all header, send it all
        start, position = position, newline + 1
        if content[start:position] in (b"\r\n", b"\n"):
            break
    for _ in range(lines):
        newline = content.find(b"\n", position)
        if newline < 0:
            return content
        position = newline + 1
    return content[:position]


GREETING_TEXT = "POP3 postroom ready"
CAPABILITIES = ok("Capability list follows")
UNKNOWN_COMMAND = err("Unknown command")
NOT_AUTHENTICATED = err("Log in first (USER/PASS or AUTH)")
ALREADY_AUTHENTICATED = err("Already logged in")
LINE_TOO_LONG = err("Line too long (RFC 2449: 255 octets)")
BAD_ENCODING = err("Commands must be ASCII or UTF-8 without NUL")
TOO_MANY_ERRORS = err("Too many errors, closing connection", "SYS/TEMP")
TIMEOUT = err("Disconnected for inactivity")
SHUTTING_DOWN = err("Server shutting down", "SYS/TEMP")
BYE = ok("postroom POP3 signing off")

USER_OK = ok("Send PASS")
USER_FIRST = err("Send USER first")
USER_MISSING = err("USER needs a user name")
LOGIN_FAILED = err("Authentication failed", "AUTH")
# RFC 2595 §2.1 / Dovecot's disable_plaintext_auth: no credentials in the clear.
TLS_REQUIRED = err("Plaintext authentication disallowed, use STLS first", "AUTH")
MAILDROP_IN_USE = err("Mailbox already locked by another POP3 session", "IN-USE")
MAILDROP_UNAVAILABLE = err("Mailbox temporarily unavailable, try again later", "SYS/TEMP")
AUTH_UNAVAILABLE = err("Authentication temporarily unavailable", "SYS/TEMP")
AUTH_UNKNOWN_MECHANISM = err("Unsupported authentication mechanism")
AUTH_CANCELLED = err("Authentication cancelled")
AUTH_MALFORMED = err("Malformed authentication data")
AUTH_MECHANISMS = ok("Supported SASL mechanisms follow")

STLS_OK = ok("Begin TLS negotiation")
TLS_ALREADY_ACTIVE = err("TLS is already active")
TLS_NOT_AVAILABLE = err("TLS is not available")

NO_SUCH_MESSAGE = err("No such message")
MESSAGE_DELETED = err("Message is deleted")
MESSAGE_GONE = err("Message no longer exists")
FETCH_FAILED = err("Message temporarily unavailable", "SYS/TEMP")
BAD_MESSAGE_NUMBER = err("Invalid message number")
BAD_LINE_COUNT = err("TOP needs a message number and a number of lines")
NO_ARGUMENTS = err("This command takes no arguments")
NOOP_OK = ok()
COMMIT_FAILED = err("Some deleted messages not removed", "SYS/TEMP")


def scan_listing(count: int, octets: int) -> Response:
    return ok(f"{count} messages ({octets} octets)")


def stat(count: int, octets: int) -> Response:
    # RFC 1939 §5: "+OK nn mm", the number of messages and the size in octets.
    return ok(f"{count} {octets}")


def logged_in(count: int, octets: int) -> Response:
    return ok(f"Logged in, {count} messages ({octets} octets)")


def deleted(number: int) -> Response:
    return ok(f"Message {number} deleted")


def signing_off(removed: int) -> Response:
    return ok(f"postroom POP3 signing off ({removed} messages deleted)")
