"""ENVELOPE / BODY / BODYSTRUCTURE / BODY[section] of postroom.proto.imap.structure.

The first tests replay the FETCH expectations of Dovecot's imaptest scripts (kept in
../shared/conformance/imaptest) against our output: for every message of the .mbox files,
each ENVELOPE, BODY, BODYSTRUCTURE, RFC822* and BODY[section] answer must match what the
script wants (which Dovecot produces). The rest covers RFC 3501 examples and the corners
imaptest does not reach.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.proto.imap import mime
from postroom.proto.imap.address import decode_words, parse_addresses
from postroom.proto.imap.structure import (
    MailAddress,
    bodystructure,
    human_nstring,
    section_bytes,
    string,
    summarise,
)

# Dovecot imaptest scripts, kept as data in ../shared (POSTROOM_IMAPTEST_DIR overrides).
DATA = Path(
    os.environ.get("POSTROOM_IMAPTEST_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "conformance" / "imaptest" / "tests"
)
SCRIPTS = [
    "fetch-envelope",
    "fetch-bodystructure",
    "fetch-body",
    "fetch-body-mime",
    "fetch-body-message-rfc822",
    "fetch-body-message-rfc822-mime",
    "fetch-body-message-rfc822-x2",
]


def crlf(text: bytes) -> bytes:
    """Bare LF to CRLF (what imaptest does when it APPENDs mbox messages)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", text)


# -- a small IMAP value parser, shared by the expected (script) and actual (our) sides ------

Value = object  # None (NIL) | Atom | Str | Var | list[Value]


@dataclass(frozen=True)
class Atom:
    text: bytes


@dataclass(frozen=True)
class Str:
    data: bytes


@dataclass(frozen=True)
class Var:
    name: str


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def skip_spaces(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos] == 32:
            self.pos += 1

    def value(self) -> Value:
        self.skip_spaces()
        data = self.data
        c = data[self.pos : self.pos + 1]
        if c == b"(":
            self.pos += 1
            items: list[Value] = []
            while True:
                self.skip_spaces()
                if data[self.pos : self.pos + 1] == b")":
                    self.pos += 1
                    return items
                items.append(self.value())
        if c == b'"':
            out = bytearray()
            pos = self.pos + 1
            while data[pos] != 34:
                if data[pos] == 92:
                    pos += 1
                assert data[pos] not in (13, 10), "CR/LF inside a quoted string"
                out.append(data[pos])
                pos += 1
            self.pos = pos + 1
            return Str(bytes(out))
        m = re.compile(rb"~?\{(\d+)\}\r\n").match(data, self.pos)
        if m is not None:
            end = m.end() + int(m.group(1))
            assert end <= len(data), "literal runs past the end"
            self.pos = end
            return Str(data[m.end() : end])
        start = self.pos
        depth = 0
        while self.pos < len(data):
            ch = data[self.pos]
            if ch == 91:
                depth += 1
            elif ch == 93:
                depth -= 1
            elif depth == 0 and ch in b" ()":
                break
            self.pos += 1
        word = data[start : self.pos]
        assert word, f"unexpected byte at {start}: {data[start : start + 20]!r}"
        if word.upper() == b"NIL":
            return None
        if word.startswith(b"$"):
            return Var(word[1:].decode())
        return Atom(word)


def parse_value(data: bytes) -> Value:
    reader = Reader(data)
    value = reader.value()
    assert reader.pos == len(data), f"trailing data {data[reader.pos :]!r}"
    return value


def matches(expected: Value, actual: Value, variables: dict[str, Value]) -> bool:
    """imaptest matching: case-insensitive, `$name` binds on first use, `$` matches anything."""
    if isinstance(expected, Var):
        if expected.name == "":
            return True
        if expected.name in variables:
            return variables[expected.name] == actual
        variables[expected.name] = actual
        return True
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a, variables) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, Str) and isinstance(actual, Str):
        return expected.data.lower() == actual.data.lower()
    if isinstance(expected, Atom) and isinstance(actual, Atom):
        return expected.text.upper() == actual.text.upper()
    return expected is None and actual is None


# -- imaptest script and mbox files ----------------------------------------------------------


