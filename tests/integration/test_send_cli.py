"""`postroom send` against a running postroom: compose, submit, exit status, -v conversation."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from .conftest import ALICE, Postroom


def send(server: Postroom, *args: str, password: str | None = None) -> tuple[int, str, str]:
    result = server.run_cli("send", *args, check=False, input=password)
    return result.returncode, result.stdout, result.stderr


def test_plain_send_with_attachment_arrives(postroom: Postroom, tmp_path: Path) -> None:
    attachment = tmp_path / "notes.txt"
    attachment.write_text("attached words\n")
    code, out, err = send(
        postroom,
        "--from",
        "x@y.test",
        "--to",
        ALICE,
        "--subject",
        "first mail",
        "--body",
        "Hello.",
        "--attach",
        str(attachment),
        "--header",
        "X-Test: yes",
        "--server",
        f"127.0.0.1:{postroom.smtp_port}",
    )
    assert code == 0, err
    assert out.startswith("250 2.0.0 Ok: queued as ")
    postroom.wait_for_messages(ALICE, 1)
    [raw] = postroom.export(ALICE)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Subject"] == "first mail"
    assert message["X-Test"] == "yes"
    [part] = [p for p in message.walk() if p.get_filename() == "notes.txt"]
    assert part.get_payload(decode=True) == b"attached words\n"


def test_submission_with_starttls_login_and_conversation(postroom: Postroom) -> None:
    code, _, err = send(
        postroom,
        "--from",
        ALICE,
        "--to",
        ALICE,
        "--bcc",
        "bob@example.test",
        "--body",
        "hi",
        "--server",
        f"127.0.0.1:{postroom.submission_port}",
        "--starttls",
        "--no-verify",
        "--auth",
        ALICE,
        "--password-stdin",
        "-v",
        password=postroom.passwords[ALICE] + "\n",
    )
    assert code == 0, err
    assert " -> STARTTLS" in err
    assert "<-  235 2.7.0" in err
    assert " -> RCPT TO:<bob@example.test>" in err  # Bcc: envelope only
    postroom.wait_for_messages("bob@example.test", 1)
    [raw] = postroom.export("bob@example.test")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Bcc"] is None
    assert "bob@example.test" not in str(message["To"]) + str(message["Cc"])


def test_exit_status_says_what_failed(postroom: Postroom) -> None:
    smtp = f"127.0.0.1:{postroom.smtp_port}"
    code, _, err = send(
        postroom, "--from", "x@y.test", "--to", "nobody@example.test", "--server", smtp
    )
    assert code == 4
    assert "550 5.1.1" in err
    code, _, err = send(postroom, "--from", "x@y.test", "--to", ALICE, "--server", "127.0.0.1:9")
    assert code == 3
    assert "not sent" in err
    code, _, err = send(
        postroom, "--from", "x@y.test", "--to", ALICE, "--server", smtp, "--auth", ALICE
    )
    assert code == 1
    assert err.strip() == (
        "postroom: error: --auth needs --starttls or --tls: passwords only travel encrypted"
    )
