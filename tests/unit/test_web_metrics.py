"""Who may read /metrics: loopback and the [web] metrics_allow networks; everyone else gets
403 and no metrics. The route is called as the HTTP listener calls it (an ASGI request with
the TCP peer as its client), over a real store; the address check is also tested alone."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.types import Message

from postroom.config_checks import IPNetwork
from postroom.services.metrics import Metrics
from postroom.storage.api import Store
from postroom.storage.backend import server_store
from postroom.web.metrics import allowed, routes

ALLOW: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
)


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("192.0.2.77", True),
        ("::ffff:192.0.2.77", True),
        ("2001:db8::5", True),
        ("2001:db8::5%eth0", True),
        ("198.51.100.1", False),
        ("::ffff:198.51.100.1", False),
        ("2001:db9::1", False),
        ("fe80::1", False),
        ("localhost", False),
        ("", False),
        (None, False),
    ],
)
def test_loopback_and_allowed_networks_only(client: str | None, expected: bool) -> None:
    assert allowed(client, ALLOW) is expected


def test_nothing_but_loopback_without_metrics_allow() -> None:
    assert allowed("127.0.0.1", ())
    assert not allowed("192.0.2.77", ())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = server_store(tmp_path / "data")
    opened.open()
    try:
        yield opened
    finally:
        opened.close()


def get(app: Starlette, client: str) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/metrics",
        "raw_path": b"/metrics",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"mx.example.test")],
        "client": (client, 40000),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body


def test_a_foreign_client_gets_403_and_no_metrics(store: Store) -> None:
    metrics = Metrics(store)
    metrics.smtp("smtp").connections.inc()
    app = Starlette(routes=routes(metrics, ALLOW))
    status, _, body = get(app, "198.51.100.1")
    assert status == 403
    assert b"postroom_" not in body and b"metrics_allow" in body
    for client in ("127.0.0.1", "192.0.2.9"):
        status, headers, body = get(app, client)
        assert status == 200
        assert headers[b"content-type"] == CONTENT_TYPE_LATEST.encode()
        assert b'postroom_smtp_connections_total{service="smtp"} 1.0' in body
        assert b'postroom_queue_messages{state="queued"} 0.0' in body