def mbox_messages(path: Path) -> list[bytes]:
    """The messages of an mbox: the "From " lines separate them and are not part of them."""
    messages: list[list[bytes]] = []
    for line in path.read_bytes().splitlines(keepends=True):
        if line.startswith(b"From "):
            messages.append([])
        elif messages:
            messages[-1].append(line)
    return [crlf(b"".join(lines)) for lines in messages]


@dataclass
class Expectation:
    command: str
    negated: bool  # "!" lines: this reply must NOT come
    seq: int
    items: list[tuple[str, Value]]


def script_expectations(path: Path) -> list[Expectation]:
    """The FETCH replies a script expects (only fetch commands matter here)."""
    lines = path.read_bytes().decode().split("\n")
    i = lines.index("") + 1  # skip the header
    out: list[Expectation] = []
    command = ""
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line or line.startswith("#"):
            continue
        if line[:2] not in ("* ", "! "):
            command = line
            continue
        # a reply, maybe with {{{ ... }}} multi-line literals (~{{{: bytes taken verbatim)
        reply = bytearray()
        text = line[2:]
        while text.endswith("{{{"):
            verbatim = text.endswith("~{{{")
            reply += text[: -4 if verbatim else -3].encode()
            block: list[str] = []
            while not lines[i].startswith("}}}"):
                block.append(lines[i])
                i += 1
            content = "\n".join(block).encode()
            if not verbatim:
                content = crlf(content)
            reply += b"{%d}\r\n" % len(content) + content
            text = lines[i][3:]
            i += 1
        reply += text.encode()
        reader = Reader(bytes(reply))
        seq = reader.value()
        word = reader.value()
        attrs = reader.value()
        assert isinstance(seq, Atom) and word in (Atom(b"fetch"), Atom(b"FETCH"))
        assert isinstance(seq, Atom) and isinstance(attrs, list) and len(attrs) % 2 == 0
        items = [
            (name.text.decode().upper(), attrs[k + 1])
            for k in range(0, len(attrs), 2)
            if isinstance(name := attrs[k], Atom)
        ]
        out.append(Expectation(command, line[0] == "!", int(seq.text), items))
    return out


SECTION = re.compile(r"^(?:BODY|BINARY)\[([^\]]*)\](?:<(\d+)>)?$")


