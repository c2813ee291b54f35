"""The client autoconfiguration documents and the MTA-STS policy (services/autoconfig.py,
services/mta_sts_policy.py, net/tls_trust.py): each read back by an independent reader (the
MTA-STS parser `postroom doctor` uses, xml.etree, plistlib, dnspython's zone parser), hostile
Autodiscover requests refused before anything is expanded, and the served-certificate check
against a real handshake."""

from __future__ import annotations

import asyncio
import plistlib
import ssl
import xml.etree.ElementTree as ET
from pathlib import Path

import dns.zone
import pytest
import trustme

from postroom.mailauth import mta_sts
from postroom.net import tls
from postroom.net.tls_trust import certificate_problem, client_context, served_policy
from postroom.services import autoconfig
from postroom.services.dns_records import zone_lines
from postroom.services.mta_sts_policy import (
    ENFORCE_MAX_AGE,
    TESTING_MAX_AGE,
    policy_for,
)
from postroom.web.autoconfig import POLICY_CHECKED_FOR, PolicyCache

HOST = "mx.example.test"
DOMAIN = "example.test"
ALL_PORTS = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "imap": 143,
    "imaps": 993,
    "pop3": 110,
    "pop3s": 995,
    "http": 80,
    "https": 443,
}
REQUEST = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    f'<Autodiscover xmlns="{autoconfig.REQUEST_SCHEMA}"><Request>'
    "<EMailAddress>{address}</EMailAddress>"
    f"<AcceptableResponseSchema>{autoconfig.RESPONSE_SCHEMA}</AcceptableResponseSchema>"
    "</Request></Autodiscover>"
)


@pytest.mark.parametrize("valid", [True, False])
def test_the_policy_reads_back_through_the_doctors_parser(valid: bool) -> None:
    policy = policy_for("MX.Example.Test.", valid)
    assert policy.text.startswith(b"version: STSv1\r\n")
    assert policy.text.endswith(b"\r\n") and b"\n" not in policy.text.replace(b"\r\n", b"")
    parsed = mta_sts.parse_policy(policy.text)
    assert parsed.mode == ("enforce" if valid else "testing") == policy.mode
    assert parsed.max_age == (ENFORCE_MAX_AGE if valid else TESTING_MAX_AGE)
    assert parsed.mx == (HOST,) and mta_sts.mx_matches(HOST, parsed.mx)
    assert mta_sts.parse_record(policy.record).id == policy.id


def test_the_id_changes_with_the_policy_text() -> None:
    ids = {
        policy_for(HOST, True).id,
        policy_for(HOST, False).id,
        policy_for("b." + DOMAIN, True).id,
    }
    assert len(ids) == 3
    assert policy_for(HOST, True).id == policy_for(HOST, True).id  # stable: no state


def test_dns_records_announce_the_served_policy_and_the_web_names() -> None:
    policy = policy_for(HOST, False)
    lines = zone_lines(DOMAIN, HOST, ALL_PORTS, [], mta_sts=policy)
    soa = (
        f"$TTL 300\n{DOMAIN}. IN SOA ns.{DOMAIN}. h.{DOMAIN}. 1 3600 600 86400 120\n"
        f"{DOMAIN}. IN NS ns.{DOMAIN}.\n"
    )
    zone = dns.zone.from_text(soa + "\n".join(lines) + "\n", origin=DOMAIN, relativize=False)
    (txt,) = zone.get_rdataset(f"_mta-sts.{DOMAIN}.", "TXT")  # type: ignore[misc]
    record = mta_sts.parse_record(b"".join(txt.strings).decode())
    assert record.id == policy.id
    for prefix in ("mta-sts", "autoconfig", "autodiscover"):
        (cname,) = zone.get_rdataset(f"{prefix}.{DOMAIN}.", "CNAME")  # type: ignore[misc]
        assert cname.target.to_text() == HOST + "."
    (srv,) = zone.get_rdataset(f"_autodiscover._tcp.{DOMAIN}.", "SRV")  # type: ignore[misc]
    assert (srv.port, srv.target.to_text()) == (443, HOST + ".")
    assert (zone.get_rdataset(f"_imaps._tcp.{DOMAIN}.", "SRV") or [None])[0].port == 993  # type: ignore[index]


