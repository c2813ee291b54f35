"""The web admin's DNS check of a domain, against a real authoritative DNS server (nsd) and a
real `postroom serve`, over real HTTPS (http.client).

The zone holds the records `postroom dns records` prints, some changed: the MX with another
preference and the SPF in other case and spacing (both still ok: compared by meaning), the
DMARC policy weakened, one DKIM key replaced by another key, the TLS-RPT record and one SRV
record left out, the autoconfig name pointed elsewhere, the host name on a loopback address.
The page and the JSON API give each record's status; a record fixed in the zone shows after
"Check again" (a CSRF-checked POST), not on a mere reload; a plain user is refused both.
"""

from __future__ import annotations

import html
import re
import signal
import time
from dataclasses import dataclass

import dns.message
import dns.query
import pytest

from postroom.mailauth.keys import generate

from . import dns_server as dns_server_module
from .conftest import ALICE, BOB, DOMAIN, HOSTNAME, Factory, Postroom
from .dns_server import DnsServer, DnsServerFactory
from .web_client import WebClient

dns_server = dns_server_module.dns_server

SERVICES = ("smtp", "submission", "submissions", "imap", "imaps", "http", "https")
FOREIGN = {"Origin": "https://evil.example.net"}


def soa() -> str:
    return (
        "$TTL 300\n"
        f"{DOMAIN}. IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 120\n"
        f"{DOMAIN}. IN NS ns.{DOMAIN}.\n"
        f"ns.{DOMAIN}. IN A 127.0.0.1\n"
        f"{HOSTNAME}. IN A 127.0.0.1\n"
    )


def edited_zone(printed: str) -> tuple[str, str, str]:
    """The zone of the printed records with the changes above; the DKIM names (the one kept,
    the one replaced)."""
    lines = printed.splitlines()
    dkim = [line.split()[0].rstrip(".") for line in lines if "._domainkey." in line.split(" ")[0]]
    assert len(dkim) == 2, printed
    kept, replaced = dkim
    other = generate("ed25519").public
    out = []
    for line in lines:
        name = line.split(" ")[0].rstrip(".")
        if line.startswith(";") or not line.strip():
            continue
        if " IN MX " in line:
            line = f"{DOMAIN}. 3600 IN MX 50 {HOSTNAME}."
        elif name == DOMAIN and "v=spf1" in line:
            line = f'{DOMAIN}. 3600 IN TXT "v=spf1 +MX" "  -all"'
        elif name == f"_dmarc.{DOMAIN}":
            line = line.replace("p=reject", "p=none")
        elif name == replaced:
            line = f'{replaced}. 3600 IN TXT "v=DKIM1; k=ed25519; p={other}"'
        elif name in (f"_smtp._tls.{DOMAIN}", f"_imap._tcp.{DOMAIN}"):
            continue
        elif name == f"autoconfig.{DOMAIN}":
            line = f"autoconfig.{DOMAIN}. 3600 IN CNAME web.example.net."
        out.append(line)
    return soa() + "\n".join(out) + "\n", kept, replaced


@dataclass
class Checked:
    server: Postroom
    nsd: DnsServer
    zone: str
    kept: str  # the DKIM record name left as printed
    replaced: str  # the one holding another key


@pytest.fixture
def checked(postroom_factory: Factory, dns_server: DnsServerFactory) -> Checked:
    server = postroom_factory(services=SERVICES, start=False)
    server.run_cli("user", "admin", ALICE)
    printed = server.run_cli("dns", "records", DOMAIN).stdout
    zone, kept, replaced = edited_zone(printed)
    nsd = dns_server({DOMAIN: zone})
    server.extra = f'[dns]\nnameservers = ["{nsd.nameserver}"]\n'
    server.write_config()
    server.start()
    return Checked(server, nsd, zone, kept, replaced)


def republish(nsd: DnsServer, zone: str, name: str, text: str) -> None:
    """Serve `zone` (its serial raised) and have nsd read it again (SIGHUP: it reloads zone
    files whose mtime changed); back once nsd gives `text` for the TXT at `name`."""
    path = nsd.directory / "zones" / f"{DOMAIN}.zone"
    path.write_text(zone.replace(" 1 3600 600 86400 120", " 2 3600 600 86400 120"))
    nsd.proc.send_signal(signal.SIGHUP)
    query = dns.message.make_query(name, "TXT")
    deadline = time.monotonic() + 15
    while True:
        answer = dns.query.udp(query, nsd.host, port=nsd.port, timeout=1)
        texts = [b"".join(r.strings).decode() for rrset in answer.answer for r in rrset]
        if texts == [text]:
            return
        assert time.monotonic() < deadline, f"nsd still answers {texts}\n{nsd.log()}"
        time.sleep(0.05)


ROW = re.compile(
    r'<tr id="record-\d+" data-status="([a-z-]+)">\s*<th scope="row" class="record">([^<]+)</th>'
    r"\s*<td>([^<]+)</td>"
)


def page_rows(body: str) -> dict[tuple[str, str], str]:
    rows: dict[tuple[str, str], str] = {}
    for status, name, rtype in ROW.findall(body):
        rows[(html.unescape(name), html.unescape(rtype))] = status
    return rows