def fetch_item(raw: bytes, item: str, command: str) -> Value | None:
    """Our answer for one FETCH item, or None for items this module does not produce."""
    summary = summarise(raw)
    tree = mime.parse(raw)
    if item == "ENVELOPE":
        return parse_value(summary.envelope)
    if item == "BODY":
        return parse_value(summary.body)
    if item == "BODYSTRUCTURE":
        return parse_value(summary.bodystructure)
    if item == "RFC822":
        return Str(section_bytes(raw, tree, (), ""))
    if item == "RFC822.HEADER":
        return Str(section_bytes(raw, tree, (), "HEADER"))
    if item == "RFC822.TEXT":
        return Str(section_bytes(raw, tree, (), "TEXT"))
    m = SECTION.match(item)
    if m is None or item.startswith("BINARY"):
        return None
    spec, origin = m.group(1), m.group(2)
    head, _, rest = spec.partition(" ")
    names = tuple(rest.strip("()").split()) if rest else ()
    pieces = head.split(".") if head else []
    path: list[int] = []
    while pieces and pieces[0].isdigit():
        path.append(int(pieces.pop(0)))
    kind = ".".join(pieces).upper()
    assert kind in ("", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
    data = section_bytes(raw, tree, tuple(path), kind, names)  # type: ignore[arg-type]
    if origin is not None:
        partial = re.search(re.escape(spec) + r"\]<(\d+)\.(\d+)>", command, re.IGNORECASE)
        assert partial is not None and int(partial.group(1)) == int(origin)
        data = data[int(origin) : int(origin) + int(partial.group(2))]
    return Str(data)


@pytest.mark.parametrize("script", SCRIPTS)
def test_imaptest_fetch_script(script: str) -> None:
    messages = mbox_messages(DATA / f"{script}.mbox")
    variables: dict[str, Value] = {}
    checked = 0
    skipped: set[str] = set()
    for exp in script_expectations(DATA / script):
        raw = messages[exp.seq - 1]
        results = []
        for item, expected in exp.items:
            actual = fetch_item(raw, item, exp.command)
            if actual is None:
                skipped.add(item)
                continue
            checked += 1
            results.append(matches(expected, actual, variables))
            if not exp.negated:
                assert results[-1], f"{exp.command}: {item}\nwant {expected}\ngot  {actual}"
        if exp.negated:
            assert not all(results), f"{exp.command}: unwanted reply matched"
    assert checked > 0 and skipped <= {"FLAGS"}


def test_mbox_reader_and_script_parser_see_every_message() -> None:
    # the replay above is only as good as these two readers
    assert len(mbox_messages(DATA / "fetch-envelope.mbox")) == 6
    assert mbox_messages(DATA / "fetch-body.mbox")[2].endswith(b"\r\n\r\nbody33\r\n\r\n")
    exps = script_expectations(DATA / "fetch-envelope")
    assert [e.seq for e in exps] == [1, 2, 3, 4, 5, 6]
    literal = script_expectations(DATA / "fetch-body")[2]
    assert literal.items[1] == ("BODY[TEXT]", Str(b"body1\r\n\r\n"))


# -- RFC 3501 examples ----------------------------------------------------------------------

RFC3501_MESSAGE = crlf(
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
    b"From: Terry Gray <gray@cac.washington.edu>\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\n"
    b"To: imap@cac.washington.edu\n"
    b"cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
    b"\n"
    b"line one\n"
    b"line two\n"
)


def test_rfc3501_fetch_example() -> None:
    # RFC 3501 §6.4.5 example (with the addresses of a list written without spaces, as the
    # §9 grammar says: env-cc = "(" 1*address ")")
    s = summarise(RFC3501_MESSAGE)
    assert s.envelope == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes"'
        b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
        b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
        b' (("Terry Gray" NIL "gray" "cac.washington.edu"))'
        b' ((NIL NIL "imap" "cac.washington.edu"))'
        b' ((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU"))'
        b' NIL NIL "<B27397-0100000@cac.washington.edu>")'
    )
    assert s.body == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7bit" 20 2)'
    assert s.bodystructure == s.body[:-1] + b" NIL NIL NIL NIL)"


def test_rfc3501_multipart_bodystructure_example() -> None:
    # RFC 3501 §7.4.2 BODYSTRUCTURE example: a text part and a base64 attachment
    first = b"See the diff.\r\n" * 3
    second = b"ZGlmZg==\r\nZGlmZg==\r\n"
    raw = (
        b'MIME-Version: 1.0\r\nContent-Type: MULTIPART/MIXED; BOUNDARY="x"\r\n\r\n'
        b"--x\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n" + first + b"\r\n"
        b"--x\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\r\n"
        b"Content-ID: <960723163407.20117h@cac.washington.edu>\r\n"
        b"Content-Description: Compiler diff\r\n"
        b"Content-Transfer-Encoding: BASE64\r\n\r\n" + second + b"\r\n--x--\r\n"
    )
    assert summarise(raw).body == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7bit" %d 3)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff")'
        b' "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" %d 2) "MIXED")'
        % (len(first), len(second))
    )


# -- Dovecot's own BODYSTRUCTURE unit vectors (src/lib-imap/test-imap-bodystructure.c) ----


def test_bodystructure_attachment_language_and_flowed_params() -> None:
    text = b"Lorem ipsum dolor sit amet.\n" * 3
    raw = crlf(
        b"From: user@domain.org\n"
        b"Mime-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="foo bar"\n'
        b"\n"
        b"--foo bar\n"
        b'Content-Type: text/plain; charset=us-ascii; format="flowed";\n'
        b'  delsp="no"\n'
        b"Content-Language: la\n"
        b"\n" + text + b"\n"
        b"--foo bar\n"
        b"Content-Type: image/png\n"
        b"Content-Transfer-Encoding: base64\n"
        b'Content-Disposition: attachment; filename="pigeon.png"\n'
        b"\n"
        b"iVBORw0KGgo=\n"
        b"--foo bar--\n"
    )
    assert summarise(raw).bodystructure == (
        b'(("text" "plain" ("charset" "us-ascii" "format" "flowed" "delsp" "no") NIL NIL'
        b' "7bit" 87 3 NIL NIL ("la") NIL)'
        b'("image" "png" NIL NIL NIL "base64" 12 NIL ("attachment" ("filename" "pigeon.png"))'
        b' NIL NIL) "mixed" ("boundary" "foo bar") NIL NIL NIL)'
    )


