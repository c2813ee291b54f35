"""A session's view of its mailbox (proto/imap/selected.py): sequence numbers of UIDs."""

from __future__ import annotations

from postroom.proto.imap.selected import MessageColumns, SelectedMailbox


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
