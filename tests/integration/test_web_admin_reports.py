"""The web admin's DMARC reports (`/admin/reports`, `/admin/reports/{id}`) and
`GET /api/v1/dmarc/reports[/{id}]` on a real `postroom serve`: aggregate reports arrive as gzip
XML attachments over SMTP at `dmarc-reports@`, DKIM-signed by pass.test, with the inbound checks
on against a real DNS server (nsd); pages read over real HTTPS (http.client).

What must show: the reports newest first with their pass/fail counts, filtered by domain and
by UTC dates, paged; the last 30 days per domain with the sources failing most; one report's
rows with aligned and raw results (the first 1000 of a big one); our own evaluations waiting
to be reported; a reporter's name full of markup escaped; the API's JSON is the CLI's; 404 for
a bad id, 400 for a bad filter, 403 for a plain user.
"""

from __future__ import annotations

import gzip
import json
import re
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any
from xml.sax.saxutils import escape

import pytest

from . import test_inbound_checks
from .conftest import ALICE, BOB, DOMAIN, Postroom
from .dns_server import DnsServerFactory
from .test_dmarc_cli import feedback, row
from .web_client import WebClient
from .wire import new_token, open_session, send_message

dns_server = test_inbound_checks.dns_server
DAY = 86400
TODAY = int(time.time()) // DAY * DAY  # the start of the current UTC day
HOSTILE = 'Evil <script>alert("x")</script> & Co'
OTHER = "example.net"  # a second local domain


def report_mail(reporter: str, domain: str, begin: int, rows: str) -> bytes:
    """A report about `domain` from pass.test's reporting address, gzip XML attached."""
    report = EmailMessage()
    report["From"] = "reports@pass.test"
    report["To"] = f"dmarc-reports@{domain}"
    report["Subject"] = f"Report Domain: {domain} Submitter: {reporter}"
    report["Message-ID"] = f"<{new_token()}@pass.test>"
    report["Date"] = "Mon, 07 Dec 2026 00:00:00 +0000"
    report.set_content("A DMARC aggregate report.")
    xml = feedback(escape(reporter), new_token("id"), domain, begin, rows)
    report.add_attachment(
        gzip.compress(xml), maintype="application", subtype="gzip", filename="report.xml.gz"
    )
    return report.as_bytes(policy=SMTP)


def deliver(server: Postroom, sender: str, recipient: str, content: bytes) -> int:
    with open_session(server.smtp_port) as wire:
        return send_message(wire, sender, [recipient], content).code


def two_domains(server: Postroom) -> None:
    config = server.config_path.read_text(encoding="utf-8")
    both = config.replace(f'domains = ["{DOMAIN}"]', f'domains = ["{DOMAIN}", "{OTHER}"]')
    assert both != config
    server.config_path.write_text(both, encoding="utf-8")


@pytest.fixture
def server(dns_server: DnsServerFactory, postroom_factory: Callable[..., Postroom]) -> Postroom:
    nsd = dns_server(test_inbound_checks.ZONES)
    server = postroom_factory(
        services=("smtp", "http", "https"),
        start=False,
        extra=f'[dns]\nnameservers = ["{nsd.nameserver}"]\n\n[verify]\nenabled = true\n',
    )
    two_domains(server)
    server.run_cli("user", "admin", ALICE)
    server.start()
    return server


def report_links(body: str) -> list[tuple[int, str]]:
    """The listing's reports, in order: (id, reporter as shown)."""
    return [
        (int(found[0]), found[1])
        for found in re.findall(r'<td><a href="/admin/reports/(\d+)">([^<]*)</a></td>', body)
    ]


def cli_reports(server: Postroom) -> list[dict[str, Any]]:
    listed = json.loads(server.run_cli("dmarc", "reports", "--json").stdout)
    assert isinstance(listed, list)
    return listed


