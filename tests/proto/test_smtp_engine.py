"""Tests for the sans-I/O SMTP server engine (RFC 5321 + ESMTP extensions).

Every conversation runs twice (the `mode` fixture): with each client flight fed to the engine
in one `receive_data` call, and fed one byte at a time. In byte mode the driver also replays
the conversation all at once and checks that both produce the same reply bytes, the same
events and the same messages — the engine must not care how TCP cut the stream.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.proto import sasl
from postroom.proto.sasl.exchange import UNAVAILABLE
from postroom.proto.smtp import events as ev
from postroom.proto.smtp import replies
from postroom.proto.smtp.params import MailParams, RcptParams
from postroom.proto.smtp.replies import Reply
from postroom.proto.smtp.server import Phase, ServerSettings, SmtpServer

E = TypeVar("E")

HOST = "mx.example.test"
GREETING = b"220 mx.example.test ESMTP postroom\r\n"
EHLO = b"EHLO client.example\r\n"
MX = ServerSettings(hostname=HOST)
MX_TLS = ServerSettings(hostname=HOST, tls_available=True)
SUBMISSION = ServerSettings(hostname=HOST, tls_available=True, require_auth=True)

# The EHLO reply of a plaintext MX session without TLS configured.
EHLO_REPLY = (
    b"250-mx.example.test Hello client.example\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 52428800\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-CHUNKING\r\n"
    b"250-DSN\r\n"
    b"250-HELP\r\n"
    b"250 ETRN\r\n"
)


# --- the test driver --------------------------------------------------------------------------

# A flight is what the client sends before it waits for replies: fixed bytes, or a function of
# everything the server has sent so far (for challenge/response exchanges).
Flight = bytes | Callable[[bytes], bytes]


@dataclass
class Policy:
    """How the driver answers the engine's decision events (accept everything by default)."""

    refuse_senders: dict[str, Reply] = field(default_factory=dict)
    refuse_recipients: dict[str, Reply] = field(default_factory=dict)
    refuse_message: Reply | None = None
    refuse_etrn: dict[str, Reply] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    scram: dict[str, sasl.ScramCredentials] = field(default_factory=dict)


@dataclass(frozen=True)
class Parsed:
    """One (possibly multi-line) reply read back from the output."""

    code: int
    enhanced: str | None  # of the first line
    lines: tuple[str, ...]  # text after the code and the enhanced code

    @property
    def short(self) -> str:
        return f"{self.code} {self.enhanced}" if self.enhanced else str(self.code)


_REPLY_LINE = re.compile(rb"(\d{3})([ -])(.*)")
_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3}) (.*)")


def parse_replies(output: bytes) -> list[Parsed]:
    """Split wire output into replies; asserts the RFC 5321 §4.2 reply syntax on the way."""
    assert not output or output.endswith(b"\r\n"), output
    result: list[Parsed] = []
    code: int | None = None
    lines: list[bytes] = []
    for raw in output.split(b"\r\n")[:-1]:
        match = _REPLY_LINE.fullmatch(raw)
        assert match, f"malformed reply line {raw!r}"
        this_code = int(match.group(1))
        assert code is None or code == this_code, f"code changed inside a reply: {raw!r}"
        code = this_code
        lines.append(match.group(3))
        if match.group(2) == b" ":
            texts = [line.decode("utf-8") for line in lines]
            first = _ENHANCED.fullmatch(texts[0])
            enhanced = first.group(1) if first else None
            if enhanced:
                # RFC 2034 §4: the same enhanced code on every line of a multi-line reply.
                stripped = []
                for text in texts:
                    line_match = _ENHANCED.fullmatch(text)
                    assert line_match and line_match.group(1) == enhanced, texts
                    stripped.append(line_match.group(2))
                texts = stripped
            result.append(Parsed(this_code, enhanced, tuple(texts)))
            code = None
            lines = []
    assert code is None, "output ends inside a multi-line reply"
    return result


