"""Tests for the sans-I/O POP3 server engine (RFC 1939, 2449, 2595, 5034).

Every conversation runs twice (the `mode` fixture): each client flight fed in one
`receive_data` call, and fed one byte at a time. In byte mode the conversation is also replayed
whole and both must give the same bytes and events: the engine must not care how TCP cut the
stream.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.proto import sasl
from postroom.proto.pop3 import events as ev
from postroom.proto.pop3 import replies
from postroom.proto.pop3.engine import Mode, Pop3Server, Pop3Settings, State

HOST = "pop.example.test"
USER = "alice@example.test"
PASSWORD = "correct horse"
PLAIN_TEXT = Pop3Settings(hostname=HOST, tls_available=True)  # the pop3 port before STLS
TLS = Pop3Settings(hostname=HOST)  # pop3s, or after STLS
MSG1 = (
    b"Return-Path: <bob@example.org>\r\n"
    b"Received: from client by pop.example.test\r\n"
    b"Subject: one\r\n"
    b"\r\n"
    b"first line\r\n"
    b".leading dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"last line\r\n"
)
MSG2 = b"Subject: two\r\n\r\nbody without final line ending"
MESSAGES = {10: MSG1, 11: MSG2}
ENTRIES = [ev.MaildropEntry(10, len(MSG1), "7.10"), ev.MaildropEntry(11, len(MSG2), "7.11")]
SCRAM_CREDS = sasl.derive_scram_credentials(PASSWORD, salt=b"0123456789abcdef", iterations=4096)

Flight = bytes | Callable[[bytes], bytes]


@dataclass
class Maildrop:
    """How the test driver answers the engine's decisions."""

    passwords: dict[str, str] = field(default_factory=lambda: {USER: PASSWORD})
    scram: dict[str, sasl.ScramCredentials] = field(default_factory=lambda: {USER: SCRAM_CREDS})
    entries: list[ev.MaildropEntry] = field(default_factory=lambda: list(ENTRIES))
    messages: dict[int, bytes] = field(default_factory=lambda: dict(MESSAGES))
    locked: set[str] = field(default_factory=set)
    store_down: bool = False
    commit_ok: bool = True


@dataclass
class Talk:
    engine: Pop3Server
    output: bytes
    events: list[object]

    @property
    def lines(self) -> list[bytes]:
        return self.output.split(b"\r\n")[:-1]

    @property
    def statuses(self) -> list[str]:
        """The first word of every status line ("+OK"/"-ERR"/"+" for challenges)."""
        return [
            line.split(b" ", 1)[0].decode()
            for line in self.lines
            if line.startswith((b"+OK", b"-ERR", b"+ ")) or line == b"+"
        ]


def pump(engine: Pop3Server, drop: Maildrop, events: list[object]) -> None:
    while True:
        event = engine.next_event()
        if isinstance(event, ev.NeedData):
            return
        assert not isinstance(event, ev.Paused), "the test driver answers every decision"
        events.append(event)
        if isinstance(event, ev.Verify):
            need = event.need
            if isinstance(need, sasl.CheckPassword):
                engine.answered(drop.passwords.get(need.authcid) == need.password)
            else:
                engine.answered(drop.scram.get(need.authcid))
        elif isinstance(event, ev.OpenMaildrop):
            if event.identity in drop.locked or drop.store_down:
                engine.maildrop_refused(in_use=not drop.store_down)
            else:
                engine.maildrop_opened(drop.entries)
        elif isinstance(event, ev.FetchMessage):
            if drop.store_down:
                engine.fetch_failed()
            else:
                engine.message_fetched(drop.messages.get(event.key))
        elif isinstance(event, ev.CommitDeletions):
            engine.deletions_committed(drop.commit_ok)
        elif isinstance(event, ev.StartTls):
            engine.tls_started()


def converse(
    flights: Sequence[Flight],
    mode: str,
    *,
    settings: Pop3Settings = TLS,
    tls_active: bool = True,
    drop: Maildrop | None = None,
) -> Talk:
    def run(bytewise: bool) -> Talk:
        engine = Pop3Server(settings, tls_active=tls_active)
        maildrop = drop or Maildrop()
        events: list[object] = []
        engine.greet()
        output = bytearray(engine.data_to_send())
        for flight in flights:
            data = flight(bytes(output)) if callable(flight) else flight
            pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
            for piece in pieces:
                engine.receive_data(piece)
                pump(engine, maildrop, events)
                output += engine.data_to_send()
        return Talk(engine, bytes(output), events)

    talk = run(mode == "bytes")
    if mode == "bytes" and not any(callable(f) for f in flights):
        whole = run(False)
        assert whole.output == talk.output
        assert whole.events == talk.events
    return talk


