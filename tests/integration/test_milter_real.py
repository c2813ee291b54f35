"""postroom's milter client with real filters from Debian — opendkim signing submitted mail,
rspamd's proxy worker in milter mode (self_scan, a private instance: own config, ports, no
redis) judging GTUBE messages — and with milters that are down, hang or talk nonsense."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from email import message_from_bytes
from pathlib import Path

import dkim
import pytest

from postroom.mailauth import keys

from .conftest import ALICE, BOB, DOMAIN, Postroom, free_ports, require_program, wait_until
from .milters import _listening, _stop, milter_user, opendkim_signer

HOST = "127.0.0.1"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SPAM_SUBJECT = "rspamd-spam-test"
# A rule of the private rspamd: this Subject scores 10, between rspamd's default "add header"
# (6) and "reject" (15) thresholds, so rspamd answers with its X-Spam: Yes header.
LOCAL_RULE = f"""
rspamd_config.POSTROOM_TEST_SPAM = {{
  callback = function(task)
    local subject = task:get_subject() or ''
    return subject:find('{SPAM_SUBJECT}', 1, true) ~= nil
  end,
  score = 10.0,
  description = 'postroom milter test: add header',
  group = 'postroom',
}}
"""


def message(subject: str, body: str = "Hello.", sender: str = ALICE, to: str = BOB) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <t1@example.test>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{body}\r\n"
    ).encode()


def milter_table(address: str, **keys_: str) -> str:
    lines = ["[[milter]]", f'address = "{address}"']
    lines += [f"{k} = {v}" for k, v in keys_.items()]
    return "\n".join(lines) + "\n"


def mailbox(server: Postroom, address: str, name: str = "INBOX") -> list[bytes]:
    return server.export_mailbox(address, name)


def wait_mailbox(server: Postroom, address: str, name: str = "INBOX") -> bytes:
    got: list[bytes] = []

    def arrived() -> bool:
        got[:] = mailbox(server, address, name)
        return bool(got)

    wait_until(arrived, 30.0, f"a message in {address} {name}")
    return got[-1]


# --- (c) opendkim signs through the milter --------------------------------------------------------


def test_opendkim_signs_submitted_mail(postroom_factory: Callable[..., Postroom]) -> None:
    pair = keys.generate("rsa")
    with opendkim_signer(DOMAIN, "milt", pair.private, "rsa") as signer:
        server = postroom_factory(
            extra=milter_table(signer.spec, services='["submission"]', on_error='"tempfail"')
        )
        with server.submission() as client:
            client.sendmail(ALICE, [BOB], message("signed by opendkim"))
        raw = wait_mailbox(server, BOB)
        signer.check_alive()
    parsed = message_from_bytes(raw)
    signature = parsed["DKIM-Signature"]
    assert signature is not None, raw[:600]
    assert "d=example.test" in signature and "s=milt" in signature
    record = keys.record_text(pair.algorithm, pair.public).encode()

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes:
        wanted = name.decode() if isinstance(name, bytes) else name
        return record if wanted.rstrip(".") == f"milt._domainkey.{DOMAIN}" else b""

    # The export has LF line ends; Return-Path (added at delivery) is not among the signed.
    signed = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert dkim.verify(signed, dnsfunc=dnsfunc), signature


# --- (d) rspamd's proxy in milter mode --------------------------------------------------


@contextlib.contextmanager
def rspamd_milter() -> Iterator[int]:
    """A private rspamd: only the proxy worker, in milter mode, scanning by itself."""
    program = require_program("rspamd")
    user = milter_user("_rspamd")
    directory = Path(tempfile.mkdtemp(prefix="postroom-rspamd-"))
    (directory / "local").mkdir()
    (directory / "local" / "rspamd.local.lua").write_text(LOCAL_RULE)
    if user is not None:
        shutil.chown(directory, user, user)
        shutil.chown(directory / "local", user, user)
    proc: subprocess.Popen[bytes] | None = None
    try:
        port = free_ports(1, HOST)[0]
        config = directory / "rspamd.conf"
        config.write_text(
            '.include "$CONFDIR/common.conf"\n'
            "options {\n"
            f'    pidfile = "{directory}/rspamd.pid";\n'
            '    .include "$CONFDIR/options.inc"\n'
            # Nothing answers there: no lookups leave the machine.
            '    dns { nameserver = ["127.0.0.1:9"]; timeout = 1s; retransmits = 1; }\n'
            "}\n"
            f'logging {{ type = "file"; filename = "{directory}/rspamd.log"; level = "info"; }}\n'
            'worker "rspamd_proxy" {\n'
            f'    bind_socket = "{HOST}:{port}";\n'
            "    milter = yes;\n    timeout = 60s;\n    count = 1;\n"
            '    spam_header = "X-Spam";\n'
            '    upstream "local" { default = yes; self_scan = yes; }\n'
            "}\n"
        )
        command = [program, "-f", "-c", str(config)]
        command += [f"--var={v}={directory}" for v in ("DBDIR", "RUNDIR", "LOGDIR")]
        command += [f"--var=LOCAL_CONFDIR={directory / 'local'}"]
        command += ["-u", user, "-g", user] if user is not None else []
        with (directory / "output.log").open("ab") as out:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

        def ready() -> bool:
            assert proc is not None
            if proc.poll() is not None:
                log = (directory / "output.log").read_text(errors="replace")
                raise AssertionError(f"rspamd exited {proc.returncode}\n{log[-3000:]}")
            return _listening(HOST, port)

        wait_until(ready, 90.0, f"rspamd proxy on {HOST}:{port}")
        yield port
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def rspamd_port() -> Iterator[int]:
    with rspamd_milter() as port:
        yield port


def test_rspamd_rejects_gtube_and_files_add_header_spam_in_junk(
    postroom_factory: Callable[..., Postroom], rspamd_port: int
) -> None:
    server = postroom_factory(
        extra=milter_table(f"inet:{HOST}:{rspamd_port}", content_timeout='"60s"')
    )
    with server.smtp() as client:
        client.ehlo()
        assert client.mail("someone@remote.example")[0] == 250
        assert client.rcpt(ALICE)[0] == 250
        code, text = client.data(message("gtube", GTUBE, "someone@remote.example", ALICE))
    assert code == 554 or code == 550, (code, text)
    assert b"Spam message rejected" in text or code >= 500, text
    server.wait_for_log(r"milter inet:\S+ stage=eom action=reject")

    with server.smtp() as client:
        client.sendmail(
            "someone@remote.example",
            [ALICE],
            message(SPAM_SUBJECT, "Buy now.", "someone@remote.example", ALICE),
        )
    junk = wait_mailbox(server, ALICE, "Junk")
    assert message_from_bytes(junk)["X-Spam"] == "Yes"
    server.wait_for_log(r"queued id=\S+ .*result=250")
    assert mailbox(server, ALICE) == []

    with server.smtp() as client:
        client.sendmail(
            "someone@remote.example",
            [ALICE],
            message("plain", "Lunch at noon?", "someone@remote.example", ALICE),
        )
    inbox = wait_mailbox(server, ALICE)
    assert message_from_bytes(inbox)["Subject"] == "plain"
    assert message_from_bytes(inbox)["X-Spam"] is None


# --- (e) milters that are down, hang, or break the protocol ------------------------------


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    return free_ports(1, HOST)[0]


def test_down_milter_tempfails_and_the_session_goes_on(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(
        extra=milter_table(f"inet:{HOST}:{dead_port()}", connect_timeout='"2s"')
    )
    with server.smtp() as client:
        client.ehlo()
        code, text = client.mail("someone@remote.example")
        assert (code, text[:5]) == (451, b"4.7.1"), (code, text)
        assert client.noop()[0] == 250  # the session goes on
        code, _ = client.mail("someone@remote.example")
        assert code == 451
    server.wait_for_log(r"milter inet:\S+ stage=mail client=127.0.0.1 failed: connect: ")
    assert mailbox(server, ALICE) == []


def test_down_milter_with_on_error_accept_is_skipped(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(
        extra=milter_table(f"inet:{HOST}:{dead_port()}", on_error='"accept"')
        + milter_table(f"unix:{tempfile.gettempdir()}/postroom-no-such-milter.sock").replace(
            "[[milter]]\n", '[[milter]]\non_error = "accept"\n'
        )
    )
    with server.smtp() as client:
        client.sendmail("someone@remote.example", [ALICE], message("through", to=ALICE))
    raw = wait_mailbox(server, ALICE)
    assert message_from_bytes(raw)["Subject"] == "through"
    server.wait_for_log(r"failed: connect: .*on_error=accept")


@contextlib.contextmanager
def bad_milter(answer: bytes | None) -> Iterator[int]:
    """A peer that reads and then answers `answer` (None: never answers)."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            with contextlib.suppress(OSError):
                conn.recv(4096)
                if answer is not None:
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in conns:
            conn.close()


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"\xff\xff\xff\xffO", "packet length"),  # a hostile length, never trusted
        (b"\x00\x00\x00\x0dO\x00\x00\x00\x09" + b"\x00" * 8, "unsupported version"),
        (None, "timed out"),
    ],
)
def test_broken_milter_tempfails(
    postroom_factory: Callable[..., Postroom], answer: bytes | None, why: str
) -> None:
    with bad_milter(answer) as port:
        server = postroom_factory(extra=milter_table(f"inet:{HOST}:{port}", connect_timeout='"1s"'))
        with server.smtp() as client:
            client.ehlo()
            code, _ = client.mail("someone@remote.example")
            assert code == 451
        server.wait_for_log(rf"milter inet:\S+ stage=mail .*failed: .*{why}")
