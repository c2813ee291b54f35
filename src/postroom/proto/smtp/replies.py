"""SMTP reply catalogue: every reply the server sends, with its RFC 3463 enhanced status code.

Replies are values (`Reply`), rendered to wire bytes in one place (`Reply.to_bytes`). Errors are
typed by who is at fault (`ClientError`, `PolicyError`, `TransientError`) and carry the reply
they turn into, so the engine converts them to the wire in exactly one spot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: a code, an optional enhanced status code, and one or more text lines."""

    code: int
    enhanced: str | None
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    def to_bytes(self) -> bytes:
        lines = self.lines
        if len(lines) == 1:  # most replies: one line, without the loop
            if self.enhanced:
                return f"{self.code} {self.enhanced} {lines[0]}\r\n".encode()
            return f"{self.code} {lines[0]}\r\n".encode()
        # RFC 5321 §4.2.1: multi-line replies use "code-" on every line but the last.
        # RFC 2034 §4: the enhanced code is repeated on every line of the reply.
        out = []
        last = len(self.lines) - 1
        for index, line in enumerate(self.lines):
            sep = " " if index == last else "-"
            prefix = f"{self.code}{sep}"
            if self.enhanced:
                prefix += self.enhanced + " "
            out.append(prefix + line + "\r\n")
        return "".join(out).encode("utf-8")


def reply(code: int, enhanced: str | None, *lines: str) -> Reply:
    return Reply(code, enhanced, tuple(lines) if lines else ("",))


class SmtpError(Exception):
    """A failure that becomes exactly one SMTP reply."""

    def __init__(self, response: Reply) -> None:
        super().__init__(response.text)
        self.reply = response


class ClientError(SmtpError):
    """The client sent something malformed or out of order (5.5.x)."""


class PolicyError(SmtpError):
    """The command is well formed but refused by policy (5.7.x, 5.1.x)."""


class TransientError(SmtpError):
    """A temporary local failure: the client should retry later (4.x.x)."""


# --- connection level -----------------------------------------------------------------------


def greeting(hostname: str) -> Reply:
    # RFC 5321 §4.3.1: greeting carries the server's domain; RFC 2034 §4: no enhanced code here.
    return reply(220, None, f"{hostname} ESMTP postroom")


def service_unavailable(
    hostname: str, why: str = "Service not available, closing channel"
) -> Reply:
    return reply(421, "4.3.2", f"{hostname} {why}")


TOO_MANY_ERRORS = reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_CONNECTIONS = reply(421, "4.7.0", "Too many connections from your address, try later")
TIMEOUT = reply(421, "4.4.2", "Timeout exceeded, closing connection")
BYE = reply(221, "2.0.0", "Bye")

# --- generic command replies ----------------------------------------------------------------

OK = reply(250, "2.0.0", "Ok")
RESET_OK = reply(250, "2.0.0", "Reset state")
NOOP_OK = reply(250, "2.0.0", "Ok")
UNKNOWN_COMMAND = reply(500, "5.5.1", "Command unrecognized")
LINE_TOO_LONG = reply(500, "5.5.2", "Line too long")
BAD_ENCODING = reply(500, "5.5.2", "Command line is not valid UTF-8 or contains NUL")
BAD_SEQUENCE = reply(503, "5.5.1", "Bad sequence of commands")
NEED_HELO = reply(503, "5.5.1", "Send HELO or EHLO first")
NESTED_MAIL = reply(503, "5.5.1", "Sender already specified")
NEED_MAIL = reply(503, "5.5.1", "Need MAIL command first")
NEED_RCPT = reply(503, "5.5.1", "Need RCPT command first")
NO_VALID_RECIPIENTS = reply(554, "5.5.1", "No valid recipients")
DATA_AFTER_BDAT = reply(503, "5.5.1", "DATA not allowed after BDAT in the same transaction")
VRFY_CANNOT = reply(252, "2.1.5", "Cannot VRFY user, but will accept message and attempt delivery")
EXPN_REFUSED = reply(252, "2.1.5", "Cannot EXPN list, but will accept message and attempt delivery")


def syntax(text: str) -> Reply:
    # RFC 5321 §4.2.2 / RFC 3463 5.5.4: syntax error in parameters or arguments.
    return reply(501, "5.5.4", text)


def bad_address(text: str) -> Reply:
    # RFC 3463 5.1.3 (bad sender/destination mailbox address syntax).
    return reply(501, "5.1.3", text)


def unknown_parameter(name: str) -> Reply:
    # RFC 5321 §4.1.1.11 / RFC 1869: 555 for unrecognised MAIL/RCPT parameters.
    return reply(555, "5.5.4", f"Unsupported parameter {name}")


def helo_ok(hostname: str, client_name: str) -> Reply:
    return reply(250, None, f"{hostname} Hello {client_name}")


