"""What running a script yields, as data: the actions in order (with the implicit keep, RFC
5228 §2.10.2, as a final `Keep(implicit=True)`), the edited header list, the duplicate-tracking
records to store, and the error when the script failed. Also the Envelope and the Env protocol
through which the interpreter asks the outside world (it does no I/O itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

Headers = tuple[tuple[str, str], ...]  # (field name, raw value as after the colon)


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope of the delivery. `mail_from` is "" for the null reverse-path;
    `to` is the final recipient (the mailbox owner), `original_to` the address as given in RCPT
    TO before aliasing (envelope "to" and :detail see it when set, as Pigeonhole does)."""

    mail_from: str
    to: str
    original_to: str | None = None
    auth: str | None = None

    @property
    def envelope_to(self) -> str:
        return self.original_to or self.to


@dataclass(frozen=True, slots=True)
class SpamVerdict:
    """RFC 5235: `value` 1 (certainly ham) … 10 (certainly spam); `percent` 0 … 100."""

    value: int
    percent: int


class Env(Protocol):
    """The outside world, as the interpreter needs it. All methods must be quick."""

    def mailbox_exists(self, name: str) -> bool: ...

    def duplicate_seen(self, key: str, seconds: int, last: bool) -> bool:
        """RFC 7352: was `key` recorded within the last `seconds`? (`last`: the period counts
        from the latest occurrence.) Recording happens after delivery, from Outcome.duplicates."""
        ...

    def vacation_replied(self, sender: str, handle: str, seconds: int) -> bool:
        """RFC 5230 §4.2: was a reply with this handle sent to `sender` within `seconds`?"""
        ...

    def load_script(self, name: str, location: Literal["personal", "global"]) -> str | None:
        """RFC 6609: the source of an included script, None if there is none."""
        ...

    def spamtest(self) -> SpamVerdict | None:
        """RFC 5235: the message's spam verdict, None if it was not tested."""
        ...

    def now(self) -> datetime:
        """The current time, timezone-aware: currentdate, and the default zone of date."""
        ...


class NullEnv:
    """An Env with nothing in it: no mailboxes, no history, no includes, no spam verdict,
    the clock in UTC. Subclass or replace what a caller needs."""

    def mailbox_exists(self, name: str) -> bool:
        return name.upper() == "INBOX"

    def duplicate_seen(self, key: str, seconds: int, last: bool) -> bool:
        return False

    def vacation_replied(self, sender: str, handle: str, seconds: int) -> bool:
        return False

    def load_script(self, name: str, location: Literal["personal", "global"]) -> str | None:
        return None

    def spamtest(self) -> SpamVerdict | None:
        return None

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Keep:
    """Store into the default mailbox (INBOX). `headers` is the header list as edited when the
    action was taken (None: unchanged)."""

    flags: tuple[str, ...] = ()
    implicit: bool = False
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class FileInto:
    mailbox: str
    flags: tuple[str, ...] = ()
    copy: bool = False
    create: bool = False
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    address: str
    copy: bool = False
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str
    extended: bool = False  # ereject: refuse in the SMTP dialogue when possible (RFC 5429 §2.1)


@dataclass(frozen=True, slots=True)
class Discard:
    pass


@dataclass(frozen=True, slots=True)
class Vacation:
    """An auto-reply to send (RFC 5230): all the checks of §4.5-4.6 have passed and the
    "already replied" check said no; the caller sends it and records (to, handle, seconds)."""

    to: str  # the envelope sender of the original
    subject: str
    from_: str | None  # None: the recipient's own address
    body: str
    mime: bool
    handle: str
    seconds: int
    addresses: tuple[str, ...]
    in_reply_to: str | None
    references: str | None


Action = Keep | FileInto | Redirect | Reject | Discard | Vacation


@dataclass(frozen=True, slots=True)
class Outcome:
    actions: tuple[Action, ...]
    headers: Headers | None = None  # the final header list when editheader changed it
    duplicates: tuple[tuple[str, int, bool], ...] = ()  # (key, seconds, last) to record
    error: str | None = None  # a runtime error: the actions are then just the implicit keep

    @property
    def implicit_keep(self) -> bool:
        return any(isinstance(a, Keep) and a.implicit for a in self.actions)


def render_message(raw: bytes, headers: Headers) -> bytes:
    """The message with its header replaced by `headers` (after editheader)."""
    end = raw.find(b"\r\n\r\n")
    body = raw[end + 4 :] if end >= 0 else b""
    if end < 0 and (lf := raw.find(b"\n\n")) >= 0:
        body = raw[lf + 2 :]
    lines = [f"{name}:{value}" for name, value in headers]
    head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
    return head + b"\r\n\r\n" + body
