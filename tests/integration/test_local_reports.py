"""Reports about local delivery: RFC 3464 "delivered" for NOTIFY=SUCCESS, and a failure report
when a recipient's mailbox vanished between RCPT and the end of DATA (user deleted)."""

from __future__ import annotations

import email
import email.message
import email.policy

from .conftest import ALICE, BOB, Postroom, wait_until
from .wire import new_token, simple_message


def reports_to_alice(server: Postroom) -> list[email.message.EmailMessage]:
    found = []
    for raw in server.export(ALICE):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        if parsed.get_content_type() == "multipart/report":
            found.append(parsed)
    return found


def delivery_status(report: email.message.EmailMessage) -> str:
    parts = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    assert len(parts) == 1
    payload = parts[0].get_payload()
    return "\n".join(str(p) for p in payload) if isinstance(payload, list) else str(payload)


def test_notify_success_for_a_local_recipient_reports_delivered(postroom: Postroom) -> None:
    server = postroom
    token = new_token()
    with server.submission() as s:
        s.sendmail(ALICE, [BOB], simple_message(token, ALICE, BOB), rcpt_options=["NOTIFY=SUCCESS"])
    server.wait_for_messages(BOB, 1)
    [report] = wait_until(lambda: reports_to_alice(server), 30, "the success report")
    status = delivery_status(report)
    assert "Action: delivered" in status
    assert f"Final-Recipient: rfc822; {BOB}" in status
    assert "Status: 2.0.0" in status
    assert server.run_cli("queue", "list").stdout == ""


def test_local_delivery_without_notify_sends_no_report(postroom: Postroom) -> None:
    server = postroom
    token = new_token()
    with server.submission() as s:
        s.sendmail(ALICE, [BOB], simple_message(token, ALICE, BOB))
    server.wait_for_messages(BOB, 1)
    assert reports_to_alice(server) == []
    assert server.run_cli("queue", "list").stdout == ""


def test_recipient_deleted_after_rcpt_gets_a_failure_report(postroom: Postroom) -> None:
    server = postroom
    token = new_token()
    with server.submission() as s:
        s.mail(ALICE)
        assert s.rcpt(BOB)[0] == 250
        server.run_cli("user", "delete", BOB, "--yes")
        code, reply = s.data(simple_message(token, ALICE, BOB))
        assert code == 250, reply  # accepted: the recipient was valid at RCPT time
    [report] = wait_until(lambda: reports_to_alice(server), 30, "the failure report")
    status = delivery_status(report)
    assert "Action: failed" in status
    assert f"Final-Recipient: rfc822; {BOB}" in status
    assert "Status: 5.1.1" in status
    assert token in report.as_string()  # the returned headers name the message
    wait_until(lambda: server.run_cli("queue", "list").stdout == "", 30, "the entry to go")
