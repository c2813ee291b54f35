"""`postroom queue show|hold|release|retry|delete` on real queue entries made over SMTP."""

from __future__ import annotations

import re

from tests.integration.conftest import ALICE, Postroom
from tests.integration.wire import new_token, simple_message

REMOTE = "carol@remote.test"


def queue_remote_message(postroom: Postroom, *rcpt_options: str) -> str:
    """Submit a message for a remote address (and alice); return its queue ID."""
    token = new_token()
    with postroom.submission() as s:
        s.ehlo()
        assert s.mail(ALICE)[0] == 250
        assert s.rcpt(REMOTE, list(rcpt_options))[0] == 250
        assert s.rcpt(ALICE)[0] == 250
        code, text = s.data(simple_message(token, ALICE, REMOTE))
        assert code == 250, text
    match = re.search(rb"queued as (\S+)", text)
    assert match, text
    return match.group(1).decode()


def recipient_line(show: str, address: str) -> str:
    [line] = [line for line in show.splitlines() if line.strip().startswith(f"<{address}>")]
    return line


def test_show_lists_envelope_recipients_and_headers(postroom: Postroom) -> None:
    queue_id = queue_remote_message(
        postroom, "NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;carol@remote.test"
    )
    show = postroom.run_cli("queue", "show", queue_id).stdout
    assert f"id: {queue_id}" in show
    assert f"sender: <{ALICE}>" in show
    assert "protocol=ESMTPSA" in show
    assert f"authenticated: {ALICE}" in show
    remote = recipient_line(show, REMOTE)
    # Waiting: queued, or deferred once the first attempt failed (tests have no DNS).
    assert re.search(r"state=(queued|deferred)", remote), remote
    assert "notify=SUCCESS,FAILURE" in remote
    assert "orcpt=rfc822;carol@remote.test" in remote
    local = recipient_line(show, ALICE)
    assert "state=delivered" in local
    assert "delivered to INBOX uid 1" in local
    assert re.search(rf"with ESMTPSA id {queue_id}", show), show
    assert "Message-ID: <" in show  # added on submission


def test_hold_release_retry_change_recipient_state(postroom: Postroom) -> None:
    queue_id = queue_remote_message(postroom)
    held = postroom.run_cli("queue", "hold", queue_id.lower())
    assert "1 recipient(s)" in held.stdout
    assert "state=held" in recipient_line(
        postroom.run_cli("queue", "show", queue_id).stdout, REMOTE
    )
    # A held recipient is not due: retry --all leaves it alone.
    assert postroom.run_cli("queue", "retry", "--all").stdout.startswith("0 recipient(s)")
    postroom.run_cli("queue", "release", queue_id)
    released = recipient_line(postroom.run_cli("queue", "show", queue_id).stdout, REMOTE)
    assert re.search(r"state=(queued|deferred)", released), released
    assert postroom.run_cli("queue", "retry", queue_id).stdout.startswith("1 recipient(s)")


def test_delete_removes_entry_but_not_delivered_copies(postroom: Postroom) -> None:
    queue_id = queue_remote_message(postroom)
    postroom.run_cli("queue", "delete", queue_id)
    assert queue_id not in postroom.queue_list()
    # Its history is kept: `queue show` says what happened to each recipient.
    history = postroom.run_cli("queue", "show", queue_id).stdout
    assert f"id: {queue_id} (no longer queued)" in history
    assert re.search(rf"<{re.escape(ALICE)}> delivered .*delivered to INBOX uid \d+", history)
    assert re.search(rf"<{re.escape(REMOTE)}> deleted queue delete", history), history
    missing = postroom.run_cli("queue", "show", "NOSUCHID", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "postroom: error: no queued message NOSUCHID (and no history of it)"
    )
    # alice's copy shares the blob: it must survive the queue entry's deletion.
    [stored] = postroom.export(ALICE)
    assert b"Subject:" in stored


def test_retry_needs_an_id_or_all(postroom: Postroom) -> None:
    result = postroom.run_cli("queue", "retry", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "postroom: error: give a message ID or --all"
    assert "Traceback" not in result.stderr
