"""`postroom dmarc reports` through the real binary, on reports collected into a real store the
way the server collects them (mail in, `services.dmarc_reporting.collect`)."""

from __future__ import annotations

import gzip
import json
import subprocess
from email import policy
from email.message import EmailMessage
from pathlib import Path

from postroom.services.dmarc_reporting import collect
from postroom.storage.backend import direct_store

from .conftest import postroom_executable

DAY = 86400
MONDAY = 1_714_953_600  # 2024-05-06T00:00:00Z


def feedback(reporter: str, report_id: str, domain: str, begin: int, rows: str) -> bytes:
    return f"""<?xml version="1.0"?>
<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">
  <report_metadata>
    <org_name>{reporter}</org_name><email>dmarc@{reporter}</email>
    <report_id>{report_id}</report_id>
    <date_range><begin>{begin}</begin><end>{begin + DAY - 1}</end></date_range>
  </report_metadata>
  <policy_published><domain>{domain}</domain><p>reject</p><np>reject</np></policy_published>
  {rows}
</feedback>""".encode()


def row(ip: str, count: int, dkim: str, spf: str, disposition: str = "none") -> str:
    return f"""<record>
    <row><source_ip>{ip}</source_ip><count>{count}</count>
      <policy_evaluated><disposition>{disposition}</disposition><dkim>{dkim}</dkim>
      <spf>{spf}</spf></policy_evaluated></row>
    <identifiers><header_from>example.test</header_from></identifiers>
    <auth_results>
      <dkim><domain>example.test</domain><selector>s1</selector><result>{dkim}</result></dkim>
      <spf><domain>example.test</domain><scope>mfrom</scope><result>{spf}</result></spf>
    </auth_results>
  </record>"""


def mail(report: bytes, message_id: str) -> bytes:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = "dmarc@reporter.example"
    message["To"] = "dmarc-reports@example.test"
    message["Subject"] = "Report Domain: example.test"
    message["Message-ID"] = message_id
    message.set_content("report attached\n")
    message.add_attachment(
        gzip.compress(report), maintype="application", subtype="gzip", filename="r.xml.gz"
    )
    return message.as_bytes()


def configured(tmp_path: Path) -> Path:
    config = tmp_path / "postroom.toml"
    config.write_text(
        'hostname = "mx.example.test"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        'domains = ["example.test", "example.net"]\n',
        encoding="utf-8",
    )
    store = direct_store(tmp_path / "data")
    try:
        with store.transaction() as tx:
            rows = (
                row("192.0.2.25", 12, "pass", "pass")
                + row("203.0.113.9", 2, "fail", "fail", "reject")
                + row("203.0.113.9", 1, "fail", "pass")
            )
            google = feedback("google.com", "1314152339", "example.test", MONDAY + DAY, rows)
            assert collect(tx, mail(google, "<g@google.com>"), MONDAY + 2 * DAY)
            yahoo = feedback(
                "Yahoo Inc.",
                "1714953600.4242",
                "example.test",
                MONDAY,
                row("2001:db8::1", 4, "pass", "fail"),
            )
            assert collect(tx, mail(yahoo, "<y@yahoo.com>"), MONDAY + DAY)
            other = feedback(
                "mail.ru", "77", "example.net", MONDAY, row("192.0.2.99", 1, "pass", "pass")
            )
            assert collect(tx, mail(other, "<m@mail.ru>"), MONDAY + DAY)
    finally:
        store.close()
    return config


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [postroom_executable(), "--config", str(config), "dmarc", "reports", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result


def test_reports_table_by_period_with_sources(tmp_path: Path) -> None:
    config = configured(tmp_path)
    lines = run(config, "example.test").stdout.splitlines()
    assert lines[0].split() == ["REPORTER", "REPORT", "ID", "PERIOD", "DOMAIN", "MESSAGES"]
    # Monday's report (Yahoo) before Tuesday's (Google); blanks in a name do not split columns.
    assert lines[1].split() == [
        "Yahoo_Inc.",
        "1714953600.4242",
        "2024-05-06/2024-05-06",
        "example.test",
        "4",
    ]
    assert lines[2].split() == ["SOURCE", "IP", "MESSAGES", "DMARC", "SPF", "DKIM", "DISPOSITION"]
    assert lines[3].split() == ["2001:db8::1", "4", "pass=4", "fail=4", "pass=4", "none=4"]
    assert lines[4].split() == [
        "google.com",
        "1314152339",
        "2024-05-07/2024-05-07",
        "example.test",
        "15",
    ]
    assert lines[6].split() == ["192.0.2.25", "12", "pass=12", "pass=12", "pass=12", "none=12"]
    # Two rows of one source add up, counted by each result.
    assert lines[7].split() == [
        "203.0.113.9",
        "3",
        "fail=2,pass=1",
        "fail=2,pass=1",
        "fail=3",
        "reject=2,none=1",
    ]
    assert len(lines) == 8
    assert "example.net" not in "\n".join(lines)


def test_all_reports_and_none(tmp_path: Path) -> None:
    config = configured(tmp_path)
    everything = run(config).stdout
    assert "mail.ru" in everything and "google.com" in everything
    assert run(config, "Nothing.Example.").stdout == "no DMARC reports about nothing.example\n"


def test_reports_as_json(tmp_path: Path) -> None:
    config = configured(tmp_path)
    reports = json.loads(run(config, "example.net", "--json").stdout)
    assert len(reports) == 1
    [report] = reports
    assert report["reporter"] == "mail.ru"
    assert (report["begin"], report["end"]) == (MONDAY, MONDAY + DAY - 1)
    assert report["policy"] == "p=reject; np=reject"
    assert report["schema"] == "dmarcbis"
    assert report["message_id"] == "<m@mail.ru>"
    assert (report["messages"], report["passed"], report["failed"]) == (1, 1, 0)
    assert isinstance(report["id"], int) and report["id"] > 0
    assert report["rows"] == [
        {
            "source_ip": "192.0.2.99",
            "count": 1,
            "disposition": "none",
            "dmarc": "pass",
            "dkim": "pass",
            "spf": "pass",
            "header_from": "example.test",
            "envelope_from": None,
            "dkim_results": [{"domain": "example.test", "selector": "s1", "result": "pass"}],
            "spf_results": [{"domain": "example.test", "result": "pass"}],
        }
    ]
    assert json.loads(run(config, "nothing.example", "--json").stdout) == []