def test_multipart_without_parts_gets_an_empty_text_part() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="foo"\r\n\r\n'
    s = summarise(raw)
    assert s.bodystructure == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
        b' "mixed" ("boundary" "foo") NIL NIL NIL)'
    )
    assert s.body == b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")'


def test_message_rfc822_part_with_id_and_description() -> None:
    raw = crlf(
        b"From: user@domain.org\n"
        b"Mime-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="foo bar"\n'
        b"\n"
        b"--foo bar\n"
        b"Content-Type: message/rfc822\n"
        b"Content-ID: <B.frop.example.com>\n"
        b"Content-Description: Forwarded\n"
        b"\n"
        b"From: user@domain.org\n"
        b"Date: Sat, 24 Mar 2017 23:00:00 +0200\n"
        b"Mime-Version: 1.0\n"
        b"Content-Type: text/plain; charset=us-ascii\n"
        b"\n"
        b"body\n"
        b"\n"
        b"--foo bar--\n"
    )
    assert summarise(raw).body == (
        b'(("message" "rfc822" NIL "<B.frop.example.com>" "Forwarded" "7bit" 133'
        b' ("Sat, 24 Mar 2017 23:00:00 +0200" NIL ((NIL NIL "user" "domain.org"))'
        b' ((NIL NIL "user" "domain.org")) ((NIL NIL "user" "domain.org")) NIL NIL NIL NIL NIL)'
        b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1) 6) "mixed")'
    )


# -- ENVELOPE corners -------------------------------------------------------------------------


def test_envelope_of_a_message_without_headers_is_all_nil() -> None:
    assert summarise(b"\r\nbody\r\n").envelope == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert summarise(b"").envelope == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_envelope_eight_bit_headers_become_literals() -> None:
    raw = "Subject: Grüße\r\nFrom: Jörg <j@example.org>\r\n\r\n".encode()
    env = summarise(raw).envelope
    assert env.startswith(b"(NIL {7}\r\nGr\xc3\xbc\xc3\x9fe ((")
    assert b'(({5}\r\nJ\xc3\xb6rg NIL "j" "example.org"))' in env
    assert parse_value(env) is not None


def test_envelope_folding_quotes_and_odd_whitespace() -> None:
    raw = (
        b"Subject: a\r\n\tfolded  subject \r\n"
        b'Message-ID:\r\n <x@y>\r\nFrom: "a \\"b\\"" <c@d>\r\nIn-Reply-To: <a\\b"c@d>\r\n\r\n'
    )
    items = parse_value(summarise(raw).envelope)
    assert isinstance(items, list)
    assert items[1] == Str(b"a folded subject")
    assert items[9] == Str(b" <x@y>")
    assert items[2] == [[Str(b'a "b"'), None, Str(b"c"), Str(b"d")]]
    assert items[8] == Str(b'<a\\b"c@d>')
    env = summarise(raw).envelope
    assert b'"<a\\\\b\\"c@d>"' in env  # two quoted-specials stay quoted
    assert b"{18}\r\na folded subject" not in env and b"{16}\r\na folded subject" in env