def ehlo_ok(hostname: str, client_name: str, keywords: list[str]) -> Reply:
    return Reply(250, None, (f"{hostname} Hello {client_name}", *keywords))


HELP = Reply(
    214,
    "2.0.0",
    (
        "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY EXPN ETRN STARTTLS AUTH",
        "See RFC 5321 for details",
    ),
)

# --- transaction ----------------------------------------------------------------------------


def sender_ok(address: str) -> Reply:
    return reply(250, "2.1.0", f"Sender <{address}> ok")


def recipient_ok(address: str) -> Reply:
    return reply(250, "2.1.5", f"Recipient <{address}> ok")


START_DATA = reply(354, None, "End data with <CR><LF>.<CR><LF>")


def queued(queue_id: str) -> Reply:
    return reply(250, "2.0.0", f"Ok: queued as {queue_id}")


def chunk_ok(size: int) -> Reply:
    return reply(250, "2.0.0", f"{size} octets received")


def message_too_big(limit: int) -> Reply:
    # RFC 1870 §6.1 / RFC 3463 5.3.4: message too big for system.
    return reply(552, "5.3.4", f"Message size exceeds fixed limit of {limit} octets")


TOO_MANY_RECIPIENTS = reply(452, "4.5.3", "Too many recipients")
BARE_LINE_ENDING = reply(
    550, "5.6.0", "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 §2.3.8)"
)
SPAM_REFUSED = reply(550, "5.7.1", "Message refused: it looks like spam")
MAIL_LOOP = reply(554, "5.4.6", "Too many Received headers: mail loop detected")
BODY_8BIT_REQUIRED = reply(554, "5.6.0", "BINARYMIME is not supported")
SMTPUTF8_REQUIRED = reply(553, "5.6.7", "Non-ASCII address requires the SMTPUTF8 parameter")
# RFC 5321 §4.2.2 451 "local error in processing" / RFC 3463 4.3.0 "other mail system status".
LOCAL_ERROR = reply(451, "4.3.0", "Local error in processing, try again later")
# RFC 5321 §4.2.2 452 "insufficient system storage" / RFC 3463 4.3.1 "mail system full".
INSUFFICIENT_STORAGE = reply(452, "4.3.1", "Insufficient system storage, try again later")

# --- policy ---------------------------------------------------------------------------------

NO_SUCH_USER = reply(550, "5.1.1", "No such user here")
RELAY_DENIED = reply(554, "5.7.1", "Relay access denied")
AUTH_REQUIRED = reply(530, "5.7.0", "Authentication required")
TLS_REQUIRED = reply(530, "5.7.0", "Must issue a STARTTLS command first")

# --- STARTTLS (RFC 3207) --------------------------------------------------------------------

READY_FOR_TLS = reply(220, "2.0.0", "Ready to start TLS")
TLS_ALREADY_ACTIVE = reply(503, "5.5.1", "TLS already active")
TLS_NOT_AVAILABLE = reply(454, "4.7.0", "TLS not available")

# --- AUTH (RFC 4954) ------------------------------------------------------------------------

AUTH_OK = reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_CANCELLED = reply(501, "5.0.0", "Authentication cancelled")
AUTH_MALFORMED = reply(501, "5.5.2", "Malformed authentication data")
AUTH_ALREADY = reply(503, "5.5.1", "Already authenticated")
AUTH_IN_TRANSACTION = reply(503, "5.5.1", "AUTH not permitted during a mail transaction")
AUTH_UNKNOWN_MECHANISM = reply(504, "5.5.4", "Unrecognized authentication mechanism")
AUTH_TEMPORARY = reply(454, "4.7.0", "Temporary authentication failure")


def auth_challenge(encoded: str) -> Reply:
    # RFC 4954 §4: challenges are "334 " followed by base64, no enhanced code.
    return reply(334, None, encoded)


# --- ETRN (RFC 1985) ------------------------------------------------------------------------


def etrn_started(node: str) -> Reply:
    # RFC 1985 §5: 250 "OK, queuing for node <x> started".
    return reply(250, "2.0.0", f"Queuing for node {node} started")


def etrn_refused(node: str) -> Reply:
    # RFC 1985 §5: 458 "Unable to queue messages for node <x>" (temporary); this client sent
    # more ETRNs than it may (services/etrn.py). RFC 3463 4.7.0: a policy refusal.
    return reply(458, "4.7.0", f"Unable to queue messages for node {node}: too many ETRN requests")


def etrn_failed(node: str, *, full: bool) -> Reply:
    # RFC 1985 §5: 458; the queue could not be touched (RFC 3463 4.3.1 a full disk, else 4.3.0).
    return reply(
        458, "4.3.1" if full else "4.3.0", f"Unable to queue messages for node {node}, try later"
    )
