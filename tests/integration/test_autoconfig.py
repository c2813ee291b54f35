"""What a real `postroom serve` tells senders and mail clients over HTTP(S): the MTA-STS policy
(read back by the parser `postroom doctor` uses, its id the one `dns records` prints, and
passing the doctor's own MTA-STS check fetched from the server),
Thunderbird's autoconfig file, Outlook's Autodiscover answer and an Apple .mobileconfig — each
parsed back, and every server it names used exactly as advertised (host name checked by TLS,
port, implicit TLS or STARTTLS) by imaplib, poplib and smtplib, logging in and sending. Hostile
requests: bad XML, a DTD with an entity bomb, an external entity, a foreign Host, no or wrong
credentials, credentials over plain HTTP.

The advertised host name (mx.example.test) is resolved to the test server's loopback address
by the clients below, as a hosts file would; TLS still verifies the name itself."""

from __future__ import annotations

import asyncio
import base64
import http.client
import imaplib
import plistlib
import poplib
import re
import smtplib
import socket
import ssl
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import trustme

from postroom.config import load_config
from postroom.dns.lookup import StaticLookup
from postroom.mailauth import mta_sts
from postroom.services import autoconfig
from postroom.services.doctor import Doctor, StoreFacts
from postroom.services.doctor_local import HttpsPolicyFetch
from postroom.services.mta_sts_policy import ServedPolicy

from .conftest import ALICE, BOB, DOMAIN, HOSTNAME, Factory, Postroom

ALL = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http", "https")
MAIL_SERVICE = {  # (kind, socket type) → the [listen] service that must be behind it
    ("imap", "SSL"): "imaps",
    ("imap", "STARTTLS"): "imap",
    ("pop3", "SSL"): "pop3s",
    ("pop3", "STARTTLS"): "pop3",
    ("smtp", "SSL"): "submissions",
    ("smtp", "STARTTLS"): "submission",
}
NS = {"r": autoconfig.RESPONSE_SCHEMA}


@pytest.fixture
def server(postroom_factory: Factory) -> Postroom:
    return postroom_factory(services=ALL)


# --- HTTP --------------------------------------------------------------------------------------


