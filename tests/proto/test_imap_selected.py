"""A session's view of its mailbox (proto/imap/selected.py): sequence numbers of UIDs, and flag
changes answered from the view before the store has made them."""

from __future__ import annotations

from postroom.proto.imap.selected import MessageColumns, MessageState, SelectedMailbox


def test_seqs_of_matches_seq_of_for_known_and_unknown_uids() -> None:
    uids = [2, 3, 5, 8, 13, 21]
    view = SelectedMailbox(
        1,
        1,
        MessageColumns(uids, [()] * len(uids), [1] * len(uids), [()]),
        highestmodseq=1,
        recent_from=99,
        read_only=False,
    )
    asked = [1, 2, 4, 5, 13, 21, 34]
    assert view.seqs_of(asked) == [view.seq_of(u) for u in asked] == [None, 1, None, 3, 5, 6, None]


def view(uids: list[int], flags: tuple[str, ...] = ()) -> SelectedMailbox:
    return SelectedMailbox(
        1,
        1,
        MessageColumns(uids, [flags] * len(uids), [5] * len(uids), [flags]),
        highestmodseq=5,
        recent_from=99,
        read_only=False,
    )


def test_an_answered_change_learns_its_modseq_when_the_store_confirms_it() -> None:
    mailbox = view([1, 2])
    mailbox.set_own_flags(1, ("\\Seen",))
    assert mailbox.flags_of(1) == ("\\Seen",)
    mailbox.confirm_own_flags(MessageState(1, ("\\Seen",), 6))
    assert mailbox.known_modseq == 6 and mailbox.modseqs[1] == 6
    assert mailbox.untagged(allow_expunge=True) == []  # nothing to tell: the client knows


def test_a_change_made_elsewhere_meanwhile_is_caught_up_not_skipped() -> None:
    mailbox = view([1, 2])
    mailbox.set_own_flags(1, ("\\Seen",))
    # Another session's change took MODSEQ 6; ours got 7: the view must not jump past 6.
    mailbox.confirm_own_flags(MessageState(1, ("\\Deleted", "\\Seen"), 7))
    assert mailbox.known_modseq == 5
    mailbox.take_changes([MessageState(1, ("\\Deleted", "\\Seen"), 7)], [], 7)
    assert mailbox.untagged(allow_expunge=True) == [b"* 1 FETCH (FLAGS (\\Deleted \\Seen))\r\n"]


def test_a_failed_change_is_told_back() -> None:
    mailbox = view([1, 2], ("$Old",))
    mailbox.set_own_flags(2, ())
    mailbox.undo_own_flags(2, ("$Old",))
    assert mailbox.untagged(allow_expunge=True) == [b"* 2 FETCH (FLAGS ($Old))\r\n"]
    assert mailbox.flags_of(2) == ("$Old",)
