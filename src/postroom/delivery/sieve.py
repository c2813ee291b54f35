"""The user's Sieve script at local delivery (RFC 5228 and its extensions, proto/sieve): run in
the delivering transaction for each local recipient whose active script there is, it decides
which copies are stored where, with which flags and headers, and queues what the script sends.

- keep and the implicit keep: INBOX (Junk when the junk filter or the inbound checks said so);
  fileinto: that mailbox, created with `:create`, else INBOX (logged) — a script never loses
  mail; a runtime error is an implicit keep (logged);
- imap4flags: the stored copy's flags; editheader: that copy's own bytes (a blob of its own);
- redirect: a new message to the address through the queue, from the original envelope sender
  (outbound delivery rewrites a foreign one with SRS); discard: no copy;
- reject/ereject (RFC 5429): the recipient fails with the reason, and the failure report goes to
  the sender like any local failure; vacation (RFC 5230/3834): a reply from `<>` to the sender,
  `Auto-Submitted: auto-replied`, with In-Reply-To/References, remembered per sender and handle
  for its period; duplicate (RFC 7352): the IDs are remembered.

Compiled scripts are cached by their source. Users without an active script cost one indexed
read per copy.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header
from typing import Literal

from postroom.model.queue import QueuedMessage, Recipient
from postroom.proto.sieve import (
    Discard,
    Envelope,
    FileInto,
    Keep,
    Redirect,
    Reject,
    Script,
    SieveError,
    SpamVerdict,
    Vacation,
    compile_script,
    render_message,
    run,
)
from postroom.queue.reports import Reporter, queue_message
from postroom.storage.api import Tx
from postroom.storage.records import INBOX, JUNK, HistoryEvent

log = logging.getLogger("postroom.sieve")

SCRIPT_CACHE = 256  # compiled scripts kept


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy to store: the mailbox, its flags, and its own bytes when editheader changed
    them (None: the shared blob behind the usual prefix)."""

    mailbox_id: int
    name: str
    flags: tuple[str, ...] = ()
    content: bytes | None = None


@dataclass
class Decision:
    copies: list[Copy] = field(default_factory=list)
    rejected: str | None = None  # the reason of a reject/ereject


@functools.lru_cache(maxsize=SCRIPT_CACHE)
def _compiled(source: str) -> Script | SieveError:
    try:
        return compile_script(source)
    except SieveError as error:
        return error


