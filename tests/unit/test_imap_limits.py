"""What one user can make the server keep is bounded (services/imap/limits.py): keywords per
mailbox, their length, mailbox names and the number of mailboxes; past a bound NO [LIMIT]
(RFC 5530) and nothing changes. A real store, a session driven command by command."""

from __future__ import annotations

import asyncio

import pytest
from imap_sessions import Wire, alice_in_inbox, run_line

from postroom.services.imap import limits
from postroom.storage.api import Store


def answers(store: Store, lines: list[str]) -> list[bytes]:
    """What Alice's session (INBOX selected) answers to each line, one after the other."""

    async def scenario() -> list[bytes]:
        wire = Wire()
        session = await alice_in_inbox(store, wire)
        said = []
        for line in lines:
            wire.out = b""
            await run_line(session, line)
            said.append(wire.out)
        session.close()
        return said

    return asyncio.run(scenario())


def keywords(count: int, start: int = 0) -> str:
    return " ".join(f"$k{index}" for index in range(start, start + count))


def test_keywords_per_mailbox_are_bounded(store: Store) -> None:
    said = answers(
        store,
        [
            f"c STORE 1 +FLAGS ({keywords(limits.MAX_KEYWORDS - 1)})",
            f"d STORE 2 +FLAGS ({keywords(2, limits.MAX_KEYWORDS)})",  # one too many
            "e STORE 2 +FLAGS ($last)",  # exactly the bound
            "f STORE 2 -FLAGS ($k0 $k1)",  # removing is always fine
            "g STORE 2 FLAGS ($another)",  # a new one, even replacing, is not
            "h APPEND INBOX ($fresh) {5+}\r\nHi!\r\n",
            "i SELECT INBOX",
        ],
    )
    assert said[0].endswith(b"c OK Store completed.\r\n")
    assert said[1] == b"d NO [LIMIT] A mailbox holds at most 128 keywords\r\n"
    assert said[2].endswith(b"e OK Store completed.\r\n")
    assert said[3].endswith(b"f OK Store completed.\r\n")
    assert said[4] == b"g NO [LIMIT] A mailbox holds at most 128 keywords\r\n"
    assert said[5] == b"h NO [LIMIT] A mailbox holds at most 128 keywords\r\n"
    # At the bound, PERMANENTFLAGS no longer offers \* (RFC 3501 §7.1).
    permanent = next(line for line in said[6].split(b"\r\n") if b"PERMANENTFLAGS" in line)
    assert b"\\*" not in permanent and b"$last" in permanent


def test_long_keywords_and_names_and_many_mailboxes_are_refused(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_MAILBOXES", 8)  # six made at user creation
    said = answers(
        store,
        [
            f"c STORE 1 +FLAGS ($k{'x' * limits.MAX_KEYWORD_LENGTH})",
            f"d CREATE {'a' * 256}",
            f"e CREATE {'/'.join(['a'] * 65)}",
            f"f CREATE {'/'.join(['abcdefgh'] * 120)}",
            "g CREATE Projects",
            "h CREATE Plans",
            "i CREATE Overflow",
            f"j RENAME Plans {'b' * 256}",
            'k LIST "" *',
        ],
    )
    assert said[0].startswith(b"c NO [LIMIT] Keywords are limited to 128 octets")
    assert said[1].startswith(b"d NO [LIMIT] Each level of a mailbox name is limited")
    assert said[2].startswith(b"e NO [LIMIT] Mailbox names are limited to 64 levels")
    assert said[3].startswith(b"f NO [LIMIT] Mailbox names are limited to 1024 characters")
    assert said[4].endswith(b"g OK Create completed.\r\n")
    assert said[5].endswith(b"h OK Create completed.\r\n")
    assert said[6] == b"i NO [LIMIT] A user has at most 8 mailboxes\r\n"
    assert said[7].startswith(b"j NO [LIMIT] Each level")
    assert said[8].count(b"* LIST") == 8
