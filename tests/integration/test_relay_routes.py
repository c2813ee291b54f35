"""Smarthost ([relay]) and per-domain routes ([routes]) between real servers on loopback.

Server A sends all remote mail through server B's submission port (STARTTLS or implicit TLS,
AUTH, B's certificate verified through `relay.ca_file`); a [routes] entry sends one domain to a
real smtp-sink without any DNS (the tests' resolver points at a dead port).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from . import test_delivery_smtp
from .conftest import ALICE, Postroom, wait_until
from .wire import new_token, simple_message

smtp_sink = test_delivery_smtp.smtp_sink
Sink = test_delivery_smtp.Sink

CAROL = "carol@remote.test"
BOB = "bob@example.test"


def send_remote(server: Postroom) -> str:
    token = new_token()
    with server.submission(login=BOB) as s:
        assert s.sendmail(BOB, [CAROL], simple_message(token, BOB, CAROL)) == {}
    return token


def relay_config(upstream: Postroom, port: int, tls: str, password: str) -> str:
    cert = upstream.data_dir / "tls" / "cert.pem"
    return (
        f'[relay]\nhost = "127.0.0.1:{port}"\ntls = "{tls}"\nusername = "{ALICE}"\n'
        f'password = "{password}"\nca_file = "{cert}"\n'
    )


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_smarthost_with_login_carries_remote_mail(
    postroom_factory: Callable[..., Postroom], tls: str
) -> None:
    upstream = postroom_factory(name="upstream")
    port = upstream.submission_port if tls == "starttls" else upstream.submissions_port
    sender = postroom_factory(
        name="sender", extra=relay_config(upstream, port, tls, upstream.passwords[ALICE])
    )
    send_remote(sender)
    wait_until(lambda: CAROL in upstream.queue_list(), 30, "the upstream relay to queue it")
    wait_until(lambda: CAROL not in sender.queue_list(), 30, "the sender's queue to empty")
    [queue_id] = [
        word for word in upstream.queue_list().split() if len(word) == 17 and word.isalnum()
    ]
    shown = upstream.run_cli("queue", "show", queue_id).stdout
    assert f"authenticated: {ALICE}" in shown
    assert "protocol=ESMTPSA" in shown  # TLS and AUTH on the hop between the two


def test_smarthost_refusing_our_login_keeps_the_mail(
    postroom_factory: Callable[..., Postroom],
) -> None:
    upstream = postroom_factory(name="upstream")
    sender = postroom_factory(
        name="sender",
        extra=relay_config(upstream, upstream.submission_port, "starttls", "wrong-password"),
    )
    send_remote(sender)
    wait_until(lambda: "refused our login" in sender.queue_list(), 30, "the deferral")
    assert "\tdeferred\t" in sender.queue_list()
    assert CAROL not in upstream.queue_list()


def test_route_for_a_domain_skips_dns(
    postroom_factory: Callable[..., Postroom], smtp_sink: Callable[..., Sink]
) -> None:
    sink = smtp_sink()
    sender = postroom_factory(extra=f'[routes]\n"remote.test" = "127.0.0.1:{sink.port}"\n')
    token = send_remote(sender)
    wait_until(lambda: any(token.encode() in m for m in sink.messages()), 30, "the routed mail")
    wait_until(lambda: CAROL not in sender.queue_list(), 30, "the queue to empty")
