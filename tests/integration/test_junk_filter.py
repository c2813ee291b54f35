"""The built-in junk filter (issue 14 §2) over real sockets: trained with `postroom spam train`,
it files a user's spam into Junk and marks every judged copy (X-Spam-Score/X-Spam-Status) while
another user's untrained filter leaves their copy alone; above `refuse_above` the message is
refused at DATA; moving mail into and out of Junk over IMAP trains it; CLI mistakes are one
line."""

from __future__ import annotations

import imaplib
import random
import re
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.junk.bayes import MIN_TRAINED

from .conftest import ALICE, BOB, PASSWORDS, Postroom

SERVICES = ("smtp", "imaps")
SPAM_WORDS = [
    "viagra",
    "cheap",
    "pills",
    "casino",
    "winner",
    "lottery",
    "prize",
    "claim",
    "unclaimed",
    "inheritance",
    "bitcoin",
    "investment",
    "guaranteed",
    "millions",
    "offer",
    "discount",
    "pharmacy",
    "replica",
    "watches",
]
HAM_WORDS = [
    "meeting",
    "agenda",
    "project",
    "review",
    "quarterly",
    "budget",
    "lunch",
    "tomorrow",
    "draft",
    "report",
    "schedule",
    "minutes",
    "deadline",
    "team",
    "feedback",
    "release",
    "notes",
    "garden",
]


def message(words: tuple[str, ...] | list[str], subject: str, number: int) -> bytes:
    body = " ".join(words)
    return (
        f"From: sender{number}@remote.test\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}.{number}@remote.test>\r\n\r\n{body}\r\n"
    ).encode()


