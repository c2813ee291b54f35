"""Mailbox export to mbox (mboxrd quoting) and Maildir, for `postroom mailbox export`."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from postroom.storage.records import StoredMessage

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)
_RETURN_PATH = re.compile(rb"^Return-Path:\s*<([^>]*)>", re.IGNORECASE | re.MULTILINE)

# Maildir "info" flag letters (sorted, as the Maildir spec asks) for IMAP system flags.
_MAILDIR_FLAGS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}


def to_lf(content: bytes) -> bytes:
    return content.replace(b"\r\n", b"\n")


def envelope_sender(prefix: bytes) -> str:
    match = _RETURN_PATH.search(prefix)
    sender = match.group(1).decode("utf-8", "replace") if match else ""
    return sender or "MAILER-DAEMON"


def mboxrd_entry(message: StoredMessage, content: bytes) -> bytes:
    """One mboxrd entry: "From " line, content with ">From " quoting, a blank line after."""
    stamp = time.asctime(time.gmtime(message.internal_date))
    sender = envelope_sender(message.prefix)
    body = _FROM_LINE.sub(rb">\1", to_lf(content))
    if not body.endswith(b"\n"):
        body += b"\n"
    return f"From {sender} {stamp}\n".encode() + body + b"\n"


def maildir_name(message: StoredMessage, hostname: str) -> str:
    letters = "".join(
        sorted(_MAILDIR_FLAGS[f] for f in message.flags.split() if f in _MAILDIR_FLAGS)
    )
    return f"{int(message.internal_date)}.U{message.uid}.{hostname}:2,{letters}"


def write_mbox(out: BinaryIO, items: Iterator[tuple[StoredMessage, bytes]]) -> int:
    count = 0
    for message, content in items:
        out.write(mboxrd_entry(message, content))
        count += 1
    return count


def write_maildir(root: Path, items: Iterator[tuple[StoredMessage, bytes]]) -> int:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    hostname = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    count = 0
    for message, content in items:
        name = maildir_name(message, hostname)
        temporary = root / "tmp" / name
        temporary.write_bytes(to_lf(content))
        temporary.rename(root / "cur" / name)
        count += 1
    return count
