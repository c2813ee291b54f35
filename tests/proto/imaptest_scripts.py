"""Replays imaptest's SORT/THREAD scripts (../shared/conformance/imaptest) on the pure code.

imaptest APPENDs each message of `<name>.mbox` with the mbox From line's date as INTERNALDATE
and the message's CRLF size; this module builds the same `SortKeys` from the headers (parsed
with the stdlib `email` package), simulates the few state-changing commands the scripts use
(append, store +flags \\deleted, expunge) and runs every SORT/THREAD command, returning what
the script expects next to what the functions answer.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.headerregistry import AddressHeader
from email.message import EmailMessage
from pathlib import Path

from postroom.proto.imap.sort import SortAddress, SortKeys, parse_sort_criteria, sort_messages
from postroom.proto.imap.thread import ThreadAlgorithm, format_threads, msg_ids, thread_messages

# Dovecot imaptest scripts, kept as data in ../shared (POSTROOM_IMAPTEST_DIR overrides).
DATA = Path(
    os.environ.get("POSTROOM_IMAPTEST_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "conformance" / "imaptest" / "tests"
)

_FROM_LINE = re.compile(
    r"From \S+\s+(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})(?: ([+-])(\d\d)(\d\d))?\s*$"
)


@dataclass(frozen=True)
class MboxMessage:
    text: str
    internal_date: float
    size: int


@dataclass(frozen=True)
class Check:
    command: str
    expected: str
    actual: str


def read_mbox(path: Path) -> list[MboxMessage]:
    """Messages as imaptest's mbox source reads them: every line counts with CRLF."""
    messages: list[MboxMessage] = []
    lines: list[str] = []
    date = 0.0

    def flush() -> None:
        if lines:
            size = sum(len(line.encode()) + 2 for line in lines)
            messages.append(MboxMessage("\r\n".join(lines) + "\r\n", date, size))

    for line in path.read_text().split("\n"):
        match = _FROM_LINE.match(line)
        if match is None:
            lines.append(line)
            continue
        flush()
        lines = []
        stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        offset = timedelta(0)
        if match.group(2):
            offset = timedelta(hours=int(match.group(3)), minutes=int(match.group(4)))
            if match.group(2) == "-":
                offset = -offset
        date = stamp.replace(tzinfo=timezone(offset)).timestamp()
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline
    flush()
    return messages


def _first_address(message: EmailMessage, name: str) -> SortAddress | None:
    header = message[name]
    if not isinstance(header, AddressHeader) or not header.groups:
        return None
    group = header.groups[0]
    if group.display_name is not None:
        return SortAddress(mailbox=group.display_name)  # the ENVELOPE group marker
    if not group.addresses:
        return None
    address = group.addresses[0]
    return SortAddress(address.username, address.domain, address.display_name)


def _date(message: EmailMessage) -> float | None:
    header = message["Date"]
    stamp = getattr(header, "datetime", None)
    if not isinstance(stamp, datetime):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def sort_keys(raw: MboxMessage, seq: int, uid: int) -> SortKeys:
    message = email.message_from_string(raw.text, policy=email.policy.default)
    assert isinstance(message, EmailMessage)

    def first_id(name: str) -> str | None:
        found = msg_ids(str(message[name] or ""))
        return found[0] if found else None

    return SortKeys(
        seq=seq,
        uid=uid,
        arrival=raw.internal_date,
        date=_date(message),
        size=raw.size,
        subject=str(message["Subject"] or ""),
        from_=_first_address(message, "From"),
        to=_first_address(message, "To"),
        cc=_first_address(message, "Cc"),
        message_id=first_id("Message-ID"),
        in_reply_to=first_id("In-Reply-To"),
        references=msg_ids(str(message["References"] or "")),
    )


def _parse_set(text: str) -> set[int]:
    numbers: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition(":")
        numbers.update(range(int(low), int(high or low) + 1))
    return numbers


class _Mailbox:
    def __init__(self, source: list[MboxMessage]) -> None:
        self.source = source
        self.next_source = 0
        self.next_uid = 1
        self.messages: list[tuple[int, MboxMessage]] = []  # (uid, message)
        self.deleted: set[int] = set()  # UIDs

    def append(self) -> None:
        # imaptest wraps around to the start of the mbox when it runs out of messages.
        self.messages.append((self.next_uid, self.source[self.next_source % len(self.source)]))
        self.next_source += 1
        self.next_uid += 1

    def keys(self) -> list[SortKeys]:
        return [sort_keys(raw, seq, uid) for seq, (uid, raw) in enumerate(self.messages, 1)]

    def run(self, command: str) -> str | None:
        words = command.split()
        verb = words[0].lower()
        if verb == "select":
            return None
        if verb == "append" and len(words) == 1:
            self.append()
            return None
        if verb == "store" and [w.lower() for w in words[2:]] == ["+flags", "\\deleted"]:
            self.deleted |= {self.messages[seq - 1][0] for seq in _parse_set(words[1])}
            return None
        if verb == "expunge" and len(words) == 1:
            self.messages = [(uid, raw) for uid, raw in self.messages if uid not in self.deleted]
            return None
        sort = re.fullmatch(r"sort \(([^)]*)\) us-ascii all", command, re.IGNORECASE)
        if sort is not None:
            order = sort_messages(self.keys(), parse_sort_criteria(sort.group(1).split()))
            return "sort " + " ".join(map(str, order))
        thread = re.fullmatch(r"thread (\S+) us-ascii all", command, re.IGNORECASE)
        if thread is not None:
            algorithm = ThreadAlgorithm(thread.group(1).upper())
            return "thread " + format_threads(thread_messages(self.keys(), algorithm))
        raise ValueError(f"command not simulated: {command!r}")


def run_script(name: str) -> list[Check]:
    """Runs the script `name`; one Check per SORT/THREAD command (untagged reply compared)."""
    header, _, body = (DATA / name).read_text().partition("\n\n")
    settings = dict(line.split(": ", 1) for line in header.splitlines())
    mailbox = _Mailbox(read_mbox(DATA / f"{name}.mbox"))
    if settings.get("state", "selected") == "selected":
        count = settings.get("messages", "all")
        for _ in range(len(mailbox.source) if count == "all" else int(count)):
            mailbox.append()
    checks: list[Check] = []
    for block in body.strip().split("\n\n"):
        lines = block.splitlines()
        while lines:
            command = lines.pop(0)
            if not command.lower().startswith("ok "):
                raise ValueError(f"unexpected script line {command!r}")
            expected: list[str] = []
            while lines and lines[0].startswith("* "):
                expected.append(lines.pop(0)[2:])
            actual = mailbox.run(command[3:])
            if actual is None:
                continue
            assert len(expected) == 1, f"{name}: {command!r} expects {expected!r}"
            # imaptest compares case-insensitively ("* THREAD" vs "* thread").
            checks.append(Check(command[3:], expected[0].lower(), actual.lower()))
    return checks
