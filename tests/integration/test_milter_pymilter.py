"""The milter client end to end against a real libmilter filter (pymilter, tests/integration/
pymilter_filter.py, run by Debian's /usr/bin/python3): every verdict and modification, sent
through postroom over smtplib and checked in the stored message (the CLI's mailbox export)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from .conftest import ALICE, BOB, Postroom, free_ports, wait_until
from .milters import _listening, _stop

SYSTEM_PYTHON = "/usr/bin/python3"
FILTER = Path(__file__).with_name("pymilter_filter.py")
HOST = "127.0.0.1"


def _has_pymilter() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import Milter"], capture_output=True, check=False)
    return probe.returncode == 0


class PyMilter:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.record = directory / "record.jsonl"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.port = free_ports(1, HOST)[0]
        out = (self.directory / "filter.log").open("ab")
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(FILTER), str(self.port), str(self.record)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.ready, 20.0, f"pymilter filter on {HOST}:{self.port}")

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.directory / "filter.log").read_text(errors="replace")
            raise AssertionError(f"pymilter filter exited {self.proc.returncode}\n{log}")
        return _listening(HOST, self.port)

    def entries(self, stage: str) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        lines = self.record.read_text(encoding="utf-8").splitlines()
        return [e for e in map(json.loads, lines) if e["stage"] == stage]


@pytest.fixture
def pymilter(tmp_path: Path) -> Iterator[PyMilter]:
    if not _has_pymilter():
        pytest.skip(f"{SYSTEM_PYTHON} with python3-milter (pymilter) is not installed")
    milter = PyMilter(tmp_path)
    milter.start()
    try:
        yield milter
    finally:
        if milter.proc is not None:
            _stop(milter.proc)


@pytest.fixture
def server(postroom_factory: Callable[..., Postroom], pymilter: PyMilter) -> Postroom:
    return postroom_factory(
        extra=(
            "[[milter]]\n"
            f'address = "inet:{HOST}:{pymilter.port}"\n'
            'services = ["smtp", "submission"]\n'
            'command_timeout = "10s"\ncontent_timeout = "20s"\n'
        )
    )


def message(subject: str, sender: str = "sender@remote.example", to: str = ALICE) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        "Message-ID: <m1@remote.example>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        "X-Remove-Me: please\r\n\r\nOriginal body line.\r\n"
    ).encode()


def send(
    server: Postroom, subject: str, to: tuple[str, ...] = (ALICE,), sender: str = ""
) -> tuple[int, bytes]:
    """DATA's reply (code, text); RCPT refusals raise."""
    sender = sender or "sender@remote.example"
    with server.smtp() as client:
        client.ehlo()
        code, text = client.mail(sender)
        assert code == 250, (code, text)
        for rcpt in to:
            code, text = client.rcpt(rcpt)
            assert code == 250, (code, text)
        return client.data(message(subject, sender))


def stored(server: Postroom, address: str = ALICE, mailbox: str = "INBOX") -> list[Message]:
    return [message_from_bytes(m) for m in server.export_mailbox(address, mailbox)]


def wait_stored(server: Postroom, address: str, mailbox: str = "INBOX") -> Message:
    found: list[Message] = []

    def arrived() -> bool:
        found[:] = stored(server, address, mailbox)
        return bool(found)

    wait_until(arrived, 20.0, f"a message in {address} {mailbox}")
    return found[-1]


def test_accept_passes_the_message_and_macros_reach_the_milter(
    server: Postroom, pymilter: PyMilter
) -> None:
    code, text = send(server, "milter-accept plain")
    assert code == 250
    queue_id = text.decode().rsplit(" ", 1)[-1]
    got = wait_stored(server, ALICE)
    assert got["Subject"] == "milter-accept plain" and "X-Milter-Test" not in got
    (connect,) = pymilter.entries("connect")
    assert connect["macros"]["j"] == server.hostname
    assert connect["macros"]["{daemon_name}"] == "smtp"
    assert connect["macros"]["{client_addr}"] == "127.0.0.1"
    (helo,) = pymilter.entries("helo")
    assert helo["name"] == "client.example.net"
    (mail,) = pymilter.entries("mail")
    assert mail["sender"] == "<sender@remote.example>" and "SIZE=" not in " ".join(mail["params"])
    assert mail["macros"]["{mail_addr}"] == "sender@remote.example"
    assert "{auth_authen}" not in mail["macros"]
    (rcpt,) = pymilter.entries("rcpt")
    assert rcpt["recipient"] == f"<{ALICE}>" and rcpt["macros"]["{rcpt_addr}"] == ALICE
    (eom,) = pymilter.entries("eom")
    assert eom["macros"]["i"] == queue_id
    names = [name for name, _ in eom["headers"]]
    assert names[0] == "Received" and "Subject" in names  # our trace header on top
    assert eom["body"] == "Original body line.\r\n"
    server.wait_for_log(r"queued id=")


