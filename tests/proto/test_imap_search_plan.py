"""SEARCH by cost (proto/imap/search_plan.py) finds exactly what the naive evaluation finds.

Hypothesis draws search keys of every kind, nested, and small mailboxes; the reordered key, the
narrowing by sequence sets and the three-valued deciders must agree with `matches` on the
original key, message by message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.proto.imap.grammar_base import SequenceSet
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
from postroom.proto.imap.search import SearchMessage, header_hits, matches
from postroom.proto.imap.search_plan import (
    Cost,
    by_cost,
    candidates,
    cost,
    decider,
    leaves,
    narrow,
)

SUBJECTS = (b"report 2424 golf", b"=?utf-8?q?r=C3=A9port_7?=", b"lunch", b"Report 12")
BODIES = (b"quokkas here", b"nothing", b"golf report")
SENDERS = (
    b"From: Ann <ann@example.test>\r\n",
    b'From: "Ann (golf)" <ann @ example.test>\r\n',
    b"From: =?utf-8?q?Ann_R=C3=A9port?= <x@y.test>\r\n",
    b"From: ann@example.test,\r\n bob@example.test\r\n",
    b"",
)
FLAGS = ("\\Seen", "\\Flagged", "\\Deleted", "$Work")
DAY = 86400.0


@st.composite
def mailboxes(draw: st.DrawFn) -> list[SearchMessage]:
    count = draw(st.integers(min_value=0, max_value=12))
    gaps = draw(st.lists(st.integers(1, 3), min_size=count, max_size=count))
    messages = []
    uid = 0
    for seq, gap in enumerate(gaps, start=1):
        uid += gap
        subject = draw(st.sampled_from(SUBJECTS))
        body = draw(st.sampled_from(BODIES))
        sender = draw(st.sampled_from(SENDERS))
        content = b"Subject: " + subject + b"\r\n" + sender + b"\r\n" + body
        messages.append(
            SearchMessage(
                seq=seq,
                uid=uid,
                flags=tuple(draw(st.sets(st.sampled_from(FLAGS)))),
                internal_date=draw(st.integers(0, 6)) * DAY,
                size=draw(st.integers(10, 40)),
                modseq=draw(st.integers(1, 9)),
                content=content,
            )
        )
    return messages


def _sets() -> st.SearchStrategy[SequenceSet]:
    bound = st.one_of(st.none(), st.integers(1, 30))
    return st.lists(st.tuples(bound, bound), min_size=1, max_size=3).map(
        lambda ranges: SequenceSet(tuple(ranges))
    )


HEADER_KEYS = st.builds(
    HeaderKey,
    st.sampled_from(("SUBJECT", "FROM", "X-MISSING")),
    st.sampled_from(("report", "report 2424", "réport", "ann", "", "golf", "ann@example", "x@")),
)
LEAVES: st.SearchStrategy[SearchKey] = st.one_of(
    st.just(AllKey()),
    st.builds(FlagKey, st.sampled_from(FLAGS), st.booleans()),
    st.builds(SequenceKey, _sets(), st.booleans()),
    st.builds(SizeKey, st.booleans(), st.integers(5, 45)),
    st.builds(ModSeqKey, st.integers(1, 9)),
    st.builds(
        DateKey,
        st.just("INTERNALDATE"),
        st.sampled_from(("BEFORE", "ON", "SINCE")),
        st.integers(0, 6).map(lambda d: dt.date(1970, 1, 1) + dt.timedelta(days=d)),
    ),
    HEADER_KEYS,
    st.builds(TextKey, st.sampled_from(("BODY", "TEXT")), st.sampled_from(("golf", "quokkas"))),
)
KEYS: st.SearchStrategy[SearchKey] = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.builds(NotKey, inner),
        st.builds(OrKey, inner, inner),
        st.lists(inner, min_size=2, max_size=4).map(lambda keys: AndKey(tuple(keys))),
    ),
    max_leaves=8,
)


def _naive(key: SearchKey, box: list[SearchMessage]) -> list[int]:
    return [m.seq for m in box if matches(key, m, exists=len(box), max_uid=_max_uid(box))]


def _max_uid(box: list[SearchMessage]) -> int:
    return box[-1].uid if box else 0


def _without_content(message: SearchMessage, fields: set[str]) -> SearchMessage:
    """The message as the FIELDS stage sees it: no content, the fields' search texts."""
    searched = {name: message.search_texts(name) for name in fields}
    return dataclasses.replace(message, content=None, searched=searched)