def test_without_https_no_mta_sts_record_is_printed() -> None:
    ports = {k: v for k, v in ALL_PORTS.items() if k not in ("http", "https")}
    text = "\n".join(zone_lines(DOMAIN, HOST, ports, [], mta_sts=policy_for(HOST, True)))
    assert ' IN TXT "v=STSv1' not in text and " IN CNAME " not in text
    assert "MTA-STS (RFC 8461) needs the https listener" in text


def test_thunderbird_file_names_every_listener_implicit_tls_first() -> None:
    root = ET.fromstring(autoconfig.thunderbird(HOST, [DOMAIN], ALL_PORTS))
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.findtext("domain") == DOMAIN
    servers = [
        (s.get("type"), s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"))
        for s in provider
        if s.tag in ("incomingServer", "outgoingServer")
    ]
    assert servers == [
        ("imap", HOST, "993", "SSL"),
        ("imap", HOST, "143", "STARTTLS"),
        ("pop3", HOST, "995", "SSL"),
        ("pop3", HOST, "110", "STARTTLS"),
        ("smtp", HOST, "465", "SSL"),
        ("smtp", HOST, "587", "STARTTLS"),
    ]
    for server in provider.iter("incomingServer"):
        assert server.findtext("username") == "%EMAILADDRESS%"
        assert server.findtext("authentication") == "password-cleartext"


def test_unknown_or_unbound_ports_are_not_offered() -> None:
    found = autoconfig.offers({"imaps": 0, "imap": 143, "smtp": 25})
    assert found == [autoconfig.Offer("imap", 143, "STARTTLS")]  # port 25 is no submission


def test_autodiscover_request_and_response() -> None:
    address = autoconfig.autodiscover_request(REQUEST.format(address="Alice@Example.Test").encode())
    assert address == "alice@example.test"
    response = ET.fromstring(autoconfig.autodiscover_response(HOST, address, ALL_PORTS))
    ns = {"r": autoconfig.RESPONSE_SCHEMA}
    assert response.tag == f"{{{autoconfig.OUTER_SCHEMA}}}Autodiscover"
    blocks = response.findall("r:Response/r:Account/r:Protocol", ns)
    got = [
        tuple(b.findtext(f"r:{f}", namespaces=ns) for f in ("Type", "Server", "Port", "Encryption"))
        for b in blocks
    ]
    assert got == [("IMAP", HOST, "993", "SSL"), ("SMTP", HOST, "465", "SSL")]
    assert {b.findtext("r:LoginName", namespaces=ns) for b in blocks} == {address}
    starttls = {"imap": 143, "submission": 587}
    response = ET.fromstring(autoconfig.autodiscover_response(HOST, address, starttls))
    assert [
        b.findtext("r:Encryption", namespaces=ns) for b in response.iter(f"{{{ns['r']}}}Protocol")
    ] == [
        "TLS",
        "TLS",
    ]


BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    f'<Autodiscover xmlns="{autoconfig.REQUEST_SCHEMA}"><Request>'
    "<EMailAddress>&lol3;</EMailAddress></Request></Autodiscover>"
)
EXTERNAL = (
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    f'<Autodiscover xmlns="{autoconfig.REQUEST_SCHEMA}"><Request>'
    "<EMailAddress>&x;</EMailAddress></Request></Autodiscover>"
)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<Autodiscover><Request>", "not well-formed"),
        (b"\xff\xfe<x/>", "not well-formed"),
        (BOMB.encode(), "DTDForbidden"),
        (EXTERNAL.encode(), "DTDForbidden"),
        (b"<Other/>", "root element"),
        (b"<Autodiscover><Request/></Autodiscover>", "no EMailAddress"),
        (REQUEST.format(address="not an address").encode(), "not an email address"),
        (REQUEST.replace("2006a", "2006").format(address="a@b.c").encode(), "response schema"),
        (b"<a>" + b" " * autoconfig.MAX_REQUEST + b"</a>", "larger than"),
    ],
)
def test_hostile_or_wrong_autodiscover_requests_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(autoconfig.AutoconfigError, match=why):
        autoconfig.autodiscover_request(body)


