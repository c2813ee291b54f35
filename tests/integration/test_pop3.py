"""POP3 against the real server: poplib, raw sockets, fetchmail, getmail6 and curl.

Mail goes in over SMTP and comes out over POP3 byte for byte, trace headers included; the
maildrop lock, UIDL stability and the UPDATE-state rules (RFC 1939 §6) are checked across real
sessions.
"""

from __future__ import annotations

import base64
import contextlib
import os
import poplib
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from .conftest import ALICE, BOB, Factory, Postroom, require_program, wait_until
from .wire import new_token

SERVICES = ("smtp", "pop3", "pop3s")
CLIENT_TIMEOUT = 60.0
STOP_WAIT = 45.0


@pytest.fixture
def server(postroom_factory: Factory) -> Postroom:
    return postroom_factory(services=SERVICES)


def message(token: str, body: bytes = b"Hello.\r\n") -> bytes:
    return (
        b"From: Bob <bob@example.test>\r\n"
        b"To: Alice <alice@example.test>\r\n"
        b"Subject: " + token.encode() + b"\r\n"
        b"Message-ID: <" + token.encode() + b"@example.test>\r\n"
        b"\r\n" + body
    )


def deliver(server: Postroom, *contents: bytes, to: str = ALICE) -> None:
    before = server.mailbox_status(to)["messages"]
    with server.smtp() as smtp:
        for content in contents:
            smtp.sendmail("bob@example.org", [to], content)
    server.wait_for_messages(to, before + len(contents))


def pop3(server: Postroom, user: str | None = ALICE) -> poplib.POP3:
    """USER/PASS after STLS on the pop3 port."""
    client = poplib.POP3(server.host, server.ports["pop3"], timeout=CLIENT_TIMEOUT)
    client.stls(context=server.tls_context())
    if user is not None:
        client.user(user)
        client.pass_(server.passwords[user])
    return client


def pop3s(server: Postroom, user: str = ALICE) -> poplib.POP3_SSL:
    client = poplib.POP3_SSL(
        server.host, server.ports["pop3s"], context=server.tls_context(), timeout=CLIENT_TIMEOUT
    )
    client.user(user)
    client.pass_(server.passwords[user])
    return client


def retr(client: poplib.POP3, number: int) -> bytes:
    """RETR as bytes with CRLF line endings (poplib strips them and undoes the stuffing)."""
    _, lines, _ = client.retr(number)
    return b"".join(line + b"\r\n" for line in lines)


def uidl(client: poplib.POP3) -> list[str]:
    _, lines, _ = client.uidl()
    return [line.decode().split(" ", 1)[1] for line in lines]


# --- poplib ----------------------------------------------------------------------------------


def test_retr_over_stls_is_byte_for_byte_with_trace_headers(server: Postroom) -> None:
    token = new_token()
    content = message(
        token,
        b"Line one\r\n.leading dot\r\n..two dots\r\n.\r\n(a lone dot above)\r\n\xc3\xa9 8-bit\r\n",
    )
    deliver(server, content)
    (stored,) = server.export(ALICE)
    stored = stored.replace(b"\n", b"\r\n")  # mbox export writes LF; the store keeps CRLF
    with closing(pop3(server)) as client:
        count, octets = client.stat()
        _, scan, _ = client.list()
        got = retr(client, 1)
        client.quit()
    assert count == 1
    assert got == stored
    assert got.startswith(b"Return-Path: <bob@example.org>\r\nReceived: ")
    assert got.endswith(content)
    # RFC 1939 §5: sizes are exactly the octets RETR sends (before byte-stuffing).
    assert octets == len(got)
    assert scan == [f"1 {len(got)}".encode()]


def test_implicit_tls_login_and_capabilities(server: Postroom) -> None:
    deliver(server, message(new_token()))
    with closing(pop3s(server)) as client:
        assert client.stat()[0] == 1
        capabilities = client.capa()
        client.quit()
    assert {"TOP", "UIDL", "RESP-CODES", "PIPELINING"} <= set(capabilities)
    assert "STLS" not in capabilities and "USER" not in capabilities  # TRANSACTION state


def test_top_returns_header_and_first_lines(server: Postroom) -> None:
    token = new_token()
    deliver(server, message(token, b"one\r\n.two\r\nthree\r\n"))
    with closing(pop3(server)) as client:
        _, lines, _ = client.top(1, 2)
        _, no_body, _ = client.top(1, 0)
        client.quit()
    assert lines[-3:] == [b"", b"one", b".two"]
    assert f"Subject: {token}".encode() in lines
    assert no_body[-1] == b"" and b"one" not in no_body


