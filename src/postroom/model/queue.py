"""The queue's records: a message with its envelope, its recipients' per-recipient state, and what
one delivery attempt did to a recipient. Below storage (which keeps them) and the queue and
delivery code (which make and read them)."""

from __future__ import annotations

import enum
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

from postroom.proto.smtp.params import MailParams


class RecipientState(enum.StrEnum):
    QUEUED = "queued"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    FAILED = "failed"
    HELD = "held"


_ID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXZ"  # no vowels: IDs never spell words


# Seeded once from the OS; queue IDs need uniqueness, not unpredictability.
_random = random.Random(os.urandom(16))


def new_queue_id(now: float | None = None) -> str:
    """A sortable, unique queue ID: 9 characters of time in ms, then 8 random characters."""
    millis = int((time.time() if now is None else now) * 1000)
    return _digits(millis, 9) + _digits(_random.getrandbits(39), 8)


def queue_id_floor(moment: float) -> str:
    """The smallest queue ID made at `moment` or later: IDs below it are older."""
    return _digits(int(moment * 1000), 9) + _ID_ALPHABET[0] * 8


def _digits(value: int, width: int) -> str:
    part = []
    for _ in range(width):
        value, digit = divmod(value, len(_ID_ALPHABET))
        part.append(_ID_ALPHABET[digit])
    return "".join(reversed(part))


@dataclass(slots=True)
class Recipient:
    address: str  # final address after alias expansion
    original: str  # as given in RCPT TO
    user_id: int | None  # local user, None for remote delivery
    orcpt: str | None = None
    notify: tuple[str, ...] | None = None
    state: RecipientState = RecipientState.QUEUED
    attempts: int = 0
    next_attempt: float = 0.0
    last_reply: str = ""
    id: int | None = None
    spam_score: int = 0  # the junk filter's RFC 5235 score for this user, 0: not tested
    junk: bool = False  # this local copy goes to the user's Junk mailbox
    lease_node: str | None = None  # the node delivering it now (a remote recipient)
    lease_until: float | None = None  # when that node's lease on it ends


@dataclass(slots=True)
class Envelope:
    """Who sent the message, how, and with which MAIL parameters."""

    sender: str
    params: MailParams
    client_addr: str
    client_helo: str
    protocol: str
    tls: str = ""
    auth_user: str = ""
    arrival: float = field(default_factory=time.time)
    # The checks of inbound mail ("spf=pass dkim=pass dmarc=pass arc=none"), "" when none ran.
    auth: str = ""
    junk: bool = False  # local copies go to the recipient's Junk mailbox, not INBOX
    # Kept in the delivery history only (not in the queue entry): the Message-ID header field
    # (for traces) and what the inbound checks decided ("deliver: ...", "junk: ...").
    message_id: str = ""
    verdict: str = ""

    def params_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self.params).items() if v not in (None, False)})

    @staticmethod
    def params_from_json(text: str) -> MailParams:
        return MailParams(**json.loads(text))


@dataclass(slots=True)
class QueuedMessage:
    id: str
    envelope: Envelope
    prefix: bytes  # trace headers added on arrival
    blob_id: int
    blob_size: int
    recipients: list[Recipient]
    # Set (not kept) when delivering it queued other mail - a report, a Sieve redirect or
    # reply - so whoever committed it wakes outbound delivery at once.
    queued_more: bool = False

    @property
    def size(self) -> int:
        return len(self.prefix) + self.blob_size

    def needs_queue_entry(self) -> bool:
        """Whether anything is left to do: a recipient not delivered yet. (Success reports owed
        for local copies are queued by local delivery in the same transaction.)"""
        return any(r.state is not RecipientState.DELIVERED for r in self.recipients)


DeliveryResult = Literal["delivered", "deferred", "failed"]


@dataclass(frozen=True)
class RecipientOutcome:
    """What happened to one recipient: the reply (remote, or a local reason) and its status."""

    address: str
    result: DeliveryResult
    reply: str  # "250 2.0.0 ok", the remote reply, or "4.4.1 connection refused by mx[ip]"
    status: str  # RFC 3463 enhanced status code, e.g. "5.1.1"
    remote_mta: str | None
    # RFC 3461 §5.2.2: the peer offered DSN, so NOTIFY went on with the message and the peer
    # reports success itself; without DSN a NOTIFY=SUCCESS earns a "relayed" report from us.
    dsn_passed: bool = False
    remote_ip: str = ""  # the address of the peer that answered (for traces)
    tls: str = ""  # the TLS version and cipher of the session with it, "" for none
