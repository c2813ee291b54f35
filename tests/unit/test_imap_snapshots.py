"""Kept mailbox copies for SELECT: bringing a copy up to date, and the bounds on what is kept."""

from __future__ import annotations

from postroom.proto.imap.selected import MessageColumns, MessageState, SelectedMailbox
from postroom.services.imap.snapshots import MIN_MESSAGES, MailboxSnapshots, Snapshot

SEEN = ("\\Seen",)


def columns(uids: list[int], flags: tuple[str, ...] = ()) -> MessageColumns:
    return MessageColumns(uids, [flags] * len(uids), [1] * len(uids), [flags])


def test_updated_applies_flag_changes_arrivals_and_expunges_without_touching_the_original() -> None:
    base = columns([1, 2, 3, 5])
    new = base.updated([MessageState(2, SEEN, 7), MessageState(9, ("$Work",), 8)], vanished=[3, 4])
    assert new.uids == [1, 2, 5, 9]
    assert new.flags == [(), SEEN, (), ("$Work",)]
    assert new.modseqs == [1, 7, 1, 8]
    assert sorted(new.flag_sets) == sorted([(), SEEN, ("$Work",)])
    assert base.uids == [1, 2, 3, 5] and base.flags == [()] * 4 and base.modseqs == [1] * 4


def test_updated_forgets_keywords_no_message_has_any_more() -> None:
    base = MessageColumns([1, 2], [("$Old",), ()], [1, 1], [("$Old",), ()])
    new = base.updated([MessageState(1, (), 5)], vanished=[])
    assert new.flag_sets == [()]


def test_nothing_changed_gives_the_same_copy() -> None:
    base = columns([1, 2])
    assert base.updated([], []) is base


def test_a_view_built_from_a_shared_copy_does_not_change_it() -> None:
    shared = columns([1, 2, 3])
    view = SelectedMailbox(1, 1, shared, highestmodseq=1, recent_from=3, read_only=False)
    view.take_changes([MessageState(4, (), 2)], vanished=[1], highestmodseq=2)
    view.untagged(allow_expunge=True)
    assert view.uids == [2, 3, 4] and view.recent == {3}
    assert shared.uids == [1, 2, 3]


def test_small_mailboxes_are_not_kept_and_the_total_is_bounded() -> None:
    snapshots = MailboxSnapshots(max_messages=2 * MIN_MESSAGES)
    snapshots.keep(1, Snapshot(1, 1, columns(list(range(1, MIN_MESSAGES)))))
    assert snapshots.get(1) is None
    big = Snapshot(1, 1, columns(list(range(1, MIN_MESSAGES + 1))))
    snapshots.keep(2, big)
    snapshots.keep(3, big)
    assert snapshots.get(2) is big and snapshots.get(3) is big
    snapshots.keep(2, big)  # used again: now the most recent
    snapshots.keep(4, big)  # over the bound: the least recently used (3) goes
    assert snapshots.get(3) is None
    assert snapshots.get(2) is big and snapshots.get(4) is big
