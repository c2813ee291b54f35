"""Every imaptest script passes against a private Debian Dovecot, calibrating the driver.

Upstream imaptest reports 0 failures against Dovecot, so a failure here is a driver bug, except
for the few scripts in XFAIL that Debian's Dovecot cannot pass (strictly xfailed: they must keep
failing, or the entry must go). Further tests prove the driver does fail on wrong replies.
The scripts live in ../shared/conformance/imaptest/tests (POSTROOM_IMAPTEST_DIR overrides).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.conftest import require_program

from .dovecot import PrivateDovecot
from .imaptest_driver import ServerInfo, Status, required_capabilities, run_script
from .imaptest_script import script_paths

SCRIPTS_DIR = Path(
    os.environ.get("POSTROOM_IMAPTEST_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "conformance" / "imaptest" / "tests"
)
SCRIPTS = script_paths(SCRIPTS_DIR) if SCRIPTS_DIR.is_dir() else []
XFAIL = {
    "sort-partial": "Dovecot 2.3 does not advertise CONTEXT=SORT, so the script is skipped",
    "urlauth-binary": "Dovecot 2.3.19.1's imap process panics on URLFETCH (BINARY "
    "BODYPARTSTRUCTURE) of a second part: client_command_free assertion",
    "urlauth2": "Dovecot 2.3.19.1's imap-urlauth-login panics when another user fetches a "
    "URLAUTH URL: sasl_server_auth_begin assertion",
}
TIMEOUT = 5.0


def _params() -> list[object]:
    return [
        pytest.param(
            path,
            id=path.name,
            marks=[pytest.mark.xfail(strict=True, reason=XFAIL[path.name])]
            if path.name in XFAIL
            else [],
        )
        for path in SCRIPTS
    ]


@pytest.fixture(scope="module")
def dovecot() -> Iterator[PrivateDovecot]:
    program = require_program("dovecot")
    with PrivateDovecot.running(program) as server:
        yield server


def _server(dovecot: PrivateDovecot) -> ServerInfo:
    user, password = dovecot.new_user()
    user2, password2 = dovecot.new_user()
    return ServerInfo(dovecot.host, dovecot.port, user, password, user2, password2, timeout=TIMEOUT)


def test_the_imaptest_scripts_are_present() -> None:
    assert len(SCRIPTS) >= 70, f"imaptest scripts missing from {SCRIPTS_DIR}"
    assert set(XFAIL) <= {path.name for path in SCRIPTS}


@pytest.mark.parametrize("script", _params())
def test_imaptest_script_passes_on_dovecot(dovecot: PrivateDovecot, script: Path) -> None:
    result = run_script(script, _server(dovecot))
    assert result.status is Status.PASSED, f"{result.report()}\n{dovecot.log_tail()}"


def _write_script(tmp_path: Path, text: str) -> Path:
    shutil.copy(SCRIPTS_DIR / "default.mbox", tmp_path / "default.mbox")
    path = tmp_path / "probe"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("messages: 2\n\nok select $mailbox\n* 3 exists\n", "Missing 1 untagged replies"),
        ("messages: 2\n\nok fetch 1 uid\n! 1 fetch (uid $uid)\n", "Unexpected untagged match"),
        ("messages: 2\n\nno noop\n", "Expected tagged reply 'no', got 'OK"),
        (
            "messages: 2\n\nok fetch 1 uid\n* 1 fetch (uid $u)\nok fetch 2 uid\n"
            "* 2 fetch (uid $u)\n",
            "Missing 1 untagged replies",
        ),
        (
            "messages: 2\n\nok fetch 1 flags\n* 1 fetch (flags (\\seen))\n",
            "Missing 1 untagged replies",
        ),
        (
            "messages: 2\nignore_extra_untagged: no\n\nok select $mailbox\n",
            "unexpected untagged replies received",
        ),
        ("state: auth\n\nok select $mailbox\n", "Expected tagged reply 'ok', got 'NO"),
        ("state: auth\n\nok noop $undefined\n", "Uninitialized variable: undefined"),
        ("state: auth\n\nok frobnicate\n", "BAD reply for command"),
    ],
)
def test_the_driver_reports_wrong_replies(
    dovecot: PrivateDovecot, tmp_path: Path, text: str, complaint: str
) -> None:
    result = run_script(_write_script(tmp_path, text), _server(dovecot))
    assert result.status is Status.FAILED
    assert complaint in result.report()


def test_scripts_needing_an_absent_capability_are_skipped(
    dovecot: PrivateDovecot, tmp_path: Path
) -> None:
    path = _write_script(tmp_path, "capabilities: X-POSTROOM-NONE\nstate: auth\n\nok noop\n")
    assert required_capabilities(path) == {"X-POSTROOM-NONE"}
    result = run_script(path, _server(dovecot))
    assert result.status is Status.SKIPPED
    assert "X-POSTROOM-NONE" in result.skip_reason