def test_submission_sends_the_login_as_auth_authen(server: Postroom, pymilter: PyMilter) -> None:
    with server.submission() as client:
        client.sendmail(ALICE, [BOB], message("milter-accept auth", ALICE, BOB))
    wait_stored(server, BOB)
    (mail,) = pymilter.entries("mail")
    assert mail["macros"]["{auth_authen}"] == ALICE
    assert mail["macros"]["{daemon_name}"] == "submission"


@pytest.mark.parametrize(
    ("action", "code", "needle"),
    [
        ("reject", 550, b"5.7.1"),
        ("replycode", 554, b"5.7.0 first line\n5.7.0 second line"),
        ("tempfail", 451, b"4.7.1"),
    ],
)
def test_refusals_at_end_of_message(
    server: Postroom, action: str, code: int, needle: bytes
) -> None:
    got_code, text = send(server, f"milter-{action}")
    assert got_code == code and needle in text, (got_code, text)
    server.wait_for_log(r"milter inet:\S+ stage=eom action=(reject|tempfail)")
    assert stored(server, ALICE) == []


def test_discard_answers_250_and_keeps_nothing(server: Postroom) -> None:
    code, _ = send(server, "milter-discard")
    assert code == 250
    server.wait_for_log(r"discarded id=\S+ client=127.0.0.1 from=<sender@remote.example>")
    assert stored(server, ALICE) == [] and stored(server, ALICE, "Junk") == []


@pytest.mark.parametrize("action", ["quarantine", "spam"])
def test_quarantine_and_spam_header_file_into_junk(server: Postroom, action: str) -> None:
    code, _ = send(server, f"milter-{action}")
    assert code == 250
    got = wait_stored(server, ALICE, "Junk")
    assert got["Subject"] == f"milter-{action}"
    if action == "spam":
        assert got["X-Spam"] == "Yes"
    assert stored(server, ALICE) == []


def test_header_modifications(server: Postroom) -> None:
    send(server, "milter-addheader")
    added = wait_stored(server, ALICE)
    assert added["X-Milter-Test"] == "added by pymilter"
    assert list(added.keys())[-1] == "X-Milter-Test"  # at the end of the header

    send(server, "milter-chgheader")
    wait_until(lambda: len(stored(server, ALICE)) == 2, 20.0, "second message")
    changed = stored(server, ALICE)
    assert changed[1]["Subject"] == "changed by pymilter"
    assert changed[1].get_all("Subject") == ["changed by pymilter"]

    send(server, "milter-insheader")
    wait_until(lambda: len(stored(server, ALICE)) == 3, 20.0, "third message")
    inserted = stored(server, ALICE)[2]
    # First of what the milter saw; Return-Path comes above it at delivery.
    assert list(inserted.keys())[:2] == ["Return-Path", "X-Inserted-First"]
    assert inserted["X-Inserted-First"] == "top"

    send(server, "milter-delheader")
    wait_until(lambda: len(stored(server, ALICE)) == 4, 20.0, "fourth message")
    assert "X-Remove-Me" not in stored(server, ALICE)[3]


def test_body_replacement(server: Postroom) -> None:
    send(server, "milter-replbody")
    got = wait_stored(server, ALICE)
    assert got.get_payload() == "The body was replaced.\n" or got.get_payload() == (
        "The body was replaced.\r\n"
    )
    raw = server.export_mailbox(ALICE, "INBOX")[0]
    assert raw.endswith(b"\r\n\r\nThe body was replaced.\r\n") or b"Original" not in raw


