"""Storage contract, mailboxes and messages: what every backend guarantees IMAP and POP3.

Written against `storage.api` only and run for every backend in conftest.BACKENDS: UIDs strictly
increase per mailbox and are never handed out twice (across expunges, copies, restarts),
UIDVALIDITY is stable and never reused for a re-created name, MODSEQs only grow and tell exactly
what changed, a blob shared by several copies lives until its last reference goes.
"""

from __future__ import annotations

import asyncio

import pytest

from postroom.storage.api import Store, Tx
from postroom.storage.records import INBOX, MailboxError, StoreError

from .conftest import Backend, read, write

CONTENT = b"From: a@example.test\r\nSubject: Lunch plans\r\n\r\nNoon?\r\n"


def add_user(tx: Tx, address: str = "alice@example.test") -> tuple[int, int]:
    """A user with the default mailboxes; (user id, INBOX id)."""
    user = tx.accounts.add_user(address, "hash", "scram")
    return user, tx.mailboxes.require(user, INBOX).id


def deliver(tx: Tx, mailbox: int, content: bytes = CONTENT, prefix: bytes = b"") -> int:
    blob = tx.blobs.add(content)
    return tx.messages.append(
        mailbox, blob, size=len(prefix) + len(content), internal_date=1.7e9, prefix=prefix
    )


def test_a_new_user_has_the_special_use_mailboxes_subscribed(store: Store) -> None:
    user, _ = write(store, add_user)
    boxes = read(store, lambda tx: tx.mailboxes.of_user(user))
    assert {(b.name, b.special_use) for b in boxes} == {
        ("INBOX", ""),
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Archive", "\\Archive"),
    }
    assert read(store, lambda tx: tx.mailboxes.subscriptions(user)) == sorted(b.name for b in boxes)
    with pytest.raises(StoreError):
        write(store, add_user)  # the same address twice


def test_uids_only_grow_and_are_never_reused(backend: Backend) -> None:
    store = backend.server()
    try:
        user, inbox = write(store, add_user)
        first = write(store, lambda tx: [deliver(tx, inbox) for _ in range(3)])
        assert first == [1, 2, 3]
        write(store, lambda tx: tx.messages.expunge(inbox, [3]))
        assert write(store, lambda tx: deliver(tx, inbox)) == 4  # 3 is not handed out again
        archive = read(store, lambda tx: tx.mailboxes.require(user, "Archive").id)
        pairs = write(store, lambda tx: tx.messages.copy(inbox, [1, 2, 4], archive))
        assert pairs == [(1, 1), (2, 2), (4, 3)]
    finally:
        store.close()
    store = backend.server()  # a restart keeps UIDNEXT
    try:
        assert write(store, lambda tx: deliver(tx, inbox)) == 5
        info = read(store, lambda tx: tx.mailboxes.get(inbox))
        assert info is not None and info.uidnext == 6
    finally:
        store.close()


def test_concurrent_appends_get_distinct_increasing_uids(store: Store) -> None:
    _, inbox = write(store, add_user)

    async def many() -> list[int]:
        return list(
            await asyncio.gather(*(store.write(lambda tx: deliver(tx, inbox)) for _ in range(50)))
        )

    uids = asyncio.run(many())
    assert sorted(uids) == list(range(1, 51))
    states = read(store, lambda tx: tx.messages.states(inbox))
    assert [s.uid for s in states] == list(range(1, 51))


def test_uidvalidity_is_stable_and_new_for_a_recreated_name(backend: Backend) -> None:
    store = backend.server()
    try:
        user, _ = write(store, add_user)
        write(store, lambda tx: tx.mailboxes.create(user, "Projects/2026"))
        before = read(store, lambda tx: tx.mailboxes.require(user, "Projects/2026"))
        parent = read(store, lambda tx: tx.mailboxes.find(user, "Projects"))
        assert parent is not None  # RFC 3501 §6.3.3: the parent is created too
    finally:
        store.close()
    store = backend.server()
    try:
        again = read(store, lambda tx: tx.mailboxes.require(user, "Projects/2026"))
        assert again.uidvalidity == before.uidvalidity
        write(store, lambda tx: tx.mailboxes.rename(user, "Projects", "Work"))
        renamed = read(store, lambda tx: tx.mailboxes.require(user, "Work/2026"))
        assert (renamed.id, renamed.uidvalidity) == (before.id, before.uidvalidity)
        write(store, lambda tx: tx.mailboxes.delete(user, "Work/2026"))
        write(store, lambda tx: tx.mailboxes.create(user, "Work/2026"))
        recreated = read(store, lambda tx: tx.mailboxes.require(user, "Work/2026"))
        assert recreated.uidvalidity != before.uidvalidity  # RFC 3501 §2.3.1.1
    finally:
        store.close()


