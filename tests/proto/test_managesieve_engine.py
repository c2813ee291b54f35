"""The ManageSieve engine (RFC 5804) driven in memory: grammar, literals, limits, states, SASL,
STARTTLS and the script operations, answered by a small in-memory script store (pure logic)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.proto import sasl
from postroom.proto.managesieve import (
    MAX_NAME_LENGTH,
    MAX_SCRIPT_SIZE,
    MAX_SCRIPTS,
    ManageSieveServer,
    ManageSieveSettings,
    space_refusal,
    valid_name,
)
from postroom.proto.managesieve import events as ev
from postroom.proto.managesieve.wire import CONTINUE, CommandReader, Problem, tokenize

USER = "alice@example.test"
PASSWORD = "secret"
GOOD = 'require "fileinto";\r\nif header :contains "subject" "x" { fileinto "X"; }\r\n'
BAD = 'require "fileinto";\r\nif header :contains "subject" "x" { fileinto "X" }\r\n'


class FakeScripts:
    """The store side for the engine: a dict, with the quota rule of `space_refusal`."""

    def __init__(self) -> None:
        self.scripts: dict[str, str] = {}
        self.active: str | None = None

    def perform(self, op: ev.ScriptOp) -> ev.OpResult:
        if isinstance(op, ev.ListScripts):
            return ev.Listing(tuple((n, n == self.active) for n in sorted(self.scripts)))
        if isinstance(op, ev.GetScript):
            if op.name not in self.scripts:
                return ev.Refused("NONEXISTENT", "no such script")
            return ev.Source(self.scripts[op.name])
        sizes = {n: len(s.encode()) for n, s in self.scripts.items()}
        if isinstance(op, ev.HaveSpace):
            return space_refusal(sizes, op.name, op.size) or ev.Done()
        if isinstance(op, ev.PutScript):
            refusal = space_refusal(sizes, op.name, len(op.source.encode()))
            if refusal:
                return refusal
            self.scripts[op.name] = op.source
            return ev.Done()
        if isinstance(op, ev.SetActive):
            if op.name is not None and op.name not in self.scripts:
                return ev.Refused("NONEXISTENT", "no such script")
            self.active = op.name
            return ev.Done()
        if isinstance(op, ev.DeleteScript):
            if op.name not in self.scripts:
                return ev.Refused("NONEXISTENT", "no such script")
            if op.name == self.active:
                return ev.Refused("ACTIVE", "active")
            del self.scripts[op.name]
            return ev.Done()
        assert isinstance(op, ev.RenameScript)
        if op.old not in self.scripts:
            return ev.Refused("NONEXISTENT", "no such script")
        if op.new in self.scripts:
            return ev.Refused("ALREADYEXISTS", "exists")
        self.scripts[op.new] = self.scripts.pop(op.old)
        if self.active == op.old:
            self.active = op.new
        return ev.Done()


class Session:
    def __init__(self, *, tls: bool = True, plaintext: bool = False) -> None:
        self.engine = ManageSieveServer(
            ManageSieveSettings(
                "mx.example.test", tls_available=True, allow_plaintext_auth=plaintext
            ),
            tls_active=tls,
        )
        self.store = FakeScripts()
        self.seen: list[object] = []
        self.engine.greet()
        self.greeting = self.engine.data_to_send()

    def send(self, data: bytes) -> bytes:
        self.engine.receive_data(data)
        while True:
            event = self.engine.next_event()
            if isinstance(event, ev.NeedData):
                return self.engine.data_to_send()
            self.seen.append(event)
            if isinstance(event, ev.Verify):
                need = event.need
                assert isinstance(need, sasl.CheckPassword)
                self.engine.answered(need.authcid == USER and need.password == PASSWORD)
            elif isinstance(event, ev.StartTls):
                self.engine.tls_started()
            elif isinstance(
                event,
                ev.ListScripts
                | ev.GetScript
                | ev.PutScript
                | ev.HaveSpace
                | ev.SetActive
                | ev.DeleteScript
                | ev.RenameScript,
            ):
                self.engine.script_done(self.store.perform(event))

    def login(self) -> None:
        token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        assert self.send(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode()) == b'OK "Logged in"\r\n'


def literal(text: str, sync: bool = False) -> bytes:
    data = text.encode()
    return b"{%d%s}\r\n" % (len(data), b"" if sync else b"+") + data


def capability_lines(data: bytes) -> dict[str, str | None]:
    result: dict[str, str | None] = {}
    for line in data.decode().split("\r\n"):
        if line.startswith('"'):
            args, _ = tokenize(line)
            result[args[0].text] = args[1].text if len(args) > 1 else None
    return result


def test_greeting_lists_capabilities_then_ok() -> None:
    s = Session(tls=False)
    caps = capability_lines(s.greeting)
    assert s.greeting.endswith(b'OK "mx.example.test ManageSieve ready"\r\n')
    assert caps["IMPLEMENTATION"] == "postroom"
    assert caps["SASL"] == ""  # no plaintext logins before TLS
    assert caps["STARTTLS"] is None
    assert caps["VERSION"] == "1.0"
    assert caps["MAXREDIRECTS"] == "4"
    assert "NOTIFY" not in caps
    assert "fileinto" in (caps["SIEVE"] or "").split()
    assert "vacation" in (caps["SIEVE"] or "").split()


def test_plaintext_allowed_lists_mechanisms_before_tls() -> None:
    caps = capability_lines(Session(tls=False, plaintext=True).greeting)
    assert caps["SASL"] == "PLAIN LOGIN SCRAM-SHA-256"


def test_authenticate_without_tls_needs_encryption() -> None:
    s = Session(tls=False)
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    reply = s.send(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode())
    assert reply.startswith(b"NO (ENCRYPT-NEEDED)")
    assert s.engine.identity is None


def test_starttls_sends_capabilities_again_and_drops_pipelined_plaintext() -> None:
    s = Session(tls=False)
    out = s.send(b"STARTTLS\r\nLISTSCRIPTS\r\n")
    assert out.startswith(b'OK "Begin TLS negotiation now"\r\n')
    caps = capability_lines(out)
    assert "STARTTLS" not in caps
    assert caps["SASL"] == "PLAIN LOGIN SCRAM-SHA-256"
    assert out.endswith(b'OK "TLS negotiation successful"\r\n')
    assert b"Log in first" not in out  # the pipelined LISTSCRIPTS was not run


def test_login_and_capability_after() -> None:
    s = Session()
    s.login()
    assert any(isinstance(e, ev.LoggedIn) and e.identity == USER for e in s.seen)
    caps = capability_lines(s.send(b"CAPABILITY\r\n"))
    assert caps["OWNER"] == USER
    assert caps["SASL"] == ""
    assert s.send(b'AUTHENTICATE "PLAIN"\r\n') == b'NO "Already logged in"\r\n'


def test_sasl_continuation_and_cancel() -> None:
    s = Session()
    assert s.send(b'AUTHENTICATE "PLAIN"\r\n') == b'""\r\n'
    assert s.send(b'"*"\r\n') == b'NO "Authentication cancelled"\r\n'
    assert s.send(b'AUTHENTICATE "PLAIN"\r\n') == b'""\r\n'
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    assert s.send(literal(token.decode()) + b"\r\n") == b'OK "Logged in"\r\n'


def test_wrong_password_is_reported() -> None:
    s = Session()
    token = base64.b64encode(f"\0{USER}\0wrong".encode()).decode()
    assert s.send(f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode()) == (
        b'NO "Authentication failed"\r\n'
    )
    assert any(isinstance(e, ev.AuthFailed) and e.authcid == USER for e in s.seen)


def test_commands_need_login() -> None:
    s = Session()
    assert s.send(b"LISTSCRIPTS\r\n") == b'NO "Log in first"\r\n'


def test_script_lifecycle() -> None:
    s = Session()
    s.login()
    assert s.send(b'PUTSCRIPT "main" ' + literal(GOOD) + b"\r\n") == (
        b'OK "Putscript completed"\r\n'
    )
    assert s.send(b'PUTSCRIPT "other" "keep;"\r\n') == b'OK "Putscript completed"\r\n'
    assert s.send(b'SETACTIVE "main"\r\n') == b'OK "Setactive completed"\r\n'
    assert s.send(b"LISTSCRIPTS\r\n") == (
        b'"main" ACTIVE\r\n"other"\r\nOK "Listscripts completed"\r\n'
    )
    data = GOOD.encode()
    assert s.send(b'GETSCRIPT "main"\r\n') == (
        b"{%d}\r\n" % len(data) + data + b'\r\nOK "Getscript completed"\r\n'
    )
    assert s.send(b'DELETESCRIPT "main"\r\n').startswith(b"NO (ACTIVE)")
    assert s.send(b'RENAMESCRIPT "main" "other"\r\n').startswith(b"NO (ALREADYEXISTS)")
    assert s.send(b'RENAMESCRIPT "main" "renamed"\r\n') == b'OK "Renamescript completed"\r\n'
    assert s.store.active == "renamed"
    assert s.send(b'GETSCRIPT "main"\r\n').startswith(b"NO (NONEXISTENT)")
    assert s.send(b'SETACTIVE ""\r\n') == b'OK "Setactive completed"\r\n'
    assert s.store.active is None
    assert s.send(b'DELETESCRIPT "renamed"\r\n') == b'OK "Deletescript completed"\r\n'
    assert s.send(b'SETACTIVE "nope"\r\n').startswith(b"NO (NONEXISTENT)")


def test_invalid_script_refused_with_position() -> None:
    s = Session()
    s.login()
    reply = s.send(b'PUTSCRIPT "bad" ' + literal(BAD) + b"\r\n")
    assert reply.startswith(b'NO "2:')
    assert "bad" not in s.store.scripts
    assert s.send(b"CHECKSCRIPT " + literal(BAD) + b"\r\n").startswith(b'NO "2:')
    assert s.send(b"CHECKSCRIPT " + literal(GOOD) + b"\r\n") == b'OK "Script is valid"\r\n'


def test_synchronizing_literal_gets_a_continuation() -> None:
    s = Session()
    s.login()
    assert s.send(b'PUTSCRIPT "s" {5}\r\n') == b'+ "Ready for literal data"\r\n'
    assert s.send(b"keep;\r\n") == b'OK "Putscript completed"\r\n'
    assert s.store.scripts["s"] == "keep;"


def test_literal_split_across_reads() -> None:
    s = Session()
    s.login()
    wire = b'PUTSCRIPT "s" ' + literal(GOOD) + b"\r\n"
    out = b"".join(s.send(wire[i : i + 3]) for i in range(0, len(wire), 3))
    assert out == b'OK "Putscript completed"\r\n'
    assert s.store.scripts["s"] == GOOD


def test_oversize_literal_refused_before_it_is_read() -> None:
    s = Session()
    s.login()
    size = MAX_SCRIPT_SIZE + 1
    # The refusal comes as soon as the announcement does, before any of the literal arrives.
    assert s.send(b'PUTSCRIPT "big" {%d+}\r\n' % size).startswith(b"NO (QUOTA/MAXSIZE)")
    assert s.engine.buffered == 0
    # Its octets are dropped as they come, then the session goes on in step.
    assert s.send(b"x" * size + b"\r\n") == b""
    assert s.send(b"NOOP\r\n") == b'OK "Done"\r\n'
    assert s.store.scripts == {}


def test_oversize_synchronizing_literal_gets_no_continuation() -> None:
    s = Session()
    s.login()
    reply = s.send(b'PUTSCRIPT "big" {%d}\r\n' % (MAX_SCRIPT_SIZE + 1))
    assert reply.startswith(b"NO (QUOTA/MAXSIZE)")
    assert s.send(b"NOOP\r\n") == b'OK "Done"\r\n'


def test_havespace() -> None:
    s = Session()
    s.login()
    assert s.send(b'HAVESPACE "a" 100\r\n') == b'OK "Putscript would succeed"\r\n'
    assert s.send(b'HAVESPACE "a" %d\r\n' % (MAX_SCRIPT_SIZE + 1)).startswith(b"NO (QUOTA/MAXSIZE)")
    for i in range(MAX_SCRIPTS):
        s.store.scripts[f"s{i}"] = "keep;"
    assert s.send(b'HAVESPACE "new" 10\r\n').startswith(b"NO (QUOTA/MAXSCRIPTS)")
    assert s.send(b'HAVESPACE "s1" 10\r\n').startswith(b"OK")  # replacing one fits
    assert s.send(b'PUTSCRIPT "new" "keep;"\r\n').startswith(b"NO (QUOTA/MAXSCRIPTS)")
    assert s.send(b'HAVESPACE "a" "ten"\r\n').startswith(b"NO")


def test_noop_tag_and_bad_commands_keep_the_session() -> None:
    s = Session()
    assert s.send(b'NOOP "t1"\r\n') == b'OK (TAG "t1") "Done"\r\n'
    assert s.send(b"FROB\r\n") == b'NO "Unknown command"\r\n'
    assert s.send(b'NOOP "unterminated\r\n').startswith(b'NO "Syntax error')
    assert s.send(b"NOOP a b c\r\n").startswith(b'NO "Wrong number')
    assert s.send(b"\r\n") == b'NO "Empty command"\r\n'
    assert s.send(b"noop\r\n") == b'OK "Done"\r\n'  # case-insensitive


def test_syntax_error_with_a_literal_stays_in_step() -> None:
    s = Session()
    s.login()
    assert s.send(b'PUTSCRIPT "a {5+}\r\nkeep;\r\n').startswith(b'NO "Syntax error')
    assert s.send(b"NOOP\r\n") == b'OK "Done"\r\n'


def test_script_names() -> None:
    assert valid_name("vacation")
    assert valid_name("Ferien ☀")
    assert not valid_name("")
    assert not valid_name("a\x01b")
    assert not valid_name("a\u0085b")
    assert not valid_name("a\u2028b")
    assert not valid_name("x" * (MAX_NAME_LENGTH + 1))
    assert not valid_name("e\u0301")  # not NFC
    s = Session()
    s.login()
    assert s.send(b'PUTSCRIPT "a\x7fb" "keep;"\r\n') in (
        b'NO "Invalid script name"\r\n',
        b'NO "Syntax error: control character in a quoted string"\r\n',
    )
    assert s.send(b"PUTSCRIPT " + literal("a\tb") + b' "keep;"\r\n') == (
        b'NO "Invalid script name"\r\n'
    )


def test_unauthenticate_and_logout() -> None:
    s = Session()
    s.login()
    assert s.send(b"UNAUTHENTICATE\r\n") == b'OK "Unauthenticate completed"\r\n'
    assert any(isinstance(e, ev.LoggedOut) for e in s.seen)
    assert s.send(b"LISTSCRIPTS\r\n") == b'NO "Log in first"\r\n'
    assert s.send(b"LOGOUT\r\n") == b'OK "Logout completed"\r\n'
    assert s.engine.closed


def test_overlong_line_ends_the_session() -> None:
    s = Session()
    out = s.send(b"NOOP " + b"a" * 10000 + b"\r\n")
    assert out.startswith(b"BYE")
    assert s.engine.closed


def test_too_many_errors_end_the_session() -> None:
    s = Session()
    out = b"".join(s.send(b"FROB\r\n") for _ in range(25))
    assert out.endswith(b'BYE "Too many errors, closing connection"\r\n')
    assert s.engine.closed


def test_error_text_with_a_line_break_is_a_literal() -> None:
    from postroom.proto.managesieve.wire import string

    assert string('a "b"') == '"a \\"b\\""'
    assert string("a\r\nb") == "{4}\r\na\r\nb"


# --- the reader alone, and fuzzing --------------------------------------------------------------


def test_reader_limits_and_forms() -> None:
    reader = CommandReader(100, 10, 50)
    buf = bytearray(b'PUTSCRIPT "n" {3}\r\n')
    assert reader.take(buf) is CONTINUE
    buf += b"abc\r\n"
    taken = reader.take(buf)
    assert isinstance(taken, list)
    assert [a.text for a in taken] == ["PUTSCRIPT", "n", "abc"]
    buf = bytearray(b"X {11+}\r\n")
    problem = reader.take(buf)
    assert isinstance(problem, Problem) and problem.code == "QUOTA/MAXSIZE"
    assert reader.mid_command  # still dropping the 11 octets
    buf += b"0123456789A\r\n"
    assert reader.take(buf) is None
    assert not reader.mid_command
    buf = bytearray(b"X {99999999999+}\r\n")
    assert isinstance(reader.take(buf), Problem)


def test_tokenize_numbers_and_escapes() -> None:
    args, lit = tokenize(r'HAVESPACE "a\"b\\" 42')
    assert [(a.kind, a.text) for a in args] == [
        ("atom", "HAVESPACE"),
        ("string", 'a"b\\'),
        ("number", "42"),
    ]
    assert lit is None
    with pytest.raises(ValueError):
        tokenize("X 99999999999")
    with pytest.raises(ValueError):
        tokenize('X "a\\n"')


_commands = st.sampled_from(
    [
        b"CAPABILITY",
        b"NOOP",
        b"LISTSCRIPTS",
        b"PUTSCRIPT",
        b"GETSCRIPT",
        b"HAVESPACE",
        b"SETACTIVE",
        b"DELETESCRIPT",
        b"RENAMESCRIPT",
        b"CHECKSCRIPT",
        b"AUTHENTICATE",
        b'"',
        b"{",
        b"}",
        b"+",
        b" ",
        b"\r\n",
        b"\n",
        b"{3+}\r\n",
        b"{2}\r\n",
        b"\\",
        b"\x00",
        b"\xff",
        b'"keep;"',
        b'"a"',
        b"123",
        b"99999999999",
        b"*",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_commands, st.binary(max_size=20)), max_size=40), st.integers(1, 17))
def test_fuzz_session_never_crashes(parts: list[bytes], chunk: int) -> None:
    s = Session()
    s.login()
    data = b"".join(parts)
    for i in range(0, len(data), chunk):
        if s.engine.closed:
            break
        out = s.send(data[i : i + chunk])
        for line in out.split(b"\r\n"):
            assert len(line) < 2 * MAX_SCRIPT_SIZE
    assert s.engine.buffered <= len(data)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_tokenize_is_total(line: str) -> None:
    try:
        args, lit = tokenize(line)
    except ValueError:
        return
    for arg in args:
        if arg.kind == "number":
            assert 0 <= arg.number <= 0xFFFFFFFF
    if lit is not None:
        assert line.endswith("}")
