"""Every command of Dovecot's imaptest scripts goes through the reader and the grammar.

The scripts (format: imaptest's scripted_test.md) are read from the shared conformance checkout.
Variables get plausible values, `{{{ ... }}}` blocks become literals (`~{{{` literal8), and
APPENDs that imaptest completes from its mbox get a message literal. Commands expected to
answer OK or NO must parse; those expected to answer BAD must raise `CommandParseError`; commands
of extensions this server does not implement (CATENATE, NOTIFY, URLAUTH, CONTEXT's UPDATE) must
be refused with `CommandParseError` too, never crash.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from postroom.proto.imap.grammar import CommandParseError, Request, parse_command
from postroom.proto.imap.reader import (
    NEED_DATA,
    CommandLine,
    CommandReader,
    NeedContinuation,
)

CORPUS = Path(
    os.environ.get("POSTROOM_IMAPTEST_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "conformance" / "imaptest" / "tests"
)
STATUSES = {"ok": "OK", "no": "NO", "bad": "BAD", '""': "ANY"}
UNSUPPORTED = re.compile(
    rb"^\S+ (UID )?(GENURLAUTH|URLFETCH|RESETKEY|NOTIFY|CANCELUPDATE|APPEND .* CATENATE|"
    rb"SEARCH RETURN \(UPDATE)",
    re.IGNORECASE,
)
VARIABLES = {
    "mailbox": "imaptest",
    "mailbox_url": "imaptest",
    "sep": "/",
    "user": "user@example.org",
    "username": "user",
    "domain": "example.org",
    "password": "secret",
    "searchtag": "tag1",
}
MESSAGE = b"From: a@example.org\r\nSubject: corpus\r\n\r\nbody\r\n"


@dataclass
class ScriptCommand:
    script: str
    text: str  # one logical line, {{{ }}} blocks still in it
    expect: str | None  # "OK", "NO", "BAD", "ANY" or None until its reply line is seen


def _substitute(text: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        return VARIABLES.get(name, "7")

    parts = text.split("$$")
    return "$".join(re.sub(r"\$\{(\w+)\}|\$(\w+)", value, part) for part in parts)


def _logical_lines(lines: list[str]) -> list[str]:
    out: list[str] = []
    pending: list[str] = []
    for line in lines:
        pending.append(line)
        joined = "\n".join(pending)
        if joined.count("{{{") == joined.count("}}}"):
            out.append(joined)
            pending = []
    return out


def load(path: Path) -> list[ScriptCommand]:
    text = path.read_bytes().decode("latin-1").replace("\r\n", "\n")
    header, _, body = text.partition("\n\n")
    connections = 2 if re.search(r"^connections:\s*[2-9]", header, re.M) else 1
    commands: list[ScriptCommand] = []
    awaiting: list[ScriptCommand] = []  # method 2/3 commands waiting for their reply line
    tags: dict[str, ScriptCommand] = {}
    for line in _logical_lines(body.split("\n")):
        if not line.strip() or line[0] in "#*!?":
            continue
        words = line.split(" ")
        if connections > 1 and words[0].isdigit():
            words = words[1:]
        head = words[0].lower()
        if head in STATUSES:
            if awaiting and (len(words) == 1 or words[1].startswith("[")):
                awaiting.pop(0).expect = STATUSES[head]
                continue
            commands.append(ScriptCommand(path.name, " ".join(words[1:]), STATUSES[head]))
        elif len(words) > 1 and words[1].lower() in STATUSES and head in tags:
            tags.pop(head).expect = STATUSES[words[1].lower()]
        elif head.startswith("tag"):
            command = ScriptCommand(path.name, " ".join(words[1:]), None)
            tags[head] = command
            commands.append(command)
        else:
            command = ScriptCommand(path.name, " ".join(words), None)
            awaiting.append(command)
            commands.append(command)
    return commands


def wire(command: str) -> bytes:
    """The bytes a client sends: tag, command, literals."""
    text = _substitute(command)
    out = b"c1 "
    pieces = re.split(r"(~?)\{\{\{\n(.*?)\}\}\}", text, flags=re.S)
    for i in range(0, len(pieces) - 1, 3):
        literal = pieces[i + 2].replace("\n", "\r\n").encode("latin-1")
        tilde = b"~" if pieces[i + 1] else b""
        out += pieces[i].encode("latin-1") + tilde + b"{%d}\r\n" % len(literal) + literal
    out += pieces[-1].encode("latin-1")
    ends_with_literal = len(pieces) > 1 and pieces[-1] == ""
    if re.match(r"append\b", text, re.I) and not ends_with_literal:
        # imaptest sends the next mbox message (to $mailbox when none is named).
        if text.strip().lower() == "append":
            out += b" imaptest"
        out += b" {%d}\r\n%s" % (len(MESSAGE), MESSAGE)
    return out + b"\r\n"


def parse(data: bytes) -> Request:
    reader = CommandReader()
    reader.feed(data)
    while True:
        event = reader.next_event()
        if isinstance(event, NeedContinuation):
            reader.accept_literal()
        elif isinstance(event, CommandLine):
            assert reader.next_event() is NEED_DATA, "one command expected"
            return parse_command(event)
        else:
            raise AssertionError(f"unexpected reader event {event!r}")


def corpus() -> list[ScriptCommand]:
    if not CORPUS.is_dir():
        return []
    commands: list[ScriptCommand] = []
    for path in sorted(CORPUS.iterdir()):
        if path.is_file() and path.suffix != ".mbox" and not path.name.endswith(".md"):
            commands.extend(load(path))
    return commands


COMMANDS = corpus()


def test_corpus_is_present_and_large() -> None:
    assert CORPUS.is_dir(), f"imaptest scripts not found in {CORPUS} (set POSTROOM_IMAPTEST_DIR)"
    assert len(COMMANDS) > 500
    assert all(command.expect is not None for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.script}:{c.text[:40]}" for c in COMMANDS])
def test_corpus_command(command: ScriptCommand) -> None:
    data = wire(command.text)
    if command.expect == "BAD" or UNSUPPORTED.match(data):
        with pytest.raises(CommandParseError) as info:
            parse(data)
        assert info.value.tag == "c1" and info.value.status == "BAD"
    else:
        request = parse(data)
        assert request.tag == "c1"
