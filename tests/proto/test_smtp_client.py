"""Tests for the sans-I/O SMTP client engine (RFC 5321 + ESMTP extensions).

Server replies are scripted bytes, fed to the engine in one `receive_data` call and one byte at
a time (the `mode` fixture): both must give the same events. The client's output is asserted
byte for byte. The last tests wire the client to the real server engine in memory.
"""

from __future__ import annotations

import itertools

import pytest

from postroom.proto.sasl import CheckPassword
from postroom.proto.smtp import events as sev
from postroom.proto.smtp import replies
from postroom.proto.smtp.client import (
    AuthResult,
    Capabilities,
    CommandReply,
    DotStuffer,
    EnvelopeResult,
    Event,
    Greeting,
    MailResult,
    MessageResult,
    NeedData,
    ProtocolError,
    Recipient,
    RecipientResult,
    ServiceClosing,
    SmtpClient,
    StartTlsReady,
    classify,
)
from postroom.proto.smtp.params import MailParams, RcptParams
from postroom.proto.smtp.replies import Reply
from postroom.proto.smtp.server import ServerSettings, SmtpServer

ME = "relay.example"
GREETING = b"220 mx.example.test ESMTP\r\n"
CAPS = (
    b"250-mx.example.test Hello relay.example\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 1000\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-DSN\r\n"
    b"250-STARTTLS\r\n"
    b"250 AUTH PLAIN LOGIN\r\n"
)
PLAIN_CAPS = b"250-mx.example.test Hello relay.example\r\n250 ENHANCEDSTATUSCODES\r\n"
OK_MAIL = b"250 2.1.0 Ok\r\n"
OK_RCPT = b"250 2.1.5 Ok\r\n"
GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
QUEUED = b"250 2.0.0 Ok: queued as ABC\r\n"
NO_USER = b"550 5.1.1 No such user\r\n"


def r(code: int, enhanced: str | None, *lines: str) -> Reply:
    return Reply(code, enhanced, lines)


