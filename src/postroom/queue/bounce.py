"""Delivery status notifications: the bytes of a bounce, delay notice or success report.

A report is a ``multipart/report; report-type=delivery-status`` message (RFC 6522) with three
parts: a human-readable explanation in the style of Postfix, a machine-readable
``message/delivery-status`` part (RFC 3464 §2) and the returned message or its header section
(RFC 3461 §4.3 RET=FULL/HDRS).  The caller queues the result with the null reverse-path ``<>``
(RFC 5321 §4.5.5) so that a report is never itself reported on.

Internationalised mail (RFC 6531-6533): a non-ASCII address or diagnostic switches the status part
to ``message/global-delivery-status`` with ``utf-8`` address types, and an original whose header
section carries 8-bit octets is returned as ``message/global`` or ``message/global-headers``.

The module is pure: no I/O, no clock, no randomness.  The MIME is built by hand so that the
returned content is copied byte for byte (apart from line-ending normalisation to CRLF).
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Literal

__all__ = ["ReportRecipient", "build_report", "rfc5322_date"]

Kind = Literal["failure", "delay", "success"]
Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]

CRLF = b"\r\n"
MAX_LINE = 998  # RFC 5322 §2.1.1: at most 998 octets before the CRLF
FOLD_AT = 78  # RFC 5322 §2.1.1: lines SHOULD stay within 78 characters
_STATUS_RE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")  # RFC 3463 §2: class.subject.detail

SUBJECTS: dict[str, str] = {
    "failure": "Undelivered Mail Returned to Sender",
    "delay": "Delayed Mail (still being retried)",
    "success": "Successful Mail Delivery Report",
}


@dataclass(frozen=True, slots=True)
class ReportRecipient:
    """One recipient's line in a report (RFC 3464 §2.3)."""

    final_recipient: str  # address we tried
    original_recipient: str | None  # RFC 3461 ORCPT value "rfc822;addr" (or "utf-8;..."), or None
    action: Action
    status: str  # RFC 3463 code, e.g. "5.1.1"
    remote_mta: str | None = None  # host name of the remote MTA, e.g. "mx.example.net"
    diagnostic: str | None = None  # the remote reply, e.g. "550 5.1.1 no such user"
    last_attempt: float | None = None  # epoch seconds
    will_retry_until: float | None = None


def rfc5322_date(ts: float) -> str:
    """An RFC 5322 §3.3 date-time in UTC with a numeric zone (``... 12:00:00 +0000``)."""
    return format_datetime(datetime.fromtimestamp(ts, tz=UTC))


