"""The web admin's delivery trace page and `GET /api/v1/trace` on a real `postroom serve`, with
real DNS (nsd) and a real peer (Postfix with STARTTLS) that first defers one recipient with a
reply full of HTML, then accepts it; pages read over real HTTPS (http.client).

What must show: each attempt's MX host, address, TLS and reply (escaped: remote replies are
hostile text), the next attempt, the local delivery, the failure report with a link to its
own trace, the queue page's link to the trace; the dashboard's counts of the last 24 hours
and its recent failures; the API's JSON is the CLI's; a plain user gets 403 on both. For mail
from outside with [verify] on: the SPF/DKIM/DMARC results and the verdict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from . import test_inbound_checks, test_outbound, test_trace
from .conftest import ALICE, BOB, Factory, Postroom, wait_until
from .dns_server import DnsServer, DnsServerFactory
from .postfix_instance import Postfix
from .web_client import WebClient
from .wire import new_token, simple_message

dns = test_outbound.dns  # nsd serving remote.test: MX mx.remote.test → 127.0.0.1
dns_server = test_trace.dns_server
CAROL, NOBODY = test_trace.CAROL, test_trace.NOBODY
HOSTILE = '451 4.3.0 <script>alert("x")</script> & <b>later</b>'
SERVICES = ("smtp", "submission", "imap", "http", "https")


@pytest.fixture
def peer() -> Iterator[Postfix]:
    with Postfix(
        listeners={"plain": {}},
        main={
            "smtpd_recipient_restrictions": (
                "check_recipient_access {recipient_access}, permit_mynetworks, "
                "reject_unauth_destination"
            )
        },
        tables={"recipient_access": {CAROL: HOSTILE, NOBODY: test_trace.REFUSE}},
        mailboxes=(CAROL,),
        tls=True,
    ) as postfix:
        yield postfix


@pytest.fixture
def server(postroom_factory: Factory, dns: DnsServer, peer: Postfix) -> Postroom:
    server = postroom_factory(
        services=SERVICES,
        start=False,
        extra=(
            f'[dns]\nnameservers = ["{dns.nameserver}"]\n\n'
            f'[delivery]\nport = {peer.ports["plain"]}\n\n[queue]\nretry = ["1h"]\n'
        ),
    )
    server.run_cli("user", "admin", ALICE)
    server.start()
    return server


def cli_trace(server: Postroom, query: str) -> list[dict[str, Any]]:
    found = json.loads(server.run_cli("trace", query, "--json").stdout)
    assert isinstance(found, list)
    return found


def test_trace_page_shows_attempts_escapes_replies_and_links_reports(
    server: Postroom, peer: Postfix
) -> None:
    local_token, remote_token = new_token(), new_token()
    with server.submission() as client:
        client.sendmail(ALICE, [BOB], simple_message(local_token, ALICE, BOB))
        client.sendmail(ALICE, [CAROL, NOBODY], simple_message(remote_token, ALICE, CAROL))
    wait_until(lambda: "deferred" in server.queue_list(), 30, "carol to be deferred")
    [remote] = cli_trace(server, f"<{remote_token}@y.test>")
    queue_id = str(remote["queue_id"])

    admin = WebClient(server)
    admin.login(ALICE, server.passwords[ALICE])
    queue = admin.get("/admin/queue").body
    assert f'href="/admin/trace?q={queue_id}"' in queue
    page = admin.get(f"/admin/trace?q={queue_id}")
    assert page.status == 200 and page.headers["cache-control"] == "no-store"
    body = page.body
    assert f"Message {queue_id} (in the queue)" in body
    assert "<td>mx.remote.test</td>" in body and "<td>127.0.0.1</td>" in body
    assert "<td>TLSv1." in body  # the attempt's TLS (Postfix offers STARTTLS)
    assert f"<td>{ALICE}</td>" in body and "ESMTPSA" in body  # the login, the protocol
    # The hostile reply is shown as text, never as markup.
    assert "<script>" not in body and "<b>later</b>" not in body
    shown = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;later&lt;/b&gt;"
    assert shown in body, body
    assert "deferred" in body and ", next attempt " in body
    # The 550 for nobody: failed, and a failure report to alice, linked to its own trace.
    assert "550 5.1.1" in body and "failure report to &lt;alice@example.test&gt;" in body
    [report] = remote["reports"]
    report_id = report["queue_id"]
    assert f'<a href="/admin/trace?q={report_id}">{report_id}</a>' in body
    bounce = admin.get(f"/admin/trace?q={report_id}").body
    assert f"Message {report_id}" in bounce and "delivered to INBOX" in bounce

    # Carol is welcome now: the retry delivers, the trace says so.
    peer.set_table("recipient_access", {NOBODY: test_trace.REFUSE})
    server.run_cli("queue", "retry", "--all")
    peer.wait_for_messages(CAROL, 1, remote_token.encode(), timeout=30)
    wait_until(lambda: CAROL not in server.queue_list(), 30, "carol's entry to leave the queue")
    done = admin.get(f"/admin/trace?q={quote(f'<{remote_token}@y.test>')}").body
    assert f"Message {queue_id} (done)" in done and "250 2.0.0 Ok" in done

    # By address: bob's local delivery, its mailbox named.
    by_bob = admin.get(f"/admin/trace?q={quote(BOB)}").body
    assert "delivered to INBOX" in by_bob and ": local, delivered</caption>" in by_bob

    # The API answers what `postroom trace --json` prints.
    api = admin.api("GET", f"/api/v1/trace?q={queue_id}")
    assert api.status == 200 and api.json() == cli_trace(server, queue_id)
    assert admin.api("GET", "/api/v1/trace?q=nobody%40nowhere.test").json() == []
    assert admin.api("GET", "/api/v1/trace").status == 400
    missing = admin.get("/admin/trace?q=nobody%40nowhere.test")
    assert missing.status == 404 and "No message found for nobody@nowhere.test" in missing.body
    assert admin.get("/admin/trace?q=" + "x" * 501).status == 400

    # The dashboard: its search box sends its query to the trace page; the last 24 hours
    # count 3 messages received (bob's, carol's and the failure report), 2 delivered here
    # (to bob, the report to alice), 1 sent out (carol), 1 failed (nobody), listed with its
    # reply and a link to its trace.
    dashboard = admin.get("/admin/").body
    assert 'action="/admin/trace"' in dashboard
    totals = '<th scope="row">Total</th><td>3</td><td>2</td><td>1</td><td>1</td>'
    assert totals in dashboard, dashboard
    assert f'<a href="/admin/trace?q={queue_id}">{queue_id}</a>' in dashboard
    assert f"<td>{NOBODY}</td>" in dashboard and "550 5.1.1" in dashboard
    hours = re.findall(r'<tr><th scope="row">(\d{4}-\d\d-\d\d \d\d:\d\d)</th>', dashboard)
    assert len(hours) == 24 and hours == sorted(hours), hours  # one row per hour

    # A plain user sees neither the page nor the API's answer.
    bob = WebClient(server)
    bob.login(BOB, server.passwords[BOB])
    refused = bob.get(f"/admin/trace?q={queue_id}")
    assert refused.status == 403 and CAROL not in refused.body
    assert bob.api("GET", f"/api/v1/trace?q={queue_id}").status == 403
    bob_token = server.run_cli("user", "token", BOB).stdout.strip()
    by_token = WebClient(server).api(
        "GET", f"/api/v1/trace?q={queue_id}", Authorization=f"Bearer {bob_token}"
    )
    assert by_token.status == 403 and CAROL not in by_token.body


def test_trace_page_shows_the_inbound_checks_and_their_verdict(
    dns_server: DnsServerFactory, postroom_factory: Factory
) -> None:
    nsd = dns_server(test_inbound_checks.ZONES)
    checked = postroom_factory(
        services=("smtp", "http", "https"),
        start=False,
        extra=f'[dns]\nnameservers = ["{nsd.nameserver}"]\n\n[verify]\nenabled = true\n',
    )
    checked.run_cli("user", "admin", ALICE)
    checked.start()
    token, sender = new_token(), "eve@quarantine.test"  # SPF and DMARC fail, p=quarantine
    code, text = test_inbound_checks.send(
        checked, sender, test_inbound_checks.message(sender, token)
    )
    assert code == 250, text
    admin = WebClient(checked)
    admin.login(ALICE, checked.passwords[ALICE])
    page = admin.get(f"/admin/trace?q={quote(f'<{token}@checks.test>')}").body
    checks = re.search(r'<th scope="row">Checks</th><td>([^<]*)</td>', page)
    assert checks and "spf=fail" in checks[1] and "dmarc=fail" in checks[1], page
    assert re.search(r'<th scope="row">Verdict</th><td>junk \([^<]*\) \(filed as junk\)</td>', page)
    assert '<th scope="row">Login</th><td>none</td>' in page
    assert '<th scope="row">TLS</th><td>none</td>' in page
    assert "delivered to Junk" in page
