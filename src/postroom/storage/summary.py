"""The stored form of a message's IMAP summary (ENVELOPE, BODYSTRUCTURE, sort/search keys).

Computed once per blob when it first enters a mailbox (RFC 3501 FETCH ENVELOPE/BODYSTRUCTURE
then never parses the message again) and kept in `blobs.summary`: a line with three lengths,
then the ENVELOPE, BODY and BODYSTRUCTURE bytes as they go on the wire (so FETCH slices them out
without decoding anything), the header block (what SEARCH by header reads, without the body),
then the sort/search keys as compact JSON.
"""

from __future__ import annotations

import json
from typing import Any

from postroom.proto.imap.structure import MailAddress, MessageSummary, summarise


def _b(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _unb(value: str | None) -> bytes | None:
    return None if value is None else value.encode("latin-1")


def _addresses(items: tuple[MailAddress, ...]) -> list[list[str]]:
    return [[a.name, a.mailbox, a.host] for a in items]


def pack(summary: MessageSummary, header: bytes = b"") -> bytes:
    wire = (summary.envelope, summary.body, summary.bodystructure, header)
    head = b"%d %d %d %d\n" % tuple(len(part) for part in wire)
    record = [
        summary.date,
        _b(summary.subject_raw),
        summary.subject,
        _addresses(summary.from_),
        _addresses(summary.to),
        _addresses(summary.cc),
        summary.message_id,
        summary.in_reply_to,
        list(summary.references),
    ]
    keys = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
    return head + b"".join(wire) + keys


def wire_part(data: bytes, index: int) -> bytes:
    """One of ENVELOPE (0), BODY (1), BODYSTRUCTURE (2) or the header block (3), alone."""
    newline = data.index(b"\n")
    lengths = data[:newline].split()
    start = newline + 1 + sum(int(n) for n in lengths[:index])
    return data[start : start + int(lengths[index])]


def wire_parts(data: bytes) -> tuple[bytes, bytes, bytes, bytes, int]:
    """ENVELOPE, BODY, BODYSTRUCTURE, the header block, and where the JSON keys start."""
    newline = data.index(b"\n")
    lengths = [int(n) for n in data[:newline].split()]
    start = newline + 1
    parts = []
    for length in lengths:
        parts.append(data[start : start + length])
        start += length
    return parts[0], parts[1], parts[2], parts[3], start


def unpack(data: bytes) -> MessageSummary:
    envelope, body, bodystructure, _, start = wire_parts(data)
    record: list[Any] = json.loads(data[start:])

    def addresses(items: list[list[str]]) -> tuple[MailAddress, ...]:
        return tuple(MailAddress(*item) for item in items)

    return MessageSummary(
        envelope=envelope,
        bodystructure=bodystructure,
        body=body,
        date=record[0],
        subject_raw=_unb(record[1]),
        subject=record[2],
        from_=addresses(record[3]),
        to=addresses(record[4]),
        cc=addresses(record[5]),
        message_id=record[6],
        in_reply_to=record[7],
        references=tuple(record[8]),
    )


def header_block(raw: bytes) -> bytes:
    """The header section up to and including the blank line (all of it when there is none)."""
    for end in (b"\r\n\r\n", b"\n\n"):
        index = raw.find(end)
        if index >= 0:
            return raw[: index + len(end)]
    return raw


def summarise_packed(raw: bytes) -> bytes:
    return pack(summarise(raw), header_block(raw))