def test_address_repairs_follow_dovecot() -> None:
    def wire(value: bytes) -> list[tuple[bytes | None, ...]]:
        return [(a.name, a.route, a.mailbox, a.host) for a in parse_addresses(value)]

    assert wire(b"user") == [(None, None, b"user", b"MISSING_DOMAIN")]
    assert wire(b"undisclosed recipients") == [
        (b"undisclosed recipients", None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")
    ]
    assert wire(b"Name <broken") == [(b"Name", None, b"broken", b"SYNTAX_ERROR")]
    assert wire(b"<@a,@b:u@d>") == [(None, b"@a,@b", b"u", b"d")]
    assert wire(b"u@[1.2.3.4]") == [(None, None, b"u", b"[1.2.3.4]")]
    assert wire(b"") == [] and wire(b" (just a comment) ") == []


def test_summary_plain_values() -> None:
    raw = (
        b"Date: Thu, 15 Feb 2007 01:02:03 +0200\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC?= =?utf-8?q?=C3=9Fe?= again\r\n"
        b"From: =?iso-8859-1?q?J=F6rg?= <joerg@example.org>\r\n"
        b'To: team: a@example.org, "B" <b@example.org>;, c@example.org\r\n'
        b"Cc: nobody\r\n"
        b"Message-ID: <id1@example.org>\r\n"
        b"In-Reply-To: <id0@example.org> (comment)\r\n"
        b"References: <r1@example.org>\r\n <r2@example\r\n .org> junk <id0@example.org>\r\n"
        b"\r\nbody\r\n"
    )
    s = summarise(raw)
    assert s.date == 1171494123
    assert s.subject_raw == b"=?utf-8?q?Gr=C3=BC?= =?utf-8?q?=C3=9Fe?= again"
    assert s.subject == "Grüße again"
    assert s.from_ == (MailAddress("Jörg", "joerg", "example.org"),)
    assert s.to == (
        MailAddress("", "team", ""),
        MailAddress("", "a", "example.org"),
        MailAddress("B", "b", "example.org"),
        MailAddress("", "c", "example.org"),
    )
    assert s.cc == (MailAddress("", "nobody", ""),)
    assert s.from_[0].addr_spec == "joerg@example.org" and s.cc[0].addr_spec == "nobody"
    assert (s.message_id, s.in_reply_to) == ("id1@example.org", "id0@example.org")
    assert s.references == ("r1@example.org", "r2@example.org", "id0@example.org")
    bare = summarise(b"Date: not a date\r\n\r\n")
    assert (bare.date, bare.subject, bare.subject_raw, bare.message_id) == (None,) * 4


def test_decode_words() -> None:
    assert decode_words(b"=?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?=") == "éé"
    assert decode_words(b"=?utf-8?q?=C3?= =?utf-8?q?=A9?=") == "é"  # split character
    assert decode_words(b"a =?x-unknown?q?b?= c") == "a =?x-unknown?q?b?= c"
    assert decode_words(b"=?utf-8*en?q?hi_there?=") == "hi there"
    assert decode_words("plain ü".encode()) == "plain ü"


def test_string_quoting_rules() -> None:
    assert string(b"plain") == b'"plain"'
    assert string(b'a"b\\c') == b'"a\\"b\\\\c"'
    assert string(b'""""\\') == b'{5}\r\n""""\\'  # the 5th quoted-special makes a literal
    assert string(b"a\r\nb") == b"{4}\r\na\r\nb"
    assert string(b"\xc3\xa9") == b"{2}\r\n\xc3\xa9"
    assert human_nstring(b"  ") == b'""' and human_nstring(b"") == b'""'
    assert human_nstring(None) == b"NIL"
    assert human_nstring(b"a\tb") == b"{3}\r\na b"


# -- MIME parsing corners ---------------------------------------------------------------------


def test_rfc2231_parameters() -> None:
    raw = (
        b"Content-Type: application/octet-stream;\r\n"
        b' name*0="long"; name*1="name.txt";\r\n'
        b" title*=us-ascii'en'This%20is%20%2A%2A%2Afun%2A%2A%2A\r\n"
        b"Content-Disposition: attachment;\r\n"
        b" filename*0*=utf-8''%E2%82%AC; filename*1=\" 100%.txt\"\r\n"
        b"\r\nxx"
    )
    tree = mime.parse(raw)
    assert tree.params == (
        (b"name", b"longname.txt"),
        (b"title*", b"us-ascii'en'This%20is%20%2A%2A%2Afun%2A%2A%2A"),
    )
    assert tree.param("name") == "longname.txt"
    assert tree.param("title") == "This is ***fun***"
    assert tree.disposition_params == ((b"filename*", b"utf-8''%E2%82%AC 100%25.txt"),)
    assert mime.param_value(tree.disposition_params, "FILENAME") == "€ 100%.txt"
    assert b'("filename*" "utf-8\'\'%E2%82%AC 100%25.txt")' in summarise(raw).bodystructure


def test_parameters_with_gaps_and_garbage() -> None:
    tree = mime.parse(b'Content-Type: text/plain; a*0=x; a*2=z; junk b="q"; c=1 (c)\r\n\r\n')
    # like Dovecot, after garbage the parser resumes at the next ";"
    assert tree.params == ((b"c", b"1"), (b"a*0", b"x"), (b"a*2", b"z"))


def test_defaults_without_mime_version_and_invalid_fields() -> None:
    # RFC 2045 §4: Content-* fields of a non-MIME message are ignored...
    assert summarise(b"Content-Transfer-Encoding: base64\r\n\r\nx").body == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0)'
    )
    # ...a Content-Type alone makes it MIME (as Dovecot decides); an invalid type is the
    # RFC 2045 §5.2 default
    assert summarise(b"Content-Type: garbage\r\nContent-Transfer-Encoding: 8bit\r\n\r\n").body == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "8bit" 0 0)'
    )
    assert (
        summarise(
            b"Mime-Version: 1.0\r\nContent-Type: Application/X-Y\r\n"
            b"Content-Transfer-Encoding: ?bad\r\n\r\nabc"
        ).body
        == b'("Application" "X-Y" NIL NIL NIL "7bit" 3)'
    )


