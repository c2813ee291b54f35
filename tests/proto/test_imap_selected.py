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
    assert view.seqs_of(uids) == [1, 2, 3, 4, 5, 6]
    assert view.seqs_of([3, 5, 9, 13, 14]) == [2, 3, None, 5, None]


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
    mailbox.change_own_flags([1], lambda old: ("\\Seen",))
    assert mailbox.flags_of(1) == ("\\Seen",)
    mailbox.confirm_own_flags([1], 6)
    assert mailbox.known_modseq == 6 and mailbox.modseqs[1] == 6
    assert mailbox.untagged(allow_expunge=True) == []  # nothing to tell: the client knows


def test_a_change_made_elsewhere_meanwhile_is_caught_up_not_skipped() -> None:
    mailbox = view([1, 2])
    mailbox.change_own_flags([1], lambda old: ("\\Seen",))
    # Another session's change took MODSEQ 6; ours got 7: the view must not jump past 6.
    mailbox.confirm_own_flags([1], 7)
    assert mailbox.known_modseq == 5
    mailbox.take_changes([MessageState(1, ("\\Deleted", "\\Seen"), 7)], [], 7)
    assert mailbox.untagged(allow_expunge=True) == [b"* 1 FETCH (FLAGS (\\Deleted \\Seen))\r\n"]


def test_a_failed_change_is_told_back() -> None:
    mailbox = view([1, 2], ("$Old",))
    mailbox.change_own_flags([2], lambda old: ())
    mailbox.undo_own_flags(2, ("$Old",))
    assert mailbox.untagged(allow_expunge=True) == [b"* 2 FETCH (FLAGS ($Old))\r\n"]
    assert mailbox.flags_of(2) == ("$Old",)


def test_a_change_in_the_view_asks_once_per_flag_set_and_skips_expunged() -> None:
    mailbox = view([1, 2, 3, 4], ("$Old",))
    mailbox.take_changes([MessageState(2, ("\\Seen",), 6)], [4], 6)
    asked: list[tuple[str, ...]] = []

    def add_flagged(old: tuple[str, ...]) -> tuple[str, ...] | None:
        asked.append(old)
        return None if "\\Seen" in old else ("\\Flagged", *old)

    change = mailbox.change_own_flags([1, 2, 3, 4], add_flagged)
    assert sorted(asked) == [("$Old",)]  # 2 is still $Old in the view until told
    assert change.before == {1: ("$Old",), 2: ("$Old",), 3: ("$Old",)}
    assert change.after == {("$Old",): ("\\Flagged", "$Old")}
    assert mailbox.keywords == {"$Old"}
    # This session's answer wins over the other session's untold change of message 2.
    assert mailbox.untagged(allow_expunge=True) == [b"* 4 EXPUNGE\r\n"]


def test_flag_fetches_answers_what_the_client_sees() -> None:
    mailbox = view([3, 4, 7, 9], ("$A",))
    mailbox.recent.add(9)
    mailbox.take_changes([], [4], 6)  # expunged, not yet told: not answered for
    assert mailbox.flag_fetches([3, 4, 5, 9], with_uid=False) == (
        b"* 1 FETCH (FLAGS ($A))\r\n* 4 FETCH (FLAGS ($A \\Recent))\r\n"
    )
    assert mailbox.flag_fetches([7], with_uid=True) == b"* 3 FETCH (FLAGS ($A) UID 7)\r\n"


def test_flags_the_store_found_changed_elsewhere_are_told() -> None:
    mailbox = view([1, 2, 3])
    mailbox.change_own_flags([1, 2, 3], lambda old: ("$Done",))
    # The store found message 2 changed by another session: it now has \\Flagged too.
    elsewhere = [MessageState(2, ("\\Flagged", "$Done"), 6), MessageState(3, ("$Done",), 6)]
    mailbox.confirm_own_flags([1, 2, 3], 6, elsewhere)
    assert mailbox.untagged(allow_expunge=True) == [b"* 2 FETCH (FLAGS (\\Flagged $Done))\r\n"]
    assert mailbox.flags_of(2) == ("\\Flagged", "$Done") and mailbox.modseqs[2] == 6


def test_flags_in_is_flags_of_for_many() -> None:
    mailbox = view([3, 4, 7, 9], ("$A",))
    mailbox.recent.update({4, 9})
    mailbox.change_own_flags([7], lambda old: ())
    assert mailbox.flags_in([3, 4, 7, 9]) == [mailbox.flags_of(u) for u in (3, 4, 7, 9)]
    assert mailbox.flags_in([4, 7]) == [("$A", "\\Recent"), ()]
