"""IMAP SORT (RFC 5256, RFC 5957): base subjects, sort keys, criteria, imaptest's scripts."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from imaptest_scripts import run_script

from postroom.proto.imap.sort import (
    BaseSubject,
    SortAddress,
    SortCriterion,
    SortKey,
    SortKeys,
    base_subject,
    base_subject_full,
    casemap,
    parse_sort_criteria,
    sort_messages,
    sort_value,
)

SORT_SCRIPTS = [
    "sort-addresses",
    "sort-arrival",
    "sort-date",
    "sort-display-from",
    "sort-display-to",
    "sort-size",
    "sort-subject",
]
# Not replayed: "esort" and "sort-partial" check the ESORT/CONTEXT=SORT result encodings
# (RETURN MIN/MAX/ALL/COUNT/PARTIAL), which are not part of these functions.


@pytest.mark.parametrize("script", SORT_SCRIPTS)
def test_imaptest_sort_scripts(script: str) -> None:
    checks = run_script(script)
    assert checks, "the script has no SORT command"
    assert [(c.command, c.actual) for c in checks] == [(c.command, c.expected) for c in checks]


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("", ""),
        ("hello", "HELLO"),
        ("Re: hello", "HELLO"),
        ("RE: Re: re: hello", "HELLO"),
        ("Fw: hello", "HELLO"),
        ("FWD: hello", "HELLO"),
        ("Re  : hello", "HELLO"),
        ("Re[2]: hello", "HELLO"),
        ("Re [list] : hello", "HELLO"),
        ("hello (fwd)", "HELLO"),
        ("hello (fwd) (FWD)  ", "HELLO"),
        ("  hello \t\r\n  world  ", "HELLO WORLD"),
        ("[list] hello", "HELLO"),
        ("[list] [other] hello", "HELLO"),
        ("[list][other]hello", "HELLO"),
        ("[list] Re: [other] Fwd: hello", "HELLO"),
        ("[fwd: hello]", "HELLO"),
        ("[Fwd: Re: [list] hello (fwd)]", "HELLO"),
        ("re: [fwd: [fwd: re: [fwd: babylon]]]", "BABYLON"),
        ("Re: [FWD: c]", "C"),
        # a blob stays when removing it would leave nothing
        ("[xyz]", "[XYZ]"),
        ("[a] [b]", "[B]"),
        ("Re: [list]", "[LIST]"),
        # leaders and trailers can consume everything
        ("Re: [list] Fwd: (fwd)", ""),
        ("Re:", ""),
        ("(fwd)", ""),
        # only re/fw/fwd are leaders
        ("Ad: Re: Ad: x", "AD: RE: AD: X"),
        ("Ref: x", "REF: X"),
        ("Fwx: x", "FWX: X"),
        ("Reply: x", "REPLY: X"),
        ("x Re: y", "X RE: Y"),
        ("[unterminated hello", "[UNTERMINATED HELLO"),
        ("[fwd: x", "[FWD: X"),
        ("hello]", "HELLO]"),
    ],
)
def test_base_subject(subject: str, expected: str) -> None:
    assert base_subject(subject) == expected


@pytest.mark.parametrize(
    ("subject", "reply"),
    [
        ("hello", False),
        ("[list] hello", False),
        (" hello ", False),
        ("Re: hello", True),
        ("[list] fw: hello", True),
        ("hello (fwd)", True),
        ("[fwd: hello]", True),
        ("Ref: hello", False),
    ],
)
def test_base_subject_reply_or_forward(subject: str, reply: bool) -> None:
    assert base_subject_full(subject) == BaseSubject(base_subject(subject), reply)
    assert base_subject(subject).endswith("HELLO")


def test_casemap_is_titlecase_then_canonical_decomposition() -> None:
    assert casemap("abc XYZ 09 _[]") == "ABC XYZ 09 _[]"
    assert casemap("é") == "E\u0301"  # titlecase É, then NFD
    assert casemap("e\u0301") == "E\u0301"
    assert casemap("ǆ") == "ǅ"  # titlecase, not uppercase (Ǆ)
    assert casemap("ß") == "ß"  # no simple titlecase mapping (the full one is "Ss")
    assert casemap("Straße") == casemap("STRAßE")
    assert base_subject("Re: Élan") == base_subject("ÉLAN") == "E\u0301LAN"


def keys(seq: int, **fields: object) -> SortKeys:
    values: dict[str, object] = {"uid": seq * 10, "arrival": 0.0, "date": None, "size": 0}
    values.update(fields)
    return SortKeys(seq=seq, **values)  # type: ignore[arg-type]


def test_ties_are_broken_by_sequence_number_even_in_reverse() -> None:
    items = [keys(3, size=5), keys(1, size=5), keys(2, size=1)]
    assert sort_messages(items, [SortCriterion(SortKey.SIZE)]) == [2, 1, 3]
    assert sort_messages(items, [SortCriterion(SortKey.SIZE, reverse=True)]) == [1, 3, 2]


def test_later_criteria_break_ties_of_earlier_ones() -> None:
    items = [
        keys(1, subject="b", size=1),
        keys(2, subject="Re: a", size=1),
        keys(3, subject="a", size=2),
        keys(4, subject="b", size=3),
    ]
    by_subject_size = [SortCriterion(SortKey.SUBJECT), SortCriterion(SortKey.SIZE, True)]
    assert sort_messages(items, by_subject_size) == [3, 2, 4, 1]
    reverse_subject = [SortCriterion(SortKey.SUBJECT, True), SortCriterion(SortKey.SIZE)]
    assert sort_messages(items, reverse_subject) == [1, 4, 2, 3]


def test_date_falls_back_to_internal_date() -> None:
    items = [keys(1, arrival=50.0, date=None), keys(2, arrival=10.0, date=100.0)]
    assert sort_value(items[0], SortKey.DATE) == 50.0
    assert sort_messages(items, [SortCriterion(SortKey.DATE)]) == [1, 2]
    assert sort_messages(items, [SortCriterion(SortKey.ARRIVAL)]) == [2, 1]


def test_address_keys_use_the_mailbox_and_display_keys_the_name() -> None:
    alice = SortAddress("zed", "a.example", "Alice")
    bob = SortAddress("bob", "b.example", "")
    group = SortAddress("Friends")
    item = keys(1, from_=alice, to=bob, cc=group)
    assert sort_value(item, SortKey.FROM) == "ZED"
    assert sort_value(item, SortKey.DISPLAYFROM) == "ALICE"
    assert sort_value(item, SortKey.TO) == "BOB"
    assert sort_value(item, SortKey.DISPLAYTO) == "BOB@B.EXAMPLE"
    assert sort_value(item, SortKey.CC) == "FRIENDS"
    missing = keys(2)
    assert [sort_value(missing, key) for key in (SortKey.FROM, SortKey.DISPLAYTO)] == ["", ""]
    assert SortAddress("d").addr_spec == "d"


def test_parse_sort_criteria() -> None:
    assert parse_sort_criteria(["reverse", "Date", "SUBJECT", "DisplayFrom"]) == (
        SortCriterion(SortKey.DATE, True),
        SortCriterion(SortKey.SUBJECT),
        SortCriterion(SortKey.DISPLAYFROM),
    )
    for bad in ([], ["REVERSE"], ["DATE", "REVERSE"], ["REVERSE", "REVERSE", "DATE"], ["X"]):
        with pytest.raises(ValueError):
            parse_sort_criteria(bad)


_ITEMS = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(["a", "Re: a", "b", "[x] B", ""]),
        st.one_of(st.none(), st.integers(0, 3)),
    ),
    max_size=12,
).map(
    lambda rows: [
        keys(seq, size=size, subject=subject, date=None if date is None else float(date))
        for seq, (size, subject, date) in enumerate(rows, 1)
    ]
)
_CRITERIA = st.lists(
    st.builds(
        SortCriterion,
        st.sampled_from([SortKey.SIZE, SortKey.SUBJECT, SortKey.DATE]),
        st.booleans(),
    ),
    min_size=1,
    max_size=3,
)


@given(_ITEMS, _CRITERIA)
def test_sort_matches_a_comparator_over_all_criteria_then_sequence(
    items: list[SortKeys], criteria: list[SortCriterion]
) -> None:
    def compare(seq1: int, seq2: int) -> int:
        # RFC 5256 §3 as a comparator: the first differing key decides, REVERSE flips only
        # that key's answer, the sequence number decides the rest.
        for criterion in criteria:
            one = sort_value(items[seq1 - 1], criterion.key)
            two = sort_value(items[seq2 - 1], criterion.key)
            if one != two:
                answer = -1 if one < two else 1  # type: ignore[operator]
                return -answer if criterion.reverse else answer
        return seq1 - seq2

    order = sort_messages(reversed(items), criteria)
    assert order == sorted(order, key=functools.cmp_to_key(compare))
    assert sorted(order) == [item.seq for item in items]