def test_uidl_is_stable_across_sessions(server: Postroom) -> None:
    deliver(server, message(new_token()), message(new_token()))
    with closing(pop3(server)) as client:
        first = uidl(client)
        client.quit()
    deliver(server, message(new_token()))
    with closing(pop3s(server)) as client:
        second = uidl(client)
        client.dele(1)
        client.quit()
    with closing(pop3(server)) as client:
        third = uidl(client)
        client.quit()
    assert len(set(first)) == 2
    assert second[:2] == first and len(second) == 3
    assert third == second[1:]
    for unique_id in second:  # RFC 1939 §7: 1-70 characters from 0x21 to 0x7E
        assert 1 <= len(unique_id) <= 70
        assert all(0x21 <= ord(c) <= 0x7E for c in unique_id)


def test_dele_and_quit_removes_for_good(server: Postroom) -> None:
    tokens = [new_token() for _ in range(3)]
    deliver(server, *(message(t) for t in tokens))
    with closing(pop3(server)) as client:
        client.dele(1)
        client.dele(3)
        assert client.stat()[0] == 1
        assert client.quit().startswith(b"+OK")
    assert server.mailbox_status(ALICE)["messages"] == 1
    (left,) = server.export(ALICE)
    assert tokens[1].encode() in left
    with closing(pop3(server)) as client:
        assert client.stat()[0] == 1
        client.quit()


def test_dele_then_dropped_connection_keeps_the_mail(server: Postroom) -> None:
    deliver(server, message(new_token()), message(new_token()))
    client = pop3(server)
    client.dele(1)
    client.dele(2)
    client.close()  # RFC 1939 §6: no QUIT, no UPDATE state
    # The lock goes with the session: a new login works once the server saw the close.
    again = wait_until(lambda: _try_login(server), 15.0, "the maildrop lock to be released")
    with closing(again):
        assert again.stat()[0] == 2
        again.quit()
    assert server.mailbox_status(ALICE)["messages"] == 2


def _try_login(server: Postroom) -> poplib.POP3 | None:
    client = pop3(server, user=None)
    client.user(ALICE)
    try:
        client.pass_(server.passwords[ALICE])
    except poplib.error_proto as error:
        assert error.args[0].startswith(b"-ERR [IN-USE]")
        client.quit()
        client.close()
        return None
    return client


def test_rset_unmarks(server: Postroom) -> None:
    deliver(server, message(new_token()))
    with closing(pop3(server)) as client:
        client.dele(1)
        with pytest.raises(poplib.error_proto, match="deleted"):
            client.retr(1)
        client.rset()
        assert client.stat()[0] == 1
        client.quit()
    assert server.mailbox_status(ALICE)["messages"] == 1


def test_second_session_gets_in_use(server: Postroom) -> None:
    with closing(pop3(server)) as first:
        second = pop3(server, user=None)
        second.user(ALICE)
        with pytest.raises(poplib.error_proto) as refused:
            second.pass_(server.passwords[ALICE])
        assert refused.value.args[0].startswith(b"-ERR [IN-USE]")
        # Another user is not affected by alice's lock.
        second.user(BOB)
        second.pass_(server.passwords[BOB])
        second.quit()
        first.quit()
    with closing(pop3s(server)) as again:  # released at QUIT
        again.quit()


def test_wrong_password_is_auth_code(server: Postroom) -> None:
    with closing(pop3(server, user=None)) as client:
        client.user(ALICE)
        with pytest.raises(poplib.error_proto) as refused:
            client.pass_("not the password")
        assert refused.value.args[0] == b"-ERR [AUTH] Authentication failed"
        client.quit()
    assert f"login failed service=pop3 client=127.0.0.1 user=<{ALICE}> method=USER" in server.log()


def test_auth_plain_over_tls(server: Postroom) -> None:
    deliver(server, message(new_token()))
    token = base64.b64encode(f"\0{ALICE}\0{server.passwords[ALICE]}".encode()).decode()
    with closing(pop3(server, user=None)) as client:
        assert "PLAIN" in client.capa()["SASL"]
        assert client._shortcmd(f"AUTH PLAIN {token}").startswith(b"+OK Logged in, 1 messages")
        assert client.stat()[0] == 1
        client.quit()


def test_plaintext_login_refused_before_stls(server: Postroom) -> None:
    client = poplib.POP3(server.host, server.ports["pop3"], timeout=CLIENT_TIMEOUT)
    try:
        capabilities = client.capa()
        assert "STLS" in capabilities
        assert "USER" not in capabilities and "SASL" not in capabilities
        for command in (f"USER {ALICE}", f"PASS {server.passwords[ALICE]}", "AUTH PLAIN"):
            with pytest.raises(poplib.error_proto, match=r"\[AUTH\].*STLS"):
                client._shortcmd(command)
        client.quit()
    finally:
        client.close()