def corpus(directory: Path, words: list[str], count: int, seed: int) -> Path:
    """`count` message files of words drawn from `words` (and a few shared ones)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True)
    common = ["hello", "regards", "today", "please"]
    for number in range(count):
        drawn = rng.sample(words, 8) + rng.sample(common, 2)
        (directory / f"{number:03d}").write_bytes(message(drawn, " ".join(drawn[:3]), number))
    return directory


def train(server: Postroom, tmp_path: Path, user: str = ALICE) -> None:
    spam = corpus(tmp_path / "spam", SPAM_WORDS, MIN_TRAINED, seed=1)
    ham = corpus(tmp_path / "ham", HAM_WORDS, MIN_TRAINED, seed=2)
    out = server.run_cli("spam", "train", user, "--spam", str(spam)).stdout
    assert f"{user}: {MIN_TRAINED} of {MIN_TRAINED} messages learned as spam" in out
    status = server.run_cli("spam", "status", user).stdout
    assert status.strip().endswith(f"not judging yet (needs {MIN_TRAINED} of each)")
    again = server.run_cli("spam", "train", user, "--spam", str(spam)).stdout
    assert (
        f"0 of {MIN_TRAINED} messages learned as spam (trained: 0 ham, {MIN_TRAINED} spam)" in again
    )
    server.run_cli("spam", "train", user, "--ham", str(ham))
    status = server.run_cli("spam", "status", user).stdout
    assert status.strip() == f"{user}: trained {MIN_TRAINED} ham, {MIN_TRAINED} spam; judging"


def send(server: Postroom, recipients: list[str], data: bytes) -> None:
    with server.smtp() as client:
        client.sendmail("someone@remote.test", recipients, data)


def field(copy: bytes, name: str) -> str | None:
    found = re.search(rb"^" + name.encode() + rb": ([^\r\n]*)", copy, re.M | re.I)
    return found.group(1).decode() if found else None


@pytest.fixture
def server(postroom_factory: Callable[..., Postroom]) -> Postroom:
    return postroom_factory(services=SERVICES)


def test_spam_goes_to_the_trained_users_junk_and_each_copy_is_marked(
    server: Postroom, tmp_path: Path
) -> None:
    train(server, tmp_path)
    spam = message(["cheap", "viagra", "casino", "prize", "winner", "pills"], "winner prize", 99)
    send(server, [ALICE, BOB], spam)
    ham = message(["meeting", "agenda", "budget", "review", "lunch"], "project meeting", 98)
    send(server, [ALICE], ham)
    server.wait_for_messages(ALICE, 1)
    junk = server.export_mailbox(ALICE, "Junk")
    assert len(junk) == 1
    score = int(field(junk[0], "X-Spam-Score") or 0)
    assert score > 5
    assert field(junk[0], "X-Spam-Status") == f"Yes, score={score} tests=BAYES"
    # (the mbox export ends lines with LF)
    assert junk[0].startswith(b"Return-Path: <someone@remote.test>\nX-Spam-Score: ")
    inbox = server.export(ALICE)
    assert len(inbox) == 1
    assert b"project meeting" in inbox[0]
    kept = int(field(inbox[0], "X-Spam-Score") or 0)
    assert 1 <= kept <= 5
    assert field(inbox[0], "X-Spam-Status") == f"No, score={kept} tests=BAYES"
    # Bob trained nothing: his copy is in his INBOX, unmarked.
    bobs = server.wait_for_messages(BOB, 1)
    assert bobs["messages"] == 1
    (copy,) = server.export(BOB)
    assert field(copy, "X-Spam-Score") is None and field(copy, "X-Spam-Status") is None
    assert server.export_mailbox(BOB, "Junk") == []
    scored = re.search(
        r"queued id=\S+ .* to=<alice@example\.test>,<bob@\S+ .* spam=(\S+)", server.log()
    )
    assert scored and scored[1] == f"<alice@example.test>={score}"  # Bob's copy was not judged


def test_a_score_above_refuse_above_is_refused_at_data(
    postroom_factory: Callable[..., Postroom], tmp_path: Path
) -> None:
    server = postroom_factory(services=SERVICES, extra="[junk]\nrefuse_above = 7\n")
    train(server, tmp_path)
    spam = message(["cheap", "viagra", "casino", "prize", "winner", "pills"], "winner prize", 97)
    with server.smtp() as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("someone@remote.test", [ALICE], spam)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 ")
    server.wait_for_log(r"rejected client=127\.0\.0\.1 from=<someone@remote\.test> result=550")
    # Bob's filter is untrained: a copy for him too means the message is accepted for both.
    send(server, [ALICE, BOB], spam)
    server.wait_for_messages(BOB, 1)
    assert len(server.export_mailbox(ALICE, "Junk")) == 1
    assert server.mailbox_status(ALICE)["messages"] == 0


def _imap(server: Postroom) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(
        server.host, server.ports["imaps"], ssl_context=server.tls_context(), timeout=30
    )
    client.login(ALICE, PASSWORDS[ALICE])
    return client


def _trained(server: Postroom) -> tuple[int, int]:
    out = server.run_cli("spam", "status", ALICE).stdout
    found = re.search(r"trained (\d+) ham, (\d+) spam", out)
    assert found, out
    return int(found[1]), int(found[2])


def test_moving_mail_into_and_out_of_junk_trains_the_filter(server: Postroom) -> None:
    for number in range(3):
        send(server, [ALICE], message(["quarterly", "report", "draft"], "report", number))
    server.wait_for_messages(ALICE, 3)
    client = _imap(server)
    try:
        assert client.select("INBOX")[0] == "OK"
        assert client.uid("MOVE", "1:2", "Junk")[0] == "OK"
        server.wait_for_log(r"junk filter trained user=alice@example\.test as=spam messages=2")
        assert _trained(server) == (0, 2)
        assert client.select("Junk")[0] == "OK"
        assert client.uid("MOVE", "1", "INBOX")[0] == "OK"  # a change of mind: ham after all
        server.wait_for_log(r"as=ham messages=1")
        assert _trained(server) == (1, 1)
        assert client.uid("MOVE", "2", "Trash")[0] == "OK"  # deleting spam: nothing
        assert client.select("INBOX")[0] == "OK"
        assert client.uid("COPY", "3", "Archive")[0] == "OK"  # filing mail away: ham
        server.wait_for_log(r"as=ham messages=1(?s:.*)as=ham messages=1")
        assert client.uid("COPY", "3", "Sent")[0] == "OK"  # elsewhere: nothing
    finally:
        client.logout()
    assert _trained(server) == (2, 1)
    assert server.log().count("junk filter trained") == 3


def test_cli_mistakes_are_one_line(server: Postroom, tmp_path: Path) -> None:
    sample = tmp_path / "one.eml"
    sample.write_bytes(message(["hello"], "hello", 1))
    cases = [
        (("spam", "train", ALICE, str(sample)), "say what the messages are: --spam or --ham"),
        (("spam", "train", "nobody@example.test", "--spam", str(sample)), "no user nobody@"),
        (("spam", "train", ALICE, "--ham", str(tmp_path / "missing")), "no such file"),
        (("spam", "status", "nobody@example.test"), "no user nobody@example.test"),
    ]
    for args, expected in cases:
        result = server.run_cli(*args, check=False)
        assert result.returncode == 1, args
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, args
    assert server.run_cli("spam", "score", ALICE, str(sample)).stdout.strip() == "0"
