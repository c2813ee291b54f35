"""A session's view of its selected mailbox: sequence numbers, flags, and the news to tell.

RFC 3501 §2.3.1.2: sequence numbers are the session's own; they change only when the session
is told of an expunge. This class keeps the UIDs the client knows, in order, and takes in what
the store reports has changed (new messages, flag changes, expunges) as *pending* news. The
engine then asks for the untagged responses it may send at that point (§7.4.1: no EXPUNGE while
answering FETCH, STORE or SEARCH, nor with no command in progress) and the view updates itself.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from postroom.proto.imap.encode import flag_list, sequence_set

RECENT = "\\Recent"


class OwnChange(NamedTuple):
    """A flag change a session made in its view: each changed message's flags before, and
    each old flag set's new one."""

    before: dict[int, tuple[str, ...]]
    after: dict[tuple[str, ...], tuple[str, ...]]


class MessageState(NamedTuple):
    """What a session tracks per message: UID, flags (without \\Recent), MODSEQ (a tuple:
    a STORE 1:* makes one per message)."""

    uid: int
    flags: tuple[str, ...]
    modseq: int


@dataclass(frozen=True, slots=True)
class MessageColumns:
    """A whole mailbox as parallel lists in UID order (one object per mailbox, not per
    message); `flag_sets` lists each distinct flag tuple once."""

    uids: list[int]
    flags: list[tuple[str, ...]]
    modseqs: list[int]
    flag_sets: list[tuple[str, ...]]

    def updated(self, changed: Iterable[MessageState], vanished: Iterable[int]) -> MessageColumns:
        """A new copy with changed or added messages and without the vanished ones (this one
        is shared and never modified)."""
        changes = sorted(changed, key=lambda s: s.uid)
        gone = set(vanished)
        if not changes and not gone:
            return self
        uids, flags, modseqs = self.uids, self.flags, self.modseqs
        if gone:
            keep = [i for i, uid in enumerate(uids) if uid not in gone]
            uids, flags, modseqs = (
                [uids[i] for i in keep],
                [flags[i] for i in keep],
                [modseqs[i] for i in keep],
            )
        else:
            uids, flags, modseqs = list(uids), list(flags), list(modseqs)
        for state in changes:
            index = bisect.bisect_left(uids, state.uid)
            if index < len(uids) and uids[index] == state.uid:
                flags[index], modseqs[index] = state.flags, state.modseq
            else:
                uids.insert(index, state.uid)
                flags.insert(index, state.flags)
                modseqs.insert(index, state.modseq)
        # Recounted after any change, so FLAGS lists exactly the keywords messages have.
        return MessageColumns(uids, flags, modseqs, list(set(flags)))


