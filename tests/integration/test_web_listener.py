"""The HTTP(S) listeners of a real `postroom serve`: plain and TLS (the mail certificate),
the request guard's answers to hostile requests, and shutdown with a connection open."""

from __future__ import annotations

import http.client
import socket

import pytest

from .conftest import HOSTNAME, Factory, Postroom

WEB = ("smtp", "http", "https")


@pytest.fixture
def server(postroom_factory: Factory) -> Postroom:
    return postroom_factory(services=WEB, extra="[web]\nmax_body = 1000\n")


def get(
    server: Postroom, path: str, *, host: str = HOSTNAME, tls: bool = False, **kwargs: object
) -> http.client.HTTPResponse:
    connection: http.client.HTTPConnection
    if tls:
        connection = http.client.HTTPSConnection(
            server.host, server.ports["https"], context=server.tls_context(), timeout=10
        )
    else:
        connection = http.client.HTTPConnection(server.host, server.ports["http"], timeout=10)
    connection.request(
        str(kwargs.get("method", "GET")),
        path,
        body=kwargs.get("body"),  # type: ignore[arg-type]
        headers={"Host": host, **kwargs.get("headers", {})},  # type: ignore[dict-item]
    )
    return connection.getresponse()


def test_home_page_over_http_and_https(server: Postroom) -> None:
    for tls in (False, True):
        response = get(server, "/", tls=tls)
        body = response.read().decode()
        assert response.status == 200, body
        assert HOSTNAME in body
        assert response.getheader("x-frame-options") == "DENY"
        assert response.getheader("x-content-type-options") == "nosniff"
        assert response.getheader("server") is None  # no software banner


@pytest.mark.parametrize("host", ["evil.example.com", "mx.example.test:http", "a b", "[::1"])
def test_foreign_or_malformed_host_is_misdirected(server: Postroom, host: str) -> None:
    response = get(server, "/", host=host)
    assert response.status == 421
    response.read()


@pytest.mark.parametrize(
    "host", ["mta-sts.example.test", "autoconfig.example.test", "127.0.0.1:80", "[::1]:8080"]
)
def test_served_names_and_ip_literals_are_accepted(server: Postroom, host: str) -> None:
    assert get(server, "/", host=host).status == 200


def test_body_over_the_limit_is_refused(server: Postroom) -> None:
    response = get(server, "/", method="POST", body=b"x" * 1001)
    assert response.status == 413
    response.read()
    chunked = get(
        server,
        "/",
        method="POST",
        body=iter([b"x" * 600, b"x" * 600]),
        headers={"Transfer-Encoding": "chunked"},
    )
    assert chunked.status in (405, 413)  # "/" takes no POST; the body never reaches a page
    chunked.read()


def test_oversize_request_head_is_refused_and_server_lives(server: Postroom) -> None:
    with socket.create_connection((server.host, server.ports["http"]), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: " + HOSTNAME.encode() + b"\r\n")
        sock.sendall(b"X-Filler: " + b"a" * 40_000 + b"\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 4"), answer[:80]
    assert get(server, "/").status == 200


def test_path_traversal_finds_nothing(server: Postroom) -> None:
    for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd"):
        response = get(server, path)
        assert response.status == 404, path
        assert b"root:" not in response.read()


def test_shutdown_with_an_idle_keepalive_connection(server: Postroom) -> None:
    with socket.create_connection((server.host, server.ports["http"]), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: " + HOSTNAME.encode() + b"\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert server.stop() == 0