def test_stls_discards_pipelined_plaintext(server: Postroom) -> None:
    context = server.tls_context()
    with socket.create_connection((server.host, server.ports["pop3"]), timeout=30) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        raw.sendall(f"STLS\r\nUSER {ALICE}\r\n".encode())
        assert reader.readline() == b"+OK Begin TLS negotiation\r\n"
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"PASS {server.passwords[ALICE]}\r\nQUIT\r\n".encode())
            answer = tls.recv(4096) + tls.recv(4096)
    # The USER sent in plaintext was dropped, so the PASS has no USER before it.
    assert answer.startswith(b"-ERR Send USER first\r\n")


def test_pipelined_commands_get_ordered_answers(server: Postroom) -> None:
    deliver(server, message(new_token()), message(new_token()))
    context = server.tls_context()
    raw = socket.create_connection((server.host, server.ports["pop3s"]), timeout=30)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        reader = tls.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        tls.sendall(
            f"USER {ALICE}\r\nPASS {server.passwords[ALICE]}\r\nSTAT\r\nUIDL 2\r\n"
            "NOOP\r\nQUIT\r\n".encode()
        )
        answers = [reader.readline() for _ in range(6)]
    assert [a[:3] for a in answers] == [b"+OK"] * 6
    assert answers[2].startswith(b"+OK 2 ")
    assert answers[3].startswith(b"+OK 2 ")


def test_overlong_command_is_refused(server: Postroom) -> None:
    with closing(pop3(server, user=None)) as client:
        with pytest.raises(poplib.error_proto, match="Line too long"):
            client._shortcmd("USER " + "x" * 300)
        client.user(ALICE)  # the session goes on
        client.quit()