def test_digest_parts_default_to_message_rfc822() -> None:
    raw = crlf(
        b"Mime-Version: 1.0\n"
        b'Content-Type: multipart/digest; boundary="d"\n'
        b"\n"
        b"--d\n"
        b"\n"
        b"Subject: inner\n"
        b"\n"
        b"text\n"
        b"--d\n"
        b"Content-Type: text/plain\n"
        b"\n"
        b"plain\n"
        b"--d--\n"
    )
    tree = mime.parse(raw)
    assert [c.kind for c in tree.children] == ["message", "text"]
    body = summarise(raw).body
    assert body.startswith(b'(("message" "rfc822" NIL NIL NIL "7bit" 22 (NIL "inner" NIL')
    assert section_bytes(raw, tree, (1,), "MIME") == b"\r\n"
    assert section_bytes(raw, tree, (1,), "TEXT") == b"text"  # the CRLF goes with "--d"
    assert section_bytes(raw, tree, (1, 1), "") == b"text"
    assert section_bytes(raw, tree, (2,), "") == b"plain"
    assert section_bytes(raw, tree, (2,), "HEADER") == b""  # not a message/rfc822 part


NESTED = crlf(
    b"Subject: nested\n"
    b'Content-Type: multipart/mixed; boundary="outer"\n'
    b"\n"
    b"preamble\n"
    b"--outer\n"
    b'Content-Type: multipart/alternative; boundary="outer-inner"\n'
    b"\n"
    b"--outer-inner\n"
    b"\n"
    b"one\n"
    b"--outer-inner\n"
    b"Content-Type: text/html\n"
    b"\n"
    b"<b>two</b>\n"
    b"--outer\n"
    b"Content-Type: message/global\n"
    b"\n"
    b"Subject: embedded\n"
    b"\n"
    b"three\n"
    b"--outer--\n"
    b"epilogue\n"
)


def test_nested_multiparts_with_prefix_boundaries_and_missing_final_boundary() -> None:
    tree = mime.parse(NESTED)
    alt, glob = tree.children
    assert [c.body(NESTED) for c in alt.children] == [b"one", b"<b>two</b>"]
    assert glob.kind == "message" and glob.message is not None
    assert section_bytes(NESTED, tree, (), "TEXT").startswith(b"preamble\r\n--outer\r\n")
    assert section_bytes(NESTED, tree, (), "TEXT").endswith(b"--outer--\r\nepilogue\r\n")
    assert section_bytes(NESTED, tree, (1, 2), "") == b"<b>two</b>"
    assert section_bytes(NESTED, tree, (1, 2), "MIME") == b"Content-Type: text/html\r\n\r\n"
    assert section_bytes(NESTED, tree, (2,), "HEADER") == b"Subject: embedded\r\n\r\n"
    assert section_bytes(NESTED, tree, (2, 1), "") == b"three"
    assert b'("message" "global" NIL NIL NIL "7bit" 26 (NIL "embedded" ' in (summarise(NESTED).body)
    for missing in [(3,), (1, 3), (1, 1, 1), (2, 2), (0,), (2, 1, 1)]:
        assert section_bytes(NESTED, tree, missing, "") == b"", missing