class _StoreEnv:
    """What a script may ask, answered from the delivering transaction."""

    def __init__(self, tx: Tx, user_id: int, spam_score: int, now: float) -> None:
        self.tx = tx
        self.user_id = user_id
        self.spam_score = spam_score
        self.moment = now

    def mailbox_exists(self, name: str) -> bool:
        return self.tx.mailboxes.id_of(self.user_id, _mailbox_name(name)) is not None

    def duplicate_seen(self, key: str, seconds: int, last: bool) -> bool:
        return self.tx.sieve.seen(self.user_id, key, self.moment)

    def vacation_replied(self, sender: str, handle: str, seconds: int) -> bool:
        return self.tx.sieve.replied(self.user_id, sender, handle, self.moment)

    def load_script(self, name: str, location: Literal["personal", "global"]) -> str | None:
        return self.tx.sieve.get(self.user_id, name) if location == "personal" else None

    def spamtest(self) -> SpamVerdict | None:
        if not self.spam_score:
            return None
        return SpamVerdict(self.spam_score, (self.spam_score - 1) * 100 // 9)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.moment, UTC)


def _mailbox_name(name: str) -> str:
    return INBOX if name.upper() == INBOX else name


def decide(
    tx: Tx,
    message: QueuedMessage,
    rcpt: Recipient,
    copy: Callable[[], bytes],
    active: tuple[str, str],
    *,
    junk: bool,
    reporter: Reporter,
) -> Decision:
    """What the recipient's active script (`active`: its name and source, from
    `tx.sieve.active`) makes of this copy (`copy()`: its bytes as it would be stored)."""
    assert rcpt.user_id is not None
    user_id = rcpt.user_id
    name, source = active
    now = time.time()
    hostname = reporter.hostname
    default = JUNK if junk else INBOX
    compiled = _compiled(source)
    if isinstance(compiled, SieveError):
        log.warning("script %s of %s does not compile: %s; kept", name, rcpt.address, compiled)
        return Decision([_copy_or_inbox(tx, user_id, default, rcpt.address)])
    raw = copy()
    envelope = Envelope(
        mail_from=message.envelope.sender,
        to=rcpt.address,
        original_to=rcpt.original if rcpt.original != rcpt.address else None,
        auth=message.envelope.auth_user or None,
    )
    outcome = run(compiled, raw, envelope, _StoreEnv(tx, user_id, rcpt.spam_score, now))
    if outcome.error is not None:
        log.warning("script %s of %s failed: %s; kept", name, rcpt.address, outcome.error)
    decision = Decision()
    for action in outcome.actions:
        if isinstance(action, Keep):
            decision.copies.append(
                _stored(tx, user_id, default, action.flags, raw, action.headers, rcpt.address)
            )
        elif isinstance(action, FileInto):
            target = _mailbox_name(action.mailbox)
            if tx.mailboxes.id_of(user_id, target) is None and action.create:
                tx.mailboxes.create(user_id, target)  # RFC 5490 §3.2: fileinto :create
            decision.copies.append(
                _stored(tx, user_id, target, action.flags, raw, action.headers, rcpt.address)
            )
        elif isinstance(action, Redirect):
            content = raw if action.headers is None else render_message(raw, action.headers)
            sent = _queue(tx, reporter, content, action.address, message.envelope.sender, now)
            _note(tx, message, rcpt, now, f"redirected to <{action.address}>", sent)
            message.queued_more = True
            log.info("redirected id=%s to=<%s> by script of %s", message.id, action.address,
                     rcpt.address)  # fmt: skip
        elif isinstance(action, Reject):
            decision.rejected = action.reason
        elif isinstance(action, Vacation):
            reply = vacation_reply(action, rcpt.address, hostname, now)
            sent = _queue(tx, reporter, reply, action.to, "", now)
            _note(tx, message, rcpt, now, f"vacation reply to <{action.to}>", sent)
            message.queued_more = True
            tx.sieve.record_reply(user_id, action.to, action.handle, now + action.seconds)
            log.info("vacation reply to=<%s> from script of %s", action.to, rcpt.address)
        elif isinstance(action, Discard):
            log.info("discarded id=%s for %s by script", message.id, rcpt.address)
    for key, seconds, _ in outcome.duplicates:
        tx.sieve.record_seen(user_id, key, now + seconds)
    if decision.rejected is not None:
        decision.copies = []  # RFC 5429 §2: reject cancels the implicit keep
    return decision


def _stored(
    tx: Tx,
    user_id: int,
    name: str,
    flags: tuple[str, ...],
    raw: bytes,
    headers: tuple[tuple[str, str], ...] | None,
    address: str,
) -> Copy:
    copy = _copy_or_inbox(tx, user_id, name, address)
    content = None if headers is None else render_message(raw, headers)
    return Copy(copy.mailbox_id, copy.name, flags, content)


def _copy_or_inbox(tx: Tx, user_id: int, name: str, address: str) -> Copy:
    found = tx.mailboxes.id_of(user_id, name)
    if found is not None:
        return Copy(found, name)
    inbox = tx.mailboxes.id_of(user_id, INBOX)
    if inbox is None:
        inbox = tx.mailboxes.create(user_id, INBOX)
    log.info("mailbox %s of %s does not exist: filed into INBOX", name, address)
    return Copy(inbox, INBOX)


def _note(
    tx: Tx, message: QueuedMessage, rcpt: Recipient, now: float, what: str, sent: str | None
) -> None:
    """What the script sent, in the message's delivery trace (services/trace.py)."""
    done = f"{what} sent as {sent}" if sent else f"{what}: address unknown, not sent"
    tx.history.record(HistoryEvent(message.id, now, rcpt.address, "sieve", done))


def _queue(
    tx: Tx, reporter: Reporter, content: bytes, to: str, sender: str, now: float
) -> str | None:
    """A message the script sends, accepted like one from a client: copies for local users
    at once, the rest through the queue (outbound delivery signs it and, for a foreign
    envelope sender, rewrites that with SRS). Its queue ID; None when `to` leads nowhere."""
    recipients = [Recipient(to, to, None)]
    if to.rpartition("@")[2].lower() in reporter.local_domains:
        resolution = tx.accounts.resolve(to, frozenset(reporter.local_domains))
        recipients = [Recipient(target, to, user_id) for target, user_id in resolution.local_users]
        recipients += [Recipient(target, to, None) for target in resolution.remote]
    if not recipients:
        return None
    return queue_message(
        tx,
        content,
        recipients,
        sender=sender,
        hostname=reporter.hostname,
        now=now,
        deliver_local=reporter.deliver_local,
    ).id


def _header_text(text: str) -> str:
    """A header field's text: as it is when ASCII, else RFC 2047 encoded words."""
    flat = " ".join(text.split())
    return flat if flat.isascii() else Header(flat, "utf-8").encode()


def vacation_reply(action: Vacation, user: str, hostname: str, now: float) -> bytes:
    """RFC 5230 §5 / RFC 3834 §3: the reply, from the user (or :from) to the sender."""
    sender = action.from_ or user
    lines = [
        f"From: {sender}",
        f"To: {action.to}",
        f"Subject: {_header_text(action.subject)}",
        f"Date: {email.utils.formatdate(now, localtime=True)}",
        f"Message-ID: {email.utils.make_msgid(domain=hostname)}",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
    ]
    if action.in_reply_to:
        lines.append(f"In-Reply-To: {action.in_reply_to}")
    references = " ".join(r for r in (action.references, action.in_reply_to) if r)
    if references:
        lines.append(f"References: {references}")
    head = "\r\n".join(lines) + "\r\n"
    if action.mime:
        body = action.body.replace("\r\n", "\n").replace("\n", "\r\n")
        return (head + "MIME-Version: 1.0\r\n" + body).encode("utf-8")
    text = action.body.replace("\r\n", "\n").replace("\n", "\r\n")
    return (
        head + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + text + "\r\n"
    ).encode("utf-8")