class SelectedMailbox:
    def __init__(
        self,
        mailbox_id: int,
        uidvalidity: int,
        messages: MessageColumns,
        *,
        highestmodseq: int,
        recent_from: int,
        read_only: bool,
    ) -> None:
        self.mailbox_id = mailbox_id
        self.uidvalidity = uidvalidity
        self.read_only = read_only
        uids = messages.uids
        self.uids: list[int] = list(uids)  # `messages` may be shared: this view has its own
        self.flags: dict[int, tuple[str, ...]] = dict(zip(uids, messages.flags, strict=True))
        self.modseqs: dict[int, int] = dict(zip(uids, messages.modseqs, strict=True))
        # \Recent is this session's alone (RFC 3501 §2.3.2): the UIDs it claimed.
        self.recent: set[int] = set(self.uids[bisect.bisect_left(self.uids, recent_from) :])
        self.known_modseq = highestmodseq
        self._gone: set[int] = set()  # expunged in the store, not yet told
        self._new: list[MessageState] = []  # arrived, not yet told (EXISTS)
        self._changed: dict[int, MessageState] = {}  # flags changed by others, not yet told
        self.keywords: set[str] = set()
        self._known_flag_sets: set[tuple[str, ...]] = set()
        for flags in messages.flag_sets:
            self._learn(flags)

    def _learn(self, flags: tuple[str, ...]) -> None:
        """Keywords in use (for the FLAGS response); each distinct flag set is looked at once."""
        if flags not in self._known_flag_sets:
            self._known_flag_sets.add(flags)
            self.keywords.update(f for f in flags if not f.startswith("\\"))

    # --- sequence numbers ----------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        index = bisect.bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index + 1
        return None

    def seqs_of(self, uids: Iterable[int]) -> list[int | None]:
        """`seq_of` for UIDs in ascending order: each search starts where the last ended, and
        the next UID is tried first (a range of UIDs is mostly consecutive messages)."""
        known, index = self.uids, 0
        seqs: list[int | None] = []
        count = len(known)
        for uid in uids:
            if index >= count or known[index] != uid:
                index = bisect.bisect_left(known, uid, index)
                if index >= count or known[index] != uid:
                    seqs.append(None)
                    continue
            index += 1
            seqs.append(index)
        return seqs

    def uid_at(self, seq: int) -> int:
        return self.uids[seq - 1]

    @property
    def max_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def flags_of(self, uid: int) -> tuple[str, ...]:
        flags = self.flags.get(uid, ())
        return (*flags, RECENT) if uid in self.recent else flags

    def flags_in(self, uids: Sequence[int]) -> list[tuple[str, ...]]:
        """`flags_of` for many UIDs the view holds, in their order."""
        listed = list(map(self.flags.__getitem__, uids))
        if self.recent:
            recent = self.recent
            for index, uid in enumerate(uids):
                if uid in recent:
                    listed[index] = (*listed[index], RECENT)
        return listed

    def is_expunged(self, uid: int) -> bool:
        """Still numbered for the client, but gone from the store (RFC 2180 §4.1)."""
        return uid in self._gone

    # --- news from the store -------------------------------------------------------------------

    def take_changes(
        self,
        changed: Iterable[MessageState],
        vanished: Iterable[int],
        highestmodseq: int,
        recent_from: int | None = None,
    ) -> None:
        """Record what the store says changed since `known_modseq`; nothing is told yet.

        `recent_from`: the first UID this session claimed as \\Recent for the new arrivals.
        """
        known_new = {s.uid for s in self._new}
        for state in changed:
            if state.uid in self.flags and state.uid not in self._gone:
                if state.flags != self.flags[state.uid]:
                    self._changed[state.uid] = state
                else:
                    self.modseqs[state.uid] = state.modseq
            elif state.uid > self.max_uid and state.uid not in known_new:
                self._new.append(state)
                if recent_from is not None and state.uid >= recent_from:
                    self.recent.add(state.uid)
        for uid in vanished:
            if uid in self.flags:
                self._gone.add(uid)
                self._changed.pop(uid, None)
            self._new = [s for s in self._new if s.uid != uid]
        self._new.sort(key=lambda s: s.uid)
        self.known_modseq = max(self.known_modseq, highestmodseq)

    def note_own_flags(self, state: MessageState) -> None:
        """This session's own STORE changed a message; it reports that itself."""
        if state.modseq == self.known_modseq + 1:
            # Nobody changed the mailbox in between: no need to read this change back.
            self.known_modseq = state.modseq
        if state.uid in self.flags:
            self.flags[state.uid] = state.flags
            self.modseqs[state.uid] = state.modseq
            self._changed.pop(state.uid, None)
            self._learn(state.flags)

    def change_own_flags(
        self, uids: Iterable[int], after: Callable[[tuple[str, ...]], tuple[str, ...] | None]
    ) -> OwnChange:
        """A flag change this session answers itself before the store has made it: each
        message's new flags are `after(its flags)` (None: they stay), asked once per distinct
        flag set. Expunged messages are left alone."""
        flags, gone, changed_elsewhere = self.flags, self._gone, self._changed
        memo: dict[tuple[str, ...], tuple[str, ...] | None] = {}
        before: dict[int, tuple[str, ...]] = {}
        for uid in uids:
            old = flags.get(uid)
            if old is None or uid in gone:
                continue
            if old in memo:
                new = memo[old]
            else:
                new = memo[old] = after(old)
            if new is not None:
                before[uid] = old
                flags[uid] = new
        if changed_elsewhere:
            for uid in before:
                changed_elsewhere.pop(uid, None)  # what this session shows now wins
        news = {old: new for old, new in memo.items() if new is not None}
        for new in news.values():
            self._learn(new)
        return OwnChange(before, news)

    def confirm_own_flags(
        self, uids: Iterable[int], modseq: int, elsewhere: Iterable[MessageState] = ()
    ) -> None:
        """The store made a change `change_own_flags` already shows, giving `uids` `modseq`:
        only that is news. Had another session changed the mailbox meanwhile, `modseq` is not
        the next one: the view then catches up (and tells the client) like after any other
        change. `elsewhere`: messages whose stored flags were not those this session saw;
        where the store's flags differ from the view's, the client is told them."""
        if modseq == self.known_modseq + 1:
            self.known_modseq = modseq
        modseqs = self.modseqs
        for uid in uids:
            if uid in modseqs:
                modseqs[uid] = modseq
        for state in elsewhere:
            shown = self.flags.get(state.uid)
            if shown is not None and shown != state.flags and state.uid not in self._gone:
                self._changed[state.uid] = state

    def undo_own_flags(self, uid: int, flags: tuple[str, ...]) -> None:
        """The store failed to make an answered change: the client is told `flags` again."""
        if uid in self.flags and uid not in self._gone:
            self._changed[uid] = MessageState(uid, flags, self.modseqs.get(uid, 0))

    def note_gone(self, uids: Iterable[int]) -> None:
        """This session's own EXPUNGE/MOVE removed messages; told by `untagged` like any other."""
        self._gone.update(u for u in uids if u in self.flags)

    def flag_fetches(
        self, uids: Sequence[int], *, with_uid: bool, uid_first: bool = False
    ) -> bytes:
        """`* n FETCH (FLAGS (...))` for each of `uids` (ascending) the client still sees, with
        `UID n` too if asked (RFC 3501 §6.4.6: what STORE answers), after the flags or before
        them; each flag set encoded once."""
        flags, gone, recent = self.flags, self._gone, self.recent
        items: dict[tuple[str, ...], str] = {}
        lines: list[str] = []
        for uid, seq in zip(uids, self.seqs_of(uids), strict=True):
            if seq is None or uid in gone:
                continue
            current = flags[uid]
            if uid in recent:
                current = (*current, RECENT)
            item = items.get(current)
            if item is None:
                item = items[current] = flag_list(current).decode("ascii")
            if uid_first:
                lines.append(f"* {seq} FETCH (UID {uid} FLAGS {item})\r\n")
            elif with_uid:
                lines.append(f"* {seq} FETCH (FLAGS {item} UID {uid})\r\n")
            else:
                lines.append(f"* {seq} FETCH (FLAGS {item})\r\n")
        return "".join(lines).encode("ascii")

    def any_gone(self, uids: Iterable[int]) -> bool:
        """Whether one of `uids` was expunged elsewhere and the client not told yet."""
        gone = self._gone
        return bool(gone) and any(uid in gone for uid in uids)

    @property
    def has_news(self) -> bool:
        return bool(self._gone or self._new or self._changed)

    def untagged(
        self, *, allow_expunge: bool, condstore: bool = False, qresync: bool = False
    ) -> list[bytes]:
        """The untagged responses to send now, in a valid order; the view moves forward."""
        lines: list[bytes] = []
        if allow_expunge and self._gone:
            gone = sorted(self._gone)
            if qresync:
                # RFC 7162 §3.2.10: VANISHED replaces EXPUNGE once QRESYNC is enabled.
                lines.append(b"* VANISHED " + sequence_set(gone).encode() + b"\r\n")
                for uid in gone:
                    self._forget(uid)
            else:
                # Highest first: each EXPUNGE names the current sequence number of its message.
                for uid in reversed(gone):
                    seq = self.seq_of(uid)
                    if seq is not None:
                        lines.append(b"* %d EXPUNGE\r\n" % seq)
                    self._forget(uid)
            self._gone.clear()
        for uid, state in sorted(self._changed.items()):
            seq = self.seq_of(uid)
            self.flags[uid] = state.flags
            self.modseqs[uid] = state.modseq
            self._learn(state.flags)
            if seq is None:
                continue
            items = [b"FLAGS " + flag_list(self.flags_of(uid))]
            if condstore or qresync:
                items.insert(0, b"UID %d" % uid)
                items.append(b"MODSEQ (%d)" % state.modseq)
            lines.append(b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n")
        self._changed.clear()
        if self._new:
            for state in self._new:
                self.uids.append(state.uid)
                self.flags[state.uid] = state.flags
                self.modseqs[state.uid] = state.modseq
                self._learn(state.flags)
            self._new.clear()
            lines.append(b"* %d EXISTS\r\n" % self.exists)
            lines.append(b"* %d RECENT\r\n" % len(self.recent))
        return lines

    def _forget(self, uid: int) -> None:
        index = bisect.bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            del self.uids[index]
        self.flags.pop(uid, None)
        self.modseqs.pop(uid, None)
        self.recent.discard(uid)