def test_header_fields_sections() -> None:
    raw = b"From: a@b\r\nX-Long: one\r\n two\r\nSubject: s\r\nx-long: again\r\n\r\nbody"
    tree = mime.parse(raw)
    assert section_bytes(raw, tree, (), "HEADER.FIELDS", ("X-LONG",)) == (
        b"X-Long: one\r\n two\r\nx-long: again\r\n\r\n"
    )
    assert section_bytes(raw, tree, (), "HEADER.FIELDS.NOT", ("x-long", "from")) == (
        b"Subject: s\r\n\r\n"
    )
    assert section_bytes(raw, tree, (), "HEADER.FIELDS", ("nothing",)) == b"\r\n"
    assert section_bytes(raw, tree, (1,), "") == b"body"
    assert section_bytes(raw, tree, (1,), "MIME") == section_bytes(raw, tree, (), "HEADER")
    assert section_bytes(raw, tree, (), "MIME") == b""
    assert tree.header_value(raw, "x-long") == b"one\r\n two"
    assert tree.header_value(raw, "X-Long", last=True) == b"again"
    assert mime.unfold(b"one\r\n two") == b"one two"


def test_bare_lf_messages_parse_like_crlf_ones() -> None:
    lf = NESTED.replace(b"\r\n", b"\n")
    tree = mime.parse(lf)
    assert section_bytes(lf, tree, (1, 2), "MIME") == b"Content-Type: text/html\n\n"
    assert section_bytes(lf, tree, (2, 1), "") == b"three"
    assert section_bytes(lf, tree, (2,), "HEADER") == b"Subject: embedded\n\n"
    crlf_body = summarise(NESTED).body
    lf_body = summarise(lf).body
    # same structure; sizes count the octets actually stored
    assert re.sub(rb" \d+", b"", crlf_body) == re.sub(rb" \d+", b"", lf_body)
    assert lf_body != crlf_body


def test_boundary_in_header_block_and_transport_padding() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b   \r\nContent-Type: text/plain\r\n--b\r\n\r\nsecond\r\n--b--"
    )
    tree = mime.parse(raw)
    first, second = tree.children
    assert first.header(raw) == b"Content-Type: text/plain" and first.size == 0
    assert second.body(raw) == b"second"


def test_deep_nesting_is_cut_off_without_error() -> None:
    depth = 300
    raw = b"Content-Type: message/rfc822\r\n\r\n" * depth + b"Subject: bottom\r\n\r\nend\r\n"
    s = summarise(raw)
    assert s.bodystructure.count(b'"message" "rfc822"') == mime.MAX_DEPTH + 1
    parse_value(s.bodystructure)
    tree = mime.parse(raw)
    assert section_bytes(raw, tree, (1,) * 50, "HEADER") == b"Content-Type: message/rfc822\r\n\r\n"
    multi = b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n' * depth
    parse_value(summarise(multi).bodystructure)


PIECES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b'Content-Type: multipart/digest; boundary="c"\r\n',
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: text/plain; charset*0*=utf-8''%C3; charset*1*=%A9\r\n",
        b'Content-Disposition: attachment; filename="a\\"b"; (c\r\n',
        b"Mime-Version: 1.0\r\n",
        b'From: "x" <a@b>, (y) c@d, g: e@f;\r\n',
        b"To: <@r:@@\r\n",
        b"Subject: \xff\x00\t\r\n",
        b"\r\n",
        b"\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"--c \r\n",
        b" folded\r\n",
        b"body line\r\n",
        b"\r",
        b"(",
        b'"',
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=40))
def test_malformed_input_never_raises_and_output_stays_well_formed(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    s = summarise(raw)
    for wire in (s.envelope, s.body, s.bodystructure):
        assert isinstance(parse_value(wire), list)
    tree = mime.parse(raw)
    assert bodystructure(raw, tree) == s.bodystructure
    for path in [(), (1,), (1, 1), (2, 1, 1)]:
        for kind in ("", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            assert isinstance(section_bytes(raw, tree, path, kind, ("to",)), bytes)  # type: ignore[arg-type]