# --- real clients ----------------------------------------------------------------------------


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a client; bytes out, so CRLF line endings arrive as they were sent."""
    return subprocess.run(
        args, capture_output=True, timeout=120, stdin=subprocess.DEVNULL, env=env, check=False
    )


def _output(result: subprocess.CompletedProcess[bytes]) -> str:
    return (result.stdout + result.stderr).decode(errors="replace")


def test_curl_retrieves_over_stls_and_implicit_tls(server: Postroom) -> None:
    curl = require_program("curl")
    token = new_token()
    deliver(server, message(token, b"curl body\r\n.dot line\r\n"))
    (stored,) = server.export(ALICE)
    stored = stored.replace(b"\n", b"\r\n")
    user = f"{ALICE}:{server.passwords[ALICE]}"
    cafile = str(server.data_dir / "tls" / "cert.pem")
    stls = _run(
        [curl, "-sS", "--ssl-reqd", "--cacert", cafile, "-u", user,
         f"pop3://localhost:{server.ports['pop3']}/1"]
    )  # fmt: skip
    assert stls.returncode == 0, _output(stls)
    assert stls.stdout == stored
    listing = _run(
        [curl, "-sS", "-k", "-u", user, f"pop3s://{server.host}:{server.ports['pop3s']}/"]
    )
    assert listing.returncode == 0, _output(listing)
    assert listing.stdout == f"1 {len(stored)}\r\n".encode()
    assert server.log().count(f"pop3 login service=pop3 client=127.0.0.1 user={ALICE}") == 1


def test_fetchmail_over_stls_delivers_and_deletes(server: Postroom, tmp_path: Path) -> None:
    fetchmail = require_program("fetchmail")
    tokens = [new_token() for _ in range(3)]
    deliver(server, *(message(t, b".dotted\r\nplain\r\n") for t in tokens))
    stored = [m.replace(b"\n", b"\r\n") for m in server.export(ALICE)]
    out = tmp_path / "fetched"
    out.mkdir()
    mda = tmp_path / "mda.sh"
    mda.write_text(f'#!/bin/sh\nexec cat > "$(mktemp {out}/msg.XXXXXX)"\n')
    mda.chmod(0o755)
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll localhost via {server.host} port {server.ports['pop3']} protocol pop3\n"
        f'  user "{ALICE}" password "{server.passwords[ALICE]}"\n'
        "  sslproto 'tls1.2+' sslcertck sslcommonname localhost\n"
        f'  sslcertfile "{server.data_dir / "tls" / "cert.pem"}"\n'
        f'  mda "{mda}"\n'
        "  fetchall nokeep\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    result = _run(
        [fetchmail, "-f", str(rc), "--pidfile", str(tmp_path / "fm.pid"), "--nosyslog", "-v"],
        env=env,
    )
    assert result.returncode == 0, _output(result)
    assert "STLS" in _output(result)
    fetched = sorted(path.read_bytes() for path in out.iterdir())
    assert len(fetched) == 3
    for original in stored:
        added = _added_headers(original, fetched)
        assert added.startswith(b"Received: from ") and b"fetchmail" in added
    assert server.mailbox_status(ALICE)["messages"] == 0  # nokeep: DELE + QUIT


def _added_headers(original: bytes, delivered: list[bytes]) -> bytes:
    """What a client added to one stored message on its way to local delivery.

    Both clients hand the message on with LF line endings and put their own trace headers
    right below the Return-Path; every other byte must be what the store holds.
    """
    return_path, rest = original.replace(b"\r\n", b"\n").split(b"\n", 1)
    matches = [
        got[len(return_path) + 1 : -len(rest)]
        for got in delivered
        if got.startswith(return_path + b"\n") and got.endswith(rest)
    ]
    assert len(matches) == 1, delivered
    assert all(line[:1].isalpha() or line[:1] in (b"\t", b" ") for line in matches[0].splitlines())
    return matches[0]


def test_getmail6_over_implicit_tls_into_a_maildir(server: Postroom, tmp_path: Path) -> None:
    getmail = require_program("getmail")
    tokens = [new_token() for _ in range(2)]
    deliver(server, *(message(t) for t in tokens))
    stored = [m.replace(b"\n", b"\r\n") for m in server.export(ALICE)]
    with _maildir(tmp_path) as (maildir, as_user):
        rc = tmp_path / "getmailrc"
        rc.write_text(
            "[retriever]\n"
            "type = SimplePOP3SSLRetriever\n"
            f"server = {server.host}\n"
            f"port = {server.ports['pop3s']}\n"
            f"username = {ALICE}\n"
            f"password = {server.passwords[ALICE]}\n"
            f"ca_certs = {server.data_dir / 'tls' / 'cert.pem'}\n"
            "[destination]\n"
            "type = Maildir\n"
            f"path = {maildir}/\n" + (f"user = {as_user}\n" if as_user else "") + "[options]\n"
            "read_all = true\n"
            "delete = false\n"
            "verbose = 2\n"
        )
        state = tmp_path / "getmail-state"
        state.mkdir()
        args = [getmail, f"--rcfile={rc}", f"--getmaildir={state}"]
        result = _run(args)
        assert result.returncode == 0, _output(result)
        got = [path.read_bytes() for path in (maildir / "new").iterdir()]
        assert len(got) == 2
        for original in stored:
            assert b"Received: from 127.0.0.1" in _added_headers(original, got)
        assert server.mailbox_status(ALICE)["messages"] == 2  # delete = false
        # Without read_all, getmail6 remembers the UIDLs it has seen: nothing new to fetch.
        rc.write_text(rc.read_text().replace("read_all = true", "read_all = false"))
        again = _run(args)
        assert again.returncode == 0, _output(again)
        assert len(list((maildir / "new").iterdir())) == 2


@contextlib.contextmanager
def _maildir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A Maildir getmail6 may write to. It refuses to deliver as root, so under root the
    delivery runs as `nobody` into a directory outside root's private pytest tree."""
    if os.geteuid() != 0:
        maildir = tmp_path / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        yield maildir, ""
        return
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="postroom-getmail-"))
    try:
        base.chmod(0o755)
        maildir = base / "Maildir"
        for sub in ("", "cur", "new", "tmp"):
            (maildir / sub).mkdir(exist_ok=True)
            os.chown(maildir / sub, nobody.pw_uid, nobody.pw_gid)
        yield maildir, "nobody"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_idle_session_is_closed_and_its_lock_released(postroom_factory: Factory) -> None:
    server = postroom_factory(services=SERVICES, limits={"pop3_timeout": 1})
    client = pop3s(server)
    client.sock.settimeout(15)
    started = time.monotonic()
    # RFC 1939 §3: the autologout timer; the server speaks first, then closes.
    assert client.file.readline() == b"-ERR Disconnected for inactivity\r\n"
    assert client.file.readline() == b""
    assert 0.9 <= time.monotonic() - started < 15
    client.close()
    with closing(pop3s(server)) as again:
        again.quit()


def test_sigterm_ends_idle_sessions_without_deleting(server: Postroom) -> None:
    deliver(server, message(new_token()))
    client = pop3s(server)
    client.dele(1)
    client.sock.settimeout(STOP_WAIT)
    assert server.stop() == 0
    assert client.file.readline() == b"-ERR [SYS/TEMP] Server shutting down\r\n"
    client.close()
    server.start()
    assert server.mailbox_status(ALICE)["messages"] == 1  # no QUIT, no UPDATE state
    with closing(pop3(server)) as again:
        assert again.stat()[0] == 1
        again.quit()
