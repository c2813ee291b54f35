"""How a message's history is written down, the same in every backend: each event as a line of
JSON, how the message was received as a JSON object, and the keys a trace is found by."""

from __future__ import annotations

import json

from postroom.model.queue import QueuedMessage
from postroom.storage.records import HistoryEvent, ReceivedRecipient, Reception

MAX_REPLY = 512  # characters of a reply kept per event (a peer may send kilobytes)
MAX_MESSAGE_ID = 250  # characters of a Message-ID kept and looked up

ADDRESS_KEY = "a:"
MESSAGE_ID_KEY = "m:"

# Made once: json.dumps with options makes an encoder for every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def message_id_key(message_id: str) -> str:
    """The lookup key of a Message-ID: "<X@y>" and "x@y" find the same message."""
    return MESSAGE_ID_KEY + message_id.strip().strip("<>").lower()[:MAX_MESSAGE_ID]


def reception_text(message: QueuedMessage) -> str:
    """How `message` was received (its envelope's TLS, Message-ID, verdict, its recipients)."""
    env = message.envelope
    return _ENCODER.encode(
        {
            "tls": env.tls,
            "message_id": env.message_id[:MAX_MESSAGE_ID],
            "verdict": env.verdict,
            "junk": env.junk,
            "recipients": [
                [r.address, r.original, r.user_id is not None] for r in message.recipients
            ],
        }
    )


def event_line(event: HistoryEvent) -> str:
    """One event as a line: [time, recipient, event, reply, relay(, details)] and a newline."""
    fields: list[object] = [
        event.time,
        event.recipient,
        event.event,
        event.reply[:MAX_REPLY],
        event.relay,
    ]
    details = {
        name: value
        for name, value in (
            ("ip", event.ip),
            ("tls", event.tls),
            ("next", event.next_attempt),
            ("report", event.report_id),
        )
        if value
    }
    if details:
        fields.append(details)
    return _ENCODER.encode(fields) + "\n"


def parse_event(message_id: str, line: str) -> HistoryEvent:
    fields = json.loads(line)
    moment, recipient, event, reply, relay = fields[:5]
    details = fields[5] if len(fields) > 5 else {}
    upcoming = details.get("next")
    return HistoryEvent(
        message_id,
        float(moment),
        str(recipient),
        str(event),
        str(reply),
        relay,
        ip=str(details.get("ip", "")),
        tls=str(details.get("tls", "")),
        next_attempt=None if upcoming is None else float(upcoming),
        report_id=str(details.get("report", "")),
    )


def parse_reception(text: str) -> Reception | None:
    if not text:
        return None
    fields = json.loads(text)
    return Reception(
        tls=str(fields["tls"]),
        message_id=str(fields["message_id"]),
        verdict=str(fields["verdict"]),
        junk=bool(fields["junk"]),
        recipients=tuple(
            ReceivedRecipient(str(address), str(original), bool(local))
            for address, original, local in fields["recipients"]
        ),
    )