def test_mailbox_names_are_checked(store: Store) -> None:
    user, _ = write(store, add_user)
    write(store, lambda tx: tx.mailboxes.create(user, "A/B"))
    refusals = [
        (lambda tx: tx.mailboxes.create(user, "A"), "ALREADYEXISTS"),
        (lambda tx: tx.mailboxes.delete(user, "A"), "INUSE"),  # it has a child
        (lambda tx: tx.mailboxes.delete(user, INBOX), "CANNOT"),
        (lambda tx: tx.mailboxes.delete(user, "Nope"), "NONEXISTENT"),
        (lambda tx: tx.mailboxes.rename(user, "A", "A/B/C"), "CANNOT"),
        (lambda tx: tx.mailboxes.rename(user, "A", "Sent"), "ALREADYEXISTS"),
    ]
    for job, code in refusals:
        with pytest.raises(MailboxError) as refused:
            write(store, job)
        assert refused.value.code == code
    assert read(store, lambda tx: tx.mailboxes.find(user, "A/B")) is not None


def test_renaming_inbox_moves_its_messages(store: Store) -> None:
    user, inbox = write(store, add_user)
    write(store, lambda tx: [deliver(tx, inbox) for _ in range(2)])
    write(store, lambda tx: tx.mailboxes.rename(user, INBOX, "Old"))
    old = read(store, lambda tx: tx.mailboxes.require(user, "Old"))
    assert [s.uid for s in read(store, lambda tx: tx.messages.states(old.id))] == [1, 2]
    assert read(store, lambda tx: tx.messages.states(inbox)) == []
    info = read(store, lambda tx: tx.mailboxes.get(inbox))
    assert info is not None and info.uidnext == 3  # INBOX goes on from where it was


def test_modseqs_grow_with_every_change_and_tell_what_changed(store: Store) -> None:
    _, inbox = write(store, add_user)
    write(store, lambda tx: [deliver(tx, inbox) for _ in range(3)])
    start = read(store, lambda tx: tx.mailboxes.get(inbox))
    assert start is not None
    result = write(store, lambda tx: tx.messages.store_flags(inbox, [2], "add", ["\\Seen"]))
    (changed,) = result.changed
    assert changed.uid == 2 and changed.modseq > start.highestmodseq
    assert changed.flags == ("\\Seen",)
    since = read(store, lambda tx: tx.messages.states(inbox, start.highestmodseq))
    assert [(s.uid, s.flags) for s in since] == [(2, ("\\Seen",))]
    # The same change again changes nothing: no new MODSEQ.
    again = write(store, lambda tx: tx.messages.store_flags(inbox, [2], "add", ["\\Seen"]))
    assert again.changed == [] and [s.uid for s in again.unchanged] == [2]
    middle = read(store, lambda tx: tx.mailboxes.get(inbox))
    assert middle is not None and middle.highestmodseq == changed.modseq
    write(store, lambda tx: tx.messages.expunge(inbox, [1]))
    news = read(store, lambda tx: tx.messages.news(inbox, middle.highestmodseq))
    assert news is not None and news.vanished == [1] and news.changed == []
    assert news.highestmodseq > middle.highestmodseq
    # RFC 7162 §3.1.3: UNCHANGEDSINCE refuses a message changed after it.
    refused = write(
        store,
        lambda tx: tx.messages.store_flags(inbox, [2, 3], "set", ["$Done"], start.highestmodseq),
    )
    assert refused.modified == [2] and [s.uid for s in refused.changed] == [3]