def test_mobileconfig_is_a_plist_with_one_imap_account() -> None:
    profile = plistlib.loads(autoconfig.mobileconfig(HOST, "alice@example.test", ALL_PORTS))
    assert profile["PayloadType"] == "Configuration"
    (account,) = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert account["EmailAccountType"] == "EmailTypeIMAP"
    assert account["IncomingMailServerHostName"] == account["OutgoingMailServerHostName"] == HOST
    assert (account["IncomingMailServerPortNumber"], account["OutgoingMailServerPortNumber"]) == (
        993,
        465,
    )
    assert account["IncomingMailServerUseSSL"] is account["OutgoingMailServerUseSSL"] is True
    # No password in the profile: the device asks for it when the profile is installed.
    assert "IncomingPassword" not in account and "OutgoingPassword" not in account
    again = plistlib.loads(autoconfig.mobileconfig(HOST, "alice@example.test", ALL_PORTS))
    assert again["PayloadUUID"] == profile["PayloadUUID"]  # installing again replaces it
    with pytest.raises(autoconfig.AutoconfigError):
        autoconfig.mobileconfig(HOST, "alice@example.test", {"pop3s": 995})


def _issued(tmp_path: Path, *names: str) -> tuple[ssl.SSLContext, Path]:
    ca = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(server)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server, ca_file


def test_the_served_certificate_decides_the_mode(tmp_path: Path) -> None:
    cert, key = tls.ensure_self_signed(tmp_path / "tls", HOST)
    self_signed = tls.server_context(cert, key)
    policy, why = served_policy(self_signed, HOST, DOMAIN, client_context(None))
    assert policy.mode == "testing" and why is not None and "self-signed" in why
    both, ca_file = _issued(tmp_path, HOST, f"mta-sts.{DOMAIN}")
    policy, why = served_policy(both, HOST, DOMAIN, client_context(ca_file))
    assert (policy.mode, why) == ("enforce", None)
    assert served_policy(both, HOST, DOMAIN, client_context(None))[0].mode == "testing"
    only_host, ca_file = _issued(tmp_path, HOST)
    policy, why = served_policy(only_host, HOST, DOMAIN, client_context(ca_file))
    assert policy.mode == "testing" and why is not None and f"mta-sts.{DOMAIN}" in why
    assert certificate_problem(only_host, HOST, client_context(ca_file)) is None
    missing = client_context(tmp_path / "no-such.pem")  # trusts only the system store
    assert certificate_problem(only_host, HOST, missing) is not None


def test_the_web_cache_sees_a_renewed_certificate_after_a_minute(tmp_path: Path) -> None:
    """A certificate loaded into the listeners' context (as a renewal does) turns the served
    policy to enforce within POLICY_CHECKED_FOR seconds, without a restart."""
    cert, key = tls.ensure_self_signed(tmp_path / "tls", HOST)
    context = tls.server_context(cert, key)
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    now = [1000.0]
    cache = PolicyCache(HOST, context, ca_file, clock=lambda: now[0])
    assert asyncio.run(cache.policy(DOMAIN)).mode == "testing"
    ca.issue_cert(HOST, f"mta-sts.{DOMAIN}").configure_cert(context)  # the renewal
    now[0] += POLICY_CHECKED_FOR - 1
    assert asyncio.run(cache.policy(DOMAIN)).mode == "testing"  # still the kept verdict
    now[0] += 2
    assert asyncio.run(cache.policy(DOMAIN)).mode == "enforce"
