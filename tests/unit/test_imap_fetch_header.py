"""FETCH of a message's header alone (BODY[HEADER], BODY[HEADER.FIELDS ...], RFC822.HEADER)
reads the header block stored with the message's summary, not the message: the answer is the
same bytes as from the whole message, whatever its line ends."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from imap_sessions import Wire, alice_in_inbox, run_line

from postroom.proto.imap.grammar_fetch import FetchAttr, FetchBody, Section
from postroom.proto.imap.mime import header_section, parse
from postroom.proto.imap.structure import section_bytes
from postroom.services.imap import messages
from postroom.storage.api import Store
from postroom.storage.summary import header_block

PREFIX = b"Return-Path: <a@example.test>\r\nReceived: from x by y; 1 Jan 2024 00:00 +0000\r\n"
KINDS = (("HEADER", ()), ("HEADER.FIELDS", ("Subject", "To")), ("HEADER.FIELDS.NOT", ("Subject",)))

line_end = st.sampled_from([b"\r\n", b"\n"])
field = st.tuples(
    st.sampled_from([b"Subject", b"To", b"From", b"X-Note"]),
    st.text("ab -", max_size=8).map(str.encode),
    line_end,
    st.booleans(),  # folded onto a second line
)
body_line = st.tuples(st.text("xy ", max_size=6).map(str.encode), line_end)


@st.composite
def raw_messages(draw: st.DrawFn) -> bytes:
    raw = b""
    for name, value, end, folded in draw(st.lists(field, max_size=5)):
        raw += name + b": " + value + end + (b" more" + end if folded else b"")
    if draw(st.booleans()):
        raw += draw(line_end)  # the empty line before the body
    for text, end in draw(st.lists(body_line, max_size=5)):
        raw += text + end
    return raw


def _answer(message: bytes, kind: str, fields: tuple[str, ...]) -> bytes:
    return section_bytes(message, parse(message), (), kind, fields)  # type: ignore[arg-type]


@given(raw_messages())
def test_the_stored_header_block_gives_the_same_answer_as_the_message(raw: bytes) -> None:
    message = PREFIX + raw
    block = PREFIX + header_block(raw)  # what the store keeps, prefix in front
    for kind, fields in KINDS:
        assert _answer(block, kind, fields) == _answer(message, kind, fields)
    # BODY[HEADER] is cut without parsing the fields: the same bytes.
    assert header_section(block) == header_section(message) == _answer(message, "HEADER", ())


def test_header_items_alone_read_the_header_block_and_others_the_message() -> None:
    def content(*items: FetchAttr | FetchBody) -> object:
        return messages._fetch_plan(tuple(items), False, False).content

    header = FetchBody(Section((), "HEADER"), peek=True)
    fields = FetchBody(Section((), "HEADER.FIELDS", ("Subject",)), peek=True, partial=(0, 5))
    assert content(header) == "header"
    assert content(fields, FetchAttr("RFC822.HEADER"), FetchAttr("FLAGS")) == "header"
    assert content(header, FetchBody(Section((), "TEXT"))) is True
    assert content(FetchBody(Section((1,), "HEADER"))) is True  # a part's: inside the body
    assert content(header, FetchAttr("RFC822")) is True
    assert content(FetchAttr("ENVELOPE")) is False


def test_fetch_of_headers_gives_the_bytes_of_the_whole_message(store: Store) -> None:
    crlf = b"Subject: one\r\nTo: b@example.test\r\n\r\nbody\r\n\r\nmore\r\n"
    mixed = b"Subject: two\nX-Note: a\r\n\nbody\r\n\r\nTo: not@example.test\r\n"
    no_body = b"Subject: three\r\nTo: c@example.test\r\n"
    header = "BODY.PEEK[HEADER] BODY.PEEK[HEADER.FIELDS (To)] RFC822.HEADER"

    async def scenario() -> list[tuple[bytes, bytes]]:
        wire = Wire()
        session = await alice_in_inbox(store, wire)
        for raw in (crlf, mixed, no_body):
            await run_line(session, f"c APPEND INBOX {{{len(raw)}+}}\r\n{raw.decode()}")
        answers = []
        for seq in (3, 4, 5):
            wire.out = b""
            await run_line(session, f"d FETCH {seq} ({header})")
            alone = wire.out
            wire.out = b""
            await run_line(session, f"e FETCH {seq} ({header} BODY.PEEK[TEXT])")
            answers.append((alone, wire.out))
        session.close()
        return answers

    answers = asyncio.run(scenario())
    for raw, (alone, with_text) in zip((crlf, mixed, no_body), answers, strict=True):
        text = section_bytes(raw, parse(raw), (), "TEXT")
        text_item = b" BODY[TEXT] {%d}\r\n%s" % (len(text), text)
        assert alone.startswith(b"* ") and with_text.replace(text_item, b"") == alone.replace(
            b"d OK", b"e OK"
        )
        assert b"BODY[HEADER] {" in alone and b"RFC822.HEADER {" in alone
    assert b"not@example.test" not in answers[1][0]  # the mixed message's header ends early