def build_report(
    *,
    kind: Kind,
    reporting_mta: str,
    original_sender: str,
    envid: str | None,
    arrival: float,
    recipients: Sequence[ReportRecipient],
    original: bytes,
    ret: Literal["FULL", "HDRS"] | None,
    now: float,
    max_returned: int = 10 * 1024 * 1024,
    message_id: str,
) -> bytes:
    """The complete report message (CRLF line endings, lines of at most 998 octets).

    `recipients` are exactly the recipients to report on (for a failure, only the failed ones);
    `envid` is the ENVID with its xtext transport encoding already removed (RFC 3461 §4.4).
    """
    if kind not in SUBJECTS:
        raise ValueError(f"unknown report kind {kind!r}")
    if not original_sender:
        # RFC 5321 §4.5.5 / RFC 3464 §1: mail from the null reverse-path is never reported on.
        raise ValueError("no report is sent for mail with the null reverse-path")
    if not recipients:
        raise ValueError("a report needs at least one recipient")
    for rcpt in recipients:
        if not _STATUS_RE.fullmatch(rcpt.status):
            raise ValueError(f"not an RFC 3463 status code: {rcpt.status!r}")

    text, text_8bit = _human_part(kind, reporting_mta, arrival, recipients, now)
    status_body, status_global = _status_part(reporting_mta, envid, arrival, recipients)
    returned_type, returned_body, returned_8bit = _returned_part(kind, original, ret, max_returned)

    # RFC 6533 §6.1: message/global-delivery-status when the fields need UTF-8.
    status_type = "message/global-delivery-status" if status_global else "message/delivery-status"
    parts: list[tuple[list[bytes], bytes]] = [
        (
            [
                # RFC 6522 §3: the first part is the human-readable explanation.
                b"Content-Type: text/plain; charset=" + (b"utf-8" if text_8bit else b"us-ascii"),
                b"Content-Transfer-Encoding: " + (b"8bit" if text_8bit else b"7bit"),
                b"Content-Description: Notification",
            ],
            text,
        ),
        (
            [
                b"Content-Type: " + status_type.encode(),
                b"Content-Transfer-Encoding: " + (b"8bit" if status_global else b"7bit"),
                b"Content-Description: Delivery report",
            ],
            status_body,
        ),
        (
            [
                b"Content-Type: " + returned_type.encode(),
                # RFC 2046 §5.2.1: message/* allows only the 7bit, 8bit and binary encodings.
                b"Content-Transfer-Encoding: " + (b"8bit" if returned_8bit else b"7bit"),
                b"Content-Description: " + _returned_description(kind, returned_type),
            ],
            returned_body,
        ),
    ]

    boundary = _boundary(message_id, [body for _, body in parts])
    any_8bit = text_8bit or status_global or returned_8bit or not _is_ascii(original_sender)

    headers: list[bytes] = [
        b"From: Mail Delivery System <MAILER-DAEMON@" + reporting_mta.encode() + b">",
        # RFC 6532 §3.2: UTF-8 is allowed in header fields of internationalised messages.
        b"To: <" + _one_line(original_sender).encode() + b">",
        b"Subject: " + SUBJECTS[kind].encode(),
        b"Date: " + rfc5322_date(now).encode(),  # RFC 5322 §3.6.1
        b"Message-ID: <" + _one_line(message_id).encode() + b">",  # RFC 5322 §3.6.4
        b"Auto-Submitted: auto-replied",  # RFC 3834 §5: not to be answered automatically
        b"MIME-Version: 1.0",
        # RFC 6522 §3: multipart/report with the report-type parameter (RFC 3464 §2).
        b"Content-Type: multipart/report; report-type=delivery-status;",
        b' boundary="' + boundary + b'"',
    ]
    if any_8bit:
        headers.append(b"Content-Transfer-Encoding: 8bit")  # RFC 2045 §6.4: 8bit for multipart

    out = bytearray(CRLF.join(headers) + CRLF + CRLF)
    out += b"This is a MIME-encapsulated message." + CRLF
    for part_headers, body in parts:
        # RFC 2046 §5.1.1: the CRLF before "--boundary" belongs to the delimiter.
        out += CRLF + b"--" + boundary + CRLF
        out += CRLF.join(part_headers) + CRLF + CRLF
        out += body
    out += CRLF + b"--" + boundary + b"--" + CRLF
    return bytes(out)


# -- part 1: the human-readable explanation -----------------------------------------------------


def _human_part(
    kind: Kind,
    reporting_mta: str,
    arrival: float,
    recipients: Sequence[ReportRecipient],
    now: float,
) -> tuple[bytes, bool]:
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    if kind == "failure":
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. It's attached below.",
            "",
            "For further assistance, please send mail to postmaster.",
            "",
            "If you do so, please include this problem report. You can",
            "delete your own text from the attached returned message.",
        ]
    elif kind == "delay":
        retry_until = max(
            (r.will_retry_until for r in recipients if r.will_retry_until is not None),
            default=None,
        )
        lines += [
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            f"Your message could not be delivered for more than {_age(now - arrival)}.",
        ]
        if retry_until is not None:
            lines.append(f"It will be retried until it is {_age(retry_until - arrival)} old.")
        lines += [
            "",
            "For further assistance, please send mail to postmaster.",
            "",
            "If you do so, please include this problem report. You can",
            "delete your own text from the attached returned message.",
        ]
    else:
        lines += [
            "Your message was successfully delivered to the destination(s)",
            "listed below. If the message was delivered to mailbox you will",
            "receive no further notifications. Otherwise you may still receive",
            "notifications of mail delivery errors from other systems.",
        ]
    lines += ["", "                   The mail system", ""]
    for rcpt in recipients:
        lines += _wrap(_explain(rcpt))
    text = "\r\n".join(lines) + "\r\n"
    return text.encode("utf-8"), not text.isascii()


def _explain(rcpt: ReportRecipient) -> str:
    who = f"<{_one_line(rcpt.final_recipient)}>"
    if rcpt.original_recipient:
        addr_type, _, orig = rcpt.original_recipient.partition(";")
        orig = _one_line(orig)
        # RFC 3461 §4.2: only an rfc822 ORCPT is readable as is (utf-8 ones are xtext-encoded).
        if addr_type.strip().lower() == "rfc822" and orig.lower() != rcpt.final_recipient.lower():
            who += f" (expanded from <{orig}>)"
    diag = _one_line(rcpt.diagnostic) if rcpt.diagnostic else None
    if rcpt.remote_mta and diag:
        return f"{who}: host {_one_line(rcpt.remote_mta)} said: {diag}"
    if diag:
        return f"{who}: {diag}"
    words = {
        "failed": "delivery failed",
        "delayed": "delivery temporarily suspended",
        "delivered": "delivery via local mailbox",
        "relayed": "relayed to a server without delivery notification support",
        "expanded": "expanded to other recipients",
    }
    via = f" via {_one_line(rcpt.remote_mta)}" if rcpt.remote_mta else ""
    return f"{who}: {words[rcpt.action]}{via} (status {rcpt.status})"


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds >= 86400 and seconds % 86400 < 3600:
        n = round(seconds / 86400)
        return f"{n} day(s)"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} hour(s)"
    return f"{max(int(seconds // 60), 1)} minute(s)"


