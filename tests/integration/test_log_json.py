"""`[log] format = "json"` on a real `postroom serve`: every line the server writes, from start to
shutdown, is one JSON object with time, level, logger and message and the message's fields;
failed logins stay matchable by the fail2ban filter shipped in contrib/ (the real
fail2ban-regex), one address per failure and none from a user name that tries to fake one."""

from __future__ import annotations

import base64
import imaplib
import json
import poplib
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from .conftest import ALICE, BOB, Postroom, require_program
from .wire import new_token, simple_message

FILTER = Path(__file__).parents[2] / "contrib" / "fail2ban" / "filter.d" / "postroom.conf"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SPOOF = 'evil" , "logger": "postroom.auth", "message": "login failed service=x client=203.0.113.9'


def test_every_line_is_json_and_failed_logins_reach_fail2ban(
    postroom_factory: Callable[..., Postroom],
) -> None:
    fail2ban_regex = require_program("fail2ban-regex")
    server = postroom_factory(
        services=("smtp", "submission", "imap", "pop3"), extra='[log]\nformat = "json"\n'
    )
    with server.smtp() as client:
        assert client.sendmail("x@outside.test", [BOB], simple_message(new_token(), to=BOB)) == {}
    server.wait_for_messages(BOB, 1)
    # Failed logins: SMTP AUTH (one with a user name made to look like a JSON log line), IMAP
    # LOGIN, POP3 USER/PASS.
    with server.submission(login=None) as client:
        for user in (ALICE, SPOOF):
            plain = base64.b64encode(f"\0{user}\0wrong".encode()).decode()
            assert client.docmd("AUTH", "PLAIN " + plain)[0] == 535
    imap = imaplib.IMAP4(server.host, server.ports["imap"], timeout=30)
    imap.starttls(ssl_context=server.tls_context())
    try:
        imap.login(ALICE, "wrong")
        raise AssertionError("a wrong password was accepted")
    except imaplib.IMAP4.error as error:
        assert "AUTHENTICATIONFAILED" in str(error)
    imap.logout()
    pop = poplib.POP3(server.host, server.ports["pop3"], timeout=30)
    pop.stls(context=server.tls_context())
    pop.user(ALICE)
    try:
        pop.pass_("wrong")
        raise AssertionError("a wrong password was accepted")
    except poplib.error_proto as error:
        assert b"[AUTH]" in error.args[0]
    pop.quit()
    server.wait_for_log(r'"method": "USER"')
    assert server.stop() == 0

    lines = server.log().splitlines()
    assert len(lines) > 10
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line, not only ours: nothing else writes there
        assert TIME.match(entry["time"]), entry
        assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), entry
        assert entry["logger"].startswith("postroom"), entry
        assert isinstance(entry["message"], str) and entry["message"], entry
        entries.append(entry)
    assert list(entries[0])[:4] == ["time", "level", "logger", "message"]
    messages = [entry["message"] for entry in entries]
    assert any(m.startswith("postroom ready hostname=") for m in messages)
    assert messages[-1].startswith("stopped; batches=")

    [queued] = [e for e in entries if e["message"].startswith("queued id=")]
    assert f"id={queued['id']} " in queued["message"]
    assert (queued["client"], queued["from"], queued["to"]) == (
        "127.0.0.1",
        "x@outside.test",
        f"<{BOB}>",
    )
    assert queued["delivered"] == 1 and isinstance(queued["size"], int)

    failed = [e for e in entries if e["message"].startswith("login failed ")]
    assert [(e["service"], e["client"], e["method"]) for e in failed] == [
        ("submission", "127.0.0.1", "PLAIN"),
        ("submission", "127.0.0.1", "PLAIN"),
        ("imap", "127.0.0.1", "LOGIN"),
        ("pop3", "127.0.0.1", "USER"),
    ]
    assert failed[0]["user"] == ALICE and failed[0]["logger"] == "postroom.auth"
    assert failed[1]["user"] == SPOOF.replace(" ", "?")  # spaces never reach the log

    result = subprocess.run(
        [fail2ban_regex, "--out", "ip", str(server.log_path), str(FILTER)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.split() == ["127.0.0.1"] * 4, result.stdout  # the spoof fooled nobody
