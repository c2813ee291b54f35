"""`postroom queue list|show|hold|release|retry|delete` on real queue entries made over SMTP."""

from __future__ import annotations

import datetime
import json
import re
import time
from typing import Any

from tests.integration.conftest import ALICE, Factory, Postroom, free_ports, wait_until
from tests.integration.terminal import run_on_terminal
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


# --- queue list ----------------------------------------------------------------------------------

LIST_COLUMNS = (
    *("id", "arrival", "size", "sender"),
    *("recipient", "state", "attempts", "next", "reply", "lease"),
)


def refused_server(postroom_factory: Factory) -> Postroom:
    """A server whose remote mail meets a closed port: each attempt is deferred at once."""
    [closed] = free_ports(1)
    return postroom_factory(extra=f'[routes]\n"remote.test" = "127.0.0.1:{closed}"\n')


def list_lines(postroom: Postroom) -> list[dict[str, str]]:
    out = postroom.run_cli("queue", "list").stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert all(len(row) == len(LIST_COLUMNS) for row in rows), out
    return [dict(zip(LIST_COLUMNS, row, strict=True)) for row in rows]


def list_json(postroom: Postroom) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(postroom.run_cli("queue", "list", "--json").stdout)
    return entries


def deferred_once(postroom: Postroom) -> str:
    queue_id = queue_remote_message(postroom)

    def remote_deferred() -> bool:
        [entry] = list_json(postroom)
        return any(r["state"] == "deferred" for r in entry["recipients"])

    wait_until(remote_deferred, 30, "the first attempt to be deferred")
    return queue_id


def test_list_into_a_pipe_is_one_tab_separated_line_per_recipient(
    postroom_factory: Factory,
) -> None:
    postroom = refused_server(postroom_factory)
    assert postroom.run_cli("queue", "list").stdout == ""  # empty queue: no output at all
    queue_id = deferred_once(postroom)
    remote, local = list_lines(postroom)
    for row in (remote, local):
        assert row["id"] == queue_id
        assert row["sender"] == ALICE
        assert datetime.datetime.fromisoformat(row["arrival"]).tzinfo is not None
        assert int(row["size"]) > 0
    assert (remote["recipient"], remote["state"], remote["attempts"]) == (REMOTE, "deferred", "1")
    assert datetime.datetime.fromisoformat(remote["next"]) > datetime.datetime.now().astimezone()
    assert "refused" in remote["reply"], remote
    assert (local["recipient"], local["state"], local["next"]) == (ALICE, "delivered", "-")
    assert local["reply"].startswith("250 ")
    assert (remote["lease"], local["lease"]) == ("-", "-")  # the attempt is over


def test_list_json_has_stable_keys(postroom_factory: Factory) -> None:
    postroom = refused_server(postroom_factory)
    assert list_json(postroom) == []
    queue_id = deferred_once(postroom)
    [entry] = list_json(postroom)
    assert set(entry) == {"id", "arrival", "size", "sender", "held", "recipients"}
    assert (entry["id"], entry["sender"], entry["held"]) == (queue_id, ALICE, False)
    assert abs(entry["arrival"] - time.time()) < 300
    remote, local = entry["recipients"]
    for rcpt in (remote, local):
        assert set(rcpt) == {"address", "state", "next_attempt", "last_reply", "attempts", "lease"}
        assert rcpt["lease"] is None  # nobody is delivering it now
    assert (remote["address"], remote["state"], remote["attempts"]) == (REMOTE, "deferred", 1)
    assert remote["next_attempt"] > time.time()
    assert (local["state"], local["next_attempt"], local["attempts"]) == ("delivered", None, 0)
    postroom.run_cli("queue", "hold", queue_id)
    [held] = list_json(postroom)
    assert held["held"] is True
    assert held["recipients"][0]["state"] == "held"
    assert held["recipients"][0]["next_attempt"] is None


def on_terminal(postroom: Postroom, columns: int, *args: str) -> str:
    status, screen = run_on_terminal(
        ["--config", str(postroom.config_path), *args], columns=columns
    )
    assert status == 0, screen
    return screen


def show_next(show: str, address: str) -> str:
    match = re.search(r" next=(\S+) ", recipient_line(show, address))
    assert match, show
    return match[1]


def test_list_and_show_print_the_same_next_attempt(postroom_factory: Factory) -> None:
    postroom = refused_server(postroom_factory)
    queue_id = deferred_once(postroom)
    show = postroom.run_cli("queue", "show", queue_id).stdout
    lines = {row["recipient"]: row["next"] for row in list_lines(postroom)}
    [entry] = list_json(postroom)
    for rcpt in entry["recipients"]:
        address = rcpt["address"]
        assert lines[address] == show_next(show, address), (lines, show)
        if rcpt["next_attempt"] is None:
            assert lines[address] == "-"
        else:
            moment = datetime.datetime.fromisoformat(lines[address])
            assert int(moment.timestamp()) == rcpt["next_attempt"]
    assert lines[REMOTE] != "-"


def test_list_on_a_terminal_is_a_table_as_wide_as_the_terminal(
    postroom_factory: Factory,
) -> None:
    postroom = refused_server(postroom_factory)
    assert on_terminal(postroom, 80, "queue", "list").strip() == "queue is empty"
    queue_id = deferred_once(postroom)
    reply = list_json(postroom)[0]["recipients"][0]["last_reply"]
    assert "[" in reply, reply  # "connection refused by host[address]:port"
    for columns in (80, 132):
        table = on_terminal(postroom, columns, "queue", "list")
        widths = [len(line.rstrip("\n")) for line in table.splitlines()]
        assert max(widths) <= columns, table
        assert queue_id in table and "next attempt" in table and "deferred" in table, table
        assert "[" in table, table  # replies print as they are, never as rich markup
