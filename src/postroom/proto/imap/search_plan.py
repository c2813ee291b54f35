"""SEARCH keys by cost: the cheap ones first, and decided with as little data as possible.

RFC 3501 §6.4.4 gives the keys of a search no order ("all search keys must match"): the result
is a set. So a key may be evaluated in any order, and this module picks the cheapest: a key's
cost is what it needs of a message. VIEW: the sequence number, UID and flags, which the session
holds; META: internal date, size and MODSEQ, a store row; FIELDS: the values of the header
fields a HEADER key names, which the SEARCH service keeps between searches; HEADER: the header
block (SENT dates); BODY: the whole message.

* `by_cost` reorders every AND (and OR) so that cheaper keys come first, and `matches` stops
  at the first key that settles the answer;
* `candidates` narrows the messages to those the sequence sets and UID sets of an AND allow,
  without looking at any other message, and `narrow` also takes those sets out of the key;
* `decider` evaluates a key with only the data of one cost level, in three-valued (Kleene)
  logic: True, False, or None when the answer needs more; the caller drops or keeps messages
  before it reads anything more of them from the store.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

from postroom.proto.imap.grammar_search import (
    AllKey,
    AndKey,
    DateKey,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    NotKey,
    OrKey,
    SearchKey,
    SequenceKey,
    SizeKey,
    TextKey,
)
from postroom.proto.imap.search import SearchMessage, matches


class Cost(IntEnum):
    """What a key needs of a message, cheapest first."""

    VIEW = 0  # sequence number, UID, flags: in the session's view of the mailbox
    META = 1  # internal date, size, MODSEQ: a store row
    FIELDS = 2  # the named header fields' search texts (SearchMessage.searched)
    HEADER = 3  # the header block
    BODY = 4  # the whole message


Decider = Callable[[SearchMessage], bool | None]


def cost(key: SearchKey) -> Cost:
    """The most expensive data any part of `key` needs."""
    if isinstance(key, AllKey | FlagKey | SequenceKey):
        return Cost.VIEW
    if isinstance(key, SizeKey | ModSeqKey):
        return Cost.META
    if isinstance(key, DateKey):
        # SENT*: the Date: header's own calendar day (RFC 3501 §6.4.4).
        return Cost.HEADER if key.field == "SENT" else Cost.META
    if isinstance(key, HeaderKey):
        return Cost.FIELDS
    if isinstance(key, TextKey):
        return Cost.BODY
    if isinstance(key, NotKey):
        return cost(key.key)
    if isinstance(key, OrKey):
        return max(cost(key.left), cost(key.right))
    return max((cost(part) for part in key.keys), default=Cost.VIEW)


def by_cost(key: SearchKey) -> SearchKey:
    """The same search with the cheaper keys of every AND and OR first (a stable order)."""
    if isinstance(key, AndKey):
        return AndKey(tuple(sorted((by_cost(part) for part in key.keys), key=cost)))
    if isinstance(key, OrKey):
        left, right = by_cost(key.left), by_cost(key.right)
        return OrKey(right, left) if cost(right) < cost(left) else OrKey(left, right)
    if isinstance(key, NotKey):
        return NotKey(by_cost(key.key))
    return key


def leaves(key: SearchKey) -> Iterator[SearchKey]:
    """Every key of `key` that has no keys inside it."""
    if isinstance(key, NotKey):
        yield from leaves(key.key)
    elif isinstance(key, OrKey):
        yield from leaves(key.left)
        yield from leaves(key.right)
    elif isinstance(key, AndKey):
        for part in key.keys:
            yield from leaves(part)
    else:
        yield key


@dataclass(frozen=True, slots=True)
class Shape:
    """What a key is made of, worked out once per search."""

    cost: Cost  # of the whole key
    costs: frozenset[Cost]  # of its leaves, ALL left out (it needs nothing)
    fields: frozenset[str]  # the header fields its HEADER keys name, lower case


def shape(key: SearchKey) -> Shape:
    parts = [leaf for leaf in leaves(key) if not isinstance(leaf, AllKey)]
    return Shape(
        cost(key),
        frozenset(cost(leaf) for leaf in parts),
        frozenset(leaf.field.lower() for leaf in parts if isinstance(leaf, HeaderKey)),
    )


def candidates(key: SearchKey, uids: Sequence[int]) -> list[int] | None:
    """The sequence numbers `key` can match at all, from its sequence and UID sets alone
    (`uids`: the mailbox's UIDs in order); None when they do not narrow it."""
    if isinstance(key, SequenceKey):
        if key.sequence.saved or not uids:
            return None
        exists = len(uids)
        if not key.uid:
            spans = key.sequence.resolve(exists)
            return [n for a, b in spans for n in range(a, min(b, exists) + 1)]
        found: list[int] = []
        for a, b in key.sequence.resolve(uids[-1]):
            first, last = bisect.bisect_left(uids, a), bisect.bisect_right(uids, b)
            found += range(first + 1, last + 1)
        return found
    if isinstance(key, AndKey):
        narrowed: set[int] | None = None
        for part in key.keys:
            some = candidates(part, uids)
            if some is not None:
                narrowed = set(some) if narrowed is None else narrowed.intersection(some)
        return None if narrowed is None else sorted(narrowed)
    if isinstance(key, OrKey):
        left, right = candidates(key.left, uids), candidates(key.right, uids)
        if left is None or right is None:
            return None
        return sorted(set(left).union(right))
    return None


def narrow(key: SearchKey, uids: Sequence[int]) -> tuple[list[int] | None, SearchKey]:
    """The sequence numbers `key` can match at all (None: no narrowing), and what is left to
    test of them: the key without the sets of its AND, which every one of them is in."""
    parts = key.keys if isinstance(key, AndKey) else (key,)
    sets = [part for part in parts if isinstance(part, SequenceKey) and not part.sequence.saved]
    if not sets:
        return candidates(key, uids), key
    rest = tuple(part for part in parts if not any(part is each for each in sets))
    left: SearchKey = AllKey() if not rest else rest[0] if len(rest) == 1 else AndKey(rest)
    found = candidates(AndKey((*sets, left)), uids)
    return ([] if found is None else found), left  # None only for an empty mailbox


def decider(key: SearchKey, known: Cost, *, exists: int, max_uid: int) -> Decider:
    """Whether a message matches `key`, from the data of cost `known` or less: True, False,
    or None when only more data can tell."""
    if cost(key) <= known:
        return lambda message: matches(key, message, exists=exists, max_uid=max_uid)
    if isinstance(key, AndKey):
        return _all(tuple(decider(k, known, exists=exists, max_uid=max_uid) for k in key.keys))
    if isinstance(key, OrKey):
        left = decider(key.left, known, exists=exists, max_uid=max_uid)
        right = decider(key.right, known, exists=exists, max_uid=max_uid)
        return lambda message: _either(left, right, message)
    if isinstance(key, NotKey):
        inner = decider(key.key, known, exists=exists, max_uid=max_uid)
        return lambda message: _negated(inner(message))
    return lambda message: None


def _all(parts: tuple[Decider, ...]) -> Decider:
    def decide(message: SearchMessage) -> bool | None:
        answer: bool | None = True
        for part in parts:
            found = part(message)
            if found is False:
                return False
            if found is None:
                answer = None
        return answer

    return decide


def _either(left: Decider, right: Decider, message: SearchMessage) -> bool | None:
    first = left(message)
    if first is True:
        return True
    second = right(message)
    if second is True:
        return True
    return False if first is False and second is False else None


def _negated(answer: bool | None) -> bool | None:
    return None if answer is None else not answer