def test_flags_are_kept_canonical_and_deleted_ones_found(store: Store) -> None:
    _, inbox = write(store, add_user)
    write(store, lambda tx: [deliver(tx, inbox) for _ in range(3)])
    write(
        store, lambda tx: tx.messages.store_flags(inbox, [1, 3], "add", ["$b", "\\Deleted", "$a"])
    )
    states = {s.uid: s.flags for s in read(store, lambda tx: tx.messages.states(inbox))}
    assert states[1] == ("\\Deleted", "$a", "$b") and states[2] == ()
    assert read(store, lambda tx: tx.messages.deleted_uids(inbox)) == [1, 3]
    assert read(store, lambda tx: tx.messages.deleted_uids(inbox, [3])) == [3]
    write(store, lambda tx: tx.messages.store_flags(inbox, [1], "remove", ["\\Deleted"]))
    assert read(store, lambda tx: tx.messages.deleted_uids(inbox)) == [3]


def test_a_blob_lives_until_its_last_reference_goes(store: Store) -> None:
    _, alice_inbox = write(store, add_user)
    _, bob_inbox = write(store, lambda tx: add_user(tx, "bob@example.test"))

    def deliver_both(tx: Tx) -> tuple[int, int, int]:
        blob = tx.blobs.add(CONTENT)
        size = len(CONTENT) + 10
        a = tx.messages.append(
            alice_inbox, blob, size=size, internal_date=1.7e9, prefix=b"X: alice\r\n"
        )
        b = tx.messages.append(
            bob_inbox, blob, size=size, internal_date=1.7e9, prefix=b"X: bob\r\n\r"
        )
        return blob, a, b

    blob, alice_uid, bob_uid = write(store, deliver_both)
    assert (
        read(store, lambda tx: tx.messages.read(alice_inbox, alice_uid))
        == b"X: alice\r\n" + CONTENT
    )
    assert read(store, lambda tx: tx.messages.read(bob_inbox, bob_uid)) == b"X: bob\r\n\r" + CONTENT
    write(store, lambda tx: tx.messages.expunge(alice_inbox, [alice_uid]))
    assert read(store, lambda tx: tx.blobs.exists(blob))
    assert read(store, lambda tx: tx.messages.read(bob_inbox, bob_uid)) is not None
    write(store, lambda tx: tx.messages.expunge(bob_inbox, [bob_uid]))
    assert not read(store, lambda tx: tx.blobs.exists(blob))
    assert read(store, lambda tx: tx.messages.read(bob_inbox, bob_uid)) is None
    with pytest.raises(StoreError):
        read(store, lambda tx: tx.blobs.read(blob))


def test_large_content_is_stored_and_released_like_small(store: Store) -> None:
    _, inbox = write(store, add_user)
    big = b"Subject: big\r\n\r\n" + b"x" * 1_000_000 + b"\r\n"

    async def scenario() -> tuple[int, int]:
        buffer = store.new_buffer("contract-big")
        for start in range(0, len(big), 65536):
            buffer.write(big[start : start + 65536])

        def then(tx: Tx, blob: int) -> tuple[int, int]:
            uid = tx.messages.append(inbox, blob, size=len(big), internal_date=1.7e9)
            return blob, uid

        return await store.write_content(buffer, then)

    blob, uid = asyncio.run(scenario())
    assert read(store, lambda tx: tx.messages.read(inbox, uid)) == big
    listing = read(store, lambda tx: tx.messages.listing(inbox))
    assert listing is not None and [(m.uid, m.size) for m in listing.messages] == [(uid, len(big))]
    write(store, lambda tx: tx.messages.expunge(inbox, [uid]))
    assert not read(store, lambda tx: tx.blobs.exists(blob))


def test_a_deleted_user_takes_their_mail_along(store: Store) -> None:
    _, inbox = write(store, add_user)
    _, bob_inbox = write(store, lambda tx: add_user(tx, "bob@example.test"))

    def shared(tx: Tx) -> int:
        blob = tx.blobs.add(CONTENT)
        for mailbox in (inbox, bob_inbox):
            tx.messages.append(mailbox, blob, size=len(CONTENT), internal_date=1.7e9)
        return blob

    blob = write(store, shared)
    write(store, lambda tx: deliver(tx, inbox))
    assert read(store, lambda tx: tx.accounts.count_messages("alice@example.test")) == 2
    assert write(store, lambda tx: tx.accounts.delete_user("ALICE@example.test")) == 2
    assert read(store, lambda tx: tx.accounts.get_user("alice@example.test")) is None
    assert read(store, lambda tx: tx.mailboxes.get(inbox)) is None
    assert read(store, lambda tx: tx.blobs.exists(blob))  # Bob still has his copy
    with pytest.raises(StoreError):
        write(store, lambda tx: tx.accounts.delete_user("alice@example.test"))


