"""The milter codec: packets both ways, negotiation, hostile replies, message edits."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.proto.milter import codec, edit
from postroom.proto.milter.codec import MilterProtocolError


def test_command_packets_have_length_command_and_nul_strings() -> None:
    assert codec.helo("client.example") == b"\x00\x00\x00\x10Hclient.example\x00"
    assert codec.mail("a@b", ["SIZE=10"]) == struct.pack(">I", 15) + b"M<a@b>\x00SIZE=10\x00"
    assert codec.connect("unknown", "192.0.2.1", 2525, "4") == (
        struct.pack(">I", 22) + b"Cunknown\x004" + struct.pack(">H", 2525) + b"192.0.2.1\x00"
    )
    assert codec.macro(codec.C_MAIL, [("i", "Q1"), ("{auth_authen}", "alice")]) == (
        struct.pack(">I", 27) + b"DMi\x00Q1\x00{auth_authen}\x00alice\x00"
    )
    assert codec.optneg() == b"\x00\x00\x00\x0dO" + struct.pack(
        ">III", 6, codec.ACTIONS_ALL, codec.PROTOCOL_OFFERED
    )
    assert codec.abort() == b"\x00\x00\x00\x01A"
    assert codec.quit_new_connection() == b"\x00\x00\x00\x01K"
    assert codec.unknown("XFOO") == b"\x00\x00\x00\x06UXFOO\x00"
    with pytest.raises(ValueError):
        codec.body(b"x" * 65536)


def test_reader_splits_byte_at_a_time_and_refuses_bad_lengths() -> None:
    stream = codec.packet(b"c") + codec.packet(b"h", b"X-A\x00b\x00")
    reader = codec.PacketReader()
    got = []
    for octet in stream:
        reader.feed(bytes([octet]))
        while (p := reader.next_packet()) is not None:
            got.append(p)
    assert got == [(b"c", b""), (b"h", b"X-A\x00b\x00")]
    for length in (0, codec.MAX_PACKET + 1, 0xFFFFFFFF):
        bad = codec.PacketReader()
        bad.feed(struct.pack(">I", length))
        with pytest.raises(MilterProtocolError):
            bad.next_packet()


def test_every_reply_parses() -> None:
    p = codec.parse_reply
    assert p(b"a", b"") == codec.Verdict("accept")
    assert p(b"s", b"") == codec.Verdict("skip")
    assert p(b"p", b"") == codec.Progress()
    assert p(b"h", b"X-Spam\x00Yes\x00") == codec.AddHeader("X-Spam", "Yes")
    assert p(b"i", struct.pack(">I", 0) + b"X-First\x00v\x00") == codec.InsertHeader(
        0, "X-First", "v"
    )
    assert p(b"m", struct.pack(">I", 2) + b"Subject\x00\x00") == codec.ChangeHeader(
        2, "Subject", ""
    )
    assert p(b"b", b"new body\r\n") == codec.ReplaceBody(b"new body\r\n")
    assert p(b"e", b"<x@y>\x00SIZE=1\x00") == codec.ChangeFrom("x@y", ("SIZE=1",))
    assert p(b"+", b"<r@y>\x00") == codec.AddRecipient("r@y", ())
    assert p(b"2", b"<r@y>\x00NOTIFY=NEVER\x00") == codec.AddRecipient("r@y", ("NOTIFY=NEVER",))
    assert p(b"-", b"<r@y>\x00") == codec.DeleteRecipient("r@y")
    assert p(b"q", b"spammy\x00") == codec.Quarantine("spammy")
    assert p(b"y", b"550 5.7.1 go away\x00") == codec.ReplyCode(550, "5.7.1", ("go away",))
    assert p(b"y", b"451-4.7.1 first\r\n451 4.7.1 second\x00") == codec.ReplyCode(
        451, "4.7.1", ("first", "second")
    )
    assert p(b"y", b"554 no enhanced code\x00") == codec.ReplyCode(554, None, ("no enhanced code",))


@pytest.mark.parametrize(
    ("command", "data"),
    [
        (b"y", b"250 2.0.0 ok\x00"),  # only 4xx/5xx
        (b"y", b"55\x00"),
        (b"y", b"550-5.7.1 a\r\n451 4.7.1 b\x00"),  # codes differ
        (b"y", b"550 5.7.1 a\r\n550 5.7.1 b\x00"),  # first line must use '-'
        (b"y", b"550 5.7.1 bell\x07\x00"),
        (b"h", b"X-A\x00"),  # one string short
        (b"h", b"X A\x00v\x00"),  # space in a name
        (b"h", b"X-A\x00v"),  # no final NUL
        (b"m", b"\x00\x00"),  # no index
        (b"m", struct.pack(">I", 0xFFFFFFFF) + b"A\x00b\x00"),
        (b"+", b"<a@b>\r\nX-Injected: 1\x00"),
        (b"Z", b""),
    ],
)
def test_malformed_replies_are_protocol_errors(command: bytes, data: bytes) -> None:
    with pytest.raises(MilterProtocolError):
        codec.parse_reply(command, data)


def test_negotiation_checks_version_flags_and_reads_macro_lists() -> None:
    symlist = struct.pack(">I", codec.STAGE_ENVFROM) + b"{auth_authen} i\x00"
    reply = struct.pack(">III", 6, 0xFFFF, codec.P_NR_HDR | codec.P_NOHELO) + symlist
    n = codec.parse_optneg(b"O", reply)
    assert n.actions == codec.ACTIONS_ALL  # actions never offered are masked away
    assert not n.sends(codec.C_HELO) and n.sends(codec.C_MAIL)
    assert not n.replies(codec.C_HEADER) and n.replies(codec.C_EOH)
    assert n.symlists == {codec.STAGE_ENVFROM: ("{auth_authen}", "i")}
    for bad in (
        struct.pack(">III", 7, 0, 0),
        struct.pack(">III", 1, 0, 0),
        struct.pack(">III", 6, 0, codec.P_RCPT_REJ),  # not offered
        struct.pack(">II", 6, 0),
        struct.pack(">III", 6, 0, 0) + struct.pack(">I", 9) + b"i\x00",
        struct.pack(">III", 6, 0, 0) + struct.pack(">I", 1) + b"i",
    ):
        with pytest.raises(MilterProtocolError):
            codec.parse_optneg(b"O", bad)
    with pytest.raises(MilterProtocolError):
        codec.parse_optneg(b"c", struct.pack(">III", 6, 0, 0))


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=1, max_size=1), st.binary(max_size=300))
def test_fuzz_reply_parser_raises_only_protocol_errors(command: bytes, data: bytes) -> None:
    with contextlib.suppress(MilterProtocolError):
        codec.parse_reply(command, data)
    with contextlib.suppress(MilterProtocolError):
        codec.parse_optneg(command, data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_packet_stream_raises_only_protocol_errors(stream: bytes) -> None:
    reader = codec.PacketReader(max_packet=512)
    reader.feed(stream)
    try:
        while (p := reader.next_packet()) is not None:
            with contextlib.suppress(MilterProtocolError):
                codec.parse_reply(*p)
    except MilterProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"a",
                b"y",
                b"h",
                b"m",
                b"i",
                b"e",
                b"2",
                b"q",
            ]
        ),
        max_size=6,
    ),
    st.lists(st.text(max_size=30), max_size=3),
)
def test_fuzz_structured_replies(commands: list[bytes], strings: list[str]) -> None:
    body = b"".join(s.encode("utf-8", "surrogatepass") + b"\x00" for s in strings)
    for command in commands:
        for data in (body, struct.pack(">I", 1) + body):
            with contextlib.suppress(MilterProtocolError):
                codec.parse_reply(command, data)


MESSAGE = (
    b"Received: from x\r\n\tby y\r\nSubject: hello\r\nTo: a@b\r\nsubject: second\r\n\r\nbody\r\n"
)


def test_split_and_values_for_milters() -> None:
    fields, body = edit.split_message(MESSAGE)
    assert [f.name for f in fields] == ["Received", "Subject", "To", "subject"]
    assert body == b"body\r\n"
    assert edit.value_for_milter(fields[0].raw, False) == "from x\n\tby y"
    assert edit.value_for_milter(fields[1].raw, True) == " hello"


def test_apply_header_changes_in_order() -> None:
    fields, body = edit.split_message(MESSAGE)
    out = edit.apply(
        fields,
        body,
        [
            codec.AddHeader("X-Added", "1"),
            codec.InsertHeader(0, "X-Top", "t"),
            codec.ChangeHeader(2, "SUBJECT", "changed"),
            codec.ChangeHeader(1, "To", ""),
            codec.ChangeHeader(5, "X-New", "n\nmore"),
        ],
        b"new\nbody\n",
        False,
    )
    assert out == (
        b"X-Top: t\r\nReceived: from x\r\n\tby y\r\nSubject: hello\r\nsubject: changed\r\n"
        b"X-Added: 1\r\nX-New: n\r\n\tmore\r\n\r\nnew\r\nbody\r\n"
    )


def test_header_without_body_and_garbage_line() -> None:
    fields, body = edit.split_message(b"A: 1\r\nnot a header\r\n\r\nx")
    assert [f.name for f in fields] == ["A"] and body == b"not a header\r\n\r\nx"
    assert edit.split_message(b"A: 1\r\n") == ([edit.Field("A", b" 1")], b"")
