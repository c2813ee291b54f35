"""The NOTIFY payloads of several nodes on one PostgreSQL database (storage/postgresql/notify.py):
mailbox changes split under PostgreSQL's payload limit and read back whole, signals, and
what is not a payload of ours refused."""

from __future__ import annotations

import pytest

from postroom.storage.postgresql.notify import (
    PAYLOAD_MAX,
    decode_changes,
    decode_signal,
    encode_changes,
    encode_signal,
    new_origin,
)


def test_changes_round_trip_with_gone_mailboxes() -> None:
    origin = new_origin()
    changes: dict[int, int | None] = {7: 12, 3: None, 2**40: 2**62}
    payloads = encode_changes(origin, changes)
    assert len(payloads) == 1
    assert decode_changes(payloads[0]) == (origin, changes)


def test_a_large_commit_is_split_under_the_limit_and_nothing_is_lost() -> None:
    origin = new_origin()
    changes: dict[int, int | None] = {n * 1_000_003: n * 2**40 for n in range(3000)}
    payloads = encode_changes(origin, changes)
    assert len(payloads) > 1
    assert all(len(p.encode()) < PAYLOAD_MAX < 8000 for p in payloads)
    heard: dict[int, int | None] = {}
    for payload in payloads:
        sender, part = decode_changes(payload)
        assert sender == origin
        heard.update(part)
    assert heard == changes


def test_no_changes_no_payload() -> None:
    assert encode_changes(new_origin(), {}) == []


def test_signals_round_trip() -> None:
    origin = new_origin()
    for what in ("accounts", "queue", "limits"):
        assert decode_signal(encode_signal(origin, what)) == (origin, what)


@pytest.mark.parametrize("payload", ["", "origin", "origin 5", "origin 5:x", "origin a:1"])
def test_not_a_mailbox_announcement(payload: str) -> None:
    with pytest.raises(ValueError):
        decode_changes(payload)


@pytest.mark.parametrize("payload", ["", "origin", "origin users", " accounts"])
def test_not_a_signal(payload: str) -> None:
    with pytest.raises(ValueError):
        decode_signal(payload)
