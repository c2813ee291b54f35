"""Checks of mail arriving on port 25 (issue 13 §3), over real sockets, against a real DNS server
(nsd) holding the senders' SPF, DKIM and DMARC records: signed mail passes and is marked so,
DMARC p=reject failures are refused with 550 5.7.26 and nothing is stored, p=quarantine goes to
Junk, SPF fail without DMARC goes to Junk, our own domain cannot be forged from outside, a DNS
failure answers 451, and an Authentication-Results header claiming our host name is removed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP

import dkim
import pytest

from postroom.mailauth.dmarc import DmarcRecord
from postroom.mailauth.dmarc_reports import EvaluationRow, build_report
from postroom.mailauth.keys import generate, record_text, txt_parts
from postroom.storage.backend import direct_store

from . import dns_server as dns_server_module
from .conftest import ALICE, DOMAIN, HOSTNAME, Postroom
from .dns_server import DnsServerFactory
from .wire import new_token, open_session, send_message

dns_server = dns_server_module.dns_server

SOA = """$TTL 300
@       IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 120
@       IN NS  ns.{origin}.
ns      IN A   127.0.0.1
"""
RSA = generate("rsa")
SELECTOR = "sel"


def zone(origin: str, records: str) -> str:
    return SOA.format(origin=origin) + records


def dkim_record() -> str:
    parts = " ".join(f'"{part}"' for part in txt_parts(record_text("rsa", RSA.public)))
    return f"{SELECTOR}._domainkey IN TXT {parts}\n"


ZONES = {
    # Mail from 127.0.0.1 passes SPF; the domain signs and asks for rejection of failures.
    "pass.test": zone(
        "pass.test",
        '@ IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'
        '_dmarc IN TXT "v=DMARC1; p=reject"\n' + dkim_record(),
    ),
    # Nothing from here is authorised, and failures are to be rejected.
    "reject.test": zone(
        "reject.test", '@ IN TXT "v=spf1 ip4:192.0.2.1 -all"\n_dmarc IN TXT "v=DMARC1; p=reject"\n'
    ),
    "quarantine.test": zone(
        "quarantine.test",
        '@ IN TXT "v=spf1 ip4:192.0.2.1 -all"\n_dmarc IN TXT "v=DMARC1; p=quarantine"\n',
    ),
    "nodmarc.test": zone("nodmarc.test", '@ IN TXT "v=spf1 ip4:192.0.2.1 -all"\n'),
    # Our own domain, as DNS knows it: no records that would let anyone pass.
    DOMAIN: zone(DOMAIN, ""),
    # The parent of them all, so that the DMARC tree walk's question for _dmarc.test has an
    # answer (no such name), as the real root servers give for a TLD.
    "test": zone("test", ""),
}


@pytest.fixture
def checked(
    dns_server: DnsServerFactory, postroom_factory: Callable[..., Postroom]
) -> Iterator[Postroom]:
    nsd = dns_server(ZONES)
    yield postroom_factory(
        services=("smtp",),
        extra=f'[dns]\nnameservers = ["{nsd.nameserver}"]\n\n[verify]\nenabled = true\n',
    )


def message(sender: str, token: str, extra_headers: bytes = b"") -> bytes:
    return (
        extra_headers
        + (
            f"From: <{sender}>\r\nTo: <{ALICE}>\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@checks.test>\r\nDate: Mon, 07 Dec 2026 00:00:00 +0000\r\n"
            f"\r\nBody of {token}.\r\n"
        ).encode()
    )


def signed(content: bytes) -> bytes:
    signature = dkim.sign(
        content, SELECTOR.encode(), b"pass.test", RSA.private, include_headers=[b"from", b"to"]
    )
    return signature + content


def send(server: Postroom, sender: str, content: bytes) -> tuple[int, str]:
    with open_session(server.smtp_port) as wire:
        reply = send_message(wire, sender, [ALICE], content)
    return reply.code, f"{reply.enhanced} {reply.text}"


def header_block(stored: bytes) -> bytes:
    """The header section of an exported message (mbox: LF line ends), unfolded, without the
    Return-Path that delivery puts on top."""
    head = stored.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    lines = head.replace(b"\n\t", b" ").replace(b"\n ", b" ").split(b"\n")
    return b"\n".join(line for line in lines if not line.startswith(b"Return-Path:"))


def test_signed_mail_passes_and_says_so_at_the_top(checked: Postroom) -> None:
    token = new_token()
    code, _ = send(checked, "bob@pass.test", signed(message("bob@pass.test", token)))
    assert code == 250
    [stored] = checked.export(ALICE)
    head = header_block(stored)
    assert head.startswith(f"Authentication-Results: {HOSTNAME};".encode()), head[:300]
    results = head.split(b"\n", 1)[0]
    for needle in (
        b"spf=pass smtp.mailfrom=bob@pass.test",
        b"dkim=pass",
        b"header.d=pass.test",
        b"dmarc=pass header.from=pass.test",
        b"arc=none",
    ):
        assert needle in results, results
    assert "spf=pass dkim=pass dmarc=pass" in checked.wait_for_log(r"queued id=.*").group(0)


def test_dmarc_reject_is_refused_and_nothing_is_stored(checked: Postroom) -> None:
    code, text = send(checked, "eve@reject.test", message("eve@reject.test", new_token()))
    assert (code, text.split()[0]) == (550, "5.7.26"), text
    assert checked.mailbox_status(ALICE)["messages"] == 0
    assert checked.queue_list() == ""


def test_a_signature_broken_on_the_way_fails_dmarc(checked: Postroom) -> None:
    content = signed(message("bob@pass.test", new_token())).replace(b"Body of", b"Body 0f")
    code, text = send(checked, "bob@reject.test", content)
    assert code == 550, text


def test_quarantine_goes_to_junk(checked: Postroom) -> None:
    token = new_token()
    code, _ = send(checked, "eve@quarantine.test", message("eve@quarantine.test", token))
    assert code == 250
    assert checked.mailbox_status(ALICE)["messages"] == 0
    [stored] = checked.export_mailbox(ALICE, "Junk")
    assert token.encode() in stored and b"dmarc=fail" in header_block(stored)


def test_spf_fail_without_dmarc_goes_to_junk(checked: Postroom) -> None:
    code, _ = send(checked, "eve@nodmarc.test", message("eve@nodmarc.test", new_token()))
    assert code == 250
    assert len(checked.export_mailbox(ALICE, "Junk")) == 1
    assert checked.mailbox_status(ALICE)["messages"] == 0


def test_our_own_domain_cannot_be_forged_from_outside(checked: Postroom) -> None:
    code, text = send(checked, "x@reject.test", message(f"boss@{DOMAIN}", new_token()))
    assert (code, text.split()[0]) == (550, "5.7.26"), text


def test_a_dns_failure_defers(checked: Postroom) -> None:
    # nsd refuses questions for zones it does not serve: a server failure for the resolver.
    code, text = send(checked, "x@unserved.example", message("x@unserved.example", new_token()))
    assert code == 451 and text.startswith("4.7."), text


def test_a_forged_verdict_of_ours_is_removed(checked: Postroom) -> None:
    forged = f"Authentication-Results: {HOSTNAME}; dkim=pass header.d=bank.test\r\n".encode()
    token = new_token()
    content = signed(message("bob@pass.test", token, forged))
    code, _ = send(checked, "bob@pass.test", content)
    assert code == 250
    [stored] = checked.export(ALICE)
    assert b"bank.test" not in stored
    assert header_block(stored).count(b"Authentication-Results:") == 1


# --- DMARC aggregate reports: received at the rua address, and what we count for ours ---------


def report_mail(token: str) -> bytes:
    """An aggregate report about our domain from pass.test, as a gzip attachment."""
    attachment = build_report(
        org_name="pass.test",
        email="reports@pass.test",
        report_id=token,
        begin=1_796_083_200,
        end=1_796_169_599,
        domain=DOMAIN,
        record=DmarcRecord(p="reject"),
        rows=[EvaluationRow("192.0.2.7", DOMAIN, "reject", False, False, count=3)],
    )
    report = EmailMessage()
    report["From"] = "reports@pass.test"
    report["To"] = f"dmarc-reports@{DOMAIN}"
    report["Subject"] = f"Report Domain: {DOMAIN} Submitter: pass.test Report-ID: {token}"
    report["Message-ID"] = f"<{token}@pass.test>"
    report["Date"] = "Mon, 07 Dec 2026 00:00:00 +0000"
    report.set_content("A DMARC aggregate report.")
    report.add_attachment(
        attachment, maintype="application", subtype="gzip", filename=f"{token}.xml.gz"
    )
    return report.as_bytes(policy=SMTP)


def test_a_report_sent_to_the_rua_address_is_kept_not_delivered(checked: Postroom) -> None:
    token = new_token("report")
    content = signed(report_mail(token))
    with open_session(checked.smtp_port) as wire:
        reply = send_message(wire, "reports@pass.test", [f"dmarc-reports@{DOMAIN}"], content)
    assert reply.code == 250, reply
    listed = json.loads(checked.run_cli("dmarc", "reports", "--json").stdout)
    assert [(r["reporter"], r["report_id"]) for r in listed] == [("pass.test", token)]
    assert checked.mailbox_status(ALICE)["messages"] == 0


def test_an_unreadable_report_with_no_postmaster_is_refused(checked: Postroom) -> None:
    content = signed(message("reports@pass.test", new_token()))  # no report in it
    with open_session(checked.smtp_port) as wire:
        reply = send_message(wire, "reports@pass.test", [f"dmarc-reports@{DOMAIN}"], content)
    assert (reply.code, reply.enhanced) == (550, "5.6.0"), reply


def test_checked_mail_is_counted_for_the_senders_aggregate_report(checked: Postroom) -> None:
    assert send(checked, "bob@pass.test", signed(message("bob@pass.test", new_token())))[0] == 250
    assert send(checked, "eve@reject.test", message("eve@reject.test", new_token()))[0] == 550
    checked.stop()
    store = direct_store(checked.data_dir)
    try:
        with store.transaction() as tx:
            counted = {
                domain: tx.dmarc.evaluations(domain, 0, 4e9)
                for domain in ("pass.test", "reject.test")
            }
    finally:
        store.close()
    [passed] = counted["pass.test"]
    assert (passed.result, passed.disposition, passed.source_ip) == ("pass", "pass", "127.0.0.1")
    [refused] = counted["reject.test"]
    assert (refused.result, refused.disposition) == ("fail", "reject")


def test_tls_reports_go_to_the_postmaster_when_there_is_one(checked: Postroom) -> None:
    report = message("reports@pass.test", new_token("tlsrpt"))
    with open_session(checked.smtp_port) as wire:
        wire.cmd("MAIL FROM:<reports@pass.test>", 250)
        refused = wire.cmd(f"RCPT TO:<tls-reports@{DOMAIN}>")
    assert (refused.code, refused.enhanced) == (550, "5.1.1"), refused  # no postmaster yet
    checked.run_cli("alias", "add", f"postmaster@{DOMAIN}", ALICE)
    with open_session(checked.smtp_port) as wire:
        reply = send_message(wire, "reports@pass.test", [f"tls-reports@{DOMAIN}"], signed(report))
    assert reply.code == 250, reply
    [stored] = checked.export(ALICE)
    assert b"tlsrpt-" in stored
