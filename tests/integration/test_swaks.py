"""The real server driven by swaks, the Swiss Army Knife for SMTP (TLS, AUTH, pipelining)."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import ALICE, BOB, Postroom, require_program
from .wire import header_value, new_token, split_trace, with_token


def swaks(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    program = require_program("swaks")
    return subprocess.run(
        [program, "--helo", "client.example.net", "--timeout", "20", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"swaks exited {result.returncode}:\n{output}"
    return output


def test_swaks_plain_to_local_user(postroom: Postroom) -> None:
    token = new_token()
    result = swaks(
        "--server",
        f"127.0.0.1:{postroom.smtp_port}",
        "--to",
        ALICE,
        "--from",
        "x@y.test",
        "--header",
        f"Subject: {token}",
    )
    output = assert_ok(result)
    assert "<-  250 2.0.0 Ok: queued as" in output or "queued as" in output, output
    postroom.wait_for_messages(ALICE, 1)
    [message] = postroom.export(ALICE)
    assert header_value(message, "subject") == [token.encode()]
    trace, _ = split_trace(message)
    assert trace[0] == b"Return-Path: <x@y.test>\n"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_starttls_auth_on_submission(postroom: Postroom, mechanism: str) -> None:
    token = new_token()
    result = swaks(
        "--server",
        f"127.0.0.1:{postroom.submission_port}",
        "--tls",
        "--auth",
        mechanism,
        "--auth-user",
        ALICE,
        "--auth-password",
        postroom.passwords[ALICE],
        "--to",
        BOB,
        "--from",
        ALICE,
        "--header",
        f"Subject: {token}",
    )
    output = assert_ok(result)
    assert "-> STARTTLS" in output
    assert "<~  235 2.7.0" in output, output
    postroom.wait_for_messages(BOB, 1)
    [message] = postroom.export(BOB)
    assert header_value(message, "subject") == [token.encode()]
    received = b" ".join(header_value(message, "received")[0].split())
    assert b"with ESMTPSA" in received


def test_swaks_tls_on_connect_to_submissions(postroom: Postroom) -> None:
    token = new_token()
    result = swaks(
        "--server",
        f"127.0.0.1:{postroom.submissions_port}",
        "--tls-on-connect",
        "--auth",
        "PLAIN",
        "--auth-user",
        ALICE,
        "--auth-password",
        postroom.passwords[ALICE],
        "--to",
        BOB,
        "--from",
        ALICE,
        "--header",
        f"Subject: {token}",
    )
    assert_ok(result)
    postroom.wait_for_messages(BOB, 1)
    assert with_token(postroom.export(BOB), token)


def test_swaks_pipelining(postroom: Postroom) -> None:
    token = new_token()
    result = swaks(
        "--server",
        f"127.0.0.1:{postroom.smtp_port}",
        "--pipeline",
        "--to",
        f"{ALICE},{BOB},nobody@example.test",
        "--from",
        "x@y.test",
        "--header",
        f"Subject: {token}",
    )
    # swaks succeeds when at least one recipient is accepted (24 would mean none was).
    output = assert_ok(result)
    assert "550 5.1.1" in output, output
    assert "queued as" in output, output
    # Pipelined: swaks sent DATA before it read the reply to MAIL FROM.
    assert output.index(" -> DATA") < output.index("<-  250 2.1.0"), output
    for user in (ALICE, BOB):
        postroom.wait_for_messages(user, 1)
        [message] = postroom.export(user)
        assert header_value(message, "subject") == [token.encode()]


def test_swaks_pipelining_with_starttls_and_auth(postroom: Postroom) -> None:
    token = new_token()
    result = swaks(
        "--server",
        f"127.0.0.1:{postroom.submission_port}",
        "--pipeline",
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        BOB,
        "--auth-password",
        postroom.passwords[BOB],
        "--to",
        f"{ALICE},carol@remote.test",
        "--from",
        BOB,
        "--header",
        f"Subject: {token}",
    )
    assert_ok(result)
    postroom.wait_for_messages(ALICE, 1)
    assert "carol@remote.test" in postroom.queue_list()


def test_swaks_wrong_password_is_refused(postroom: Postroom) -> None:
    result = swaks(
        "--server",
        f"127.0.0.1:{postroom.submission_port}",
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        ALICE,
        "--auth-password",
        "wrong",
        "--to",
        BOB,
        "--from",
        ALICE,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "535 5.7.8" in output, output


def test_swaks_relay_attempt_is_refused(postroom: Postroom) -> None:
    result = swaks(
        "--server",
        f"127.0.0.1:{postroom.smtp_port}",
        "--to",
        "victim@remote.test",
        "--from",
        "spammer@y.test",
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "554 5.7.1" in output, output
    assert postroom.queue_list() == ""


def test_require_program_skips_or_fails_in_strict_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from . import conftest

    monkeypatch.setattr(conftest, "STRICT", False)
    with pytest.raises(pytest.skip.Exception, match="no-such-program-xyz not installed"):
        conftest.require_program("no-such-program-xyz")
    monkeypatch.setattr(conftest, "STRICT", True)
    with pytest.raises(pytest.fail.Exception, match="no-such-program-xyz not installed"):
        conftest.require_program("no-such-program-xyz")
    assert conftest.require_program("sh")