def test_the_page_and_the_api_give_each_records_status(checked: Checked) -> None:
    server, kept, replaced = checked.server, checked.kept, checked.replaced
    client = WebClient(server)
    client.login(ALICE, server.passwords[ALICE])
    listing = client.get("/admin/domains")
    assert f'href="/admin/domains/{DOMAIN}"' in listing.body
    page = client.get(f"/admin/domains/{DOMAIN}")
    assert page.status == 200, page.body[:2000]
    rows = page_rows(page.body)
    expected = {
        (DOMAIN, "MX"): "ok",  # preference 50, not 10
        (DOMAIN, "TXT"): "ok",  # "v=spf1 +MX" "  -all"
        (HOSTNAME, "TXT"): "ok",
        (kept, "TXT"): "ok",
        (replaced, "TXT"): "mismatch",
        (f"_dmarc.{DOMAIN}", "TXT"): "mismatch",
        (f"_smtp._tls.{DOMAIN}", "TXT"): "missing",
        (f"_mta-sts.{DOMAIN}", "TXT"): "ok",
        (f"_imaps._tcp.{DOMAIN}", "SRV"): "ok",
        (f"_imap._tcp.{DOMAIN}", "SRV"): "missing",
        (f"_pop3._tcp.{DOMAIN}", "SRV"): "ok",  # "0 0 0 .": not offered, as published
        (f"mta-sts.{DOMAIN}", "CNAME"): "ok",
        (f"autoconfig.{DOMAIN}", "CNAME"): "mismatch",
        (HOSTNAME, "A/AAAA"): "mismatch",  # 127.0.0.1 is no public address
    }
    assert {key: rows.get(key) for key in expected} == expected, rows
    # Every status is written out, not shown by colour only; the fix names the line.
    assert 'class="status-bad">missing<br>' in page.body
    assert 'class="status-ok">ok<br>' in page.body
    assert html.escape(f"publish _smtp._tls.{DOMAIN}. 3600 IN TXT") in page.body
    assert "p=none; expected p=reject" in page.body
    assert "active ed25519 key: the published key is the stored one" in page.body

    api = client.api("GET", f"/api/v1/domains/{DOMAIN}/dns")
    assert api.status == 200, api.body
    found = api.json()
    assert isinstance(found, dict) and found["domain"] == DOMAIN and found["ok"] is False
    by_name = {(r["name"], r["type"]): r for r in found["records"]}
    assert {key: by_name[key]["status"] for key in expected} == expected
    dmarc = by_name[(f"_dmarc.{DOMAIN}", "TXT")]
    assert dmarc["published"] == [f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{DOMAIN}"]
    assert dmarc["fix"].startswith(f"replace the TXT record at _dmarc.{DOMAIN} with ")
    mx = by_name[(DOMAIN, "MX")]
    assert (mx["expected"], mx["published"]) == (f"10 {HOSTNAME}", [f"50 {HOSTNAME}"])
    # Kept a minute: the page and the API showed the same check.
    assert found == client.api("GET", f"/api/v1/domains/{DOMAIN}/dns").json()

    # A bearer token works too; an unknown domain is 404.
    token = server.run_cli("user", "token", ALICE).stdout.strip()
    bearer = WebClient(server).api(
        "GET", f"/api/v1/domains/{DOMAIN}/dns", Authorization=f"Bearer {token}"
    )
    assert bearer.status == 200 and bearer.json() == found
    assert client.api("GET", "/api/v1/domains/other.example/dns").status == 404
    assert client.get("/admin/domains/other.example").status == 404


def test_a_fixed_record_shows_when_checked_again(checked: Checked) -> None:
    server = checked.server
    client = WebClient(server)
    client.login(ALICE, server.passwords[ALICE])
    dmarc = (f"_dmarc.{DOMAIN}", "TXT")
    page = client.get(f"/admin/domains/{DOMAIN}")
    assert page_rows(page.body)[dmarc] == "mismatch"
    fixed = f"v=DMARC1; p=reject; rua=mailto:dmarc-reports@{DOMAIN}"
    republish(checked.nsd, checked.zone.replace("p=none", "p=reject"), dmarc[0], fixed)
    # Reloading shows the kept check; DNS is not asked again within the minute.
    assert page_rows(client.get(f"/admin/domains/{DOMAIN}").body)[dmarc] == "mismatch"
    path = f"/admin/domains/{DOMAIN}/check"
    token = page.csrf()
    assert client.post(path, {}).status == 403
    assert client.post(path, {"csrf": "forged"}).status == 403
    assert client.post(path, {"csrf": token}, FOREIGN).status == 403
    assert page_rows(client.get(f"/admin/domains/{DOMAIN}").body)[dmarc] == "mismatch"
    again = client.post(path, {"csrf": token}, {"Origin": client.origin})
    assert (again.status, again.location) == (303, f"/admin/domains/{DOMAIN}")
    rows = page_rows(client.get(again.location).body)
    assert rows[dmarc] == "ok"
    assert rows[(f"_smtp._tls.{DOMAIN}", "TXT")] == "missing"  # still
    api = client.api("GET", f"/api/v1/domains/{DOMAIN}/dns").json()
    assert isinstance(api, dict)
    assert [r["status"] for r in api["records"] if r["name"] == dmarc[0]] == ["ok"]


def test_a_plain_user_is_refused(checked: Checked) -> None:
    server = checked.server
    client = WebClient(server)
    client.login(BOB, server.passwords[BOB])
    page = client.get(f"/admin/domains/{DOMAIN}")
    assert page.status == 403 and "Admins only." in page.body
    assert client.api("GET", f"/api/v1/domains/{DOMAIN}/dns").status == 403
    token = client.get("/account/").csrf()
    refused = client.post(f"/admin/domains/{DOMAIN}/check", {"csrf": token})
    assert refused.status == 403
    assert WebClient(server).api("GET", f"/api/v1/domains/{DOMAIN}/dns").status == 401