def _wrap(line: str) -> list[str]:
    wrapped = textwrap.wrap(line, width=FOLD_AT, subsequent_indent="    ", break_on_hyphens=False)
    return wrapped or [""]


# -- part 2: message/delivery-status ------------------------------------------------------------


def _status_part(
    reporting_mta: str,
    envid: str | None,
    arrival: float,
    recipients: Sequence[ReportRecipient],
) -> tuple[bytes, bool]:
    # The fields need UTF-8 (RFC 6533) when an address, diagnostic or identifier is not ASCII.
    values: list[str | None] = [reporting_mta, envid]
    for r in recipients:
        values += [r.final_recipient, r.original_recipient, r.remote_mta, r.diagnostic]
    utf8 = not all(v is None or v.isascii() for v in values)

    # RFC 3464 §2.2: the per-message fields come first.
    per_message = [_field("Reporting-MTA", f"dns; {_one_line(reporting_mta)}")]  # §2.2.2
    if envid is not None:
        per_message.append(_field("Original-Envelope-Id", _one_line(envid)))  # §2.2.1
    per_message.append(_field("Arrival-Date", rfc5322_date(arrival)))  # §2.2.5
    groups = [per_message]

    for r in recipients:
        # RFC 3464 §2.3: one group of per-recipient fields for each recipient.
        fields: list[bytes] = []
        if r.original_recipient:
            # §2.3.1: written exactly as the ORCPT parameter gave it.
            fields.append(_field("Original-Recipient", _one_line(r.original_recipient)))
        fields.append(_field("Final-Recipient", _address_field(r.final_recipient, utf8)))  # §2.3.2
        fields.append(_field("Action", r.action))  # §2.3.3
        fields.append(_field("Status", r.status))  # §2.3.4 with an RFC 3463 code
        if r.remote_mta:
            fields.append(_field("Remote-MTA", f"dns; {_one_line(r.remote_mta)}"))  # §2.3.5
        if r.diagnostic:
            fields.append(_field("Diagnostic-Code", f"smtp; {_one_line(r.diagnostic)}"))  # §2.3.6
        if r.last_attempt is not None:
            fields.append(_field("Last-Attempt-Date", rfc5322_date(r.last_attempt)))  # §2.3.7
        if r.action == "delayed" and r.will_retry_until is not None:
            # §2.3.9: only meaningful for delayed recipients.
            fields.append(_field("Will-Retry-Until", rfc5322_date(r.will_retry_until)))
        groups.append(fields)

    # RFC 3464 §2.1: groups of fields separated by blank lines.
    body = (CRLF + CRLF).join(CRLF.join(g) for g in groups) + CRLF
    return body, utf8


def _address_field(addr: str, utf8: bool) -> str:
    addr = _one_line(addr)
    if addr.isascii():
        return f"rfc822; {addr}"  # RFC 3464 §2.3.2 with address type rfc822
    if utf8:
        return f"utf-8; {_unitext(addr)}"  # RFC 6533 §3: utf-8-addr-unitext
    return f"utf-8; {_xtext(addr)}"  # RFC 6533 §3: utf-8-addr-xtext (unreachable in practice)


def _unitext(addr: str) -> str:
    # RFC 6533 §3: "\", "+", "=", controls and SP are written as EmbeddedUnicodeChar \x{HEX}.
    return "".join(
        f"\\x{{{ord(c):X}}}" if c in "\\+= " or ord(c) < 0x20 or ord(c) == 0x7F else c for c in addr
    )


def _xtext(addr: str) -> str:
    # RFC 6533 §3: utf-8-addr-xtext, non-ASCII as \x{HEX}, then xtext (RFC 3461 §4) for the rest.
    out = []
    for c in addr:
        if ord(c) > 0x7E:
            out.append(f"\\x{{{ord(c):X}}}")
        elif c in "+=" or ord(c) < 0x21:
            out.append(f"+{ord(c):02X}")
        else:
            out.append(c)
    return "".join(out)


