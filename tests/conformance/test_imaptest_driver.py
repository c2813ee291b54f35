"""The imaptest driver's pure parts: argument parser, script parser, matcher, literals, mbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from .imap_args import Kind, ParseError, parse_args, render
from .imaptest_driver import _literal_chunks, _mailbox_url
from .imaptest_match import MATCHED, Matcher, UninitializedVariable
from .imaptest_script import (
    Existence,
    ScriptError,
    StartupState,
    expected_reply,
    load_mbox,
    load_script,
)


def match(
    expected: bytes, reply: bytes, matcher: Matcher | None = None, prefix: bool = False
) -> bool:
    matcher = matcher or Matcher()
    return matcher.match_args(parse_args(expected), parse_args(reply), prefix) == MATCHED


def test_parse_args_atoms_lists_strings_literals_and_nil() -> None:
    args = parse_args(b'* 1 FETCH (BODY[1] {5}\r\nab)c\r ~{2}\r\nxy "q\\"x" nil)')
    assert [arg.kind for arg in args] == [Kind.ATOM, Kind.ATOM, Kind.ATOM, Kind.LIST]
    items = args[3].items
    assert [(arg.kind, arg.text) for arg in items] == [
        (Kind.ATOM, b"BODY[1]"),
        (Kind.LITERAL, b"ab)c\r"),
        (Kind.LITERAL, b"xy"),
        (Kind.STRING, b'q"x'),
        (Kind.NIL, b"nil"),
    ]
    assert parse_args(b"OK [READ-WRITE] done (0.1 secs).")[-1].text == b"."
    with pytest.raises(ParseError):
        parse_args(b"(unclosed")
    assert render(parse_args(b'a "b\\\\" (c)')) == 'a "b\\\\" (c)'


def test_variables_are_captured_then_must_repeat() -> None:
    matcher = Matcher()
    assert match(b"1 fetch (uid $uid1)", b"1 FETCH (UID 17)", matcher)
    assert matcher.variables[b"uid1"] == b"17"
    assert match(b"search $uid1", b"SEARCH 17", matcher)
    assert not match(b"search $uid1", b"SEARCH 18", matcher)
    assert match(b"ok [uidvalidity $v]", b"OK [UIDVALIDITY 42] UIDs valid", matcher, True)
    assert matcher.variables[b"v"] == b"42"


def test_fetch_lists_are_unordered_pairs_and_flags_ignore_recent() -> None:
    matcher = Matcher()
    expected = expected_reply(b"1 fetch (flags (\\seen) uid 5)")
    assert render(expected).startswith("1 fetch ($!unordered=2 flags (")
    reply = parse_args(b"1 FETCH (UID 5 FLAGS (\\Recent \\Seen))")
    assert matcher.match_args(expected, reply, False) == MATCHED
    extra = parse_args(b"1 FETCH (UID 5 FLAGS (\\Seen \\Answered))")
    assert matcher.match_args(expected, extra, False) != MATCHED


def test_list_directives_and_wildcards() -> None:
    assert match(b"list ($!unordered \\b) / x", b"LIST (\\a \\b) / x")
    assert not match(b"list ($!unordered $!ban=\\c \\b) / x", b"LIST (\\b \\c) / x")
    assert not match(b"list (\\b \\a) / x", b"LIST (\\a \\b) / x")
    assert match(b"1 fetch (uid $ body $)", b"1 FETCH (UID 3 BODY (a b))")
    assert match(b"list () $sep ${case:INBOX}", b'LIST () "/" INBOX')
    assert not match(b"list () $sep ${case:INBOX}", b'LIST () "/" inbox')
    assert match(b"ok [capability $]", b"OK [CAPABILITY A B] x", prefix=True)


def test_failed_matches_forget_their_captures() -> None:
    matcher = Matcher()
    matcher.added = []
    assert not match(b"1 fetch (uid $a flags (\\x))", b"1 FETCH (UID 3 FLAGS ())", matcher)
    matcher.revert_added()
    assert b"a" not in matcher.variables


def test_expand_all_and_relative_sequences() -> None:
    matcher = Matcher()
    matcher.variables[b"mailbox"] = b"box"
    matcher.start_group(4)
    matcher.expunged(2)
    assert matcher.expand_all(b"select ${mailbox}2 $$x $3", False) == b"select box2 $x 2"
    assert matcher.expand_all(b"$2", False) == b"<expunged>"
    with pytest.raises(UninitializedVariable):
        matcher.expand_all(b"fetch $nothing", False)


def test_script_parsing(tmp_path: Path) -> None:
    (tmp_path / "default.mbox").write_bytes(b"From a  Fri Feb 22 17:06:23 2008 +0200\nx\n")
    path = tmp_path / "t"
    path.write_bytes(
        b"connections: 2\nstate: created\nmessages: 3\n\n"
        b"1 ok append $mailbox {{{\nab\n\n}}}\n* 1 exists\n! 2 exists\n"
        b"2 tag1 noop\n2 tag2 noop\n2 tag2 ok\n2 tag1 no [x]\n"
        b"!ifenv POSTROOM_SURELY_UNSET\n1 ok noop\n!endif\n"
    )
    script = load_script(path)
    assert (script.connection_count, script.state, script.message_count) == (
        2,
        StartupState.CREATED,
        3,
    )
    first, second, logout = script.groups
    assert first.commands[0].command == b"append $mailbox {4}\r\nab\r\n"
    assert [u.existence for u in first.untagged or []] == [Existence.MUST, Existence.MUST_NOT]
    assert second.connection == 1
    assert [render(cmd.reply or []) for cmd in second.commands] == ["no [x]", "ok"]
    assert logout.commands[0].command == b"logout"
    path.write_bytes(b"state: bogus\n\nok noop\n")
    with pytest.raises(ScriptError):
        load_script(path)


def test_literals_become_literal_plus_or_wait_for_continuation() -> None:
    command = b"append box {3}\r\nabc {2}\r\nxy"
    assert _literal_chunks(command, {b"LITERAL+"}) == [b"append box {3+}\r\nabc {2+}\r\nxy"]
    assert _literal_chunks(command, set()) == [b"append box {3}\r\n", b"abc {2}\r\n", b"xy"]


def test_mbox_messages_and_internal_dates(tmp_path: Path) -> None:
    mbox = tmp_path / "m.mbox"
    mbox.write_bytes(
        b"From a  Fri Feb 22 17:06:23 2008 +0200\nA: 1\n\nbody\n\n"
        b"From b  Sat Mar 24 23:00:00 2007 -0130\nB: 2\n\nFrom x\n"
    )
    first, second = load_mbox(mbox)
    assert first.data == b"A: 1\r\n\r\nbody\r\n\r\n"
    assert first.internal_date == "22-Feb-2008 17:06:23 +0200"
    assert second.data == b"B: 2\r\n\r\nFrom x\r\n"
    assert second.internal_date == "24-Mar-2007 23:00:00 -0130"
    assert _mailbox_url("p&AOQA5A-") == "p%C3%A4%C3%A4"