def request(
    server: Postroom,
    path: str,
    *,
    host: str,
    tls: bool = True,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    """One request to the server's http or https listener with `host` as Host. With `context`
    TLS verifies the certificate for `host` itself (SNI and name check); without, the
    server's own certificate is trusted for its address."""
    connection: http.client.HTTPConnection
    if tls and context is not None:
        connection = http.client.HTTPSConnection(host, server.ports["https"], context=context)
        loopback = server.host
        connection._create_connection = (  # type: ignore[attr-defined]
            lambda address, *args, **kwargs: socket.create_connection(
                (loopback, address[1]), *args, **kwargs
            )
        )
    elif tls:
        connection = http.client.HTTPSConnection(
            server.host, server.ports["https"], context=server.tls_context(), timeout=10
        )
    else:
        connection = http.client.HTTPConnection(server.host, server.ports["http"], timeout=10)
    connection.request(method, path, body=body, headers={"Host": host, **(headers or {})})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response, data


# --- mail clients that use what they were told -------------------------------------------------


def _loopback_imap(base: type[imaplib.IMAP4], address: str) -> type[imaplib.IMAP4]:
    class Client(base):  # type: ignore[valid-type,misc]
        def _create_socket(self, timeout: float | None) -> socket.socket:
            sock = socket.create_connection((address, self.port), timeout)
            if isinstance(self, imaplib.IMAP4_SSL):
                return self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            return sock

    return Client


def _loopback_pop3(base: type[poplib.POP3], address: str) -> type[poplib.POP3]:
    class Client(base):  # type: ignore[valid-type,misc]
        def _create_socket(self, timeout: float) -> socket.socket:
            sock = socket.create_connection((address, self.port), timeout)
            if isinstance(self, poplib.POP3_SSL):
                return self.context.wrap_socket(sock, server_hostname=self.host)
            return sock

    return Client


def _loopback_smtp(base: type[smtplib.SMTP], address: str) -> type[smtplib.SMTP]:
    class Client(base):  # type: ignore[valid-type,misc]
        def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
            assert host == HOSTNAME, host  # what the document said
            return super()._get_socket(address, port, timeout)  # type: ignore[no-any-return]

    return Client


def use_as_advertised(
    server: Postroom, kind: str, host: str, port: int, socket_type: str, user: str = ALICE
) -> None:
    """Log in to (and for SMTP, send through) the server named, as the document says."""
    assert host == HOSTNAME
    context = server.tls_context()  # verifies the certificate for the host name
    password = server.passwords[user]
    if kind == "imap":
        if socket_type == "SSL":
            imap = _loopback_imap(imaplib.IMAP4_SSL, server.host)(
                host, port, ssl_context=context, timeout=10
            )
        else:
            imap = _loopback_imap(imaplib.IMAP4, server.host)(host, port, timeout=10)
            imap.starttls(ssl_context=context)
        assert imap.login(user, password)[0] == "OK"
        assert imap.select("INBOX", readonly=True)[0] == "OK"
        imap.logout()
    elif kind == "pop3":
        if socket_type == "SSL":
            pop = _loopback_pop3(poplib.POP3_SSL, server.host)(
                host, port, context=context, timeout=10
            )
        else:
            pop = _loopback_pop3(poplib.POP3, server.host)(host, port, timeout=10)
            pop.stls(context=context)
        pop.user(user)
        assert pop.pass_(password).startswith(b"+OK")
        pop.quit()
    else:
        smtp: smtplib.SMTP
        if socket_type == "SSL":
            smtp = _loopback_smtp(smtplib.SMTP_SSL, server.host)(
                host, port, context=context, timeout=10
            )
        else:
            smtp = _loopback_smtp(smtplib.SMTP, server.host)(host, port, timeout=10)
            smtp.starttls(context=context)
        smtp.login(user, password)
        message = f"From: {user}\r\nTo: {BOB}\r\nSubject: via {port}\r\n\r\nconfigured\r\n"
        smtp.sendmail(user, [BOB], message.encode())
        smtp.quit()


# --- MTA-STS -----------------------------------------------------------------------------------


def policy_id(body: bytes) -> str:
    """The id a policy text must be announced with (a digest of it; the mode is not used)."""
    return ServedPolicy("testing", body).id


def dns_records_policy_id(server: Postroom) -> str:
    out = server.run_cli("dns", "records", DOMAIN).stdout
    match = re.search(rf'^_mta-sts\.{re.escape(DOMAIN)}\. \d+ IN TXT "([^"]*)"$', out, re.M)
    assert match, out
    for prefix in ("mta-sts", "autoconfig", "autodiscover"):
        assert f"{prefix}.{DOMAIN}. 3600 IN CNAME {HOSTNAME}." in out
    return mta_sts.parse_record(match[1]).id


def test_policy_in_testing_mode_with_the_self_signed_certificate(server: Postroom) -> None:
    response, body = request(server, mta_sts.POLICY_PATH, host=f"mta-sts.{DOMAIN}")
    assert response.status == 200, body
    assert response.getheader("content-type", "").split(";")[0] == "text/plain"
    assert body.endswith(b"\r\n") and body.count(b"\r\n") == body.count(b"\n")
    policy = mta_sts.parse_policy(body)
    assert (policy.mode, policy.mx, policy.max_age) == ("testing", (HOSTNAME,), 86400)
    assert dns_records_policy_id(server) == policy_id(body)
    # RFC 8461 §3.3: HTTPS only; and only under mta-sts.<a local domain>.
    response, body = request(server, mta_sts.POLICY_PATH, host=f"mta-sts.{DOMAIN}", tls=False)
    assert response.status == 404 and b"HTTPS only" in body
    assert request(server, mta_sts.POLICY_PATH, host=HOSTNAME)[0].status == 404
    assert request(server, mta_sts.POLICY_PATH, host="mta-sts.example.org")[0].status == 421


def test_policy_enforces_once_the_certificate_is_valid(
    postroom_factory: Factory, tmp_path: Path
) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert(HOSTNAME, f"mta-sts.{DOMAIN}", f"autoconfig.{DOMAIN}")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(ca_file))
    server = postroom_factory(
        services=("smtp", "https"),
        tls={"cert": str(cert), "key": str(key)},
        extra=f'[acme]\nca_file = "{ca_file}"\n',
    )
    verifying = ssl.create_default_context(cafile=str(ca_file))
    # A sender's fetch: SNI mta-sts.DOMAIN, the certificate verified for that name.
    response, body = request(
        server, mta_sts.POLICY_PATH, host=f"mta-sts.{DOMAIN}", context=verifying
    )
    assert response.status == 200, body
    policy = mta_sts.parse_policy(body)
    assert (policy.mode, policy.mx, policy.max_age) == ("enforce", (HOSTNAME,), 604800)
    announced = dns_records_policy_id(server)
    assert announced == policy_id(body)
    assert announced != policy_id(body.replace(b"enforce", b"testing"))
    server.wait_for_log(r"mta-sts policy domain=example\.test mode=enforce id=" + announced)
    # `postroom doctor`'s own check, its DNS what `dns records` printed, fetching from us.
    lookup = StaticLookup(
        {
            (f"_mta-sts.{DOMAIN}", "TXT"): [f"v=STSv1; id={announced}"],
            (f"mta-sts.{DOMAIN}", "A"): [server.host],
            (DOMAIN, "MX"): [f"10 {HOSTNAME}"],
        }
    )
    fetch = HttpsPolicyFetch(lookup, port=server.ports["https"], cafile=str(ca_file))
    doctor = Doctor(load_config(server.config_path), lookup, StoreFacts({}, []), [DOMAIN], fetch)
    (found,) = asyncio.run(doctor.mta_sts(DOMAIN))
    assert (found.status, found.detail) == ("ok", f"mode enforce, max_age 604800, mx {HOSTNAME}")