# -- part 3: the returned message ---------------------------------------------------------------


def _returned_part(
    kind: Kind, original: bytes, ret: Literal["FULL", "HDRS"] | None, max_returned: int
) -> tuple[str, bytes, bool]:
    """(content type, body, 8-bit?) for the returned message or its header section."""
    message = _crlf(original)
    header_section, _body = _split(message)
    global_headers = not _is_ascii(header_section)

    # RFC 3461 §4.3: RET=HDRS returns the headers only, RET=FULL (or no RET, at our discretion
    # for failures) the whole message.  Like Postfix, delay notices carry headers only, and
    # success reports only carry the message when RET=FULL asked for it.
    full = {"failure": ret != "HDRS", "delay": False, "success": ret == "FULL"}[kind]
    if full and len(message) <= max_returned and _lines_fit(message):
        content = message if message.endswith(CRLF) else message + CRLF
        # RFC 6532 §3.7: message/global for a message with UTF-8 header fields.
        ctype = "message/global" if global_headers else "message/rfc822"
        return ctype, content, not _is_ascii(content)

    content = _fit_lines(header_section)
    # RFC 6522 §4 text/rfc822-headers; RFC 6533 §6.3 message/global-headers for UTF-8 headers.
    ctype = "message/global-headers" if global_headers else "text/rfc822-headers"
    return ctype, content, global_headers


def _returned_description(kind: Kind, ctype: str) -> bytes:
    if ctype in ("message/rfc822", "message/global"):
        return b"Undelivered Message" if kind == "failure" else b"Message"
    return b"Undelivered Message Headers" if kind == "failure" else b"Message Headers"


def _crlf(data: bytes) -> bytes:
    # RFC 5322 §2.3: CR and LF only occur together; a lone CR or LF is taken as a line end.
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _split(message: bytes) -> tuple[bytes, bytes]:
    """The header section (each field line ending in CRLF) and the body (RFC 5322 §2.1)."""
    if message.startswith(CRLF):
        return b"", message[2:]
    head, sep, body = message.partition(CRLF + CRLF)
    if not sep:
        return (message if message.endswith(CRLF) else message + CRLF), b""
    return head + CRLF, body


def _lines_fit(data: bytes) -> bool:
    return all(len(line) <= MAX_LINE for line in data.split(CRLF))


def _fit_lines(header_section: bytes) -> bytes:
    """Hard-fold header lines longer than 998 octets so the report stays valid (RFC 5322 §2.1.1)."""
    out: list[bytes] = []
    for line in header_section.split(CRLF):
        while len(line) > MAX_LINE:
            out.append(line[:MAX_LINE])
            line = b" " + line[MAX_LINE:]
        out.append(line)
    return CRLF.join(out)


# -- helpers ------------------------------------------------------------------------------------


def _boundary(message_id: str, bodies: Iterable[bytes]) -> bytes:
    """A boundary found in none of the parts (RFC 2046 §5.1.1); "=_" never occurs in QP text."""
    contents = list(bodies)
    counter = 0
    while True:
        digest = hashlib.sha256(f"{message_id}/{counter}".encode()).hexdigest()[:24]
        boundary = f"=_postroom_{digest}".encode()
        if not any(boundary in body for body in contents):
            return boundary
        counter += 1


def _field(name: str, value: str) -> bytes:
    """``Name: value`` folded at spaces near 78 columns and never past 998 (RFC 5322 §2.2.3)."""
    line = f"{name}: {value}"
    if len(line) <= FOLD_AT:
        return line.encode("utf-8")
    out: list[str] = []
    current = ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > FOLD_AT:
            out.append(current)
            current = " " + word
        else:
            current = f"{current} {word}" if current else word
    out.append(current)
    lines: list[bytes] = []
    for piece in out:
        encoded = piece.encode("utf-8")
        while len(encoded) > MAX_LINE:
            cut = _utf8_cut(encoded, MAX_LINE)
            lines.append(encoded[:cut])
            encoded = b" " + encoded[cut:]
        lines.append(encoded)
    return CRLF.join(lines)


def _utf8_cut(data: bytes, limit: int) -> int:
    """The largest cut point ≤ limit that does not split a UTF-8 sequence."""
    cut = limit
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut


def _one_line(value: str) -> str:
    """Collapse CR, LF and runs of whitespace (a multi-line SMTP reply becomes one line)."""
    return " ".join(value.split())


def _is_ascii(data: bytes | str) -> bool:
    return data.isascii()