@pytest.fixture(params=["all", "bytes"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def feed(client: SmtpClient, data: bytes, mode: str) -> list[Event]:
    """Feed server bytes (whole or byte by byte) and collect events until NEED_DATA."""
    pieces = [data] if mode == "all" or not data else [data[i : i + 1] for i in range(len(data))]
    out: list[Event] = []
    for piece in pieces:
        client.receive_data(piece)
        while not isinstance(event := client.next_event(), NeedData):
            out.append(event)
    return out


def session(mode: str, caps: bytes = CAPS) -> SmtpClient:
    """A client past the greeting and a successful EHLO."""
    client = SmtpClient(ME)
    assert feed(client, GREETING, mode) == [Greeting(r(220, None, "mx.example.test ESMTP"))]
    client.ehlo()
    assert client.data_to_send() == b"EHLO relay.example\r\n"
    events = feed(client, caps, mode)
    assert len(events) == 1 and isinstance(events[0], Capabilities)
    assert client.idle
    return client


def recipient_replies(events: list[Event]) -> list[Reply]:
    return [e.reply for e in events if isinstance(e, RecipientResult)]


# --- replies and capabilities ----------------------------------------------------------------


def test_greeting_multiline_and_enhanced_codes_are_parsed(mode: str) -> None:
    client = SmtpClient(ME)
    events = feed(client, b"220-mx.example.test ESMTP\r\n220-second line\r\n220 third\r\n", mode)
    assert events == [Greeting(r(220, None, "mx.example.test ESMTP", "second line", "third"))]
    client.noop()
    assert client.data_to_send() == b"NOOP\r\n"
    events = feed(client, b"250-2.0.0 one\r\n250 2.0.0 two\r\n", mode)
    assert events == [CommandReply("NOOP", r(250, "2.0.0", "one", "two"))]


def test_reply_without_text_and_mismatched_enhanced_class(mode: str) -> None:
    client = SmtpClient(ME)
    feed(client, b"220\r\n", mode)
    client.noop()
    # The enhanced code's class must match the reply's first digit (RFC 3463 §2).
    assert feed(client, b"250 5.0.0 odd\r\n", mode) == [
        CommandReply("NOOP", r(250, None, "5.0.0 odd"))
    ]


def test_ehlo_capabilities(mode: str) -> None:
    client = SmtpClient(ME)
    feed(client, GREETING, mode)
    client.ehlo()
    client.data_to_send()
    [event] = feed(client, CAPS, mode)
    assert isinstance(event, Capabilities)
    assert event.extensions == {
        "PIPELINING": "",
        "SIZE": "1000",
        "8BITMIME": "",
        "SMTPUTF8": "",
        "ENHANCEDSTATUSCODES": "",
        "DSN": "",
        "STARTTLS": "",
        "AUTH": "PLAIN LOGIN",
    }
    assert event.reply.lines[0] == "mx.example.test Hello relay.example"
    assert client.pipelining and client.size_limit == 1000
    assert client.auth_mechanisms == ("PLAIN", "LOGIN")


def test_legacy_auth_equals_form_and_size_zero(mode: str) -> None:
    client = session(mode, b"250-mx Hello\r\n250-AUTH=LOGIN\r\n250-size 0\r\n250 chunking\r\n")
    assert client.auth_mechanisms == ("LOGIN",)
    assert client.size_limit is None  # RFC 1870 §4: 0 means no fixed limit
    assert "CHUNKING" in client.extensions


def test_ehlo_refused_then_helo(mode: str) -> None:
    client = SmtpClient(ME)
    feed(client, GREETING, mode)
    client.ehlo()
    client.data_to_send()
    reply = r(502, "5.5.1", "Command not implemented")
    assert feed(client, b"502 5.5.1 Command not implemented\r\n", mode) == [
        CommandReply("EHLO", reply)
    ]
    client.helo()
    assert client.data_to_send() == b"HELO relay.example\r\n"
    assert feed(client, b"250 mx.example.test\r\n", mode) == [
        Capabilities(r(250, None, "mx.example.test"), {})
    ]
    assert client.greeted and not client.pipelining


# --- envelopes -------------------------------------------------------------------------------


def test_pipelined_envelope_one_refused_one_accepted(mode: str) -> None:
    client = session(mode)
    client.send_envelope(
        "a@example.org",
        [Recipient("nobody@example.test"), Recipient("b@example.test")],
        MailParams(size=300, body="8BITMIME"),
    )
    # RFC 2920: MAIL, every RCPT and DATA in one write.
    assert client.data_to_send() == (
        b"MAIL FROM:<a@example.org> SIZE=300 BODY=8BITMIME\r\n"
        b"RCPT TO:<nobody@example.test>\r\n"
        b"RCPT TO:<b@example.test>\r\n"
        b"DATA\r\n"
    )
    events = feed(client, OK_MAIL + NO_USER + OK_RCPT + GO_AHEAD, mode)
    refused = r(550, "5.1.1", "No such user")
    accepted = r(250, "2.1.5", "Ok")
    go = r(354, None, "End data with <CR><LF>.<CR><LF>")
    assert events == [
        MailResult(r(250, "2.1.0", "Ok")),
        RecipientResult(0, refused),
        RecipientResult(1, accepted),
        EnvelopeResult(r(250, "2.1.0", "Ok"), (refused, accepted), go, True),
    ]
    result = events[-1]
    assert isinstance(result, EnvelopeResult)
    assert result.accepted == (1,) and result.failure is None
    assert client.data_to_send() == b""
    client.send_message(b"Subject: hi\r\n\r\nbody\r\n")
    assert client.data_to_send() == b"Subject: hi\r\n\r\nbody\r\n.\r\n"
    assert feed(client, QUEUED, mode) == [MessageResult(r(250, "2.0.0", "Ok: queued as ABC"))]
    assert client.idle
    client.quit()
    assert client.data_to_send() == b"QUIT\r\n"
    assert feed(client, b"221 2.0.0 Bye\r\n", mode) == [
        CommandReply("QUIT", r(221, "2.0.0", "Bye"))
    ]
    assert client.closed


def test_envelope_without_pipelining_goes_one_command_at_a_time(mode: str) -> None:
    client = session(mode, PLAIN_CAPS)
    client.send_envelope("", [Recipient("b@example.test"), Recipient("c@example.test")])
    assert client.data_to_send() == b"MAIL FROM:<>\r\n"
    feed(client, OK_MAIL, mode)
    assert client.data_to_send() == b"RCPT TO:<b@example.test>\r\n"
    feed(client, OK_RCPT, mode)
    assert client.data_to_send() == b"RCPT TO:<c@example.test>\r\n"
    feed(client, b"452 4.2.2 Mailbox full\r\n", mode)
    assert client.data_to_send() == b"DATA\r\n"
    [result] = feed(client, GO_AHEAD, mode)
    assert isinstance(result, EnvelopeResult) and result.ready
    assert [classify(x) for x in result.recipients] == ["ok", "temporary"]


def test_dsn_and_smtputf8_parameters_only_when_advertised(mode: str) -> None:
    params = MailParams(size=10, body="7BIT", ret="HDRS", envid="id+1=x y")
    rcpt = Recipient("b@example.test", ("SUCCESS", "FAILURE"), "rfc822;b+x@example.test")
    client = session(mode)
    client.send_envelope("a@example.org", [rcpt], params)
    assert client.data_to_send() == (
        b"MAIL FROM:<a@example.org> SIZE=10 BODY=7BIT RET=HDRS ENVID=id+2B1+3Dx+20y\r\n"
        b"RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.test\r\n"
        b"DATA\r\n"
    )
    bare = session(mode, PLAIN_CAPS)
    bare.send_envelope("a@example.org", [rcpt], params)
    assert bare.data_to_send() == b"MAIL FROM:<a@example.org>\r\n"


def test_non_ascii_orcpt_is_sent_as_utf8_addr_xtext(mode: str) -> None:
    client = session(mode)
    client.send_envelope("a@example.org", [Recipient("b@example.test", None, "rfc822;j+ö@x.test")])
    assert b"ORCPT=utf-8;j\\x{2B}\\x{F6}@x.test\r\n" in client.data_to_send()


def test_message_larger_than_peer_size_fails_without_a_command(mode: str) -> None:
    client = session(mode)
    client.send_envelope("a@example.org", [Recipient("b@example.test")], MailParams(size=1001))
    assert client.data_to_send() == b""
    too_big = r(552, "5.3.4", "Message size exceeds the remote limit of 1000 octets")
    events = feed(client, b"", mode)
    assert events == [
        MailResult(too_big),
        RecipientResult(0, too_big),
        EnvelopeResult(too_big, (too_big,), None, False),
    ]
    assert classify(too_big) == "permanent" and client.idle


def test_smtputf8_message_to_a_peer_without_smtputf8_fails_5_6_7(mode: str) -> None:
    client = session(mode, PLAIN_CAPS)
    client.send_envelope("ä@example.org", [Recipient("b@example.test")], MailParams(smtputf8=True))
    assert client.data_to_send() == b""
    [mail, _, result] = feed(client, b"", mode)
    assert isinstance(mail, MailResult) and mail.reply.enhanced == "5.6.7"
    assert isinstance(result, EnvelopeResult) and not result.ready


def test_eight_bit_to_a_peer_without_8bitmime_must_be_downgraded_first(mode: str) -> None:
    client = session(mode, PLAIN_CAPS)
    with pytest.raises(ValueError, match="7 bit"):
        client.send_envelope("a@x.test", [Recipient("b@x.test")], MailParams(body="8BITMIME"))


def test_size_refused_at_mail_decides_every_recipient_and_sends_no_content(mode: str) -> None:
    client = session(mode)
    client.send_envelope("a@example.org", [Recipient("b@x.test"), Recipient("c@x.test")])
    client.data_to_send()
    events = feed(
        client,
        b"552 5.3.4 Message too big\r\n503 5.5.1 Need MAIL\r\n503 5.5.1 Need MAIL\r\n"
        b"503 5.5.1 Need MAIL\r\n",
        mode,
    )
    too_big = r(552, "5.3.4", "Message too big")
    assert recipient_replies(events) == [too_big, too_big]
    result = events[-1]
    assert isinstance(result, EnvelopeResult) and not result.ready
    assert result.failure == too_big
    assert client.data_to_send() == b""  # no RSET: there is no transaction to end
    assert client.idle


def test_data_refused_after_pipelined_rcpts_sends_no_content_and_resets(mode: str) -> None:
    client = session(mode)
    client.send_envelope("a@example.org", [Recipient("b@x.test")])
    client.data_to_send()
    events = feed(client, OK_MAIL + OK_RCPT + b"451 4.3.0 Try later\r\n", mode)
    assert events[-1] == RecipientResult(0, r(250, "2.1.5", "Ok"))
    assert client.data_to_send() == b"RSET\r\n"
    [result] = feed(client, b"250 2.0.0 Reset\r\n", mode)
    assert isinstance(result, EnvelopeResult) and not result.ready
    assert result.failure == r(451, "4.3.0", "Try later")
    with pytest.raises(RuntimeError):
        client.send_message(b"x")


def test_pipelined_354_after_every_rcpt_failed_is_answered_with_a_dot(mode: str) -> None:
    client = session(mode)
    client.send_envelope("a@example.org", [Recipient("b@x.test")])
    client.data_to_send()
    feed(client, OK_MAIL + NO_USER + GO_AHEAD, mode)
    # RFC 2920 §3.1: the 354 must be answered by ending the (empty) content at once.
    assert client.data_to_send() == b".\r\n"
    [result] = feed(client, b"554 5.5.1 No valid recipients\r\n", mode)
    assert isinstance(result, EnvelopeResult)
    assert not result.ready and result.accepted == ()
    assert client.idle


def test_unpipelined_without_accepted_recipient_sends_no_data_but_rset(mode: str) -> None:
    client = session(mode, PLAIN_CAPS)
    client.send_envelope("a@example.org", [Recipient("b@x.test")])
    client.data_to_send()
    feed(client, OK_MAIL, mode)
    client.data_to_send()
    feed(client, NO_USER, mode)
    assert client.data_to_send() == b"RSET\r\n"
    [result] = feed(client, b"250 2.0.0 Ok\r\n", mode)
    assert isinstance(result, EnvelopeResult) and result.data is None and not result.ready


def test_refused_mail_without_pipelining_sends_no_rcpt(mode: str) -> None:
    client = session(mode, PLAIN_CAPS)
    client.send_envelope("a@example.org", [Recipient("b@x.test"), Recipient("c@x.test")])
    client.data_to_send()
    events = feed(client, b"451 4.7.1 Greylisted\r\n", mode)
    assert client.data_to_send() == b""
    assert [classify(x) for x in recipient_replies(events)] == ["temporary", "temporary"]
    assert isinstance(events[-1], EnvelopeResult) and client.idle


# --- message content -------------------------------------------------------------------------

STUFFING_CASES = [
    (b"", b".\r\n"),
    (b".", b"..\r\n.\r\n"),
    (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b".leading\r\n..two\r\n", b"..leading\r\n...two\r\n.\r\n"),
    # Bare LF and bare CR become CRLF: no LF "." LF smuggling can survive the relay.
    (b"a\n.\nb\n", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"x\r\r\n\n\r", b"x\r\n\r\n\r\n\r\n.\r\n"),
    (b"end\r\n.\r\n", b"end\r\n..\r\n.\r\n"),
]


@pytest.mark.parametrize(("content", "wire"), STUFFING_CASES)
def test_dot_stuffing_and_line_ending_normalisation(content: bytes, wire: bytes) -> None:
    stuffer = DotStuffer()
    assert stuffer.feed(content) + stuffer.finish() == wire
    # Any cut into three pieces gives the same wire bytes.
    for i, j in itertools.combinations_with_replacement(range(len(content) + 1), 2):
        stuffer = DotStuffer()
        pieces = (content[:i], content[i:j], content[j:])
        assert b"".join(stuffer.feed(p) for p in pieces) + stuffer.finish() == wire


def test_streamed_message_content(mode: str) -> None:
    client = session(mode)
    client.send_envelope("a@example.org", [Recipient("b@x.test")])
    client.data_to_send()
    feed(client, OK_MAIL + OK_RCPT + GO_AHEAD, mode)
    client.send_message_data(b"line\r")
    client.send_message_data(b"\n.dot\n")
    client.end_message()
    assert client.data_to_send() == b"line\r\n..dot\r\n.\r\n"


# --- AUTH and STARTTLS -----------------------------------------------------------------------


def test_auth_plain(mode: str) -> None:
    client = session(mode)
    client.auth_plain("user", "pässword")
    assert client.data_to_send() == b"AUTH PLAIN AHVzZXIAcMOkc3N3b3Jk\r\n"
    ok = r(235, "2.7.0", "Authentication successful")
    assert feed(client, b"235 2.7.0 Authentication successful\r\n", mode) == [AuthResult(ok)]
    assert client.authenticated


def test_auth_login(mode: str) -> None:
    client = session(mode)
    client.auth_login("user", "secret")
    assert client.data_to_send() == b"AUTH LOGIN\r\n"
    assert feed(client, b"334 VXNlcm5hbWU6\r\n", mode) == []
    assert client.data_to_send() == b"dXNlcg==\r\n"
    feed(client, b"334 UGFzc3dvcmQ6\r\n", mode)
    assert client.data_to_send() == b"c2VjcmV0\r\n"
    [result] = feed(client, b"535 5.7.8 Authentication credentials invalid\r\n", mode)
    assert isinstance(result, AuthResult) and classify(result.reply) == "permanent"
    assert not client.authenticated


def test_auth_unexpected_extra_challenge_is_cancelled(mode: str) -> None:
    client = session(mode)
    client.auth_plain("user", "pw")
    client.data_to_send()
    feed(client, b"334 \r\n", mode)
    assert client.data_to_send() == b"*\r\n"  # RFC 4954 §4: cancel
    [result] = feed(client, b"501 5.0.0 Cancelled\r\n", mode)
    assert isinstance(result, AuthResult)


def test_starttls_resets_capabilities_and_drops_injected_plaintext(mode: str) -> None:
    client = session(mode)
    client.starttls()
    assert client.data_to_send() == b"STARTTLS\r\n"
    # CVE-2011-0411 in reverse: a reply sent with the 220 must not count after the handshake.
    events = feed(client, b"220 2.0.0 Ready to start TLS\r\n250 2.0.0 injected\r\n", mode)
    assert events == [StartTlsReady(r(220, "2.0.0", "Ready to start TLS"))]
    with pytest.raises(RuntimeError):
        client.ehlo()
    client.tls_established()
    # RFC 3207 §4.2: everything learnt before TLS is forgotten; EHLO again.
    assert client.extensions == {} and not client.greeted and client.tls_active
    with pytest.raises(RuntimeError):
        client.send_envelope("a@x.test", [Recipient("b@x.test")])
    client.ehlo()
    assert client.data_to_send() == b"EHLO relay.example\r\n"
    [caps] = feed(client, b"250-mx Hello\r\n250 AUTH PLAIN\r\n", mode)
    assert caps == Capabilities(r(250, None, "mx Hello", "AUTH PLAIN"), {"AUTH": "PLAIN"})
    with pytest.raises(RuntimeError, match="already"):
        client.starttls()


def test_starttls_refused(mode: str) -> None:
    client = session(mode)
    client.starttls()
    client.data_to_send()
    reply = r(454, "4.7.0", "TLS not available")
    assert feed(client, b"454 4.7.0 TLS not available\r\n", mode) == [
        CommandReply("STARTTLS", reply)
    ]
    assert client.idle and not client.tls_active


# --- the session ends ------------------------------------------------------------------------


def test_421_mid_pipeline_is_temporary_for_everything_left(mode: str) -> None:
    client = session(mode)
    rcpts = [Recipient("b@x.test"), Recipient("c@x.test"), Recipient("d@x.test")]
    client.send_envelope("a@example.org", rcpts)
    client.data_to_send()
    closing = r(421, "4.3.2", "mx shutting down")
    events = feed(client, OK_MAIL + OK_RCPT + b"421 4.3.2 mx shutting down\r\n", mode)
    assert events == [
        MailResult(r(250, "2.1.0", "Ok")),
        RecipientResult(0, r(250, "2.1.5", "Ok")),
        RecipientResult(1, closing),
        RecipientResult(2, closing),
        EnvelopeResult(
            r(250, "2.1.0", "Ok"), (r(250, "2.1.5", "Ok"), closing, closing), closing, False
        ),
        ServiceClosing(closing),
    ]
    assert client.closed and client.data_to_send() == b""
    assert feed(client, b"250 late\r\n", mode) == []


def test_421_without_pipelining_stops_the_sequence(mode: str) -> None:
    client = session(mode, PLAIN_CAPS)
    client.send_envelope("a@example.org", [Recipient("b@x.test"), Recipient("c@x.test")])
    client.data_to_send()
    feed(client, OK_MAIL, mode)
    client.data_to_send()
    events = feed(client, b"421 4.4.2 Timeout\r\n", mode)
    assert client.data_to_send() == b""  # neither the next RCPT nor RSET is written
    assert [classify(x) for x in recipient_replies(events)] == ["temporary", "temporary"]
    assert isinstance(events[-1], ServiceClosing) and client.closed


def test_421_while_the_message_is_not_sent_yet(mode: str) -> None:
    client = session(mode)
    client.send_envelope("a@example.org", [Recipient("b@x.test")])
    client.data_to_send()
    feed(client, OK_MAIL + OK_RCPT + GO_AHEAD, mode)
    events = feed(client, b"421 4.4.2 Timeout\r\n", mode)
    assert events == [
        MessageResult(r(421, "4.4.2", "Timeout")),
        ServiceClosing(r(421, "4.4.2", "Timeout")),
    ]
    with pytest.raises(RuntimeError):
        client.send_message(b"x")


def test_unsolicited_421_while_idle_and_421_greeting(mode: str) -> None:
    client = session(mode)
    assert feed(client, b"421 4.4.2 Idle timeout\r\n", mode) == [
        ServiceClosing(r(421, "4.4.2", "Idle timeout"))
    ]
    fresh = SmtpClient(ME)
    busy = r(421, None, "Too busy")
    assert feed(fresh, b"421 Too busy\r\n", mode) == [Greeting(busy), ServiceClosing(busy)]


def test_connection_closed_while_waiting_for_the_final_reply(mode: str) -> None:
    client = session(mode)
    client.send_envelope("a@example.org", [Recipient("b@x.test")])
    feed(client, OK_MAIL + OK_RCPT + GO_AHEAD, mode)
    client.send_message(b"hi\r\n")
    client.connection_closed()
    events = feed(client, b"", mode)
    assert [type(e) for e in events] == [MessageResult, ServiceClosing]
    assert isinstance(events[0], MessageResult) and classify(events[0].reply) == "temporary"


@pytest.mark.parametrize(
    "garbage",
    [
        b"hello\r\n",
        b"250\tOk\r\n",
        b"2500 Ok\r\n",
        b"650 Ok\r\n",
        b"250-one\r\n251 two\r\n",
        b"250 nul\0\r\n",
        b"250-" + b"x" * 70_000,
        b"250-x\r\n" * 1001,
    ],
)
def test_malformed_reply_is_a_protocol_error(mode: str, garbage: bytes) -> None:
    client = session(mode)
    client.send_envelope("a@example.org", [Recipient("b@x.test")])
    events = feed(client, garbage, "all" if len(garbage) > 1000 else mode)
    assert isinstance(events[-1], ProtocolError)
    [recipient] = recipient_replies(events)
    assert recipient.code == 421
    assert client.closed


def test_unexpected_reply_is_a_protocol_error(mode: str) -> None:
    client = session(mode)
    [event] = feed(client, b"250 2.0.0 who asked\r\n", mode)
    assert event == ProtocolError("unexpected reply 250")


def test_misuse_raises() -> None:
    with pytest.raises(ValueError):
        SmtpClient("bad host")
    client = SmtpClient(ME)
    with pytest.raises(RuntimeError):
        client.ehlo()  # before the greeting
    client.receive_data(GREETING)
    client.next_event()
    with pytest.raises(RuntimeError):
        client.send_envelope("a@x.test", [Recipient("b@x.test")])  # before EHLO
    client.helo()
    with pytest.raises(RuntimeError):
        client.rset()  # HELO still in flight
    client.receive_data(b"250 ok\r\n")
    client.next_event()
    with pytest.raises(ValueError):
        client.send_envelope("a@x.test", [Recipient("b@x.test>\r\nRCPT TO:<evil@x.test")])
    with pytest.raises(ValueError):
        client.send_envelope("a@x.test", [])


def test_classify() -> None:
    assert classify(r(250, "2.0.0", "Ok")) == "ok"
    assert classify(r(354, None, "Go")) == "ok"
    assert classify(r(421, "4.3.2", "Bye")) == "temporary"
    assert classify(r(452, "4.5.3", "Too many")) == "temporary"
    assert classify(r(550, "5.1.1", "No")) == "permanent"


# --- end to end against the real server engine -----------------------------------------------


class Wire:
    """Client and server engines joined in memory; the server driver accepts everything."""

    def __init__(self, settings: ServerSettings) -> None:
        self.server = SmtpServer(settings)
        self.client = SmtpClient(ME)
        self.server_events: list[sev.Event] = []
        self.content = bytearray()
        self.messages: list[bytes] = []
        self.server.greet()

    def run(self) -> list[Event]:
        """Shuttle bytes both ways until both engines are quiet; return the client's events."""
        events: list[Event] = []
        for _ in range(1000):
            moved = False
            to_client = self.server.data_to_send()
            if to_client:
                moved = True
                self.client.receive_data(to_client)
            while not isinstance(event := self.client.next_event(), NeedData):
                events.append(event)
            to_server = self.client.data_to_send()
            if to_server:
                moved = True
                self.server.receive_data(to_server)
            self._serve()
            if not moved:
                return events
        raise AssertionError("the engines never went quiet")

    def _serve(self) -> None:
        while True:
            event = self.server.next_event()
            if isinstance(event, (sev.NeedData, sev.Paused)):
                return
            self.server_events.append(event)
            if isinstance(event, (sev.MailFrom, sev.RcptTo)):
                self.server.accept()
            elif isinstance(event, sev.MessageData):
                self.content += event.data
            elif isinstance(event, sev.MessageComplete):
                self.messages.append(bytes(self.content))
                self.content.clear()
                self.server.accept(replies.queued(f"Q{len(self.messages)}"))
            elif isinstance(event, sev.Verify):
                need = event.need
                assert isinstance(need, CheckPassword)
                self.server.answered(need.password == "secret")


MESSAGE = (
    b"From: a@example.org\r\nTo: b@example.test, c@example.test\r\nSubject: dots\r\n\r\n"
    b".starts with a dot\r\n..two dots\r\n.\r\nnot the end\r\n\xc3\xa4 8bit\r\n"
)


def test_end_to_end_delivery_with_two_recipients() -> None:
    wire = Wire(ServerSettings(hostname="mx.example.test"))
    client = wire.client
    [greeting] = wire.run()
    assert isinstance(greeting, Greeting) and greeting.reply.code == 220
    client.ehlo()
    [caps] = wire.run()
    assert isinstance(caps, Capabilities) and client.pipelining and "DSN" in caps.extensions
    client.send_envelope(
        "a@example.org",
        [
            Recipient("b@example.test", ("SUCCESS", "DELAY"), "rfc822;b+orig@example.test"),
            Recipient("c@example.test"),
        ],
        MailParams(size=len(MESSAGE), body="8BITMIME", ret="FULL", envid="env id=1"),
    )
    events = wire.run()
    result = events[-1]
    assert isinstance(result, EnvelopeResult) and result.ready and result.accepted == (0, 1)
    client.send_message(MESSAGE)
    [final] = wire.run()
    assert final == MessageResult(r(250, "2.0.0", "Ok: queued as Q1"))
    assert wire.messages == [MESSAGE]  # byte-identical after stuffing and unstuffing
    # The DSN parameters survive the xtext round trip.
    [mail] = [e for e in wire.server_events if isinstance(e, sev.MailFrom)]
    assert mail.params == MailParams(len(MESSAGE), "8BITMIME", False, "FULL", "env id=1")
    rcpts = [e for e in wire.server_events if isinstance(e, sev.RcptTo)]
    assert [e.params for e in rcpts] == [
        RcptParams(("SUCCESS", "DELAY"), "rfc822;b+orig@example.test"),
        RcptParams(),
    ]
    client.quit()
    [bye] = wire.run()
    assert bye == CommandReply("QUIT", r(221, "2.0.0", "Bye")) and client.closed
    assert wire.server.closed


def test_end_to_end_bare_line_endings_arrive_normalised() -> None:
    wire = Wire(ServerSettings(hostname="mx.example.test"))
    client = wire.client
    wire.run()
    client.ehlo()
    wire.run()
    client.send_envelope("a@example.org", [Recipient("b@example.test")])
    wire.run()
    client.send_message(b"Subject: x\n\nline\n.\nsmuggled\rend")
    [final] = wire.run()
    assert isinstance(final, MessageResult) and final.reply.code == 250
    assert wire.messages == [b"Subject: x\r\n\r\nline\r\n.\r\nsmuggled\r\nend\r\n"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_end_to_end_auth(mechanism: str) -> None:
    wire = Wire(ServerSettings(hostname="mx.example.test", allow_insecure_auth=True))
    client = wire.client
    wire.run()
    client.ehlo()
    wire.run()
    assert mechanism in client.auth_mechanisms
    login = client.auth_plain if mechanism == "PLAIN" else client.auth_login
    login("alice", "secret")
    [result] = wire.run()
    assert result == AuthResult(r(235, "2.7.0", "Authentication successful"))
    assert wire.server.identity == "alice" and client.authenticated
