"""`postroom send` against a running postroom: compose, submit, exit status, -v conversation."""

from __future__ import annotations

import base64
import email
import email.policy
import subprocess
from pathlib import Path

import pytest

from .conftest import ALICE, BOB, Postroom, postroom_executable
from .terminal import run_on_terminal


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
    assert_credentials_hidden(err, ALICE, postroom.passwords[ALICE])
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


def assert_credentials_hidden(conversation: str, user: str, password: str) -> None:
    assert " -> AUTH PLAIN <hidden>" in conversation, conversation
    plain = f"\0{user}\0{password}".encode()
    encoded = [base64.b64encode(data).decode() for data in (plain, password.encode())]
    for secret in (password, *encoded):
        assert secret not in conversation, f"{secret!r} shown:\n{conversation}"


@pytest.mark.parametrize(("options", "upgrade"), [((), " -> STARTTLS"), (("--tls",), None)])
def test_without_server_it_submits_to_this_config_with_tls_and_login(
    postroom: Postroom, options: tuple[str, ...], upgrade: str | None
) -> None:
    """No --server: the config's submission port (submissions with --tls), the certificate
    verified as the configured hostname, and a login."""
    password = postroom.passwords[ALICE]
    code, out, err = send(
        postroom,
        *("--from", ALICE, "--to", BOB, "--auth", ALICE, "--password-stdin", "-v", *options),
        password=password + "\n",
    )
    assert code == 0, err
    assert out.startswith("250 2.0.0 Ok: queued as ")
    assert upgrade is None or upgrade in err
    assert_credentials_hidden(err, ALICE, password)
    postroom.wait_for_messages(BOB, 1)


def test_without_server_it_asks_for_the_login_on_a_terminal(postroom: Postroom) -> None:
    password = postroom.passwords[ALICE]
    status, screen = run_on_terminal(
        ["--config", str(postroom.config_path), "send", "--from", ALICE, "--to", BOB],
        answers=[(f"Login [{ALICE}]: ", "\n"), ("Password: ", password + "\n")],
    )
    assert status == 0, screen
    assert "250 2.0.0 Ok: queued as " in screen
    assert password not in screen  # typed without echo
    postroom.wait_for_messages(BOB, 1)


def test_without_server_a_missing_piece_is_one_line_saying_what_to_add(
    postroom: Postroom, tmp_path: Path
) -> None:
    code, _, err = send(postroom, "--from", ALICE, "--to", BOB)
    assert code == 1
    assert err.strip() == (
        "postroom: error: the submission port needs a login: add --auth USER --password-stdin "
        "(or --server HOST:PORT for a port without one)"
    )
    code, _, err = send(postroom, "--from", ALICE, "--to", BOB, "--auth", ALICE)
    assert code == 1
    assert err.strip() == f"postroom: error: no password for {ALICE}: add --password-stdin"
    missing = tmp_path / "none.toml"
    result = subprocess.run(
        [postroom_executable(), "--config", str(missing), "send", "--from", ALICE, "--to", BOB],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"postroom: error: no --server, and no {missing} to find the submission port in: "
        "add --server HOST:PORT, or --config FILE"
    )