def test_reports_page_summary_rows_filters_and_api(server: Postroom) -> None:
    signed = test_inbound_checks.signed
    google_rows = (
        row("192.0.2.25", 12, "pass", "pass")
        + row("203.0.113.9", 2, "fail", "fail", "reject")
        + row("203.0.113.9", 1, "fail", "pass")  # SPF aligned: DMARC passes
    )
    hostile_rows = row("203.0.113.9", 5, "fail", "fail") + row(
        "198.51.100.4", 1, "fail", "fail", "quarantine"
    )
    mails = [
        report_mail("google.com", DOMAIN, TODAY - 2 * DAY, google_rows),
        report_mail(HOSTILE, DOMAIN, TODAY - DAY, hostile_rows),
        report_mail("mail.ru", OTHER, TODAY - 40 * DAY, row("192.0.2.99", 1, "pass", "pass")),
    ]
    for mail in mails:
        assert deliver(server, "reports@pass.test", f"dmarc-reports@{DOMAIN}", signed(mail)) == 250
    # Our own side: a passing message from pass.test and a refused one from reject.test.
    message = test_inbound_checks.message
    assert deliver(server, "bob@pass.test", ALICE, signed(message("bob@pass.test", "t1"))) == 250
    assert deliver(server, "eve@reject.test", ALICE, message("eve@reject.test", "t2")) == 550
    stored = {r["reporter"]: r for r in cli_reports(server)}
    assert set(stored) == {"google.com", HOSTILE, "mail.ru"}
    google, hostile, mailru = (stored[name]["id"] for name in ("google.com", HOSTILE, "mail.ru"))

    admin = WebClient(server)
    admin.login(ALICE, server.passwords[ALICE])
    page = admin.get("/admin/reports")
    assert page.status == 200 and page.headers["cache-control"] == "no-store"
    body = page.body
    nav_link = '<a href="/admin/reports" aria-current="page">DMARC reports</a>'
    assert nav_link in body  # in the navigation, marked as this page
    shown = "Evil &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co"
    assert "<script>" not in body and shown in body, body
    # Newest period first, with the counts the rows add up to.
    assert report_links(body) == [(hostile, shown), (google, "google.com"), (mailru, "mail.ru")]
    period = f"{iso(TODAY - 2 * DAY)}/{iso(TODAY - 2 * DAY)}"
    google_cells = f"<td>{period}</td>\n      <td>{DOMAIN}</td><td>15</td><td>13</td><td>2</td>"
    assert google_cells in body, body
    # The last 30 days of example.test: 21 messages, 8 failed, 203.0.113.9 failing most (two
    # reporters saw it); mail.ru's report of example.net is older than 30 days.
    assert "2 reports, 21 messages:\n  pass 13, fail 8;" in body, body
    assert "<tr><td>203.0.113.9</td><td>7</td><td>2</td></tr>" in body
    assert "<tr><td>198.51.100.4</td><td>1</td><td>1</td></tr>" in body
    assert "No report in the last 30 days." in body  # example.net's
    # Ours: pass.test's passing message and reject.test's refused one, today.
    assert f"<tr><td>pass.test</td><td>{iso(TODAY)}</td><td>1</td>" in body
    assert f"<tr><td>reject.test</td><td>{iso(TODAY)}</td><td>1</td>" in body
    assert "<td>fail 1</td>" in body and "<td>pass 1</td>" in body

    # Filters: by domain, by dates; a bad date or order is a 400 that names the field.
    by_domain = admin.get(f"/admin/reports?domain={OTHER}").body
    assert [name for _, name in report_links(by_domain)] == ["mail.ru"]
    assert f'<option value="{OTHER}" selected>' in by_domain
    day = iso(TODAY - 2 * DAY)
    by_date = admin.get(f"/admin/reports?from={day}&to={day}").body
    assert [name for _, name in report_links(by_date)] == ["google.com"]
    later = admin.get(f"/admin/reports?domain={DOMAIN}&from={iso(TODAY - DAY)}").body
    assert [i for i, _ in report_links(later)] == [hostile]
    bad = admin.get("/admin/reports?from=yesterday")
    assert bad.status == 400 and "from: a date as YYYY-MM-DD" in bad.body
    # The field is marked invalid, tied to the error; the rest of the page is still there.
    tied = ' aria-invalid="true" aria-describedby="form-error"'
    assert f'<input id="reports-from" name="from" type="date" value=""{tied}>' in bad.body
    assert bad.body.count("aria-invalid") == 1
    assert "2 reports, 21 messages" in bad.body and "<td>pass 1</td>" in bad.body
    backwards = admin.get(f"/admin/reports?from={iso(TODAY)}&to={day}")
    assert backwards.status == 400 and report_links(backwards.body) == []

    # One report: its rows with the aligned and the raw results.
    detail = admin.get(f"/admin/reports/{google}")
    assert detail.status == 200
    assert "<h1>DMARC report from google.com</h1>" in detail.body
    assert "<td>203.0.113.9</td><td>2</td><td>reject</td>\n      <td>fail</td>" in detail.body
    assert "example.test (s1): pass" in detail.body and "example.test: fail" in detail.body
    hostile_page = admin.get(f"/admin/reports/{hostile}").body
    assert "<script>" not in hostile_page and shown in hostile_page
    for missing in (
        f"/admin/reports/{hostile + 1000}",
        "/admin/reports/x1",
        "/admin/reports/%C2%B2",  # a digit to str.isdigit, not to int()
        "/admin/reports/" + "9" * 30,
    ):
        gone = admin.get(missing)
        assert gone.status == 404 and "No such report." in gone.body, missing

    # The API: the listing without rows, one report as `dmarc reports --json` prints it.
    listed = admin.api("GET", "/api/v1/dmarc/reports")
    assert listed.status == 200 and "link" not in listed.headers
    summaries = listed.json()
    assert isinstance(summaries, list)
    assert [r["id"] for r in summaries] == [hostile, google, mailru]
    assert summaries[1] == {k: v for k, v in stored["google.com"].items() if k != "rows"}
    assert (summaries[1]["passed"], summaries[1]["failed"]) == (13, 2)
    only = admin.api("GET", f"/api/v1/dmarc/reports?domain={OTHER.upper()}").json()
    assert [r["reporter"] for r in only] == ["mail.ru"]  # type: ignore[index, union-attr]
    one = admin.api("GET", f"/api/v1/dmarc/reports/{google}")
    assert one.status == 200 and one.json() == stored["google.com"]
    for missing in (str(hostile + 1000), "%C2%B2", "0x1"):
        gone = admin.api("GET", f"/api/v1/dmarc/reports/{missing}")
        assert (gone.status, gone.json()) == (404, {"error": "no such report"}), missing
    assert admin.api("GET", "/api/v1/dmarc/reports?to=2026-13-01").status == 400

    # A plain user sees none of it; no credentials: 401.
    bob = WebClient(server)
    bob.login(BOB, server.passwords[BOB])
    for path in ("/admin/reports", f"/admin/reports/{google}"):
        refused = bob.get(path)
        assert refused.status == 403 and "google.com" not in refused.body
    assert bob.api("GET", "/api/v1/dmarc/reports").status == 403
    assert bob.api("GET", f"/api/v1/dmarc/reports/{google}").status == 403
    assert WebClient(server).api("GET", "/api/v1/dmarc/reports").status == 401