def test_sender_change(server: Postroom) -> None:
    send(server, "milter-chgfrom")
    got = wait_stored(server, ALICE)
    assert got["Return-Path"] == "<changed@example.org>"
    server.wait_for_log(r"action=chgfrom client=127.0.0.1 from=<changed@example.org>")


def test_recipient_added(server: Postroom) -> None:
    send(server, "milter-addrcpt")
    assert wait_stored(server, BOB)["Subject"] == "milter-addrcpt"
    assert wait_stored(server, ALICE)["Subject"] == "milter-addrcpt"


def test_recipient_deleted(server: Postroom) -> None:
    send(server, "milter-delrcpt")
    assert wait_stored(server, BOB)["Subject"] == "milter-delrcpt"
    server.wait_for_log(r"queued id=\S+ .*to=<bob@example.test> ")
    assert stored(server, ALICE) == []


def test_tempfail_at_mail_and_reject_at_rcpt(server: Postroom, pymilter: PyMilter) -> None:
    with server.smtp() as client:
        client.ehlo()
        code, text = client.mail("tempfail-sender@remote.example")
        assert code == 451 and b"4.7.1" in text, (code, text)
    with server.submission() as client:
        assert client.mail(ALICE)[0] == 250
        code, text = client.rcpt("blocked@remote.example")
        assert (code, b"5.1.1 blocked by the test milter" in text) == (550, True), text
        assert client.rcpt(BOB)[0] == 250
        code, _ = client.data(message("milter-accept after a refused rcpt", ALICE, BOB))
        assert code == 250
    got = wait_stored(server, BOB)
    assert got["Subject"] == "milter-accept after a refused rcpt"
    server.wait_for_log(r"queued id=\S+ client=127.0.0.1 from=<alice@example.test> to=<bob")
    rcpts = [e["recipient"] for e in pymilter.entries("rcpt")]
    assert rcpts == ["<blocked@remote.example>", "<bob@example.test>"]


def test_rset_aborts_and_the_next_transaction_works(server: Postroom) -> None:
    with server.smtp() as client:
        client.ehlo()
        assert client.mail("sender@remote.example")[0] == 250
        assert client.rcpt(ALICE)[0] == 250
        client.rset()
        assert client.mail("sender@remote.example")[0] == 250
        assert client.rcpt(ALICE)[0] == 250
        code, _ = client.data(message("milter-addheader after rset"))
        assert code == 250
    assert wait_stored(server, ALICE)["X-Milter-Test"] == "added by pymilter"


def test_pipelined_sessions_in_parallel(server: Postroom) -> None:
    """Several sessions at once, each its own milter connection."""
    clients = [server.smtp() for _ in range(4)]
    with contextlib.ExitStack() as stack:
        for c in clients:
            stack.enter_context(c)
            c.ehlo()
        for n, c in enumerate(clients):
            c.sendmail("sender@remote.example", [ALICE], message(f"milter-addheader {n}"))
    wait_until(lambda: len(stored(server, ALICE)) == 4, 20.0, "four messages")
    assert all(m["X-Milter-Test"] == "added by pymilter" for m in stored(server, ALICE))


def test_two_milters_run_in_order_and_the_second_sees_the_first_ones_changes(
    postroom_factory: Callable[..., Postroom], pymilter: PyMilter, tmp_path: Path
) -> None:
    second = PyMilter(tmp_path / "second")
    second.directory.mkdir()
    second.start()
    try:
        server = postroom_factory(
            extra="".join(
                f'[[milter]]\naddress = "inet:{HOST}:{m.port}"\n' for m in (pymilter, second)
            )
        )
        send(server, "milter-addheader in order")
        got = wait_stored(server, ALICE)
        # The second filter added its own copy after the first one's.
        assert got.get_all("X-Milter-Test") == ["added by pymilter", "added by pymilter"]
        (eom,) = second.entries("eom")
        assert ["X-Milter-Test", "added by pymilter"] in eom["headers"]
        (first_eom,) = pymilter.entries("eom")
        assert ["X-Milter-Test", "added by pymilter"] not in first_eom["headers"]
    finally:
        if second.proc is not None:
            _stop(second.proc)