# --- Thunderbird -------------------------------------------------------------------------------


THUNDERBIRD = (  # (path, over TLS): Thunderbird asks both paths, over HTTPS and HTTP
    (f"/mail/config-v1.1.xml?emailaddress={ALICE}", True),
    ("/mail/config-v1.1.xml", False),
    (f"/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress={ALICE}", False),
)


def test_thunderbird_autoconfig_names_the_real_listeners(server: Postroom) -> None:
    for number, (path, tls) in enumerate(THUNDERBIRD, start=1):
        response, body = request(server, path, host=f"autoconfig.{DOMAIN}", tls=tls)
        assert response.status == 200, body
        assert response.getheader("content-type", "").startswith("application/xml")
        provider = ET.fromstring(body).find("emailProvider")
        assert provider is not None and provider.findtext("domain") == DOMAIN
        seen = set()
        for entry in provider:
            if entry.tag not in ("incomingServer", "outgoingServer"):
                continue
            kind, socket_type = entry.get("type", ""), entry.findtext("socketType", "")
            port = int(entry.findtext("port", "0"))
            assert port == server.ports[MAIL_SERVICE[kind, socket_type]]
            assert entry.findtext("username") == "%EMAILADDRESS%"
            use_as_advertised(server, kind, entry.findtext("hostname", ""), port, socket_type)
            seen.add(MAIL_SERVICE[kind, socket_type])
        assert seen == set(MAIL_SERVICE.values()), path
        server.wait_for_messages(BOB, 2 * number)  # one message through each submission port


def test_thunderbird_refuses_foreign_domains_and_hosts(server: Postroom) -> None:
    path = "/mail/config-v1.1.xml?emailaddress=someone@example.org"
    assert request(server, path, host=f"autoconfig.{DOMAIN}")[0].status == 404
    assert request(server, "/mail/config-v1.1.xml?emailaddress=x", host=DOMAIN)[0].status == 400
    assert request(server, "/mail/config-v1.1.xml", host="autoconfig.example.org")[0].status == 421


# --- Outlook -----------------------------------------------------------------------------------


def autodiscover_body(address: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<Autodiscover xmlns="{autoconfig.REQUEST_SCHEMA}"><Request>'
        f"<EMailAddress>{address}</EMailAddress>"
        f"<AcceptableResponseSchema>{autoconfig.RESPONSE_SCHEMA}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()


@pytest.mark.parametrize(
    "path", ["/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"]
)
def test_outlook_autodiscover_names_the_real_listeners(server: Postroom, path: str) -> None:
    response, body = request(
        server,
        path,
        host=f"autodiscover.{DOMAIN}",
        method="POST",
        body=autodiscover_body(ALICE),
        headers={"Content-Type": "text/xml"},
    )
    assert response.status == 200, body
    blocks = ET.fromstring(body).findall("r:Response/r:Account/r:Protocol", NS)
    assert [b.findtext("r:Type", namespaces=NS) for b in blocks] == ["IMAP", "SMTP"]
    for block in blocks:
        field: dict[str, Any] = {
            f: block.findtext(f"r:{f}", namespaces=NS)
            for f in ("Type", "Server", "Port", "Encryption", "LoginName")
        }
        assert field["LoginName"] == ALICE
        socket_type = {"SSL": "SSL", "TLS": "STARTTLS"}[field["Encryption"]]
        kind = field["Type"].lower()
        port = int(field["Port"])
        assert port == server.ports[MAIL_SERVICE[kind, socket_type]]
        use_as_advertised(server, kind, field["Server"], port, socket_type)


BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lollollollollollollollol">'
    + "".join(
        f'<!ENTITY lol{n} "{("&lol" + str(n - 1 if n > 1 else "") + ";") * 10}">'
        for n in range(1, 9)
    )
    + f']><Autodiscover xmlns="{autoconfig.REQUEST_SCHEMA}"><Request>'
    "<EMailAddress>&lol8;</EMailAddress></Request></Autodiscover>"
)
EXTERNAL = (
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    f'<Autodiscover xmlns="{autoconfig.REQUEST_SCHEMA}"><Request>'
    "<EMailAddress>&x;</EMailAddress></Request></Autodiscover>"
)


