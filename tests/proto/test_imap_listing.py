"""LIST/LSUB pattern matching: RFC 3501 §6.3.8 semantics, in linear time whatever the pattern."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_imap_grammar import cmd, error

from postroom.proto.imap import grammar as g
from postroom.proto.imap.listing import (
    MAX_PATTERNS,
    Listed,
    Matcher,
    collapse_wildcards,
    list_entries,
    lsub_entries,
)


def reference_match(pattern: str, name: str) -> bool:
    """The definition, read literally: exponential, fine for a few characters."""
    if pattern[:5].upper() == "INBOX":  # RFC 3501 §5.1: INBOX in any case
        return name[:5].upper() == "INBOX" and reference_match(pattern[5:], name[5:])
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        return any(reference_match(rest, name[i:]) for i in range(len(name) + 1))
    if head == "%":
        return any(
            reference_match(rest, name[i:]) for i in range(len(name) + 1) if "/" not in name[:i]
        )
    return bool(name) and name[0] == head and reference_match(rest, name[1:])


PATTERN_CHARS = st.sampled_from(["a", "b", "/", "*", "%", "I", "n", "B", "o", "X"])
NAME_CHARS = st.sampled_from(["a", "b", "/", "i", "N", "b", "O", "x", "*", "%"])


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.text(PATTERN_CHARS, max_size=8), min_size=1, max_size=3),
    st.text(NAME_CHARS, max_size=10),
)
def test_matcher_agrees_with_the_definition(patterns: list[str], name: str) -> None:
    expected = any(reference_match(p, name) for p in patterns)
    assert Matcher(patterns)(name) == expected, (patterns, name)


@given(st.text(st.sampled_from(["a", "/", "*", "%"]), max_size=12))
def test_collapsing_wildcards_keeps_the_meaning(pattern: str) -> None:
    collapsed = collapse_wildcards(pattern)
    assert "**" not in collapsed and "%%" not in collapsed
    assert "*%" not in collapsed and "%*" not in collapsed
    for name in ("", "a", "a/", "/a", "aa/a", "a/a/a"):
        assert reference_match(collapsed, name) == reference_match(pattern, name)


def test_examples() -> None:
    assert collapse_wildcards("**%%*Q%%a%*") == "*Q%a*"
    assert Matcher(["*"])("a/b/c")
    assert not Matcher(["%"])("a/b")
    assert Matcher(["a/%"])("a/b") and not Matcher(["a/%"])("a/b/c")
    assert Matcher(["inbox"])("INBOX") and Matcher(["Inbox/%"])("INBOX/x")
    assert not Matcher(["Sent"])("sent")  # only INBOX is case-insensitive
    assert Matcher(["x", "y%"])("yes") and not Matcher(["x", "y%"])("no")
    assert not Matcher([])("INBOX")


def _finishes(work: threading.Thread, seconds: float) -> bool:
    work.start()
    work.join(seconds)
    return not work.is_alive()


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*" * 1023 + "Q", False),  # the probe: each "*" a backtracking point for a regex
        ("*x" * 512, False),
        ("%x" * 512, False),
        ("%*" * 511 + "%Q", False),
        ("x%/" * 341 + "*", True),
    ],
)
def test_pathological_patterns_take_linear_time(pattern: str, expected: bool) -> None:
    """Backtracking would take longer than the age of the universe on these; the matcher takes
    one pass over the name (the timeout is generous: a loaded machine must not fail it)."""
    assert len(pattern) <= MAX_PATTERNS
    name = ("x" * 63 + "/") * 1024  # 64 KiB, the longest command line
    results: list[bool] = []
    work = threading.Thread(target=lambda: results.append(Matcher([pattern])(name)))
    assert _finishes(work, 60.0), f"matching {pattern[:20]!r}... did not finish"
    assert results == [expected]


def test_list_and_lsub_entries_use_the_patterns() -> None:
    boxes = {"INBOX": "", "Sent": "\\Sent", "a": "", "a/b": "", "a/b/c": ""}
    names = [e.name for e in list_entries(boxes, set(), ["%"])]
    assert names == ["INBOX", "Sent", "a"]
    names = [e.name for e in list_entries(boxes, set(), ["a/*", "inbox"])]
    assert names == ["INBOX", "a/b", "a/b/c"]
    assert lsub_entries(boxes, {"a/b/c"}, ["a/%"]) == [Listed("a/b", ("\\Noselect",))]


def test_long_patterns_are_bad() -> None:
    fits = "*" * (MAX_PATTERNS - 2)
    assert cmd(f'a LIST "ab" "{fits}"'.encode()) == g.List("ab", (fits,))
    assert cmd(f'a LSUB "ab" "{fits}"'.encode()) == g.Lsub("ab", fits)
    for line in (
        f'a LIST "abc" "{fits}"',
        f'a LSUB "abc" "{fits}"',
        f'a LIST "" ("{fits[:600]}" "{fits[:600]}")',
        f'a LIST "{"x" * 2000}" ""',
    ):
        failure = error(line.encode())
        assert failure.tag == "a" and failure.status == "BAD"
        assert "too long" in failure.message
