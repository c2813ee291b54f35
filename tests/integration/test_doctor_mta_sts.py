"""The doctor's MTA-STS check against a real HTTPS server (stdlib http.server, a trustme
certificate, in a thread): the policy is fetched from the address DNS gives for
mta-sts.DOMAIN, its certificate verified, and judged against the MX; a missing, redirected,
mistyped or mis-certified policy fails, saying what to do."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from postroom.config import load_config
from postroom.dns.lookup import StaticLookup
from postroom.services.doctor import Doctor, StoreFacts
from postroom.services.doctor_local import HttpsPolicyFetch
from postroom.services.doctor_report import Check

from .conftest import free_ports

DOMAIN = "example.test"
HOST = "mx.example.test"
GOOD = b"version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n"


@dataclass
class Answer:
    status: int = 200
    media: str = "text/plain; charset=utf-8"
    body: bytes = GOOD
    paths: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


@dataclass
class PolicyServer:
    port: int
    cafile: str
    answer: Answer


def serve(ca: trustme.CA, name: str, answer: Answer) -> tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer.paths.append(self.path)
            answer.hosts.append(self.headers.get("Host", ""))
            self.send_response(answer.status)
            if answer.status in (301, 302):
                self.send_header("Location", "https://elsewhere.example/")
            self.send_header("Content-Type", answer.media)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture
def ca(tmp_path: Path) -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def policy_server(ca: trustme.CA, tmp_path: Path) -> Iterator[PolicyServer]:
    answer = Answer()
    server, port = serve(ca, f"mta-sts.{DOMAIN}", answer)
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    try:
        yield PolicyServer(port, str(cafile), answer)
    finally:
        server.shutdown()
        server.server_close()


def check(
    tmp_path: Path,
    port: int,
    cafile: str | None,
    record: str = "v=STSv1; id=20261207",
    mx: tuple[str, ...] = ("10 mx.example.test",),
) -> Check:
    path = tmp_path / "postroom.toml"
    path.write_text(f'hostname = "{HOST}"\ndomains = ["{DOMAIN}"]\n', encoding="utf-8")
    lookup = StaticLookup(
        {
            (f"_mta-sts.{DOMAIN}", "TXT"): [record],
            (f"mta-sts.{DOMAIN}", "A"): ["127.0.0.1"],
            (DOMAIN, "MX"): list(mx),
        }
    )
    fetch = HttpsPolicyFetch(lookup, port=port, cafile=cafile, timeout=5.0)
    doctor = Doctor(load_config(path), lookup, StoreFacts({}, []), [DOMAIN], fetch)
    (found,) = asyncio.run(doctor.mta_sts(DOMAIN))
    return found


def test_a_served_policy_naming_the_mx_passes(tmp_path: Path, policy_server: PolicyServer) -> None:
    found = check(tmp_path, policy_server.port, policy_server.cafile)
    assert found.status == "ok", found
    assert found.detail == "mode enforce, max_age 86400, mx mx.example.test"
    assert policy_server.answer.paths == ["/.well-known/mta-sts.txt"]
    assert policy_server.answer.hosts == [f"mta-sts.{DOMAIN}:{policy_server.port}"]


def test_a_policy_that_does_not_name_every_mx_fails(
    tmp_path: Path, policy_server: PolicyServer
) -> None:
    mx = ("10 mx.example.test", "20 backup.example.net")
    found = check(tmp_path, policy_server.port, policy_server.cafile, mx=mx)
    assert found.status == "fail" and "does not name backup.example.net" in found.detail
    assert found.fix.startswith("add 'mx: backup.example.net' to the policy at https://mta-sts.")
    policy_server.answer.body = GOOD.replace(b"mx: mx.example.test", b"mx: *.example.test")
    found = check(tmp_path, policy_server.port, policy_server.cafile)
    assert found.status == "ok"  # the wildcard covers mx.example.test
    policy_server.answer.body = GOOD.replace(b"enforce", b"none")
    assert check(tmp_path, policy_server.port, policy_server.cafile).status == "warn"
    policy_server.answer.body = GOOD.replace(b"max_age: 86400", b"max_age: forever")
    found = check(tmp_path, policy_server.port, policy_server.cafile)
    assert found.status == "fail" and "max_age" in found.detail


@pytest.mark.parametrize(
    ("status", "media", "said"),
    [
        (404, "text/plain", "HTTP 404"),
        (301, "text/plain", "senders do not follow redirects"),
        (200, "text/html", "Content-Type text/html, text/plain expected"),
    ],
)
def test_a_policy_served_wrong_fails(
    tmp_path: Path, policy_server: PolicyServer, status: int, media: str, said: str
) -> None:
    policy_server.answer.status, policy_server.answer.media = status, media
    found = check(tmp_path, policy_server.port, policy_server.cafile)
    assert found.status == "fail" and said in found.detail, found
    assert f"serve the policy at https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt" in found.fix


def test_a_certificate_for_another_name_fails(ca: trustme.CA, tmp_path: Path) -> None:
    server, port = serve(ca, "www.example.test", Answer())
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    try:
        found = check(tmp_path, port, str(cafile))
    finally:
        server.shutdown()
        server.server_close()
    assert found.status == "fail" and "certificate not accepted" in found.detail, found


def test_an_untrusted_certificate_fails(tmp_path: Path, policy_server: PolicyServer) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    found = check(tmp_path, policy_server.port, str(other))
    assert found.status == "fail" and "certificate not accepted" in found.detail, found


def test_nothing_listening_or_a_bad_record_fails(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    found = check(tmp_path, port, None)
    assert found.status == "fail" and "127.0.0.1:" in found.detail
    found = check(tmp_path, port, None, record="v=STSv1; id=not-alnum")
    assert found.status == "fail" and "senders ignore MTA-STS" in found.detail
