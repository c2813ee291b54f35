"""What one user can make the server keep is bounded (services/imap/limits.py): keywords per
mailbox, their length, mailbox names and the number of mailboxes; past a bound NO [LIMIT]
(RFC 5530) and nothing changes. A real store, a session driven command by command."""

from __future__ import annotations

import asyncio

import pytest
from imap_sessions import Wire, alice_in_inbox, run_line

from postroom.services.imap import limits
from postroom.storage.api import Store


def keywords(count: int, start: int = 0) -> str:
    return " ".join(f"$k{index}" for index in range(start, start + count))


def test_keywords_per_mailbox_are_bounded(store: Store) -> None:
    async def scenario() -> list[bytes]:
        wire = Wire()
        session = await alice_in_inbox(store, wire)
        answers = []
        for line in (
            f"c STORE 1 +FLAGS ({keywords(limits.MAX_KEYWORDS - 1)})",
            f"d STORE 2 +FLAGS ({keywords(2, limits.MAX_KEYWORDS)})",  # one too many
            "e STORE 2 +FLAGS ($last)",  # exactly the bound
            "f STORE 2 -FLAGS ($k0 $k1)",  # removing is always fine
            "g STORE 2 FLAGS ($another)",  # a new one, even replacing, is not
            "h APPEND INBOX ($fresh) {5+}\r\nHi!\r\n",
            "i SELECT INBOX",
        ):
            wire.out = b""
            await run_line(session, line)
            answers.append(wire.out)
        session.close()
        return answers

    answers = asyncio.run(scenario())
    assert answers[0].endswith(b"c OK Store completed.\r\n")
    assert answers[1] == b"d NO [LIMIT] A mailbox holds at most 128 keywords\r\n"
    assert answers[2].endswith(b"e OK Store completed.\r\n")
    assert answers[3].endswith(b"f OK Store completed.\r\n")
    assert answers[4] == b"g NO [LIMIT] A mailbox holds at most 128 keywords\r\n"
    assert answers[5] == b"h NO [LIMIT] A mailbox holds at most 128 keywords\r\n"
    # At the bound, PERMANENTFLAGS no longer offers \* (RFC 3501 §7.1).
    permanent = next(line for line in answers[6].split(b"\r\n") if b"PERMANENTFLAGS" in line)
    assert b"\\*" not in permanent and b"$last" in permanent


def test_long_keywords_and_names_and_many_mailboxes_are_refused(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_MAILBOXES", 8)  # six made at user creation

    async def scenario() -> list[bytes]:
        wire = Wire()
        session = await alice_in_inbox(store, wire)
        answers = []
        for line in (
            f"c STORE 1 +FLAGS ($k{'x' * limits.MAX_KEYWORD_LENGTH})",
            f"d CREATE {'a' * 256}",
            f"e CREATE {'/'.join(['a'] * 65)}",
            f"f CREATE {'/'.join(['abcdefgh'] * 120)}",
            "g CREATE Projects",
            "h CREATE Plans",
            "i CREATE Overflow",
            f"j RENAME Plans {'b' * 256}",
            "k LIST \"\" *",
        ):
            wire.out = b""
            await run_line(session, line)
            answers.append(wire.out)
        session.close()
        return answers

    answers = asyncio.run(scenario())
    assert answers[0].startswith(b"c NO [LIMIT] Keywords are limited to 128 octets")
    assert answers[1].startswith(b"d NO [LIMIT] Each level of a mailbox name is limited")
    assert answers[2].startswith(b"e NO [LIMIT] Mailbox names are limited to 64 levels")
    assert answers[3].startswith(b"f NO [LIMIT] Mailbox names are limited to 1024 characters")
    assert answers[4].endswith(b"g OK Create completed.\r\n")
    assert answers[5].endswith(b"h OK Create completed.\r\n")
    assert answers[6] == b"i NO [LIMIT] A user has at most 8 mailboxes\r\n"
    assert answers[7].startswith(b"j NO [LIMIT] Each level")
    assert answers[8].count(b"* LIST") == 8