@pytest.fixture(params=["whole", "bytes"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


LOGIN = f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode()
GREETING = b"+OK pop.example.test POP3 postroom ready\r\n"
LOGGED_IN = f"+OK Logged in, 2 messages ({len(MSG1) + len(MSG2)} octets)\r\n".encode()


# --- AUTHORIZATION state ----------------------------------------------------------------------


def test_greeting_and_capabilities_before_tls(mode: str) -> None:
    t = converse([b"CAPA\r\n"], mode, settings=PLAIN_TEXT, tls_active=False)
    assert t.output == GREETING + (
        b"+OK Capability list follows\r\n"
        b"TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSTLS\r\n"
        b"IMPLEMENTATION postroom\r\n.\r\n"
    )


def test_capabilities_over_tls_offer_user_and_sasl(mode: str) -> None:
    t = converse([b"capa\r\n"], mode)
    assert b"\r\nUSER\r\nSASL PLAIN LOGIN SCRAM-SHA-256\r\n" in t.output
    assert b"STLS" not in t.output


@pytest.mark.parametrize(
    "command", [b"USER alice@example.test", b"PASS secret", b"AUTH PLAIN", b"AUTH"]
)
def test_credentials_refused_before_tls(mode: str, command: bytes) -> None:
    t = converse([command + b"\r\n"], mode, settings=PLAIN_TEXT, tls_active=False)
    assert t.lines[-1] == b"-ERR [AUTH] Plaintext authentication disallowed, use STLS first"
    assert not any(isinstance(e, ev.Verify) for e in t.events)


def test_plaintext_login_when_allowed(mode: str) -> None:
    settings = Pop3Settings(hostname=HOST, tls_available=True, allow_plaintext_auth=True)
    t = converse([LOGIN], mode, settings=settings, tls_active=False)
    assert t.output.endswith(LOGGED_IN)
    assert t.engine.state is State.TRANSACTION


def test_user_pass_login(mode: str) -> None:
    t = converse([LOGIN], mode)
    assert t.output == GREETING + b"+OK Send PASS\r\n" + LOGGED_IN
    assert t.events == [
        ev.Verify("USER", sasl.CheckPassword(USER, "", PASSWORD)),
        ev.OpenMaildrop(USER),
    ]
    assert t.engine.identity == USER


def test_password_keeps_its_spaces(mode: str) -> None:
    drop = Maildrop(passwords={USER: " two  spaces "})
    t = converse([f"USER {USER}\r\nPASS  two  spaces \r\n".encode()], mode, drop=drop)
    assert t.output.endswith(LOGGED_IN)


def test_wrong_password_then_right_one(mode: str) -> None:
    t = converse([f"USER {USER}\r\nPASS nope\r\nSTAT\r\n".encode(), LOGIN], mode)
    assert t.statuses == ["+OK", "+OK", "-ERR", "-ERR", "+OK", "+OK"]
    assert b"-ERR [AUTH] Authentication failed\r\n" in t.output
    assert b"-ERR Log in first (USER/PASS or AUTH)\r\n" in t.output
    assert t.engine.state is State.TRANSACTION


def test_pass_needs_user_first(mode: str) -> None:
    t = converse([b"PASS secret\r\n", f"USER {USER}\r\nPASS x\r\nPASS x\r\n".encode()], mode)
    assert t.lines[1:] == [
        b"-ERR Send USER first",
        b"+OK Send PASS",
        b"-ERR [AUTH] Authentication failed",
        b"-ERR Send USER first",
    ]


def test_maildrop_in_use(mode: str) -> None:
    t = converse([LOGIN, b"STAT\r\n"], mode, drop=Maildrop(locked={USER}))
    assert t.lines[2] == b"-ERR [IN-USE] Mailbox already locked by another POP3 session"
    assert t.lines[3].startswith(b"-ERR Log in first")
    assert t.engine.state is State.AUTHORIZATION and t.engine.identity is None


def test_maildrop_unavailable_is_sys_temp(mode: str) -> None:
    t = converse([LOGIN], mode, drop=Maildrop(store_down=True))
    assert t.lines[-1].startswith(b"-ERR [SYS/TEMP] ")


def test_auth_plain_with_initial_response(mode: str) -> None:
    token = b64(f"\0{USER}\0{PASSWORD}".encode())
    t = converse([b"AUTH PLAIN " + token + b"\r\nSTAT\r\n"], mode)
    assert t.output == GREETING + LOGGED_IN + f"+OK 2 {len(MSG1) + len(MSG2)}\r\n".encode()
    assert ev.Verify("PLAIN", sasl.CheckPassword(USER, "", PASSWORD)) in t.events


def test_auth_plain_with_a_challenge(mode: str) -> None:
    token = b64(f"{USER}\0{USER}\0{PASSWORD}".encode())
    t = converse([b"AUTH plain\r\n", token + b"\r\n"], mode)
    assert t.lines[1] == b"+ "
    assert t.output.endswith(LOGGED_IN)


def test_auth_wrong_password_is_auth_code(mode: str) -> None:
    token = b64(f"\0{USER}\0wrong".encode())
    t = converse([b"AUTH PLAIN " + token + b"\r\n"], mode)
    assert t.lines[-1] == b"-ERR [AUTH] Authentication failed"
    assert t.engine.mode is Mode.COMMAND and t.engine.state is State.AUTHORIZATION


def test_auth_cancel_and_malformed(mode: str) -> None:
    t = converse([b"AUTH PLAIN\r\n*\r\nAUTH PLAIN\r\n!!notbase64\r\nAUTH PLAIN =\r\n"], mode)
    assert t.lines[1:] == [
        b"+ ",
        b"-ERR Authentication cancelled",
        b"+ ",
        b"-ERR Malformed authentication data",
        b"-ERR Malformed authentication data",
    ]


def test_auth_unknown_mechanism_and_listing(mode: str) -> None:
    t = converse([b"AUTH CRAM-MD5\r\nAUTH\r\n"], mode)
    assert t.lines[1:] == [
        b"-ERR Unsupported authentication mechanism",
        b"+OK Supported SASL mechanisms follow",
        b"PLAIN",
        b"LOGIN",
        b"SCRAM-SHA-256",
        b".",
    ]


def test_auth_login(mode: str) -> None:
    t = converse(
        [b"AUTH LOGIN\r\n", b64(USER.encode()) + b"\r\n", b64(PASSWORD.encode()) + b"\r\n"], mode
    )
    assert t.lines[1] == b"+ " + b64(b"Username:")
    assert t.lines[2] == b"+ " + b64(b"Password:")
    assert t.output.endswith(LOGGED_IN)


def test_auth_response_longer_than_a_command_line(mode: str) -> None:
    password = "p" * 400
    token = b64(f"\0{USER}\0{password}".encode())
    t = converse(
        [b"AUTH PLAIN\r\n", token + b"\r\n"], mode, drop=Maildrop(passwords={USER: password})
    )
    assert t.output.endswith(LOGGED_IN)


CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"


class ScramClient:
    """The client side of RFC 5802 §3, written from the RFC."""

    def __init__(self, user: str, password: str) -> None:
        self.password = password
        self.first_bare = f"n={user},r={CLIENT_NONCE}".encode()
        self.server_signature = b""

    def first(self) -> bytes:
        return b"n,," + self.first_bare

    def final(self, output: bytes) -> bytes:
        server_first = base64.b64decode(_last_challenge(output))
        attrs = dict(item.split(b"=", 1) for item in server_first.split(b","))
        salted = hashlib.pbkdf2_hmac(
            "sha256", self.password.encode(), base64.b64decode(attrs[b"s"]), int(attrs[b"i"])
        )
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        without_proof = b"c=biws,r=" + attrs[b"r"]
        auth_message = self.first_bare + b"," + server_first + b"," + without_proof
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return b64(without_proof + b",p=" + b64(proof)) + b"\r\n"

    def acknowledge(self, output: bytes) -> bytes:
        assert base64.b64decode(_last_challenge(output)) == b"v=" + b64(self.server_signature)
        return b"\r\n"  # RFC 5034 §4: an empty response to the last challenge


def _last_challenge(output: bytes) -> bytes:
    return [line for line in output.split(b"\r\n") if line.startswith(b"+ ")][-1][2:]


@pytest.fixture
def fixed_scram_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    real = sasl.new_mechanism

    def new_mechanism(name: str) -> sasl.Mechanism | None:
        if name.upper() == "SCRAM-SHA-256":
            return sasl.ScramSha256Mechanism(nonce=SERVER_NONCE)
        return real(name)

    monkeypatch.setattr(sasl, "new_mechanism", new_mechanism)


@pytest.mark.usefixtures("fixed_scram_nonce")
@pytest.mark.parametrize("password", [PASSWORD, "wrong"])
def test_auth_scram_sha_256(mode: str, password: str) -> None:
    client = ScramClient(USER, password)
    flights: list[Flight] = [
        b"AUTH SCRAM-SHA-256 " + b64(client.first()) + b"\r\n",
        client.final,
    ]
    if password == PASSWORD:
        flights.append(client.acknowledge)
    t = converse(flights, mode)
    if password == PASSWORD:
        assert t.output.endswith(LOGGED_IN)
        assert ev.Verify("SCRAM-SHA-256", sasl.NeedScramCredentials(USER, "")) in t.events
    else:
        assert t.lines[-1] == b"-ERR [AUTH] Authentication failed"


def test_stls_discards_pipelined_plaintext() -> None:
    # Whole flights only: the test driver "finishes the handshake" at once, so bytes fed one
    # by one after STLS would count as TLS input.
    t = converse(
        [b"STLS\r\nUSER injected\r\n", b"CAPA\r\n" + LOGIN],
        "whole",
        settings=PLAIN_TEXT,
        tls_active=False,
    )
    assert t.lines[1] == b"+OK Begin TLS negotiation"
    assert b"injected" not in t.output
    assert b"+OK Send PASS" in t.output  # one USER answered: the one sent after the handshake
    assert t.output.count(b"+OK Send PASS") == 1
    assert b"STLS\r\n" not in t.output.split(b"Capability list follows")[1]
    assert t.output.endswith(LOGGED_IN)
    assert ev.StartTls() in t.events


def test_stls_refusals(mode: str) -> None:
    t = converse([b"STLS\r\n"], mode)  # already TLS
    assert t.lines[-1] == b"-ERR TLS is already active"
    t = converse([b"STLS\r\n"], mode, settings=TLS, tls_active=False)
    assert t.lines[-1] == b"-ERR TLS is not available"
    t = converse([b"STLS now\r\n"], mode, settings=PLAIN_TEXT, tls_active=False)
    assert t.lines[-1] == b"-ERR This command takes no arguments"


# --- TRANSACTION and UPDATE states ------------------------------------------------------------


def test_stat_list_uidl(mode: str) -> None:
    t = converse([LOGIN + b"STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 1\r\n"], mode)
    total = len(MSG1) + len(MSG2)
    assert (
        t.output
        == GREETING
        + b"+OK Send PASS\r\n"
        + LOGGED_IN
        + (
            f"+OK 2 {total}\r\n"
            f"+OK 2 messages ({total} octets)\r\n1 {len(MSG1)}\r\n2 {len(MSG2)}\r\n.\r\n"
            f"+OK 2 {len(MSG2)}\r\n"
            "+OK Unique-ID listing follows\r\n1 7.10\r\n2 7.11\r\n.\r\n"
            "+OK 1 7.10\r\n"
        ).encode()
    )


def test_retr_is_byte_stuffed(mode: str) -> None:
    t = converse([LOGIN + b"RETR 1\r\nRETR 2\r\nNOOP\r\n"], mode)
    body = t.output.split(LOGGED_IN, 1)[1]
    assert body == (
        f"+OK {len(MSG1)} octets\r\n".encode()
        + MSG1.replace(b"\r\n.", b"\r\n..")
        + b".\r\n"
        + f"+OK {len(MSG2)} octets\r\n".encode()
        + MSG2
        + b"\r\n.\r\n"
        + b"+OK\r\n"
    )
    assert [e for e in t.events if isinstance(e, ev.FetchMessage)] == [
        ev.FetchMessage(10),
        ev.FetchMessage(11),
    ]
    assert t.engine.retrieved == 2


def test_top(mode: str) -> None:
    t = converse([LOGIN + b"TOP 1 0\r\nTOP 1 2\r\nTOP 2 5\r\n"], mode)
    body = t.output.split(LOGGED_IN, 1)[1]
    header = MSG1.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert body == (
        b"+OK Top of message follows\r\n" + header + b".\r\n"
        b"+OK Top of message follows\r\n" + header + b"first line\r\n..leading dot\r\n.\r\n"
        b"+OK Top of message follows\r\n" + MSG2 + b"\r\n.\r\n"
    )
    assert t.engine.retrieved == 0


@pytest.mark.parametrize(
    ("command", "response"),
    [
        (b"LIST 0", b"-ERR No such message"),
        (b"LIST 3", b"-ERR No such message"),
        (b"LIST x", b"-ERR Invalid message number"),
        (b"RETR", b"-ERR Invalid message number"),
        (b"TOP 1", b"-ERR TOP needs a message number and a number of lines"),
        (b"TOP 1 -1", b"-ERR TOP needs a message number and a number of lines"),
        (b"UIDL 99999999999", b"-ERR Invalid message number"),
        (b"STAT 1", b"-ERR This command takes no arguments"),
        (b"USER x", b"-ERR Already logged in"),
        (b"STLS", b"-ERR Already logged in"),
        (b"XYZZY", b"-ERR Unknown command"),
        (b"", b"-ERR Unknown command"),
    ],
)
def test_transaction_errors(mode: str, command: bytes, response: bytes) -> None:
    t = converse([LOGIN + command + b"\r\n"], mode)
    assert t.lines[-1] == response


def test_commands_before_login_are_refused(mode: str) -> None:
    t = converse([b"STAT\r\nLIST\r\nRETR 1\r\nNOOP\r\n"], mode)
    assert t.statuses == ["+OK", "-ERR", "-ERR", "-ERR", "-ERR"]


def test_dele_rset_and_quit_commits(mode: str) -> None:
    flights = [
        LOGIN + b"DELE 1\r\nDELE 1\r\nRETR 1\r\nLIST\r\nSTAT\r\nRSET\r\nSTAT\r\n",
        b"DELE 2\r\nUIDL\r\nQUIT\r\nNOOP\r\n",
    ]
    t = converse(flights, mode)
    after = t.output.split(LOGGED_IN, 1)[1]
    assert (
        after
        == (
            "+OK Message 1 deleted\r\n"
            "-ERR Message is deleted\r\n"
            "-ERR Message is deleted\r\n"
            f"+OK 1 messages ({len(MSG2)} octets)\r\n2 {len(MSG2)}\r\n.\r\n"
            f"+OK 1 {len(MSG2)}\r\n"
            f"+OK 2 messages ({len(MSG1) + len(MSG2)} octets)\r\n"
            f"+OK 2 {len(MSG1) + len(MSG2)}\r\n"
            "+OK Message 2 deleted\r\n"
            "+OK Unique-ID listing follows\r\n1 7.10\r\n.\r\n"
            "+OK postroom POP3 signing off (1 messages deleted)\r\n"
        ).encode()
    )
    assert ev.CommitDeletions((11,)) in t.events
    assert t.events[-1] == ev.CloseConnection()
    assert t.engine.closed and t.engine.removed == 1


def test_quit_without_deletions_commits_nothing(mode: str) -> None:
    t = converse([LOGIN + b"QUIT\r\n"], mode)
    assert t.lines[-1] == b"+OK postroom POP3 signing off"
    assert not any(isinstance(e, ev.CommitDeletions) for e in t.events)


def test_quit_in_authorization_state(mode: str) -> None:
    t = converse([b"QUIT\r\nCAPA\r\n"], mode)
    assert t.output == GREETING + b"+OK postroom POP3 signing off\r\n"
    assert t.events == [ev.CloseConnection()]


def test_commit_failure_is_sys_temp(mode: str) -> None:
    t = converse([LOGIN + b"DELE 2\r\nQUIT\r\n"], mode, drop=Maildrop(commit_ok=False))
    assert t.lines[-1] == b"-ERR [SYS/TEMP] Some deleted messages not removed"
    assert t.engine.closed and t.engine.removed == 0


def test_shutdown_does_not_enter_update(mode: str) -> None:
    t = converse([LOGIN + b"DELE 1\r\n"], mode)
    t.engine.shutdown(replies.TIMEOUT)
    assert t.engine.data_to_send() == b"-ERR Disconnected for inactivity\r\n"
    assert t.engine.closed
    assert not any(isinstance(e, ev.CommitDeletions) for e in t.events)


def test_vanished_message_and_store_failure(mode: str) -> None:
    t = converse([LOGIN + b"RETR 1\r\n"], mode, drop=Maildrop(messages={}))
    assert t.lines[-1] == b"-ERR Message no longer exists"
    engine = Pop3Server(TLS, tls_active=True)
    engine.receive_data(LOGIN + b"TOP 1 1\r\n")
    pump(engine, Maildrop(), [])
    drop = Maildrop(store_down=True)
    engine.receive_data(b"RETR 2\r\n")
    pump(engine, drop, [])
    assert engine.data_to_send().endswith(b"-ERR [SYS/TEMP] Message temporarily unavailable\r\n")


# --- line handling ----------------------------------------------------------------------------


def test_command_line_limit_is_255_octets(mode: str) -> None:
    longest = b"USER " + b"u" * 248 + b"\r\n"  # 255 octets with CRLF
    assert len(longest) == 255
    t = converse([longest, b"USER " + b"u" * 249 + b"\r\nCAPA\r\n"], mode)
    assert t.lines[1] == b"+OK Send PASS"
    assert t.lines[2] == b"-ERR Line too long (RFC 2449: 255 octets)"
    assert t.lines[3] == b"+OK Capability list follows"


def test_endless_line_is_dropped_without_growing(mode: str) -> None:
    engine = Pop3Server(TLS, tls_active=True)
    for _ in range(100):
        engine.receive_data(b"x" * 1000)
        pump(engine, Maildrop(), [])
        assert engine.buffered <= 1000
    engine.receive_data(b"\r\nNOOP\r\n")
    pump(engine, Maildrop(), [])
    assert engine.data_to_send() == (
        b"-ERR Line too long (RFC 2449: 255 octets)\r\n-ERR Log in first (USER/PASS or AUTH)\r\n"
    )


def test_bare_lf_and_bad_bytes(mode: str) -> None:
    t = converse([b"CAPA\n", b"NO\0OP\r\n", b"\xff\xfe\r\n"], mode)
    assert t.lines[1] == b"+OK Capability list follows"
    assert t.lines[-2:] == [
        b"-ERR Commands must be ASCII or UTF-8 without NUL",
        b"-ERR Commands must be ASCII or UTF-8 without NUL",
    ]


def test_too_many_errors_close_the_session(mode: str) -> None:
    settings = Pop3Settings(hostname=HOST, max_errors=3)
    t = converse([b"A\r\nB\r\nC\r\nD\r\n"], mode, settings=settings)
    assert t.lines[-1] == b"-ERR [SYS/TEMP] Too many errors, closing connection"
    assert t.statuses.count("-ERR") == 4
    assert t.engine.closed


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_split_of_the_stream_gives_the_same_bytes(cuts: list[int]) -> None:
    stream = LOGIN + b"STAT\r\nLIST\r\nTOP 1 1\r\nDELE 2\r\nRETR 1\r\nUIDL\r\nQUIT\r\n"
    reference = converse([stream], "whole")
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert converse(pieces, "whole").output == reference.output


# --- framing helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "stuffed"),
    [
        (b"", b".\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"a\r\n.\r\n..b\r\n", b"a\r\n..\r\n...b\r\n.\r\n"),
        (b"no newline", b"no newline\r\n.\r\n"),
        (b"bare\n.lf\n", b"bare\n..lf\n.\r\n"),
    ],
)
def test_stuff(content: bytes, stuffed: bytes) -> None:
    assert replies.stuff(content) == stuffed


@pytest.mark.parametrize(
    ("content", "lines", "expected"),
    [
        (b"A: 1\r\n\r\nx\r\ny\r\n", 1, b"A: 1\r\n\r\nx\r\n"),
        (b"A: 1\r\n\r\nx\r\ny\r\n", 9, b"A: 1\r\n\r\nx\r\ny\r\n"),
        (b"A: 1\r\nB: 2\r\n", 0, b"A: 1\r\nB: 2\r\n"),
        (b"\r\nbody\r\n", 0, b"\r\n"),
        (b"A: 1\r\n\r\n\r\n\r\nz\r\n", 2, b"A: 1\r\n\r\n\r\n\r\n"),
    ],
)
def test_top_of(content: bytes, lines: int, expected: bytes) -> None:
    assert replies.top_of(content, lines) == expected


def test_response_codes_render_in_brackets() -> None:
    assert replies.err("busy", "IN-USE").to_bytes() == b"-ERR [IN-USE] busy\r\n"
    assert replies.ok().to_bytes() == b"+OK\r\n"
