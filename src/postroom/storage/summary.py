"""The stored form of a message's IMAP summary (ENVELOPE, BODYSTRUCTURE, sort/search keys).

Computed once per blob when it first enters a mailbox (RFC 3501 FETCH ENVELOPE/BODYSTRUCTURE
then never parses the message again) and kept in `blobs.summary` as compact JSON; byte strings
travel as latin-1 text so every octet survives.
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


def pack(summary: MessageSummary) -> bytes:
    record = [
        _b(summary.envelope),
        _b(summary.bodystructure),
        _b(summary.body),
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
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def unpack(data: bytes) -> MessageSummary:
    record: list[Any] = json.loads(data)

    def addresses(items: list[list[str]]) -> tuple[MailAddress, ...]:
        return tuple(MailAddress(*item) for item in items)

    return MessageSummary(
        envelope=_unb(record[0]) or b"",
        bodystructure=_unb(record[1]) or b"",
        body=_unb(record[2]) or b"",
        date=record[3],
        subject_raw=_unb(record[4]),
        subject=record[5],
        from_=addresses(record[6]),
        to=addresses(record[7]),
        cc=addresses(record[8]),
        message_id=record[9],
        in_reply_to=record[10],
        references=tuple(record[11]),
    )


def summarise_packed(raw: bytes) -> bytes:
    return pack(summarise(raw))
