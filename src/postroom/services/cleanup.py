"""Headers stamped on a message before it is queued: Received, and on submission Message-ID/Date.

Also the mail-loop check: too many Received headers means the message is going round in circles
(RFC 5321 §6.3).
"""

from __future__ import annotations

import email.utils
import functools
import re
from dataclasses import dataclass

_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", re.MULTILINE)


def header_block(head: bytes) -> bytes:
    """The header section (RFC 5322 §2.1): everything before the first empty line."""
    if head.startswith(b"\r\n"):
        return b""
    end = head.find(b"\r\n\r\n")
    return head if end < 0 else head[: end + 2]


_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:((?:[^\r\n]|\r\n[ \t])*)", re.M | re.I)
MAX_MESSAGE_ID = 250  # characters of a Message-ID kept for traces


def message_id_of(head: bytes) -> str:
    """The Message-ID field's value (RFC 5322 §3.6.4) unfolded, "" when there is none."""
    match = _MESSAGE_ID.search(header_block(head))
    if match is None:
        return ""
    return b" ".join(match.group(1).split()).decode("utf-8", "replace")[:MAX_MESSAGE_ID]


def field_names(head: bytes) -> list[bytes]:
    """Lower-cased names of the header fields at the start of `head`."""
    return [m.group(1).lower() for m in _FIELD_NAME.finditer(header_block(head))]


def protocol_name(extended: bool, tls: bool, authenticated: bool) -> str:
    """RFC 3848 §2: the "with" keyword of a Received header."""
    if not extended:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


@dataclass(frozen=True, slots=True)
class TraceInfo:
    hostname: str
    queue_id: str
    client_helo: str
    client_addr: str
    protocol: str
    tls: str  # "TLSv1.3 with cipher X (256/256 bits)" or ""
    recipients: tuple[str, ...]
    arrival: float


def received_header(info: TraceInfo) -> bytes:
    """RFC 5321 §4.4 time-stamp line, folded at 78 columns with CRLF + TAB."""
    literal = _address_literal(info.client_addr)
    parts = [f"from {info.client_helo or 'unknown'} ({literal})", f"by {info.hostname} (postroom)"]
    if info.tls:
        parts.append(f"(using {info.tls})")
    parts.append(f"with {info.protocol} id {info.queue_id}")
    if len(info.recipients) == 1:
        # RFC 5321 §4.4: "for" only when there is a single recipient (privacy of Bcc).
        parts.append(f"for <{info.recipients[0]}>")
    date = rfc5322_date(int(info.arrival))
    parts[-1] += ";"
    parts.append(date)
    return _fold("Received: ", parts)


def submission_headers(head: bytes, queue_id: str, hostname: str, arrival: float) -> bytes:
    """RFC 6409 §8.2/§8.3: a submission server may add Message-ID and Date when missing."""
    names = set(field_names(head))
    added = b""
    if b"message-id" not in names:
        added += f"Message-ID: <{queue_id}@{hostname}>\r\n".encode()
    if b"date" not in names:
        added += f"Date: {rfc5322_date(int(arrival))}\r\n".encode()
    return added


@functools.lru_cache(maxsize=4)
def rfc5322_date(second: int) -> str:
    """RFC 5322 §3.3 date-time in local time; cached because many messages share a second."""
    return email.utils.formatdate(second, localtime=True)


def received_count(head: bytes) -> int:
    block = header_block(head)
    if b"received" not in block.lower():
        return 0  # one pass in C for most mail (a first hop's carries no Received field)
    return sum(1 for name in field_names(block) if name == b"received")


def _address_literal(client_addr: str) -> str:
    if ":" in client_addr:
        return f"[IPv6:{client_addr}]"
    return f"[{client_addr}]"


def _fold(start: str, parts: list[str]) -> bytes:
    lines: list[str] = []
    current = start + parts[0]
    for part in parts[1:]:
        if len(current) + 1 + len(part) > 78:
            lines.append(current)
            current = "\t" + part
        else:
            current += " " + part
    lines.append(current)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
