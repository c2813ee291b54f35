"""IMAP THREAD (RFC 5256): REFERENCES, ORDEREDSUBJECT, the wire form, imaptest's scripts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from imaptest_scripts import run_script

from postroom.proto.imap.sort import SortKeys
from postroom.proto.imap.thread import (
    ThreadAlgorithm,
    ThreadNode,
    format_threads,
    msg_ids,
    thread_messages,
    thread_orderedsubject,
    thread_references,
)

THREAD_SCRIPTS = [
    "thread",
    "thread2",
    "thread3",
    "thread4",
    "thread5",
    "thread6",
    "thread7",
    "thread8",
    "thread-orderedsubject",
    "thread-orderedsubject2",
]


@pytest.mark.parametrize("script", THREAD_SCRIPTS)
def test_imaptest_thread_scripts(script: str) -> None:
    checks = run_script(script)
    assert checks, "the script has no THREAD command"
    assert [(c.command, c.actual) for c in checks] == [(c.command, c.expected) for c in checks]


def msg(
    seq: int,
    mid: str | None = None,
    refs: tuple[str, ...] = (),
    irt: str | None = None,
    subject: str = "",
    date: float | None = None,
) -> SortKeys:
    return SortKeys(
        seq=seq,
        uid=100 + seq,
        arrival=float(seq),
        date=date,
        size=0,
        subject=subject,
        message_id=mid,
        in_reply_to=irt,
        references=refs,
    )


def refs_wire(*items: SortKeys) -> str:
    return format_threads(thread_references(items))


def leaf(seq: int) -> ThreadNode:
    return ThreadNode(seq, seq + 100)


def test_format_threads_rfc_5256_examples() -> None:
    # RFC 5256 §4: "(2)(3 6 (4 23)(44 7 96))"
    threads = [
        leaf(2),
        ThreadNode(
            3,
            103,
            (
                ThreadNode(
                    6,
                    106,
                    (
                        ThreadNode(4, 104, (leaf(23),)),
                        ThreadNode(44, 144, (ThreadNode(7, 107, (leaf(96),)),)),
                    ),
                ),
            ),
        ),
    ]
    assert format_threads(threads) == "(2)(3 6 (4 23)(44 7 96))"
    assert format_threads(threads, use_uid=True) == "(102)(103 106 (104 123)(144 107 196))"
    # RFC 5256 §4: "((3)(5))" — a dummy parent with two children.
    assert format_threads([ThreadNode(None, None, (leaf(3), leaf(5)))]) == "((3)(5))"
    assert format_threads([]) == ""


def test_msg_ids() -> None:
    assert msg_ids("<a@b> <c@d>") == ("a@b", "c@d")
    assert msg_ids("<a@b>\r\n\t<c@d>") == ("a@b", "c@d")
    assert msg_ids("Your message of Mon, 1 Jan <x@y> (comment)") == ("x@y",)
    assert msg_ids("<noat> <@x> <x@> <> no brackets@here") == ()
    assert msg_ids("< a @ b >") == ("a@b",)
    assert msg_ids("<<a@b>>") == ("a@b",)
    assert msg_ids("") == ()


def test_in_reply_to_is_used_only_without_references() -> None:
    one, two = msg(1, "1@x"), msg(2, "2@x", irt="1@x")
    assert refs_wire(one, two) == "(1 2)"
    three = msg(3, "3@x", refs=("1@x",), irt="2@x")
    assert refs_wire(one, two, three) == "(1 (2)(3))"


def test_references_chain_links_messages_through_missing_ones() -> None:
    # a → (missing x) → 2: the dummy below the root is replaced by its child.
    one, two = msg(1, "a@x"), msg(2, "b@x", refs=("a@x", "x@x"))
    assert refs_wire(one, two) == "(1 2)"


def test_root_dummies_stay_only_with_several_children() -> None:
    assert refs_wire(msg(1, "b@x", refs=("a@x",))) == "(1)"
    assert refs_wire(msg(1, "b@x", refs=("a@x",)), msg(2, "c@x", refs=("a@x",))) == "((1)(2))"


def test_existing_parents_are_kept_when_linking_references() -> None:
    # RFC 5256 §2.2 step 1.A: y got parent x from message 1; message 2 does not move it to z.
    one = msg(1, "m1@x", refs=("x@x", "y@x"))
    two = msg(2, "m2@x", refs=("z@x", "y@x"))
    assert refs_wire(one, two) == "((1)(2))"
    # The message's own parent is replaced by its last reference (step 1.B).
    early = msg(1, "m1@x", refs=("p@x", "child@x"))
    child = msg(2, "child@x", refs=("q@x",))
    q = msg(3, "q@x")
    assert refs_wire(early, child, q) == "(3 2 1)"


def test_links_that_would_make_a_loop_are_not_created() -> None:
    assert refs_wire(msg(1, "a@x", refs=("a@x",))) == "(1)"
    assert refs_wire(msg(1, "a@x", refs=("b@x",)), msg(2, "b@x", refs=("a@x",))) == "(2 1)"
    assert refs_wire(msg(1, "a@x", refs=("b@x", "c@x", "b@x"))) == "(1)"


def test_duplicate_and_missing_message_ids_get_unique_ids() -> None:
    assert refs_wire(msg(1, "a@x"), msg(2, "a@x"), msg(3, "a@x")) == "(1)(2)(3)"
    assert refs_wire(msg(1), msg(2), msg(3, refs=("a@x",))) == "(1)(2)(3)"
    # A reference to a duplicate's ID goes to the first message with it.
    assert refs_wire(msg(1, "a@x"), msg(2, "a@x"), msg(3, "b@x", refs=("a@x",))) == "(1 3)(2)"


def test_subject_merging() -> None:
    # Neither is a reply: both go below a new dummy.
    assert refs_wire(msg(1, subject="foo"), msg(2, subject="foo")) == "((1)(2))"
    # A reply goes below the original, whichever is older.
    assert refs_wire(msg(1, subject="foo"), msg(2, subject="Re: foo")) == "(1 2)"
    assert refs_wire(msg(1, subject="Re: foo"), msg(2, subject="FOO")) == "(2 1)"
    assert refs_wire(msg(1, subject="Re: foo"), msg(2, subject="fwd: foo")) == "((1)(2))"
    # Empty base subjects are never merged.
    assert refs_wire(msg(1, subject=""), msg(2, subject="Re: ")) == "(1)(2)"
    assert refs_wire(msg(1, subject="a"), msg(2, subject="b")) == "(1)(2)"


def test_subject_merging_with_dummies() -> None:
    first = msg(1, refs=("x@x",), subject="foo")
    second = msg(2, refs=("x@x",), subject="Re: foo")
    # A real message joins a dummy's children.
    assert refs_wire(first, second, msg(3, subject="foo")) == "((1)(2)(3))"
    # Two dummies: their children become siblings.
    third, fourth = msg(3, refs=("y@x",), subject="foo"), msg(4, refs=("y@x",), subject="foo")
    assert refs_wire(first, second, third, fourth) == "((1)(2)(3)(4))"
    # A dummy's subject is the one of its oldest child.
    old = msg(1, refs=("x@x",), subject="bar", date=5.0)
    young = msg(2, refs=("x@x",), subject="foo", date=1.0)
    assert refs_wire(old, young, msg(3, subject="foo", date=3.0)) == "((2)(3)(1))"


def test_siblings_sort_by_sent_date_then_sequence() -> None:
    root = msg(1, "r@x", date=0.0)
    no_date = msg(2, refs=("r@x",), date=None)  # arrival 2.0
    dated = msg(3, refs=("r@x",), date=1.5)
    tie = msg(4, refs=("r@x",), date=2.0)
    assert refs_wire(root, no_date, dated, tie) == "(1 (3)(2)(4))"
    # Roots too, a dummy counting as its oldest child.
    late = msg(1, "late@x", date=9.0)
    dummy_kids = (msg(2, refs=("d@x",), date=7.0), msg(3, refs=("d@x",), date=3.0))
    assert refs_wire(late, *dummy_kids) == "((3)(2))(1)"


def test_deep_threads_do_not_recurse() -> None:
    count = 5000
    chain = [msg(1, "m1@x")] + [msg(n, f"m{n}@x", irt=f"m{n - 1}@x") for n in range(2, count + 1)]
    wire = format_threads(thread_references(chain))
    assert wire == "(" + " ".join(str(n) for n in range(1, count + 1)) + ")"


def test_orderedsubject() -> None:
    items = [
        msg(1, subject="Re: b", date=5.0),
        msg(2, subject="a", date=4.0),
        msg(3, subject="B", date=3.0),
        msg(4, subject="Re: a", date=1.0),
        msg(5, subject="c", date=2.0),
        msg(6, subject="b (fwd)", date=3.0),
    ]
    # Threads by first date: a (4 at 1.0), c (5 at 2.0), b (3 at 3.0); in a thread by date,
    # ties (3 and 6) by sequence number; References play no part.
    threads = thread_orderedsubject(items)
    assert format_threads(threads) == "(4 2)(5)(3 (6)(1))"
    assert threads == thread_messages(reversed(items), ThreadAlgorithm.ORDEREDSUBJECT)
    assert thread_orderedsubject([]) == []


def _walk(nodes: tuple[ThreadNode, ...], depth: int = 0) -> Iterator[tuple[ThreadNode, int]]:
    for node in nodes:
        yield node, depth
        yield from _walk(node.children, depth + 1)


_GRAPHS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 6)),  # Message-ID
        st.lists(st.integers(0, 6), max_size=4),  # References
        st.one_of(st.none(), st.integers(0, 6)),  # In-Reply-To
        st.sampled_from(["", "a", "Re: a", "b", "Fwd: b"]),
        st.one_of(st.none(), st.integers(0, 4)),  # Date
    ),
    max_size=14,
).map(
    lambda rows: [
        msg(
            seq,
            None if mid is None else f"{mid}@x",
            tuple(f"{ref}@x" for ref in refs),
            None if irt is None else f"{irt}@x",
            subject,
            None if date is None else float(date),
        )
        for seq, (mid, refs, irt, subject, date) in enumerate(rows, 1)
    ]
)


@given(_GRAPHS)
def test_references_threads_hold_every_message_once_in_order(items: list[SortKeys]) -> None:
    threads = thread_references(items)
    nodes = list(_walk(tuple(threads)))
    assert sorted(node.seq for node, _ in nodes if node.seq is not None) == [
        item.seq for item in items
    ]
    by_seq = {item.seq: item for item in items}

    def first_key(node: ThreadNode) -> tuple[float, int]:
        while node.seq is None:
            node = node.children[0]
        return by_seq[node.seq].sent_date, node.seq

    for node, depth in nodes:
        if node.seq is None:  # dummies survive only at the root, with several children
            assert depth == 0
            assert len(node.children) >= 2
        keys = [first_key(child) for child in node.children]
        assert keys == sorted(keys)
    root_keys = [first_key(node) for node in threads]
    assert root_keys == sorted(root_keys)
    assert format_threads(threads) == format_threads(thread_references(reversed(items)))


@given(_GRAPHS)
def test_orderedsubject_threads_are_two_levels(items: list[SortKeys]) -> None:
    threads = thread_orderedsubject(items)
    nodes = list(_walk(tuple(threads)))
    assert sorted(node.seq for node, _ in nodes if node.seq is not None) == [
        item.seq for item in items
    ]
    assert all(depth <= 1 for _, depth in nodes)
