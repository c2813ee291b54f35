"""ManageSieve (RFC 5804) over real sockets: the real clients sieve-connect (Debian) and Python
sievelib upload, check, list, activate, fetch, rename and delete scripts over STARTTLS; raw
sessions check literals, the capability answers, the TLS-only login rule, bad commands and the
refusal of an oversize literal before it is read."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sievelib.managesieve import Client

from postroom.proto.managesieve import MAX_SCRIPT_SIZE

from .conftest import ALICE, BOB, Postroom, require_program

SERVICES = ("smtp", "managesieve")
GOOD = (
    'require ["fileinto"];\r\nif header :contains "subject" "[list]" {\r\n'
    '  fileinto "Lists";\r\n}\r\n'
)
BAD = 'require ["fileinto"];\r\nif header :contains "subject" "x" {\r\n  fileinto "Lists"\r\n}\r\n'
TIMEOUT = 30


@pytest.fixture
def server(postroom_factory: Callable[..., Postroom]) -> Postroom:
    return postroom_factory(services=SERVICES)


class Raw:
    """A bare ManageSieve connection: send bytes, read one whole response."""

    def __init__(self, server: Postroom) -> None:
        self.server = server
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (server.host, server.ports["managesieve"]), timeout=TIMEOUT
        )
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"connection closed; had {self.buf!r}")
        self.buf += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def response(self) -> tuple[list[bytes], bytes]:
        """(the data lines, with literals inline, and the final OK/NO/BYE line)."""
        lines: list[bytes] = []
        while True:
            line = self.line()
            if line.startswith((b"OK", b"NO", b"BYE")):
                if line.endswith(b"}"):  # the text as a literal
                    size = int(line[line.rindex(b"{") + 1 : -1])
                    while len(self.buf) < size + 2:
                        self._fill()
                    line += b"\r\n" + self.buf[:size]
                    self.buf = self.buf[size + 2 :]
                return lines, line
            if line.endswith(b"}"):
                size = int(line[line.rindex(b"{") + 1 : -1])
                while len(self.buf) < size + 2:
                    self._fill()
                line += b"\r\n" + self.buf[:size]
                self.buf = self.buf[size + 2 :]
            lines.append(line)

    def command(self, data: bytes) -> tuple[list[bytes], bytes]:
        self.sock.sendall(data)
        return self.response()

    def starttls(self) -> list[bytes]:
        assert self.command(b"STARTTLS\r\n")[1].startswith(b"OK")
        self.sock = self.server.tls_context().wrap_socket(
            self.sock, server_hostname=self.server.host
        )
        lines, final = self.response()
        assert final.startswith(b"OK")
        return lines

    def login(self, user: str = ALICE) -> bytes:
        token = base64.b64encode(f"\0{user}\0{self.server.passwords[user]}".encode())
        return self.command(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')[1]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(server: Postroom) -> Iterator[Raw]:
    connection = Raw(server)
    yield connection
    connection.close()


def caps(lines: list[bytes]) -> dict[str, str | None]:
    result: dict[str, str | None] = {}
    for line in lines:
        name, _, value = line.decode().partition(" ")
        result[name.strip('"')] = value.strip('"') if value else None
    return result


# --- raw sessions --------------------------------------------------------------------------------


def test_capabilities_before_and_after_starttls(raw: Raw) -> None:
    lines, final = raw.response()
    assert final.startswith(b"OK")
    before = caps(lines)
    assert before["IMPLEMENTATION"] == "postroom"
    assert before["SASL"] == ""  # no logins in the clear
    assert "STARTTLS" in before
    assert before["VERSION"] == "1.0"
    assert "NOTIFY" not in before
    sieve = (before["SIEVE"] or "").split()
    assert {"fileinto", "vacation", "variables", "include"} <= set(sieve)
    after = caps(raw.starttls())
    assert "STARTTLS" not in after
    assert set((after["SASL"] or "").split()) == {"PLAIN", "LOGIN", "SCRAM-SHA-256"}
    assert raw.login() == b'OK "Logged in"'
    lines, final = raw.command(b"CAPABILITY\r\n")
    assert caps(lines)["OWNER"] == ALICE


def test_plaintext_login_refused_without_tls(server: Postroom, raw: Raw) -> None:
    raw.response()
    assert raw.login().startswith(b"NO (ENCRYPT-NEEDED)")
    assert raw.command(b"LISTSCRIPTS\r\n")[1] == b'NO "Log in first"'
    assert "managesieve login" not in server.log(current=True)


def test_wrong_password_logged_for_fail2ban(server: Postroom, raw: Raw) -> None:
    raw.response()
    raw.starttls()
    token = base64.b64encode(f"\0{ALICE}\0wrong".encode())
    final = raw.command(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')[1]
    assert final == b'NO "Authentication failed"'
    server.wait_for_log(
        rf"login failed service=managesieve client=127\.0\.0\.1 user=<{ALICE}> method=PLAIN"
    )
    assert raw.login() == b'OK "Logged in"'  # the session goes on


def test_literals_both_forms_and_bad_commands(server: Postroom, raw: Raw) -> None:
    raw.response()
    raw.starttls()
    assert raw.login() == b'OK "Logged in"'
    data = GOOD.encode()
    # Non-synchronizing (RFC 5804 §4 literal-c2s), in several writes.
    wire = b'PUTSCRIPT "one" {%d+}\r\n' % len(data) + data + b"\r\n"
    for i in range(0, len(wire), 7):
        raw.sock.sendall(wire[i : i + 7])
    assert raw.response()[1] == b'OK "Putscript completed"'
    # Synchronizing: the server invites the octets with a continuation.
    raw.sock.sendall(b'PUTSCRIPT "two" {%d}\r\n' % len(data))
    assert raw.line() == b'+ "Ready for literal data"'
    assert raw.command(data + b"\r\n")[1] == b'OK "Putscript completed"'
    assert raw.command(b"FROB\r\n")[1] == b'NO "Unknown command"'
    assert raw.command(b'GETSCRIPT "unterminated\r\n')[1].startswith(b'NO "Syntax error')
    assert raw.command(b'HAVESPACE "x" lots\r\n')[1].startswith(b"NO")
    assert raw.command(b'NOOP "tag1"\r\n')[1] == b'OK (TAG "tag1") "Done"'
    lines, final = raw.command(b'GETSCRIPT "two"\r\n')
    assert final == b'OK "Getscript completed"'
    assert lines == [b"{%d}\r\n" % len(data) + data]
    server.wait_for_log(rf"sieve put user={ALICE} script=<two> size={len(data)}")


def test_oversize_literal_refused_before_it_is_read(raw: Raw) -> None:
    raw.response()
    raw.starttls()
    raw.login()
    size = MAX_SCRIPT_SIZE + 1
    # The NO comes for the announcement alone: nothing of the literal has been sent.
    final = raw.command(b'PUTSCRIPT "big" {%d+}\r\n' % size)[1]
    assert final.startswith(b"NO (QUOTA/MAXSIZE)")
    raw.sock.sendall(b"#" * size + b"\r\n")
    assert raw.command(b"NOOP\r\n")[1] == b'OK "Done"'
    assert raw.command(b'HAVESPACE "big" %d\r\n' % size)[1].startswith(b"NO (QUOTA/MAXSIZE)")
    assert raw.command(b"LISTSCRIPTS\r\n") == ([], b'OK "Listscripts completed"')


def test_starttls_drops_pipelined_plaintext(raw: Raw) -> None:
    raw.response()
    raw.sock.sendall(b"STARTTLS\r\nLOGOUT\r\n")
    assert raw.response()[1].startswith(b"OK")
    raw.sock = raw.server.tls_context().wrap_socket(raw.sock, server_hostname=raw.server.host)
    raw.response()
    assert raw.command(b"NOOP\r\n")[1] == b'OK "Done"'  # LOGOUT was not taken


def test_scripts_are_per_user(server: Postroom) -> None:
    alice, bob = Raw(server), Raw(server)
    try:
        for conn, user in ((alice, ALICE), (bob, BOB)):
            conn.response()
            conn.starttls()
            assert conn.login(user) == b'OK "Logged in"'
        assert alice.command(b'PUTSCRIPT "mine" "keep;"\r\n')[1].startswith(b"OK")
        assert bob.command(b"LISTSCRIPTS\r\n")[0] == []
        assert bob.command(b'GETSCRIPT "mine"\r\n')[1].startswith(b"NO (NONEXISTENT)")
    finally:
        alice.close()
        bob.close()


# --- sievelib ------------------------------------------------------------------------------------


def test_sievelib_client(server: Postroom, monkeypatch: pytest.MonkeyPatch) -> None:
    # sievelib verifies with the default trust store: let it trust the server's certificate.
    monkeypatch.setenv("SSL_CERT_FILE", str(server.data_dir / "tls" / "cert.pem"))
    client = Client(server.host, server.ports["managesieve"])
    assert client.connect(ALICE, server.passwords[ALICE], starttls=True, authmech="PLAIN")
    assert client.get_implementation() == "postroom"
    assert "fileinto" in client.get_sieve_capabilities()
    assert client.checkscript(GOOD)
    assert not client.checkscript(BAD)
    assert client.errmsg.startswith(b"4:1: ")  # line:column where the ";" is missing
    assert not client.putscript("broken", BAD)
    assert client.havespace("filters", len(GOOD))
    assert client.putscript("filters", GOOD)
    assert client.putscript("spare", "keep;\r\n")
    assert client.setactive("filters")
    active, others = client.listscripts()
    assert active == "filters" and others == ["spare"]
    assert client.getscript("filters").splitlines() == GOOD.splitlines()  # it rejoins lines
    assert not client.deletescript("filters")  # the active script
    assert client.errcode == b"ACTIVE"
    assert client.renamescript("filters", "main")
    assert client.listscripts() == ("main", ["spare"])
    assert not client.renamescript("main", "spare")
    assert client.errcode == b"ALREADYEXISTS"
    assert client.deletescript("spare")
    assert client.setactive("")
    assert client.deletescript("main")
    assert client.listscripts() == (None, [])
    client.logout()
    server.wait_for_log(rf"sieve rename user={ALICE} script=<filters> to=<main>")
    server.wait_for_log(rf"managesieve logout service=managesieve client=127\.0\.0\.1 user={ALICE}")


# --- sieve-connect -------------------------------------------------------------------------------


def sieve_connect(
    server: Postroom, *args: str, user: str = ALICE
) -> subprocess.CompletedProcess[str]:
    program = require_program("sieve-connect")
    read_end, write_end = os.pipe()
    os.write(write_end, (server.passwords[user] + "\n").encode())
    os.close(write_end)
    try:
        return subprocess.run(
            [
                program,
                "--server",
                server.host,
                "--port",
                str(server.ports["managesieve"]),
                "--user",
                user,
                "--passwordfd",
                str(read_end),
                "--authmech",
                "PLAIN",
                "--tlscafile",
                str(server.data_dir / "tls" / "cert.pem"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            pass_fds=(read_end,),
            check=False,
            stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(read_end)


def test_sieve_connect(server: Postroom, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.sieve", tmp_path / "bad.sieve"
    good.write_text(GOOD, newline="")
    bad.write_text(BAD, newline="")
    check = sieve_connect(server, "--checkscript", "--localsieve", str(good))
    assert check.returncode == 0, check.stderr + check.stdout
    check = sieve_connect(server, "--checkscript", "--localsieve", str(bad))
    assert check.returncode != 0
    assert "4:1: " in check.stderr + check.stdout
    up = sieve_connect(server, "--upload", "--localsieve", str(good), "--remotesieve", "sorted")
    assert up.returncode == 0, up.stderr + up.stdout
    refused = sieve_connect(server, "--upload", "--localsieve", str(bad), "--remotesieve", "bad")
    assert refused.returncode != 0
    active = sieve_connect(server, "--activate", "--remotesieve", "sorted")
    assert active.returncode == 0, active.stderr + active.stdout
    listing = sieve_connect(server, "--list")
    assert listing.returncode == 0, listing.stderr
    assert "sorted" in listing.stdout and "bad" not in listing.stdout
    out = tmp_path / "down.sieve"
    down = sieve_connect(server, "--download", "--remotesieve", "sorted", "--localsieve", str(out))
    assert down.returncode == 0, down.stderr + down.stdout
    assert out.read_bytes() == GOOD.encode()
    gone = sieve_connect(server, "--delete", "--remotesieve", "sorted")
    assert gone.returncode != 0  # the active script may not be deleted
    off = sieve_connect(server, "--deactivate")
    assert off.returncode == 0, off.stderr + off.stdout
    gone = sieve_connect(server, "--delete", "--remotesieve", "sorted")
    assert gone.returncode == 0, gone.stderr + gone.stdout
    assert "sorted" not in sieve_connect(server, "--list").stdout
    server.wait_for_log(rf"sieve activate user={ALICE} script=<sorted>")
    server.wait_for_log(rf"sieve delete user={ALICE} script=<sorted>")
