"""Bounds on what one user can make the server keep and repeat: keywords per mailbox, mailbox
names, mailboxes per user. Without them one client could make every SELECT of a mailbox answer
with megabytes of FLAGS (20,000 keywords made each SELECT 236 KB), or grow LIST without end.

A request past a bound is refused with NO [LIMIT] (RFC 5530 §3); nothing is changed.
"""

from __future__ import annotations

from collections.abc import Iterable

from postroom.storage.records import MailboxError

MAX_KEYWORDS = 128  # distinct keywords in one mailbox (Cyrus allows 128 user flags)
MAX_KEYWORD_LENGTH = 128  # octets of one keyword
MAX_NAME_LENGTH = 1024  # characters of a mailbox name
MAX_LEVEL_LENGTH = 255  # characters of one level between delimiters (as Dovecot)
MAX_LEVELS = 64  # levels of hierarchy in one name
MAX_MAILBOXES = 10_000  # mailboxes of one user

DELIMITER = "/"


def keywords_of(flags: Iterable[str]) -> set[str]:
    """The keywords among flags (system flags start with a backslash, RFC 3501 §2.3.2)."""
    return {flag for flag in flags if not flag.startswith("\\")}


def check_keywords(existing: set[str], flags: Iterable[str]) -> None:
    """Refuse flags that would take a mailbox past MAX_KEYWORDS, or a keyword too long."""
    new = keywords_of(flags) - existing
    if any(len(keyword.encode()) > MAX_KEYWORD_LENGTH for keyword in new):
        raise MailboxError("LIMIT", f"Keywords are limited to {MAX_KEYWORD_LENGTH} octets")
    if new and len(existing) + len(new) > MAX_KEYWORDS:
        raise MailboxError("LIMIT", f"A mailbox holds at most {MAX_KEYWORDS} keywords")


def may_create_keywords(existing: set[str]) -> bool:
    """Whether PERMANENTFLAGS offers \\* (RFC 3501 §7.1: new keywords may be created)."""
    return len(existing) < MAX_KEYWORDS


def check_mailbox_name(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise MailboxError("LIMIT", f"Mailbox names are limited to {MAX_NAME_LENGTH} characters")
    levels = name.split(DELIMITER)
    if len(levels) > MAX_LEVELS:
        raise MailboxError("LIMIT", f"Mailbox names are limited to {MAX_LEVELS} levels")
    if any(len(level) > MAX_LEVEL_LENGTH for level in levels):
        raise MailboxError(
            "LIMIT", f"Each level of a mailbox name is limited to {MAX_LEVEL_LENGTH} characters"
        )


def check_mailbox_count(count: int) -> None:
    """`count`: the user's mailboxes before the new ones."""
    if count >= MAX_MAILBOXES:
        raise MailboxError("LIMIT", f"A user has at most {MAX_MAILBOXES} mailboxes")