def test_a_failing_write_undoes_only_itself(store: Store) -> None:
    _, inbox = write(store, add_user)

    def half_then_fail(tx: Tx) -> None:
        deliver(tx, inbox)
        raise RuntimeError("refused")

    async def together() -> list[object]:
        return list(
            await asyncio.gather(
                store.write(lambda tx: deliver(tx, inbox)),
                store.write(half_then_fail),
                store.write(lambda tx: deliver(tx, inbox)),
                return_exceptions=True,
            )
        )

    outcomes = asyncio.run(together())
    assert isinstance(outcomes[1], RuntimeError)
    assert sorted(o for o in outcomes if isinstance(o, int)) == [
        o for o in outcomes if isinstance(o, int)
    ]
    assert len(read(store, lambda tx: tx.messages.states(inbox))) == 2


def test_a_savepoint_undoes_what_was_done_inside(store: Store) -> None:
    _, inbox = write(store, add_user)

    def job(tx: Tx) -> int:
        deliver(tx, inbox)
        with pytest.raises(ValueError), tx.savepoint():
            deliver(tx, inbox)
            raise ValueError("undo the second")
        return len(tx.messages.states(inbox))

    assert write(store, job) == 1
    assert len(read(store, lambda tx: tx.messages.states(inbox))) == 1


def test_recent_belongs_to_one_claim(store: Store) -> None:
    _, inbox = write(store, add_user)
    write(store, lambda tx: [deliver(tx, inbox) for _ in range(2)])
    assert write(store, lambda tx: tx.mailboxes.claim_recent(inbox)) == 1
    assert write(store, lambda tx: tx.mailboxes.claim_recent(inbox)) == 3  # nothing new
    write(store, lambda tx: deliver(tx, inbox))
    info = read(store, lambda tx: tx.mailboxes.get(inbox))
    assert info is not None
    counts = read(store, lambda tx: tx.mailboxes.status_counts(info))
    assert (counts.messages, counts.unseen, counts.recent) == (3, 3, 1)


def test_keywords_are_the_non_system_flags_in_use(store: Store) -> None:
    _, inbox = write(store, add_user)
    write(store, lambda tx: [deliver(tx, inbox) for _ in range(3)])
    assert read(store, lambda tx: tx.messages.keywords(inbox)) == set()
    write(store, lambda tx: tx.messages.store_flags(inbox, [1], "add", ["\\Seen", "$Work"]))
    write(store, lambda tx: tx.messages.store_flags(inbox, [2], "add", ["$Work", "$Todo"]))
    assert read(store, lambda tx: tx.messages.keywords(inbox)) == {"$Work", "$Todo"}
    write(store, lambda tx: tx.messages.expunge(inbox, [2]))
    assert read(store, lambda tx: tx.messages.keywords(inbox)) == {"$Work"}


def test_contents_are_read_within_a_budget(store: Store) -> None:
    _, inbox = write(store, add_user)
    sizes = (100, 5000, 5000, 100, 9000)

    def fill(tx: Tx) -> None:
        for size in sizes:
            blob = tx.blobs.add(b"x" * size)
            tx.messages.append(inbox, blob, size=size, internal_date=1.7e9)

    write(store, fill)
    write(store, lambda tx: tx.messages.expunge(inbox, [2]))

    def uids_read(first: list[int], budget: int) -> list[int]:
        rows = read(
            store,
            lambda tx: tx.messages.fetch_rows(
                inbox, first, summary=False, content=True, content_budget=budget
            ),
        )
        assert all(row.content is not None and len(row.content) == row.size for row in rows)
        return [row.uid for row in rows]

    assert uids_read([1, 2, 3, 4, 5], 6000) == [1, 3, 4]  # 2 is gone; 5 would pass the budget
    assert uids_read([4, 5], 6000) == [4]
    assert uids_read([5], 10) == [5]  # one at least
    assert uids_read([1, 2, 3, 4, 5], 10**9) == [1, 3, 4, 5]