def iso(moment: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(moment))


def test_reports_come_in_pages_of_fifty(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(services=("smtp", "http", "https"), start=False)
    server.run_cli("user", "admin", ALICE)
    server.start()
    # 51 reports of consecutive days over one SMTP session (no checks: no DNS needed).
    with smtplib.SMTP(server.host, server.smtp_port, timeout=30) as client:
        for back in range(51):
            mail = report_mail(
                f"r{back}.example", DOMAIN, TODAY - back * DAY, row("192.0.2.1", 1, "pass", "pass")
            )
            client.sendmail("reports@pass.test", [f"dmarc-reports@{DOMAIN}"], mail)
    admin = WebClient(server)
    admin.login(ALICE, server.passwords[ALICE])
    first = admin.get("/admin/reports").body
    names = [name for _, name in report_links(first)]
    assert names == [f"r{back}.example" for back in range(50)]
    assert '<a href="/admin/reports?page=2">Older reports</a>' in first
    assert "Newer reports" not in first
    second = admin.get("/admin/reports?page=2").body
    assert [name for _, name in report_links(second)] == ["r50.example"]
    assert '<a href="/admin/reports?">Newer reports</a>' in second
    assert "Older reports" not in second
    assert admin.get("/admin/reports?page=0").status == 400
    # The API says where the next page is (RFC 8288), and the last page has no next.
    api = admin.api("GET", f"/api/v1/dmarc/reports?domain={DOMAIN}")
    assert len(api.json()) == 50  # type: ignore[arg-type]
    following = f'</api/v1/dmarc/reports?domain={DOMAIN}&page=2>; rel="next"'
    assert api.headers["link"] == following
    last = admin.api("GET", f"/api/v1/dmarc/reports?domain={DOMAIN}&page=2")
    assert len(last.json()) == 1 and "link" not in last.headers  # type: ignore[arg-type]


def test_a_big_report_lists_its_first_thousand_rows(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(services=("smtp", "http", "https"), start=False)
    server.run_cli("user", "admin", ALICE)
    server.start()
    rows = "".join(row(f"10.0.{n // 250}.{n % 250}", 1, "fail", "fail") for n in range(1200))
    mail = report_mail("big.example", DOMAIN, TODAY - DAY, rows)
    with smtplib.SMTP(server.host, server.smtp_port, timeout=30) as client:
        client.sendmail("reports@pass.test", [f"dmarc-reports@{DOMAIN}"], mail)
    [kept] = cli_reports(server)
    admin = WebClient(server)
    admin.login(ALICE, server.passwords[ALICE])
    page = admin.get(f"/admin/reports/{kept['id']}").body
    assert page.count("<tr><td>10.0.") == 1000
    assert "<tr><td>10.0.3.249</td>" in page and "<tr><td>10.0.4.0</td>" not in page
    assert "(the first 1000; 200 more in" in page
    assert f'<a href="/api/v1/dmarc/reports/{kept["id"]}">' in page
    whole = admin.api("GET", f"/api/v1/dmarc/reports/{kept['id']}").json()
    assert len(whole["rows"]) == 1200  # type: ignore[index]