def _staged(key: SearchKey, box: list[SearchMessage]) -> list[int]:
    """What the SEARCH service does: narrow, decide from the view, from store rows, from the
    header fields' search texts, then read."""
    exists, max_uid = len(box), _max_uid(box)
    seqs, ordered = narrow(by_cost(key), [m.uid for m in box])
    pending = [box[seq - 1] for seq in seqs] if seqs is not None else list(box)
    fields = {leaf.field.lower() for leaf in leaves(key) if isinstance(leaf, HeaderKey)}
    found = []
    for known in (Cost.VIEW, Cost.META, Cost.FIELDS):
        decide = decider(ordered, known, exists=exists, max_uid=max_uid)
        undecided = []
        for message in pending:
            seen = _without_content(message, fields) if known == Cost.FIELDS else message
            answer = decide(seen)
            if answer is True:
                found.append(message.seq)
            elif answer is None:
                undecided.append(message)
        pending = undecided
    found += [m.seq for m in pending if matches(ordered, m, exists=exists, max_uid=max_uid)]
    return sorted(found)


@settings(max_examples=400, deadline=None)
@given(KEYS, mailboxes())
def test_reordered_key_finds_the_same_messages(key: SearchKey, box: list[SearchMessage]) -> None:
    assert _naive(by_cost(key), box) == _naive(key, box)


@settings(max_examples=400, deadline=None)
@given(KEYS, mailboxes())
def test_staged_evaluation_finds_the_same_messages(
    key: SearchKey, box: list[SearchMessage]
) -> None:
    assert _staged(key, box) == _naive(key, box)


@settings(max_examples=300, deadline=None)
@given(KEYS, mailboxes(), st.sampled_from(list(Cost)))
def test_a_decided_answer_is_the_answer(
    key: SearchKey, box: list[SearchMessage], known: Cost
) -> None:
    decide = decider(key, known, exists=len(box), max_uid=_max_uid(box))
    for message in box:
        answer = decide(message)
        if cost(key) <= known:
            assert answer is not None
        if answer is not None:
            assert answer is matches(key, message, exists=len(box), max_uid=_max_uid(box))


@settings(max_examples=300, deadline=None)
@given(KEYS, mailboxes())
def test_narrowing_takes_the_sets_out_of_the_key(key: SearchKey, box: list[SearchMessage]) -> None:
    seqs, rest = narrow(key, [m.uid for m in box])
    exists, max_uid = len(box), _max_uid(box)
    for message in box:
        allowed = seqs is None or message.seq in seqs
        left = allowed and matches(rest, message, exists=exists, max_uid=max_uid)
        assert left is matches(key, message, exists=exists, max_uid=max_uid)


@settings(max_examples=300, deadline=None)
@given(KEYS, mailboxes())
def test_candidates_never_drop_a_match(key: SearchKey, box: list[SearchMessage]) -> None:
    allowed = candidates(key, [m.uid for m in box])
    if allowed is not None:
        assert set(_naive(key, box)) <= set(allowed) <= set(range(1, len(box) + 1))


@settings(max_examples=300, deadline=None)
@given(HEADER_KEYS, mailboxes())
def test_header_hits_are_the_matches(key: HeaderKey, box: list[SearchMessage]) -> None:
    texts = {m.uid: m.search_texts(key.field) for m in box}
    expected = [m.uid for m in box if matches(key, m, exists=len(box), max_uid=_max_uid(box))]
    assert header_hits(key, texts, [m.uid for m in box]) == expected


def test_cheap_keys_go_first() -> None:
    header, seq = HeaderKey("SUBJECT", "report"), SequenceKey(SequenceSet(((2424, 2424),)), False)
    flag, size = FlagKey("\\Seen", False), SizeKey(True, 100)
    body = TextKey("BODY", "golf")
    assert by_cost(AndKey((body, header, size, seq, flag))) == AndKey(
        (seq, flag, size, header, body)
    )
    assert by_cost(OrKey(header, flag)) == OrKey(flag, header)
    assert candidates(AndKey((header, seq)), list(range(1, 3001))) == [2424]
    uids = SequenceKey(SequenceSet(((10, 12),)), True)
    assert candidates(AndKey((header, uids)), [2, 4, 10, 11, 20]) == [3, 4]
    assert candidates(OrKey(header, seq), list(range(1, 10))) is None
    assert narrow(AndKey((header, seq)), list(range(1, 3001))) == ([2424], header)
    assert narrow(seq, list(range(1, 3001))) == ([2424], AllKey())
    assert narrow(AndKey((header, flag)), list(range(1, 9))) == (None, AndKey((header, flag)))