HOSTILE = {
    "truncated": b"<Autodiscover><Request>",
    "entity-bomb": BOMB.encode(),
    "external-entity": EXTERNAL.encode(),
    "empty": b"",
    "garbage": b"\x00\xff garbage",
}


def test_hostile_autodiscover_requests_get_400(server: Postroom) -> None:
    path = "/autodiscover/autodiscover.xml"
    for name, body in HOSTILE.items():
        response, answer = request(server, path, host=HOSTNAME, method="POST", body=body)
        assert response.status == 400, (name, answer)
        assert b"root:" not in answer and b"lollol" not in answer, name
    good = autodiscover_body(ALICE)
    assert request(server, path, host=HOSTNAME, method="POST", body=good)[0].status == 200


def test_autodiscover_foreign_domain_and_host(server: Postroom) -> None:
    path = "/autodiscover/autodiscover.xml"
    other = autodiscover_body("someone@example.org")
    assert request(server, path, host=HOSTNAME, method="POST", body=other)[0].status == 404
    mine = autodiscover_body(ALICE)
    assert request(server, path, host="evil.example", method="POST", body=mine)[0].status == 421
    assert request(server, path, host=HOSTNAME)[0].status == 405  # POST only


# --- Apple -------------------------------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_mobileconfig_after_login_names_the_real_listeners(server: Postroom) -> None:
    response, body = request(
        server, "/account/mobileconfig", host=HOSTNAME, headers=basic(ALICE, "alice-secret")
    )
    assert response.status == 200, body
    assert response.getheader("content-type") == "application/x-apple-aspen-config"
    (account,) = plistlib.loads(body)["PayloadContent"]
    assert account["EmailAddress"] == account["IncomingMailServerUsername"] == ALICE
    assert account["IncomingMailServerPortNumber"] == server.ports["imaps"]
    assert account["OutgoingMailServerPortNumber"] == server.ports["submissions"]
    assert account["IncomingMailServerUseSSL"] and account["OutgoingMailServerUseSSL"]
    host = account["IncomingMailServerHostName"]
    use_as_advertised(server, "imap", host, account["IncomingMailServerPortNumber"], "SSL")
    host = account["OutgoingMailServerHostName"]
    use_as_advertised(server, "smtp", host, account["OutgoingMailServerPortNumber"], "SSL")
    server.wait_for_messages(BOB, 1)


def test_mobileconfig_refuses_without_login_or_over_http(server: Postroom) -> None:
    path = "/account/mobileconfig"
    response, _ = request(server, path, host=HOSTNAME)
    assert response.status == 401
    assert response.getheader("www-authenticate", "").startswith('Basic realm="postroom"')
    response, _ = request(server, path, host=HOSTNAME, headers=basic(ALICE, "wrong"))
    assert response.status == 401
    server.wait_for_log(r"login failed service=https client=\S+ user=<alice@example\.test>")
    bad = {"Authorization": "Basic !!!not-base64"}
    assert request(server, path, host=HOSTNAME, headers=bad)[0].status == 401
    # Over plain HTTP the credentials are never looked at, right or wrong.
    response, _ = request(
        server, path, host=HOSTNAME, tls=False, headers=basic(ALICE, "alice-secret")
    )
    assert response.status == 403
    assert request(server, path, host="evil.example", headers=basic(ALICE, "x"))[0].status == 421


def test_mobileconfig_logins_are_throttled_with_the_mail_logins(
    postroom_factory: Factory,
) -> None:
    server = postroom_factory(
        services=("smtp", "imaps", "submissions", "https"),
        limits={"auth_failures": 2, "auth_block": "1h"},
    )
    path = "/account/mobileconfig"
    for _ in range(2):
        assert request(server, path, host=HOSTNAME, headers=basic(ALICE, "guess"))[0].status == 401
    server.wait_for_log(r"login blocked client=\S+ user=<alice@example\.test>")
    response, _ = request(server, path, host=HOSTNAME, headers=basic(ALICE, "alice-secret"))
    assert response.status == 503 and response.getheader("retry-after")
    # The same block holds on IMAP: one throttle for every service.
    with pytest.raises(imaplib.IMAP4.error):
        use_as_advertised(server, "imap", HOSTNAME, server.ports["imaps"], "SSL")


def test_dns_records_with_an_unusable_certificate_is_one_line(
    postroom_factory: Factory, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    server = postroom_factory(
        start=False, services=("smtp", "https"), tls={"cert": str(missing), "key": str(missing)}
    )
    result = server.run_cli("dns", "records", DOMAIN, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("postroom: error: ") and str(missing) in result.stderr
    assert result.stderr.count("\n") == 1