@dataclass
class Transcript:
    output: bytes
    events: list[ev.Event]  # consecutive MessageData merged into one
    messages: list[bytes]  # contents of the accepted messages
    engine: SmtpServer

    @property
    def replies(self) -> list[Parsed]:
        return parse_replies(self.output)

    @property
    def codes(self) -> list[str]:
        """Each reply as "code enhanced" ("250 2.1.0"), or just the code when it has none."""
        return [r.short for r in self.replies]

    def of_type(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def decisions(self) -> list[ev.Event]:
        return [e for e in self.events if not isinstance(e, ev.MessageData)]


def _answer(engine: SmtpServer, event: ev.Event, policy: Policy, state: _RunState) -> bool:
    """Answer one event; returns True when the event was StartTls (the handshake happened)."""
    if isinstance(event, ev.MailFrom):
        refusal = policy.refuse_senders.get(event.address)
        engine.accept() if refusal is None else engine.reject(refusal)
    elif isinstance(event, ev.RcptTo):
        refusal = policy.refuse_recipients.get(event.address)
        engine.accept() if refusal is None else engine.reject(refusal)
    elif isinstance(event, ev.Etrn):
        refusal = policy.refuse_etrn.get(event.node)
        engine.accept() if refusal is None else engine.reject(refusal)
    elif isinstance(event, ev.MessageData):
        state.current += event.data
    elif isinstance(event, ev.MessageComplete):
        assert event.size == len(state.current), "MessageComplete.size is the content size"
        if policy.refuse_message is not None:
            engine.reject(policy.refuse_message)
        else:
            state.messages.append(bytes(state.current))
            engine.accept(replies.queued(f"Q{len(state.messages)}"))
        state.current.clear()
    elif isinstance(event, ev.TransactionAborted):
        state.current.clear()
    elif isinstance(event, ev.Verify):
        need = event.need
        if isinstance(need, sasl.CheckPassword):
            engine.answered(policy.passwords.get(need.authcid) == need.password)
        else:
            engine.answered(policy.scram.get(need.authcid))
    elif isinstance(event, ev.StartTls):
        # The driver writes the 220 in plaintext, then performs the handshake.
        state.output += engine.data_to_send()
        engine.tls_started()
        return True
    return False


@dataclass
class _RunState:
    output: bytearray = field(default_factory=bytearray)
    events: list[ev.Event] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    current: bytearray = field(default_factory=bytearray)


def _drain(engine: SmtpServer, policy: Policy, state: _RunState) -> bool:
    """Pull events until NEED_DATA, answering decisions; True if a TLS handshake happened."""
    tls = False
    for _ in range(100_000):
        event = engine.next_event()
        if isinstance(event, ev.NeedData):
            state.output += engine.data_to_send()
            return tls
        # The driver always answers at once, so the engine is never left waiting.
        assert not isinstance(event, ev.Paused), "engine paused with the decision answered"
        assert isinstance(event, ev.Event), event
        if isinstance(event, ev.MessageData) and state.events:
            last = state.events[-1]
            if isinstance(last, ev.MessageData):
                state.events[-1] = ev.MessageData(last.data + event.data)
            else:
                state.events.append(event)
        else:
            state.events.append(event)
        tls = _answer(engine, event, policy, state) or tls
    raise AssertionError("engine never asked for more data")


def _play(
    flights: Sequence[Flight],
    mode: str,
    policy: Policy,
    server_settings: ServerSettings,
    tls_active: bool,
) -> Transcript:
    engine = SmtpServer(server_settings, tls_active=tls_active)
    engine.greet()
    state = _RunState()
    _drain(engine, policy, state)
    for flight in flights:
        data = flight(bytes(state.output)) if callable(flight) else flight
        pieces = [data] if mode == "all" else [data[i : i + 1] for i in range(len(data))]
        for piece in pieces:
            if engine.closed:
                break
            engine.receive_data(piece)
            if _drain(engine, policy, state):
                # The rest of this flight was plaintext sent before the handshake: the TLS
                # layer eats it (CVE-2011-0411). Fed all at once, the engine must drop it.
                break
    return Transcript(bytes(state.output), state.events, state.messages, engine)


def converse(
    flights: Flight | Sequence[Flight],
    mode: str,
    *,
    policy: Policy | None = None,
    server: ServerSettings = MX,
    tls_active: bool = False,
) -> Transcript:
    """Play a scripted client against a fresh engine and return what happened."""
    script = [flights] if isinstance(flights, bytes) or callable(flights) else list(flights)
    policy = policy or Policy()
    result = _play(script, mode, policy, server, tls_active)
    if mode == "bytes":
        whole = _play(script, "all", policy, server, tls_active)
        assert result.output == whole.output, "byte-at-a-time output differs from all-at-once"
        assert result.decisions == whole.decisions
        assert result.messages == whole.messages
    return result


@pytest.fixture(params=["all", "bytes"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def transaction(sender: bytes = b"<a@example.org>", *rcpts: bytes) -> bytes:
    out = b"MAIL FROM:" + sender + b"\r\n"
    for rcpt in rcpts or (b"<b@example.test>",):
        out += b"RCPT TO:" + rcpt + b"\r\n"
    return out


# --- greeting, HELO, EHLO ---------------------------------------------------------------------


def test_greeting_has_hostname_and_esmtp_and_no_enhanced_code(mode: str) -> None:
    t = converse(b"", mode)
    assert t.output == GREETING
    assert t.events == []
    assert not t.engine.closed


def test_helo_reply(mode: str) -> None:
    t = converse(b"HELO lupus.fokus.gmd.de\r\n", mode)
    assert t.output == GREETING + b"250 mx.example.test Hello lupus.fokus.gmd.de\r\n"
    assert t.events == [ev.Hello("lupus.fokus.gmd.de", False)]
    assert t.engine.phase is Phase.READY


def test_ehlo_reply_lists_the_extensions(mode: str) -> None:
    t = converse(EHLO, mode)
    assert t.output == GREETING + EHLO_REPLY
    assert t.events == [ev.Hello("client.example", True)]


def test_ehlo_with_tls_available_advertises_starttls_but_not_auth(mode: str) -> None:
    t = converse(EHLO, mode, server=MX_TLS)
    keywords = t.replies[1].lines[1:]
    assert "STARTTLS" in keywords
    assert not any(k.startswith("AUTH") for k in keywords)
    assert keywords[-2:] == ("HELP", "ETRN")


def test_ehlo_under_tls_advertises_auth_and_not_starttls(mode: str) -> None:
    t = converse(EHLO, mode, server=MX_TLS, tls_active=True)
    assert t.replies[1].lines[1:] == (
        "PIPELINING",
        "SIZE 52428800",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
        "AUTH PLAIN LOGIN SCRAM-SHA-256",
        "HELP",
        "ETRN",
    )


def test_ehlo_size_keyword_follows_the_setting(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_message_size=1000)
    t = converse(EHLO, mode, server=server)
    assert "SIZE 1000" in t.replies[1].lines


def test_helo_and_ehlo_need_an_argument(mode: str) -> None:
    t = converse(b"HELO\r\nEHLO \r\nMAIL FROM:<a@example.org>\r\nEHLO c\r\n", mode)
    assert t.codes == ["220", "501 5.5.4", "501 5.5.4", "503 5.5.1", "250"]


def test_ehlo_lowercase_and_address_literal(mode: str) -> None:
    t = converse(b"ehlo [192.168.2.102]\r\n", mode)
    assert t.replies[1].lines[0] == "mx.example.test Hello [192.168.2.102]"


def test_second_ehlo_resets_the_transaction(mode: str) -> None:
    t = converse(EHLO + transaction() + EHLO + b"RCPT TO:<c@example.test>\r\n", mode)
    assert t.codes == ["220", "250", "250 2.1.0", "250 2.1.5", "250", "503 5.5.1"]
    assert ev.TransactionAborted() in t.events


# --- the seed conversations -------------------------------------------------------------------


def test_seed_fokus_display_name_and_unbracketed_recipient(mode: str) -> None:
    # seeds/002: "MAIL From: Bill Clinton <clinton@whitehouse.gov>", "RCPT To: hgs@fokus.gmd.de".
    body = (
        b"To: hgs\r\n"
        b"From: Bill Clinton <clinton@whitehouse.gov>\r\n"
        b"Subject: Your new job\r\n"
        b"Date: Wed, 24 Jan 96 11:49:58 EST\r\n"
        b"\r\n"
        b"Welcome to your new job as chief of staff.\r\n"
    )
    t = converse(
        b"HELO lupus.fokus.gmd.de\r\n"
        b"MAIL From: Bill Clinton <clinton@whitehouse.gov>\r\n"
        b"RCPT To: hgs@fokus.gmd.de\r\n"
        b"DATA\r\n" + body + b".\r\nQUIT\r\n",
        mode,
    )
    assert t.output == GREETING + (
        b"250 mx.example.test Hello lupus.fokus.gmd.de\r\n"
        b"250 2.1.0 Sender <clinton@whitehouse.gov> ok\r\n"
        b"250 2.1.5 Recipient <hgs@fokus.gmd.de> ok\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
        b"250 2.0.0 Ok: queued as Q1\r\n"
        b"221 2.0.0 Bye\r\n"
    )
    assert t.decisions == [
        ev.Hello("lupus.fokus.gmd.de", False),
        ev.MailFrom("clinton@whitehouse.gov", MailParams()),
        ev.RcptTo("hgs@fokus.gmd.de", RcptParams()),
        ev.MessageComplete(len(body)),
        ev.CloseConnection(),
    ]
    assert t.messages == [body]
    assert t.engine.closed


def test_seed_lowercase_commands_without_brackets(mode: str) -> None:
    # seeds/001: "helo wxs.nl", "mail from:test@test.nl", "rcpt to:xxx@wxs.nl", "data".
    t = converse(
        b"helo wxs.nl\r\nmail from:test@test.nl\r\nrcpt to:xxx@wxs.nl\r\ndata\r\n"
        b"Dit is een voorbeeld.\r\n.\r\nquit\r\n",
        mode,
    )
    assert t.codes == ["220", "250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"]
    assert t.of_type(ev.MailFrom) == [ev.MailFrom("test@test.nl", MailParams())]
    assert t.of_type(ev.RcptTo) == [ev.RcptTo("xxx@wxs.nl", RcptParams())]
    assert t.messages == [b"Dit is een voorbeeld.\r\n"]


def test_seed_space_after_colon(mode: str) -> None:
    # seeds/003: "MAIL FROM: test@testingsmtp.com", "RCPT TO: richlowe@internet--tips.net";
    # seeds/000: "MAIL FROM: <president@whitehouse.gov>".
    t = converse(
        b"HELO localhost\r\n"
        b"MAIL FROM: test@testingsmtp.com\r\n"
        b"RCPT TO: richlowe@internet--tips.net\r\n"
        b"RSET\r\n"
        b"MAIL FROM: <president@whitehouse.gov>\r\n"
        b"RCPT TO: <mh@hasenstein.com>\r\n",
        mode,
    )
    assert t.codes == [
        "220",
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "250 2.0.0",
        "250 2.1.0",
        "250 2.1.5",
    ]
    assert [e.address for e in t.of_type(ev.MailFrom)] == [
        "test@testingsmtp.com",
        "president@whitehouse.gov",
    ]
    assert [e.address for e in t.of_type(ev.RcptTo)] == [
        "richlowe@internet--tips.net",
        "mh@hasenstein.com",
    ]


def test_seed_thunderbird_submission_with_auth_plain_and_size(mode: str) -> None:
    # seeds/000: EHLO [addr], AUTH PLAIN <initial response>, MAIL FROM:<...> SIZE=414.
    body = b"Subject: Demo Email\r\n\r\nThis is a VERY simple Email.\r\n"
    t = converse(
        b"EHLO [192.168.2.102]\r\n"
        b"AUTH PLAIN AGZha2VAaGFzZW5zdGVpbi5jb20AaGFoYWhh\r\n"
        b"MAIL FROM:<mh@hasenstein.com> SIZE=414\r\n"
        b"RCPT TO:<hasenstein@yahoo.com>\r\n"
        b"DATA\r\n" + body + b".\r\nQUIT\r\n",
        mode,
        policy=Policy(passwords={"fake@hasenstein.com": "hahaha"}),
        server=SUBMISSION,
        tls_active=True,
    )
    assert t.codes == [
        "220",
        "250",
        "235 2.7.0",
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "250 2.0.0",
        "221 2.0.0",
    ]
    assert ev.Verify("PLAIN", sasl.CheckPassword("fake@hasenstein.com", "", "hahaha")) in t.events
    assert ev.Authenticated("fake@hasenstein.com") in t.events
    assert t.of_type(ev.MailFrom) == [ev.MailFrom("mh@hasenstein.com", MailParams(size=414))]
    assert t.engine.identity == "fake@hasenstein.com"
    assert t.messages == [body]


def test_null_reverse_path_and_bare_postmaster(mode: str) -> None:
    t = converse(EHLO + b"MAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nRCPT TO:<Postmaster>\r\n", mode)
    assert t.codes == ["220", "250", "250 2.1.0", "250 2.1.5", "250 2.1.5"]
    assert t.replies[2].lines == ("Sender <> ok",)
    assert t.of_type(ev.MailFrom) == [ev.MailFrom("", MailParams())]
    # RFC 5321 §4.5.1: <postmaster> without a domain is accepted, case-insensitively.
    assert [e.address for e in t.of_type(ev.RcptTo)] == ["postmaster", "postmaster"]


def test_source_route_is_ignored(mode: str) -> None:
    t = converse(EHLO + b"MAIL FROM:<@relay.example,@b.example:a@example.org>\r\n", mode)
    assert t.codes[-1] == "250 2.1.0"
    assert t.of_type(ev.MailFrom) == [ev.MailFrom("a@example.org", MailParams())]


# --- errors: unknown command, sequence, syntax ------------------------------------------------


def test_unknown_command_and_session_continues(mode: str) -> None:
    t = converse(b"FOO bar\r\n\r\nEHLOX c\r\n" + EHLO, mode)
    assert t.output == GREETING + b"500 5.5.1 Command unrecognized\r\n" * 3 + EHLO_REPLY


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (b"MAIL FROM:<a@example.org>\r\n", "503 5.5.1 Send HELO or EHLO first"),
        (EHLO + b"RCPT TO:<b@example.test>\r\n", "503 5.5.1 Need MAIL command first"),
        (b"RCPT TO:<b@example.test>\r\n", "503 5.5.1 Need MAIL command first"),
        (EHLO + b"DATA\r\n", "503 5.5.1 Need MAIL command first"),
        (b"DATA\r\n", "503 5.5.1 Need MAIL command first"),
        (EHLO + transaction() + b"MAIL FROM:<c@example.org>\r\n", "503 5.5.1 Sender already"),
        (EHLO + b"MAIL FROM:<a@example.org>\r\nMAIL FROM:<c@example.org>\r\n", "503 5.5.1 Sender"),
        # RFC 5321 §3.3: DATA with MAIL but no accepted RCPT may get 503 or 554.
        (EHLO + b"MAIL FROM:<a@example.org>\r\nDATA\r\n", "554 5.5.1 No valid recipients"),
        (b"AUTH PLAIN\r\n", "503 5.5.1 Send HELO or EHLO first"),
        (b"ETRN example.test\r\n", "503 5.5.1 Send HELO or EHLO first"),
        (EHLO + transaction() + b"ETRN example.test\r\n", "503 5.5.1 Bad sequence of commands"),
    ],
)
def test_bad_sequence(mode: str, script: bytes, expected: str) -> None:
    t = converse(script + b"NOOP\r\n", mode)
    code, enhanced, text = expected.split(" ", 2)
    bad = t.replies[-2]
    assert (bad.code, bad.enhanced) == (int(code), enhanced)
    assert bad.lines[0].startswith(text)
    assert t.codes[-1] == "250 2.0.0"  # the session goes on


@pytest.mark.parametrize(
    "command",
    [
        b"MAIL FROM <a@example.org>",
        b"MAIL TO:<a@example.org>",
        b"MAIL <a@example.org>",
        b"MAIL",
        b"MAIL FROM:",
        b"MAIL FROM:<a@example.org",
        b"MAIL FROM:<a@example.org>SIZE=10",
        b"MAIL FROM:<a@example.org> SIZE=ten",
        b"MAIL FROM:<a@example.org> SIZE",
        b"MAIL FROM:<a@example.org> SIZE=",
        b"MAIL FROM:<a@example.org> BODY=9BIT",
        b"MAIL FROM:<a@example.org> SMTPUTF8=yes",
        b"MAIL FROM:<a@example.org> RET=ALL",
        b"MAIL FROM:<a@example.org> RET=HDRS RET=FULL",
        b"MAIL FROM:<a@example.org> ENVID=a=b",
        b"MAIL FROM:<a@example.org> ENVID=a+2",
        b"MAIL FROM:<a@example.org> ENVID=" + b"x" * 101,
    ],
)
def test_mail_syntax_errors_are_501_5_5_4(mode: str, command: bytes) -> None:
    t = converse(EHLO + command + b"\r\n" + transaction(), mode)
    assert t.codes == ["220", "250", "501 5.5.4", "250 2.1.0", "250 2.1.5"]
    assert len(t.of_type(ev.MailFrom)) == 1


@pytest.mark.parametrize(
    "command",
    [
        b"RCPT TO <b@example.test>",
        b"RCPT FROM:<b@example.test>",
        b"RCPT TO:<b@example.test> NOTIFY=NEVER,SUCCESS",
        b"RCPT TO:<b@example.test> NOTIFY=BOGUS",
        b"RCPT TO:<b@example.test> NOTIFY=SUCCESS,SUCCESS",
        b"RCPT TO:<b@example.test> NOTIFY=",
        b"RCPT TO:<b@example.test> NOTIFY",
        b"RCPT TO:<b@example.test> ORCPT=rfc822",
        b"RCPT TO:<b@example.test> ORCPT=;b@example.test",
        b"RCPT TO:<b@example.test> ORCPT=rfc822;b+ZZexample.test",
    ],
)
def test_rcpt_syntax_errors_are_501_5_5_4(mode: str, command: bytes) -> None:
    t = converse(EHLO + b"MAIL FROM:<a@example.org>\r\n" + command + b"\r\nDATA\r\n", mode)
    assert t.codes == ["220", "250", "250 2.1.0", "501 5.5.4", "554 5.5.1"]
    assert t.of_type(ev.RcptTo) == []


@pytest.mark.parametrize(
    "address",
    [b"<not an address>", b"<a@>", b"<@example.org>", b"<a..b@example.org>", b"<a@-x.org>"],
)
def test_bad_addresses_are_501_5_1_3(mode: str, address: bytes) -> None:
    t = converse(EHLO + b"MAIL FROM:" + address + b"\r\nMAIL FROM:<a@example.org>\r\n", mode)
    assert t.codes[2:] == ["501 5.1.3", "250 2.1.0"]


def test_empty_recipient_is_refused(mode: str) -> None:
    t = converse(EHLO + b"MAIL FROM:<>\r\nRCPT TO:<>\r\n", mode)
    assert t.codes[-1] == "501 5.1.3"


def test_unknown_parameter_is_555(mode: str) -> None:
    t = converse(
        EHLO
        + b"MAIL FROM:<a@example.org> FOO=BAR\r\n"
        + b"MAIL FROM:<a@example.org>\r\n"
        + b"RCPT TO:<b@example.test> XRCPT\r\n",
        mode,
    )
    assert t.codes[2:] == ["555 5.5.4", "250 2.1.0", "555 5.5.4"]
    assert t.replies[2].lines == ("Unsupported parameter FOO",)


def test_data_with_an_argument_is_a_syntax_error(mode: str) -> None:
    t = converse(EHLO + transaction() + b"DATA now\r\nDATA\r\n.\r\n", mode)
    assert t.codes[-3:] == ["501 5.5.4", "354", "250 2.0.0"]


def test_overlong_command_line_is_refused_and_the_session_survives(mode: str) -> None:
    t = converse(b"NOOP " + b"x" * 5000 + b"\r\n" + EHLO, mode)
    assert t.output == GREETING + b"500 5.5.2 Line too long\r\n" + EHLO_REPLY


def test_line_length_limit_counts_the_crlf(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_line_length=512)
    exact = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    assert len(exact) == 512
    over = b"NOOP " + b"x" * (512 - 6) + b"\r\n"
    t = converse(exact + over + b"NOOP\r\n", mode, server=server)
    assert t.codes == ["220", "250 2.0.0", "500 5.5.2", "250 2.0.0"]


def test_overlong_line_in_a_transaction_keeps_the_transaction(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_line_length=100)
    t = converse(
        EHLO + transaction() + b"RCPT TO:<" + b"c" * 200 + b"@example.test>\r\nDATA\r\nx\r\n.\r\n",
        mode,
        server=server,
    )
    assert t.codes[-4:] == ["250 2.1.5", "500 5.5.2", "354", "250 2.0.0"]
    assert t.messages == [b"x\r\n"]


@pytest.mark.parametrize("line", [b"NOOP \xff\xfe", b"NO\x00OP", b"EHLO \xc3"])
def test_command_lines_must_be_utf8_without_nul(mode: str, line: bytes) -> None:
    t = converse(line + b"\r\nNOOP\r\n", mode)
    assert t.codes == ["220", "500 5.5.2", "250 2.0.0"]


def test_bare_lf_ends_a_command_line(mode: str) -> None:
    # Lenient for hand-typed sessions: a command line may end in LF alone.
    t = converse(b"EHLO client.example\nNOOP\n", mode)
    assert t.output == GREETING + EHLO_REPLY + b"250 2.0.0 Ok\r\n"


def test_too_many_errors_closes_with_421(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_errors=3)
    t = converse(
        b"FOO\r\nMAIL FROM:<a@example.org>\r\nBAR\r\nNOOP\r\nQUIT\r\n", mode, server=server
    )
    assert t.output == GREETING + (
        b"500 5.5.1 Command unrecognized\r\n"
        b"503 5.5.1 Send HELO or EHLO first\r\n"
        b"500 5.5.1 Command unrecognized\r\n"
        b"421 4.7.0 Too many errors, closing connection\r\n"
    )
    assert t.events == [ev.CloseConnection()]
    assert t.engine.closed


def test_too_many_errors_in_a_transaction_aborts_it(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_errors=2)
    t = converse(EHLO + transaction() + b"FOO\r\nBAR\r\nDATA\r\n", mode, server=server)
    assert t.codes[-3:] == ["500 5.5.1", "500 5.5.1", "421 4.7.0"]
    assert t.decisions[-2:] == [ev.TransactionAborted(), ev.CloseConnection()]


def test_refusals_from_the_policy_count_as_errors(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_errors=2)
    policy = Policy(refuse_recipients={"x@example.test": replies.NO_SUCH_USER})
    rcpt = b"RCPT TO:<x@example.test>\r\n"
    t = converse(
        EHLO + b"MAIL FROM:<a@example.org>\r\n" + rcpt * 3, mode, policy=policy, server=server
    )
    assert t.codes[-3:] == ["550 5.1.1", "550 5.1.1", "421 4.7.0"]
    assert t.engine.closed


# --- DATA -------------------------------------------------------------------------------------


def test_data_unstuffs_leading_dots(mode: str) -> None:
    # RFC 5321 §4.5.2: the receiver drops the first "." of a line that starts with one.
    wire = b"..leading dot on the first line\r\nline\r\n..\r\n...\r\n.x\r\n\r\n"
    t = converse(EHLO + transaction() + b"DATA\r\n" + wire + b".\r\n", mode)
    assert t.codes[-2:] == ["354", "250 2.0.0"]
    assert t.messages == [b".leading dot on the first line\r\nline\r\n.\r\n..\r\nx\r\n\r\n"]
    assert t.of_type(ev.MessageComplete) == [ev.MessageComplete(len(t.messages[0]))]


def test_dot_inside_a_line_is_content(mode: str) -> None:
    wire = b"a.\r\n b .\r\n.\t\r\n. \r\n"
    t = converse(EHLO + transaction() + b"DATA\r\n" + wire + b".\r\n", mode)
    assert t.messages == [b"a.\r\n b .\r\n\t\r\n \r\n"]


def test_empty_message(mode: str) -> None:
    t = converse(EHLO + transaction() + b"DATA\r\n.\r\nQUIT\r\n", mode)
    assert t.codes[-3:] == ["354", "250 2.0.0", "221 2.0.0"]
    assert t.messages == [b""]
    assert t.of_type(ev.MessageComplete) == [ev.MessageComplete(0)]


def test_two_messages_in_one_session(mode: str) -> None:
    t = converse(
        EHLO
        + transaction()
        + b"DATA\r\none\r\n.\r\n"
        + transaction(b"<>", b"<c@example.test>")
        + b"DATA\r\ntwo\r\n.\r\n",
        mode,
    )
    assert [r.lines[0] for r in t.replies if r.code == 250 and "queued" in r.lines[0]] == [
        "Ok: queued as Q1",
        "Ok: queued as Q2",
    ]
    assert t.messages == [b"one\r\n", b"two\r\n"]
    assert t.engine.phase is Phase.READY


def test_message_refused_by_the_policy_resets_the_transaction(mode: str) -> None:
    policy = Policy(refuse_message=replies.MAIL_LOOP)
    t = converse(
        EHLO + transaction() + b"DATA\r\nx\r\n.\r\nRCPT TO:<c@example.test>\r\n",
        mode,
        policy=policy,
    )
    assert t.codes[-3:] == ["354", "554 5.4.6", "503 5.5.1"]
    assert t.messages == []


def test_commands_pipelined_after_the_terminator(mode: str) -> None:
    t = converse(EHLO + transaction() + b"DATA\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n", mode)
    assert t.codes[-4:] == ["354", "250 2.0.0", "250 2.0.0", "221 2.0.0"]


def test_a_message_containing_command_lines_is_just_content(mode: str) -> None:
    wire = b"QUIT\r\nMAIL FROM:<x@example.org>\r\nRSET\r\n"
    t = converse(EHLO + transaction() + b"DATA\r\n" + wire + b".\r\n", mode)
    assert t.messages == [wire]
    assert len(t.of_type(ev.MailFrom)) == 1


def test_long_data_line_is_kept(mode: str) -> None:
    # Lines longer than the command limit are content, not an error, inside DATA.
    line = b"." + b"y" * 70_000 + b"\r\n"
    t = converse(EHLO + transaction() + b"DATA\r\n" + line + b".\r\n", mode)
    assert t.messages == [line[1:]]


def test_oversize_body_via_data_is_refused(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_message_size=100)
    ok = b"x" * 98 + b"\r\n"  # exactly the limit
    big = b"x" * 99 + b"\r\n"  # one octet over
    t = converse(
        EHLO
        + transaction()
        + b"DATA\r\n"
        + big
        + b".\r\n"
        + b"RCPT TO:<b@example.test>\r\n"
        + transaction()
        + b"DATA\r\n"
        + ok
        + b".\r\n",
        mode,
        server=server,
    )
    assert t.codes[4:] == [
        "354",
        "552 5.3.4",
        "503 5.5.1",  # the failed transaction is gone
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "250 2.0.0",
    ]
    assert t.replies[5].lines == ("Message size exceeds fixed limit of 100 octets",)
    assert t.of_type(ev.MessageComplete) == [ev.MessageComplete(100)]
    assert t.messages == [ok]
    assert t.decisions.count(ev.TransactionAborted()) == 1


def test_oversize_body_stops_streaming_content(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_message_size=1000)
    t = converse(
        EHLO + transaction() + b"DATA\r\n" + (b"z" * 98 + b"\r\n") * 50 + b".\r\n",
        mode,
        server=server,
    )
    streamed = sum(len(e.data) for e in t.of_type(ev.MessageData))
    assert streamed <= 1000
    assert t.codes[-1] == "552 5.3.4"
    assert not t.of_type(ev.MessageComplete)


# --- SMTP smuggling: only CRLF.CRLF ends DATA -------------------------------------------------

SMUGGLED = (
    b"MAIL FROM:<ceo@bank.example>\r\n"
    b"RCPT TO:<victim@example.test>\r\n"
    b"DATA\r\n"
    b"From: ceo@bank.example\r\n\r\nsmuggled\r\n"
)


@pytest.mark.parametrize(
    "fake_end",
    [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r", b"\r\n.\r"],
    ids=["LF.LF", "CR.CR", "LF.CRLF", "CRLF.LF", "CR.CRLF", "LF.CR", "CRLF.CR"],
)
def test_bare_line_endings_never_end_data(mode: str, fake_end: bytes) -> None:
    wire = b"Subject: hi\r\n\r\nhello" + fake_end + SMUGGLED
    t = converse(EHLO + transaction() + b"DATA\r\n" + wire + b".\r\nQUIT\r\n", mode)
    assert t.codes == [
        "220",
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "550 5.6.0",  # the whole thing was one message, and it is refused
        "221 2.0.0",
    ]
    assert len(t.of_type(ev.MailFrom)) == 1
    assert len(t.of_type(ev.RcptTo)) == 1
    assert not t.of_type(ev.MessageComplete)
    assert t.messages == []
    assert t.decisions[-2:] == [ev.TransactionAborted(), ev.CloseConnection()]


@pytest.mark.parametrize(
    "content",
    [b"a\nb\r\n", b"a\rb\r\n", b"ab\r\r\n", b"\n", b"ab\r", b"a\r\n\n"],
)
def test_any_bare_cr_or_lf_refuses_the_message(mode: str, content: bytes) -> None:
    t = converse(
        EHLO
        + transaction()
        + b"DATA\r\n"
        + content
        + b"\r\n.\r\n"
        + transaction()
        + b"DATA\r\nok\r\n.\r\n",
        mode,
    )
    assert t.codes[4:] == ["354", "550 5.6.0", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
    assert t.messages == [b"ok\r\n"]


# --- BDAT (RFC 3030 CHUNKING) -----------------------------------------------------------------


def test_bdat_single_last_chunk(mode: str) -> None:
    content = b"Subject: x\r\n\r\nHello\r\n"
    t = converse(
        EHLO + transaction() + b"BDAT %d LAST\r\n" % len(content) + content + b"QUIT\r\n", mode
    )
    assert t.output.endswith(b"250 2.0.0 Ok: queued as Q1\r\n221 2.0.0 Bye\r\n")
    assert t.codes[4:] == ["250 2.0.0", "221 2.0.0"]
    assert t.messages == [content]
    assert t.of_type(ev.MessageComplete) == [ev.MessageComplete(len(content))]


def test_bdat_several_chunks_pipelined_with_their_data(mode: str) -> None:
    t = converse(
        EHLO + transaction() + b"BDAT 6\r\nHello BDAT 7\r\nWorld\r\nBDAT 0 LAST\r\nNOOP\r\n",
        mode,
    )
    assert t.output.endswith(
        b"250 2.0.0 6 octets received\r\n"
        b"250 2.0.0 7 octets received\r\n"
        b"250 2.0.0 Ok: queued as Q1\r\n"
        b"250 2.0.0 Ok\r\n"
    )
    assert t.messages == [b"Hello World\r\n"]


def test_bdat_chunks_in_separate_flights(mode: str) -> None:
    t = converse([EHLO + transaction(), b"BDAT 3\r\nabc", b"BDAT 3 last\r\ndef", b"QUIT\r\n"], mode)
    assert t.codes[4:] == ["250 2.0.0", "250 2.0.0", "221 2.0.0"]
    assert t.messages == [b"abcdef"]


def test_bdat_zero_last_alone_is_an_empty_message(mode: str) -> None:
    t = converse(EHLO + transaction() + b"BDAT 0 LAST\r\n", mode)
    assert t.codes[-1] == "250 2.0.0"
    assert t.messages == [b""]


def test_bdat_content_is_not_unstuffed_and_may_hold_the_data_terminator(mode: str) -> None:
    content = b"a\r\n..b\r\n.\r\nQUIT\r\n"
    t = converse(EHLO + transaction() + b"BDAT %d LAST\r\n" % len(content) + content, mode)
    assert t.messages == [content]
    assert not t.engine.closed


def test_bdat_after_rejected_recipient_consumes_the_chunk(mode: str) -> None:
    policy = Policy(refuse_recipients={"b@example.test": replies.NO_SUCH_USER})
    t = converse(
        EHLO + transaction() + b"BDAT 10 LAST\r\nNOOP\r\nNOOPNOOP\r\n", mode, policy=policy
    )
    assert t.codes[2:] == ["250 2.1.0", "550 5.1.1", "554 5.5.1", "250 2.0.0"]
    assert not t.of_type(ev.MessageComplete)


def test_bdat_before_mail_consumes_the_chunk(mode: str) -> None:
    t = converse(EHLO + b"BDAT 6\r\nQUIT\r\nNOOP\r\n", mode)
    assert t.codes == ["220", "250", "503 5.5.1", "250 2.0.0"]
    assert not t.engine.closed


def test_data_after_bdat_is_a_bad_sequence(mode: str) -> None:
    t = converse(EHLO + transaction() + b"BDAT 3\r\nabcDATA\r\nBDAT 3 LAST\r\ndef", mode)
    assert t.codes[4:] == ["250 2.0.0", "503 5.5.1", "250 2.0.0"]
    assert t.replies[5].lines == ("DATA not allowed after BDAT in the same transaction",)
    assert t.messages == [b"abcdef"]


def test_mail_and_rcpt_are_refused_between_chunks(mode: str) -> None:
    t = converse(
        EHLO
        + transaction()
        + b"BDAT 1\r\naMAIL FROM:<c@example.org>\r\nRCPT TO:<c@example.test>\r\n"
        b"BDAT 1 LAST\r\nb",
        mode,
    )
    assert t.codes[4:] == ["250 2.0.0", "503 5.5.1", "503 5.5.1", "250 2.0.0"]
    assert t.messages == [b"ab"]


@pytest.mark.parametrize("argument", [b"", b" x", b" -1", b" 5 FIRST", b" 5 LAST more", b" 5x"])
def test_bdat_syntax_errors(mode: str, argument: bytes) -> None:
    t = converse(EHLO + transaction() + b"BDAT" + argument + b"\r\nBDAT 0 LAST\r\n", mode)
    assert t.codes[4:] == ["501 5.5.4", "250 2.0.0"]


def test_oversize_body_via_bdat_is_refused(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_message_size=10)
    t = converse(
        EHLO
        + transaction()
        + b"BDAT 11 LAST\r\n01234567890"
        + transaction()
        + b"BDAT 10 LAST\r\n0123456789",
        mode,
        server=server,
    )
    assert t.codes[4:] == ["552 5.3.4", "250 2.1.0", "250 2.1.5", "250 2.0.0"]
    assert t.of_type(ev.MessageComplete) == [ev.MessageComplete(10)]
    assert t.messages == [b"0123456789"]


def test_oversize_across_chunks_fails_the_transaction(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_message_size=10)
    t = converse(
        EHLO + transaction() + b"BDAT 6\r\n012345BDAT 6\r\n678901BDAT 0 LAST\r\n",
        mode,
        server=server,
    )
    # RFC 3030 §2: after a failed chunk the transaction is over; later chunks are refused.
    assert t.codes[4:] == ["250 2.0.0", "552 5.3.4", "503 5.5.1"]
    assert not t.of_type(ev.MessageComplete)
    assert ev.TransactionAborted() in t.events


def test_bdat_with_bare_lf_is_refused(mode: str) -> None:
    t = converse(EHLO + transaction() + b"BDAT 4 LAST\r\na\nb\n", mode)
    assert t.codes[-1] == "550 5.6.0"
    assert t.messages == []


# --- SIZE, recipients limit -------------------------------------------------------------------


def test_size_parameter_over_the_limit_is_refused_at_mail(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_message_size=1000)
    t = converse(
        EHLO + b"MAIL FROM:<a@example.org> SIZE=1001\r\nMAIL FROM:<a@example.org> size=1000\r\n",
        mode,
        server=server,
    )
    assert t.codes[2:] == ["552 5.3.4", "250 2.1.0"]
    assert t.replies[2].lines == ("Message size exceeds fixed limit of 1000 octets",)
    assert t.of_type(ev.MailFrom) == [ev.MailFrom("a@example.org", MailParams(size=1000))]


def test_too_many_recipients_is_452(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_recipients=2)
    policy = Policy(refuse_recipients={"x@example.test": replies.NO_SUCH_USER})
    t = converse(
        EHLO
        + transaction(
            b"<a@example.org>", b"<x@example.test>", b"<b@example.test>", b"<c@example.test>"
        )
        + b"RCPT TO:<d@example.test>\r\nDATA\r\nx\r\n.\r\n",
        mode,
        policy=policy,
        server=server,
    )
    # A refused recipient does not count against the limit (RFC 5321 §4.5.3.1.10: 452).
    assert t.codes[2:] == [
        "250 2.1.0",
        "550 5.1.1",
        "250 2.1.5",
        "250 2.1.5",
        "452 4.5.3",
        "354",
        "250 2.0.0",
    ]
    assert len(t.of_type(ev.RcptTo)) == 3


def test_recipient_count_starts_again_with_each_transaction(mode: str) -> None:
    server = ServerSettings(hostname=HOST, max_recipients=1)
    t = converse(EHLO + transaction() + b"RSET\r\n" + transaction(), mode, server=server)
    assert t.codes[2:] == ["250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.1.0", "250 2.1.5"]


# --- ESMTP parameters: BODY, SMTPUTF8, DSN ----------------------------------------------------


def test_body_parameter(mode: str) -> None:
    t = converse(
        EHLO
        + b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\nRSET\r\n"
        + b"MAIL FROM:<a@example.org> body=7bit\r\nRSET\r\n"
        + b"MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n",
        mode,
    )
    assert t.codes[2:] == ["250 2.1.0", "250 2.0.0", "250 2.1.0", "250 2.0.0", "554 5.6.0"]
    assert [e.params.body for e in t.of_type(ev.MailFrom)] == ["8BITMIME", "7BIT"]


def test_dsn_parameters_are_parsed_into_the_events(mode: str) -> None:
    t = converse(
        EHLO
        + b"MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ314159+2Bx SIZE=10\r\n"
        + b"RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.test\r\n"
        + b"RCPT TO:<c@example.test> notify=never\r\n"
        + b"RCPT TO:<d@example.test> NOTIFY=delay ORCPT=UTF-8;d\\x{E9}@example.test\r\n",
        mode,
    )
    assert t.codes[2:] == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.1.5"]
    assert t.of_type(ev.MailFrom) == [
        ev.MailFrom("a@example.org", MailParams(size=10, ret="HDRS", envid="QQ314159+x"))
    ]
    assert t.of_type(ev.RcptTo) == [
        ev.RcptTo("b@example.test", RcptParams(("SUCCESS", "FAILURE"), "rfc822;b@example.test")),
        ev.RcptTo("c@example.test", RcptParams(("NEVER",), None)),
        ev.RcptTo("d@example.test", RcptParams(("DELAY",), "utf-8;d\\x{E9}@example.test")),
    ]


def test_auth_parameter_of_mail(mode: str) -> None:
    t = converse(
        EHLO
        + b"MAIL FROM:<a@example.org> AUTH=<>\r\nRSET\r\n"
        + b"MAIL FROM:<a@example.org> AUTH=u+2Bx@example.org\r\n",
        mode,
    )
    assert [e.params.auth for e in t.of_type(ev.MailFrom)] == ["", "u+x@example.org"]


@pytest.mark.parametrize(
    "address",
    ["用户@例子.广告", "δοκιμή@παράδειγμα.δοκιμή", "josé@bücher.example", "a@bücher.example"],
)
def test_utf8_addresses_need_the_smtputf8_parameter(mode: str, address: str) -> None:
    raw = address.encode("utf-8")
    t = converse(
        EHLO
        + b"MAIL FROM:<"
        + raw
        + b">\r\n"
        + b"MAIL FROM:<a@example.org>\r\n"
        + b"RCPT TO:<"
        + raw
        + b">\r\n"
        + b"RSET\r\n"
        + b"MAIL FROM:<"
        + raw
        + b"> SMTPUTF8\r\n"
        + b"RCPT TO:<"
        + raw
        + b">\r\n",
        mode,
    )
    assert t.codes[2:] == [
        "553 5.6.7",
        "250 2.1.0",
        "553 5.6.7",
        "250 2.0.0",
        "250 2.1.0",
        "250 2.1.5",
    ]
    assert t.of_type(ev.MailFrom)[-1] == ev.MailFrom(address, MailParams(smtputf8=True))
    assert t.of_type(ev.RcptTo) == [ev.RcptTo(address, RcptParams())]
    assert t.replies[-1].lines == (f"Recipient <{address}> ok",)


def test_smtputf8_utf8_display_name_and_bracketed_address(mode: str) -> None:
    t = converse(EHLO + "MAIL FROM: Jörg <jörg@例子.广告> SMTPUTF8\r\n".encode(), mode)
    assert t.of_type(ev.MailFrom) == [ev.MailFrom("jörg@例子.广告", MailParams(smtputf8=True))]


def test_refused_sender_keeps_no_parameters(mode: str) -> None:
    policy = Policy(refuse_senders={"spam@example.org": replies.RELAY_DENIED})
    t = converse(
        EHLO
        + b"MAIL FROM:<spam@example.org> SMTPUTF8\r\nRCPT TO:<b@example.test>\r\n"
        + "MAIL FROM:<a@example.org>\r\nRCPT TO:<ü@example.test>\r\n".encode(),
        mode,
        policy=policy,
    )
    # The refused MAIL opened no transaction, and its SMTPUTF8 does not carry over.
    assert t.codes[2:] == ["554 5.7.1", "503 5.5.1", "250 2.1.0", "553 5.6.7"]


# --- PIPELINING (RFC 2920) --------------------------------------------------------------------


def test_whole_transaction_in_one_packet(mode: str) -> None:
    policy = Policy(refuse_recipients={"nobody@example.test": replies.NO_SUCH_USER})
    packet = (
        EHLO
        + b"MAIL FROM:<a@example.org> SIZE=20\r\n"
        + b"RCPT TO:<b@example.test>\r\n"
        + b"RCPT TO:<nobody@example.test>\r\n"
        + b"RCPT TO:<c@example.test>\r\n"
        + b"DATA\r\n"
        + b"Subject: t\r\n\r\nbody\r\n.\r\n"
        + b"MAIL FROM:<>\r\n"
        + b"RCPT TO:<b@example.test>\r\n"
        + b"BDAT 2 LAST\r\nhi"
        + b"QUIT\r\n"
    )
    t = converse(packet, mode, policy=policy)
    assert t.output == GREETING + EHLO_REPLY + (
        b"250 2.1.0 Sender <a@example.org> ok\r\n"
        b"250 2.1.5 Recipient <b@example.test> ok\r\n"
        b"550 5.1.1 No such user here\r\n"
        b"250 2.1.5 Recipient <c@example.test> ok\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
        b"250 2.0.0 Ok: queued as Q1\r\n"
        b"250 2.1.0 Sender <> ok\r\n"
        b"250 2.1.5 Recipient <b@example.test> ok\r\n"
        b"250 2.0.0 Ok: queued as Q2\r\n"
        b"221 2.0.0 Bye\r\n"
    )
    assert t.messages == [b"Subject: t\r\n\r\nbody\r\n", b"hi"]
    assert t.decisions[-1] == ev.CloseConnection()


def test_pipelined_replies_wait_for_each_decision() -> None:
    # The engine pauses at each decision; replies come out in command order once answered.
    engine = SmtpServer(MX)
    engine.greet()
    engine.receive_data(EHLO + transaction() + b"NOOP\r\n")
    assert engine.next_event() == ev.Hello("client.example", True)
    assert isinstance(engine.next_event(), ev.MailFrom)
    assert engine.next_event() is ev.PAUSED
    assert engine.next_event() is ev.PAUSED  # still waiting; the RCPT is not read yet
    engine.reject(replies.RELAY_DENIED)
    # The RCPT is refused without asking (no transaction), then the NOOP is answered.
    assert engine.next_event() is ev.NEED_DATA
    assert engine.data_to_send() == GREETING + EHLO_REPLY + (
        b"554 5.7.1 Relay access denied\r\n503 5.5.1 Need MAIL command first\r\n250 2.0.0 Ok\r\n"
    )
    assert engine.data_to_send() == b""


def test_decision_methods_check_what_is_pending() -> None:
    engine = SmtpServer(MX)
    engine.greet()
    with pytest.raises(RuntimeError):
        engine.accept()
    with pytest.raises(RuntimeError):
        engine.answered(True)
    with pytest.raises(RuntimeError):
        engine.tls_started()
    engine.receive_data(EHLO + transaction() + b"DATA\r\n.\r\n")
    while not isinstance(event := engine.next_event(), ev.MessageComplete):
        if isinstance(event, ev.MailFrom | ev.RcptTo):
            engine.accept()
    with pytest.raises(ValueError):
        engine.accept()  # a message needs the reply with its queue ID
    engine.accept(replies.queued("X"))
    assert engine.data_to_send().endswith(b"250 2.0.0 Ok: queued as X\r\n")


# --- STARTTLS (RFC 3207) ----------------------------------------------------------------------


def test_starttls_discards_pipelined_plaintext_and_resets_the_session(mode: str) -> None:
    injected = b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.test>\r\n"
    t = converse(
        [
            EHLO + b"STARTTLS\r\n" + injected,  # CVE-2011-0411: injected before the handshake
            b"MAIL FROM:<a@example.org>\r\n" + EHLO + transaction(),
        ],
        mode,
        server=MX_TLS,
    )
    assert t.codes == [
        "220",
        "250",
        "220 2.0.0",
        "503 5.5.1",  # RFC 3207 §4.2: the session starts over, MAIL needs a new EHLO
        "250",
        "250 2.1.0",
        "250 2.1.5",
    ]
    assert t.replies[2].lines == ("Ready to start TLS",)
    assert ev.StartTls() in t.events
    assert t.of_type(ev.MailFrom) == [ev.MailFrom("a@example.org", MailParams())]
    assert t.engine.tls_active
    # After the upgrade: AUTH is offered, STARTTLS is not.
    keywords = t.replies[4].lines[1:]
    assert "STARTTLS" not in keywords
    assert "AUTH PLAIN LOGIN SCRAM-SHA-256" in keywords


def test_starttls_forgets_the_helo_name_and_identity(mode: str) -> None:
    t = converse([b"EHLO before\r\nSTARTTLS\r\n", b"EHLO after\r\n"], mode, server=MX_TLS)
    assert t.engine.helo_name == "after"
    assert t.decisions == [ev.Hello("before", True), ev.StartTls(), ev.Hello("after", True)]


def test_starttls_is_refused_when_not_possible(mode: str) -> None:
    t = converse(EHLO + b"STARTTLS\r\nSTARTTLS now\r\nNOOP\r\n", mode, server=MX)
    assert t.codes[2:] == ["454 4.7.0", "501 5.5.4", "250 2.0.0"]
    t = converse(EHLO + b"STARTTLS\r\n", mode, server=MX_TLS, tls_active=True)
    assert t.codes[2:] == ["503 5.5.1"]
    t = converse(EHLO + transaction() + b"STARTTLS\r\n", mode, server=MX_TLS)
    assert t.codes[4:] == ["503 5.5.1"]
    assert not t.of_type(ev.StartTls)


def test_starttls_before_ehlo_is_allowed(mode: str) -> None:
    t = converse([b"STARTTLS\r\n", EHLO], mode, server=MX_TLS)
    assert t.codes == ["220", "220 2.0.0", "250"]


def test_engine_drops_plaintext_buffered_at_starttls() -> None:
    engine = SmtpServer(MX_TLS)
    engine.greet()
    engine.receive_data(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
    assert isinstance(engine.next_event(), ev.Hello)
    assert engine.next_event() == ev.StartTls()
    assert engine.buffered == 0
    assert engine.next_event() is ev.PAUSED
    # Plaintext that reaches the engine before the handshake is done is dropped too.
    engine.receive_data(b"MAIL FROM:<evil2@example.org>\r\n")
    assert engine.data_to_send().endswith(b"220 2.0.0 Ready to start TLS\r\n")
    engine.tls_started()
    assert engine.next_event() is ev.NEED_DATA
    assert engine.data_to_send() == b""
    engine.receive_data(b"NOOP\r\n")
    assert engine.next_event() is ev.NEED_DATA
    assert engine.data_to_send() == b"250 2.0.0 Ok\r\n"


# --- AUTH (RFC 4954) --------------------------------------------------------------------------

USER = "alice@example.test"
PASSWORD = "correct horse"
ALICE = Policy(passwords={USER: PASSWORD})


def b64(data: bytes | str) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


PLAIN = b64(f"\0{USER}\0{PASSWORD}")


def test_auth_plain_with_initial_response(mode: str) -> None:
    t = converse(EHLO + b"AUTH PLAIN " + PLAIN + b"\r\n", mode, policy=ALICE, tls_active=True)
    assert t.output.endswith(b"235 2.7.0 Authentication successful\r\n")
    assert t.decisions[1:] == [
        ev.Verify("PLAIN", sasl.CheckPassword(USER, "", PASSWORD)),
        ev.Authenticated(USER),
    ]
    assert t.engine.identity == USER


def test_auth_plain_with_empty_challenge(mode: str) -> None:
    t = converse(EHLO + b"auth plain\r\n" + PLAIN + b"\r\n", mode, policy=ALICE, tls_active=True)
    assert t.output.endswith(b"334 \r\n235 2.7.0 Authentication successful\r\n")


def test_auth_login_challenge_flow(mode: str) -> None:
    t = converse(
        EHLO + b"AUTH LOGIN\r\n" + b64(USER) + b"\r\n" + b64(PASSWORD) + b"\r\n",
        mode,
        policy=ALICE,
        tls_active=True,
    )
    assert t.output == GREETING + t.output[len(GREETING) : t.output.index(b"334")] + (
        b"334 VXNlcm5hbWU6\r\n"  # "Username:"
        b"334 UGFzc3dvcmQ6\r\n"  # "Password:"
        b"235 2.7.0 Authentication successful\r\n"
    )
    assert ev.Verify("LOGIN", sasl.CheckPassword(USER, "", PASSWORD)) in t.events


def test_auth_login_with_initial_user_name(mode: str) -> None:
    t = converse(
        EHLO + b"AUTH LOGIN " + b64(USER) + b"\r\n" + b64(PASSWORD) + b"\r\n",
        mode,
        policy=ALICE,
        tls_active=True,
    )
    assert t.codes[2:] == ["334", "235 2.7.0"]


def test_auth_cancelled_with_star(mode: str) -> None:
    t = converse(
        EHLO
        + b"AUTH LOGIN\r\n"
        + b64(USER)
        + b"\r\n*\r\nNOOP\r\n"
        + b"AUTH PLAIN "
        + PLAIN
        + b"\r\n",
        mode,
        policy=ALICE,
        tls_active=True,
    )
    assert t.codes[2:] == ["334", "334", "501 5.0.0", "250 2.0.0", "235 2.7.0"]
    # The cancelled LOGIN never got as far as a password check.
    assert t.of_type(ev.Verify) == [ev.Verify("PLAIN", sasl.CheckPassword(USER, "", PASSWORD))]


def test_auth_wrong_password_is_535(mode: str) -> None:
    bad = b64(f"\0{USER}\0wrong")
    t = converse(
        EHLO + b"AUTH PLAIN " + bad + b"\r\nMAIL FROM:<a@example.org>\r\n",
        mode,
        policy=ALICE,
        tls_active=True,
    )
    assert t.codes[2:] == ["535 5.7.8", "250 2.1.0"]
    assert t.engine.identity is None
    assert not t.of_type(ev.Authenticated)


def test_auth_twice_is_503(mode: str) -> None:
    t = converse(
        EHLO + b"AUTH PLAIN " + PLAIN + b"\r\nAUTH PLAIN " + PLAIN + b"\r\n",
        mode,
        policy=ALICE,
        tls_active=True,
    )
    assert t.codes[2:] == ["235 2.7.0", "503 5.5.1"]
    assert len(t.of_type(ev.Verify)) == 1


def test_auth_before_tls_is_530(mode: str) -> None:
    t = converse(EHLO + b"AUTH PLAIN " + PLAIN + b"\r\nNOOP\r\n", mode, policy=ALICE, server=MX_TLS)
    assert t.codes[2:] == ["530 5.7.0", "250 2.0.0"]
    assert not t.of_type(ev.Verify)


def test_auth_without_tls_when_insecure_auth_is_allowed(mode: str) -> None:
    server = ServerSettings(hostname=HOST, allow_insecure_auth=True)
    t = converse(EHLO + b"AUTH PLAIN " + PLAIN + b"\r\n", mode, policy=ALICE, server=server)
    assert "AUTH PLAIN LOGIN SCRAM-SHA-256" in t.replies[1].lines
    assert t.codes[2:] == ["235 2.7.0"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"AUTH CRAM-MD5", "504 5.5.4"),
        (b"AUTH", "504 5.5.4"),
        (b"AUTH PLAIN not-base64!", "501 5.5.2"),
        (b"AUTH PLAIN =", "501 5.5.2"),  # "=" is an empty initial response, malformed for PLAIN
        (b"AUTH PLAIN " + b64(b"no-nul-here"), "501 5.5.2"),
    ],
)
def test_auth_refusals(mode: str, command: bytes, expected: str) -> None:
    t = converse(EHLO + command + b"\r\nNOOP\r\n", mode, policy=ALICE, tls_active=True)
    assert t.codes[2:] == [expected, "250 2.0.0"]


def test_auth_bad_base64_in_the_exchange(mode: str) -> None:
    t = converse(EHLO + b"AUTH LOGIN\r\n%%%\r\nNOOP\r\n", mode, policy=ALICE, tls_active=True)
    assert t.codes[2:] == ["334", "501 5.5.2", "250 2.0.0"]


def test_auth_in_a_transaction_is_503(mode: str) -> None:
    t = converse(
        EHLO + transaction() + b"AUTH PLAIN " + PLAIN + b"\r\n", mode, policy=ALICE, tls_active=True
    )
    assert t.codes[-1] == "503 5.5.1"
    assert t.replies[-1].lines == ("AUTH not permitted during a mail transaction",)


def test_auth_limited_to_configured_mechanisms(mode: str) -> None:
    server = ServerSettings(hostname=HOST, auth_mechanisms=("PLAIN",))
    t = converse(
        EHLO + b"AUTH LOGIN\r\nAUTH PLAIN " + PLAIN + b"\r\n",
        mode,
        policy=ALICE,
        server=server,
        tls_active=True,
    )
    assert "AUTH PLAIN" in t.replies[1].lines
    assert t.codes[2:] == ["504 5.5.4", "235 2.7.0"]


def test_auth_credential_store_failure_is_454() -> None:
    engine = SmtpServer(MX, tls_active=True)
    engine.greet()
    engine.receive_data(EHLO + b"AUTH PLAIN " + PLAIN + b"\r\nNOOP\r\n")
    assert isinstance(engine.next_event(), ev.Hello)
    assert isinstance(engine.next_event(), ev.Verify)
    engine.answered(UNAVAILABLE)
    assert engine.next_event() is ev.NEED_DATA
    assert engine.data_to_send().endswith(
        b"454 4.7.0 Temporary authentication failure\r\n250 2.0.0 Ok\r\n"
    )


def test_submission_requires_auth_before_mail(mode: str) -> None:
    t = converse(
        [
            EHLO + b"MAIL FROM:<a@example.org>\r\nSTARTTLS\r\n",
            EHLO + b"MAIL FROM:<a@example.org>\r\nAUTH PLAIN " + PLAIN + b"\r\n" + transaction(),
        ],
        mode,
        policy=ALICE,
        server=SUBMISSION,
    )
    assert t.codes == [
        "220",
        "250",
        "530 5.7.0",
        "220 2.0.0",
        "250",
        "530 5.7.0",
        "235 2.7.0",
        "250 2.1.0",
        "250 2.1.5",
    ]
    assert t.replies[2].lines == ("Authentication required",)


def test_starttls_forgets_an_identity_from_insecure_auth(mode: str) -> None:
    server = ServerSettings(
        hostname=HOST, tls_available=True, require_auth=True, allow_insecure_auth=True
    )
    t = converse(
        [
            EHLO + b"AUTH PLAIN " + PLAIN + b"\r\nSTARTTLS\r\n",
            EHLO + b"MAIL FROM:<a@example.org>\r\n",
        ],
        mode,
        policy=ALICE,
        server=server,
    )
    assert t.codes[2:] == ["235 2.7.0", "220 2.0.0", "250", "530 5.7.0"]
    assert t.engine.identity is None


# --- SCRAM-SHA-256 (RFC 5802, RFC 7677) with a hand-written client -----------------------------

SCRAM_SALT = b"0123456789abcdef"
SCRAM_CREDS = sasl.derive_scram_credentials(PASSWORD, salt=SCRAM_SALT, iterations=4096)
CLIENT_NONCE = "fyko+d2lbbFgONRv9qkxdawL"
SERVER_NONCE = "3rfcNHYJY1ZVvWVs7j"


class ScramClient:
    """The client side of RFC 5802 §3/§5, written from the RFC, not from the server code."""

    def __init__(self, user: str, password: str) -> None:
        self.password = password
        self.gs2_header = b"n,,"
        self.first_bare = f"n={user},r={CLIENT_NONCE}".encode()
        self.expected_server_signature = b""
        self.verified = False

    def client_first(self) -> bytes:
        return self.gs2_header + self.first_bare

    def client_final(self, output: bytes) -> bytes:
        server_first = base64.b64decode(_last_challenge(output))
        attrs = dict(item.split(b"=", 1) for item in server_first.split(b","))
        assert attrs[b"r"].startswith(CLIENT_NONCE.encode())  # RFC 5802 §5.1: c-nonce first
        salt = base64.b64decode(attrs[b"s"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, int(attrs[b"i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = b"c=" + base64.b64encode(self.gs2_header) + b",r=" + attrs[b"r"]
        auth_message = self.first_bare + b"," + server_first + b"," + without_proof
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.expected_server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return without_proof + b",p=" + base64.b64encode(proof)

    def acknowledge(self, output: bytes) -> bytes:
        """Verify server-final (RFC 5802 §3: ServerSignature); SMTP then sends an empty line."""
        server_final = base64.b64decode(_last_challenge(output))
        assert server_final == b"v=" + base64.b64encode(self.expected_server_signature)
        self.verified = True
        return b"\r\n"


def _last_challenge(output: bytes) -> bytes:
    lines = [line for line in output.split(b"\r\n") if line.startswith(b"334 ")]
    return lines[-1][4:]


@pytest.fixture
def fixed_scram_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the server nonce fixed so both feeding modes produce identical bytes."""
    real = sasl.new_mechanism

    def new_mechanism(name: str) -> sasl.Mechanism | None:
        if name.upper() == "SCRAM-SHA-256":
            return sasl.ScramSha256Mechanism(nonce=SERVER_NONCE)
        return real(name)

    monkeypatch.setattr(sasl, "new_mechanism", new_mechanism)


@pytest.mark.usefixtures("fixed_scram_nonce")
@pytest.mark.parametrize("initial_response", [True, False])
def test_scram_sha_256_full_exchange(mode: str, initial_response: bool) -> None:
    client = ScramClient(USER, PASSWORD)
    if initial_response:
        start = [EHLO + b"AUTH SCRAM-SHA-256 " + b64(client.client_first()) + b"\r\n"]
    else:
        start = [EHLO + b"AUTH SCRAM-SHA-256\r\n", b64(client.client_first()) + b"\r\n"]
    flights: list[Flight] = [
        *start,
        lambda out: b64(client.client_final(out)) + b"\r\n",
        client.acknowledge,
        b"MAIL FROM:<a@example.org>\r\n",
    ]
    t = converse(
        flights, mode, policy=Policy(scram={USER: SCRAM_CREDS}), server=SUBMISSION, tls_active=True
    )
    expected = ["220", "250", "334", "334", "235 2.7.0", "250 2.1.0"]
    assert t.codes == (expected if initial_response else [*expected[:2], "334", *expected[2:]])
    assert client.verified
    assert ev.Verify("SCRAM-SHA-256", sasl.NeedScramCredentials(USER, "")) in t.events
    assert ev.Authenticated(USER) in t.events
    assert t.engine.identity == USER


@pytest.mark.usefixtures("fixed_scram_nonce")
@pytest.mark.parametrize("user", [USER, "mallory@example.test"])
def test_scram_wrong_password_or_unknown_user_is_535(mode: str, user: str) -> None:
    client = ScramClient(user, "not the password")
    flights: list[Flight] = [
        EHLO + b"AUTH SCRAM-SHA-256 " + b64(client.client_first()) + b"\r\n",
        lambda out: b64(client.client_final(out)) + b"\r\n",
        b"NOOP\r\n",
    ]
    t = converse(flights, mode, policy=Policy(scram={USER: SCRAM_CREDS}), tls_active=True)
    assert t.codes[2:] == ["334", "535 5.7.8", "250 2.0.0"]
    assert t.engine.identity is None


# --- VRFY, EXPN, ETRN, HELP, NOOP, RSET, QUIT -------------------------------------------------


def test_vrfy_and_expn_reveal_nothing(mode: str) -> None:
    t = converse(EHLO + b"VRFY alice\r\nEXPN staff\r\nVRFY\r\nEXPN\r\n", mode)
    assert t.codes[2:] == ["252 2.1.5", "252 2.1.5", "501 5.5.4", "501 5.5.4"]
    assert not any("alice" in line for r in t.replies for line in r.lines)


def test_vrfy_is_allowed_before_helo_and_in_a_transaction(mode: str) -> None:
    t = converse(b"VRFY a\r\n" + EHLO + transaction() + b"VRFY b\r\nDATA\r\n.\r\n", mode)
    assert t.codes == [
        "220",
        "252 2.1.5",
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "252 2.1.5",
        "354",
        "250 2.0.0",
    ]


def test_etrn(mode: str) -> None:
    t = converse(
        EHLO + b"ETRN example.org\r\nETRN @example.org\r\nETRN #queue\r\nETRN\r\nETRN a b\r\n", mode
    )
    assert t.codes[2:] == ["250 2.0.0", "250 2.0.0", "250 2.0.0", "501 5.5.4", "501 5.5.4"]
    assert t.replies[2].lines == ("Queuing for node example.org started",)
    assert t.of_type(ev.Etrn) == [
        ev.Etrn("example.org"),
        ev.Etrn("@example.org"),
        ev.Etrn("#queue"),
    ]


def test_etrn_waits_for_the_decision_and_a_refusal_is_an_error(mode: str) -> None:
    refusal = replies.etrn_refused("b.example")
    policy = Policy(refuse_etrn={"b.example": refusal})
    t = converse(
        EHLO + b"ETRN a.example\r\nETRN b.example\r\nETRN a.example\r\n", mode, policy=policy
    )
    assert t.codes[2:] == ["250 2.0.0", "458 4.7.0", "250 2.0.0"]
    assert t.replies[3].lines == (
        "Unable to queue messages for node b.example: too many ETRN requests",
    )
    assert t.engine.errors == 1  # counted like any error reply ([limits] errors_per_session)


def test_help_and_noop(mode: str) -> None:
    t = converse(b"HELP\r\nhelp mail\r\nNOOP\r\nnoop anything\r\n", mode)
    help_reply = t.replies[1]
    assert (help_reply.code, help_reply.enhanced) == (214, "2.0.0")
    assert len(help_reply.lines) == 2
    assert t.output.startswith(GREETING + b"214-2.0.0 Commands: HELO EHLO MAIL")
    assert t.codes[2:] == ["214 2.0.0", "250 2.0.0", "250 2.0.0"]


def test_rset_aborts_the_transaction(mode: str) -> None:
    t = converse(
        EHLO + b"RSET\r\n" + transaction() + b"RSET\r\nRCPT TO:<b@example.test>\r\nDATA\r\n", mode
    )
    assert t.codes[2:] == [
        "250 2.0.0",
        "250 2.1.0",
        "250 2.1.5",
        "250 2.0.0",
        "503 5.5.1",
        "503 5.5.1",
    ]
    assert t.replies[2].lines == ("Reset state",)
    # Only the RSET inside a transaction aborts one.
    assert t.decisions.count(ev.TransactionAborted()) == 1
    assert t.engine.phase is Phase.READY


def test_rset_before_helo_keeps_needing_helo(mode: str) -> None:
    t = converse(b"RSET\r\nMAIL FROM:<a@example.org>\r\n", mode)
    assert t.codes == ["220", "250 2.0.0", "503 5.5.1"]


def test_quit_closes_and_ignores_what_follows(mode: str) -> None:
    t = converse([b"QUIT\r\nNOOP\r\n", b"NOOP\r\n"], mode)
    assert t.output == GREETING + b"221 2.0.0 Bye\r\n"
    assert t.events == [ev.CloseConnection()]
    assert t.engine.closed


def test_quit_in_a_transaction_aborts_it(mode: str) -> None:
    t = converse(EHLO + transaction() + b"QUIT\r\n", mode)
    assert t.decisions[-2:] == [ev.TransactionAborted(), ev.CloseConnection()]
    assert t.output.endswith(b"250 2.1.5 Recipient <b@example.test> ok\r\n221 2.0.0 Bye\r\n")
    assert t.engine.closed


def test_quit_inside_data_is_content(mode: str) -> None:
    t = converse(EHLO + transaction() + b"DATA\r\nQUIT\r\n", mode)
    assert t.codes[-1] == "354"
    assert not t.engine.closed
    assert t.engine.in_transaction


def test_shutdown_sends_421_and_aborts() -> None:
    engine = SmtpServer(MX)
    engine.greet()
    engine.receive_data(EHLO + b"MAIL FROM:<a@example.org>\r\n")
    assert isinstance(engine.next_event(), ev.Hello)
    assert isinstance(engine.next_event(), ev.MailFrom)
    engine.accept()
    assert engine.next_event() is ev.NEED_DATA
    assert engine.in_transaction
    engine.shutdown(replies.service_unavailable(HOST))
    assert engine.next_event() == ev.TransactionAborted()
    assert engine.next_event() == ev.CloseConnection()
    assert engine.next_event() is ev.NEED_DATA
    assert engine.data_to_send().endswith(
        b"421 4.3.2 mx.example.test Service not available, closing channel\r\n"
    )
    engine.receive_data(b"NOOP\r\n")
    assert engine.next_event() is ev.NEED_DATA
    assert engine.data_to_send() == b""


# --- RFC 2034: enhanced status codes on every reply -------------------------------------------


def _check_enhanced(parsed: list[Parsed]) -> None:
    """RFC 2034 §3 (4): every 2xx/4xx/5xx reply but the greeting and HELO/EHLO replies has one."""
    assert parsed[0].code == 220 and parsed[0].enhanced is None
    for r in parsed[1:]:
        if r.enhanced is None:
            hello = r.code == 250 and r.lines[0].startswith(f"{HOST} Hello ")
            assert hello or r.code in (334, 354), f"reply without enhanced code: {r}"
        else:
            # RFC 3463 §2: the class digit matches the reply code's first digit.
            assert r.enhanced[0] == str(r.code)[0], r


def test_every_reply_carries_an_enhanced_status_code(mode: str) -> None:
    policy = Policy(
        passwords={USER: PASSWORD},
        refuse_senders={"spam@example.org": replies.RELAY_DENIED},
        refuse_recipients={"x@example.test": replies.NO_SUCH_USER},
    )
    server = ServerSettings(
        hostname=HOST, tls_available=True, max_message_size=50, max_recipients=2, max_errors=100
    )
    script = [
        b"FOO\r\nMAIL FROM:<a@example.org>\r\nHELO c\r\nEHLO\r\n"
        + EHLO
        + b"AUTH PLAIN "
        + PLAIN
        + b"\r\nSTARTTLS x\r\nSTARTTLS\r\n",
        EHLO
        + b"AUTH CRAM-MD5\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN %%%\r\nAUTH PLAIN "
        + b64(f"\0{USER}\0x")
        + b"\r\nAUTH PLAIN "
        + PLAIN
        + b"\r\nAUTH PLAIN "
        + PLAIN
        + b"\r\nSTARTTLS\r\n"
        + b"HELP\r\nNOOP\r\nVRFY a\r\nEXPN b\r\nVRFY\r\nETRN example.org\r\nETRN\r\n"
        + b"RCPT TO:<b@example.test>\r\nDATA\r\nBDAT 1\r\nx"
        + b"MAIL FROM:<spam@example.org>\r\nMAIL FROM:<a@example.org> SIZE=51\r\n"
        + b"MAIL FROM:<a@example.org> FOO\r\nMAIL FROM:<\xc3\xbc@example.org>\r\n"
        + b"MAIL FROM:<a@example.org\r\nMAIL FROM:<a@@b>\r\n"
        + b"MAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\nDATA\r\n"
        + b"RCPT TO:<x@example.test>\r\nRCPT TO:<b@example.test> NOTIFY=X\r\n"
        + b"RCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nRCPT TO:<d@example.test>\r\n"
        + b"STARTTLS\r\nAUTH PLAIN\r\nETRN x\r\n"
        + b"DATA x\r\nDATA\r\nok\r\n.\r\n"
        + transaction()
        + b"DATA\r\n"
        + b"x" * 60
        + b"\r\n.\r\n"
        + transaction()
        + b"DATA\r\nbare\nlf\r\n.\r\n"
        + transaction()
        + b"BDAT 2\r\nabDATA\r\nBDAT 100 LAST\r\n"
        + b"y" * 100
        + transaction()
        + b"BDAT 0 LAST\r\nRSET\r\n"
        + b"NOOP "
        + b"z" * 5000
        + b"\r\n"
        + b"NOOP \xff\r\nQUIT\r\n",
    ]
    t = converse(script, mode, policy=policy, server=server, tls_active=False)
    _check_enhanced(t.replies)
    assert len(t.replies) > 60
    assert t.engine.closed
    assert {r.code for r in t.replies} >= {
        214, 220, 221, 235, 250, 252, 334, 354, 452, 500, 501, 503, 504, 530, 535, 550, 552,
        553, 554, 555,
    }  # fmt: skip


def _catalogue() -> list[Reply]:
    found = [value for value in vars(replies).values() if isinstance(value, Reply)]
    found += [
        replies.service_unavailable(HOST),
        replies.syntax("x"),
        replies.bad_address("x"),
        replies.unknown_parameter("X"),
        replies.sender_ok("a@b"),
        replies.recipient_ok("a@b"),
        replies.queued("Q"),
        replies.chunk_ok(1),
        replies.message_too_big(1),
        replies.etrn_started("x"),
        replies.etrn_refused("x"),
        replies.etrn_failed("x", full=True),
        replies.etrn_failed("x", full=False),
    ]
    return found


@pytest.mark.parametrize("reply", _catalogue(), ids=lambda r: f"{r.code}-{r.lines[0][:20]}")
def test_catalogue_replies_carry_enhanced_codes(reply: Reply) -> None:
    if reply.code // 100 == 3:
        assert reply.enhanced is None  # RFC 2034 §3 (4) covers 2xx, 4xx and 5xx only
    else:
        assert reply.enhanced is not None
        assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", reply.enhanced)
        assert reply.enhanced[0] == str(reply.code)[0]
    parse_replies(reply.to_bytes())


def test_replies_without_enhanced_codes_are_only_the_exempt_ones() -> None:
    assert replies.greeting(HOST).enhanced is None
    assert replies.helo_ok(HOST, "c").enhanced is None
    assert replies.ehlo_ok(HOST, "c", ["PIPELINING"]).enhanced is None
    assert replies.auth_challenge("").to_bytes() == b"334 \r\n"


def test_multiline_reply_repeats_the_enhanced_code() -> None:
    assert replies.HELP.to_bytes() == (
        b"214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY EXPN ETRN"
        b" STARTTLS AUTH\r\n"
        b"214 2.0.0 See RFC 5321 for details\r\n"
    )


# --- robustness: random input never breaks the engine ----------------------------------------

_COMMANDS = [
    b"EHLO c\r\n",
    b"HELO c\r\n",
    b"MAIL FROM:<a@example.org>\r\n",
    b"MAIL FROM:<a@example.org> SIZE=5 BODY=8BITMIME RET=FULL ENVID=x+2B\r\n",
    b"MAIL FROM:<>\r\n",
    b"MAIL FROM:x\r\n",
    b"RCPT TO:<b@example.test>\r\n",
    b"RCPT TO:<b@example.test> NOTIFY=SUCCESS ORCPT=rfc822;b@example.test\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"DATA\r\n",
    b"BDAT 3\r\n",
    b"BDAT 2 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"HELP\r\n",
    b"VRFY x\r\n",
    b"ETRN x\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH SCRAM-SHA-256\r\n",
    b"AUTH PLAIN " + PLAIN + b"\r\n",
    b"*\r\n",
    b"=\r\n",
    b"\r\n",
    b".\r\n",
    b"..\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r",
    b"\n",
    b"x" * 300,
    b"\xff\x00",
]

# Random input, often after a prologue that reaches DATA, BDAT or an AUTH exchange.
_PROLOGUES = [
    b"",
    EHLO,
    EHLO + transaction(),
    EHLO + transaction() + b"DATA\r\n",
    EHLO + transaction() + b"BDAT 7\r\n",
    EHLO + b"AUTH LOGIN\r\n",
]
_input_pieces = st.builds(
    lambda prologue, pieces: prologue + b"".join(pieces),
    st.sampled_from(_PROLOGUES),
    st.lists(st.one_of(st.sampled_from(_COMMANDS), st.binary(max_size=20)), max_size=40),
)


def _feed_chunks(engine: SmtpServer, chunks: Sequence[bytes], policy: Policy) -> _RunState:
    engine.greet()
    state = _RunState()
    _drain(engine, policy, state)
    for chunk in chunks:
        if engine.closed:
            break
        engine.receive_data(chunk)
        _drain(engine, policy, state)
    return state


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_input_pieces, cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_random_input_never_breaks_the_engine(data: bytes, cuts: list[int]) -> None:
    server = ServerSettings(
        hostname=HOST, max_line_length=128, max_message_size=64, max_errors=15,
        allow_insecure_auth=True,
    )  # fmt: skip
    policy = Policy(passwords={USER: PASSWORD})
    whole = _feed_chunks(SmtpServer(server), [data], policy)
    pieces = _feed_chunks(SmtpServer(server), _split(data, cuts), policy)
    # However TCP cuts the stream, the engine answers the same.
    assert pieces.output == whole.output
    assert [e for e in pieces.events if not isinstance(e, ev.MessageData)] == [
        e for e in whole.events if not isinstance(e, ev.MessageData)
    ]
    assert pieces.messages == whole.messages
    parsed = parse_replies(bytes(whole.output))
    _check_enhanced(parsed)
    if any(isinstance(e, ev.CloseConnection) for e in whole.events):
        assert parsed[-1].code in (221, 421)


@settings(max_examples=200, deadline=None)
@given(data=_input_pieces, cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_random_input_with_tls_and_auth_never_raises(data: bytes, cuts: list[int]) -> None:
    policy = Policy(passwords={USER: PASSWORD}, scram={USER: SCRAM_CREDS})
    for tls_active in (False, True):
        state = _feed_chunks(
            SmtpServer(SUBMISSION, tls_active=tls_active), _split(data, cuts), policy
        )
        parse_replies(bytes(state.output))


_MODE_CHANGING = {"DATA", "BDAT", "AUTH", "QUIT", "STARTTLS"}


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.text(max_size=60), max_size=30))
def test_random_command_lines_get_one_reply_each(lines: list[str]) -> None:
    lines = [line.replace("\r", "").replace("\n", "") for line in lines]
    data = "".join(line + "\r\n" for line in lines).encode()
    engine = SmtpServer(ServerSettings(hostname=HOST, max_errors=1000))
    state = _feed_chunks(engine, [data], Policy())
    parsed = parse_replies(bytes(state.output))
    assert parsed[0].code == 220
    if not any(line.partition(" ")[0].upper() in _MODE_CHANGING for line in lines):
        # Whatever the line, the session answers it with exactly one reply and goes on.
        assert len(parsed) == 1 + len(lines)
        assert not engine.closed
