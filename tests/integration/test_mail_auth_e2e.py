"""Our DKIM signatures at the receiver, over real sockets and real peers (issue 13 §1, §2, §6).

alice@example.test submits through postroom; the mail leaves for another host (a [routes]
entry, the MX that a real nsd serves, or the [relay] smarthost) and is captured after the path:
straight into an SMTP capture, through a real Postfix relaying it on, into Postfix's smtp-sink
without 8BITMIME (postroom downgrades the 8-bit body to 7 bit and must sign that form), through
a second postroom as smarthost (STARTTLS, AUTH). Each captured message carries an
ed25519-sha256 and an rsa-sha256 signature by example.test that dkimpy and opendkim-testmsg
verify against the records `postroom dns records example.test` printed, served by nsd; a
second postroom with [verify] on, as the receiving MX, says dkim=pass and dmarc=pass. Mail with
a foreign From: is not signed by us; a bounce postroom sends to a remote sender is. A rotated
key signs only once DNS shows it (or with --now), and what the old and the new keys signed
both verify while the old records are still published.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from . import dns_server as dns_server_module
from . import milters as milters_module
from . import test_delivery_smtp
from .conftest import ALICE, DOMAIN, HOSTNAME, Postroom, wait_until
from .dns_server import DnsServerFactory
from .mail_auth_world import (
    SENDER_DOMAIN,
    World,
    assert_signed_by_us,
    authentication_results,
    crlf,
    dkim_signatures,
    eight_bit_message,
    header_fields,
    make_world,
    our_zone,
    remote_zone,
    routes,
    sender_signed,
    submit,
)
from .milters import Capture, Peers
from .wire import new_token, open_session, send_message

dns_server = dns_server_module.dns_server
milters = milters_module.milters
smtp_sink = test_delivery_smtp.smtp_sink
Sink = test_delivery_smtp.Sink

CAPTURED = "carol@cap.test"


def arrived(capture: Capture, server: Postroom, token: str) -> milters_module.Captured:
    """The one captured message carrying `token` (waiting for it)."""

    def found() -> list[milters_module.Captured]:
        return [m for m in capture.messages() if token.encode() in m.data]

    try:
        matching: list[milters_module.Captured] = wait_until(found, 30.0, f"message {token}")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{server.log_tail()}") from None
    assert len(matching) == 1, [m.data[:200] for m in matching]
    return matching[0]


# --- 1. our signatures verify after every path ---------------------------------------------------


def through_capture(
    world: World, milters: Peers, smtp_sink: Callable[..., Sink]
) -> tuple[str, Callable[[str], bytes]]:
    capture = milters.capture()
    world.configure(routes(cap=capture.address))

    def fetch(token: str) -> bytes:
        got = arrived(capture, world.server, token)
        assert got.mail_from == ALICE and got.rcpt_tos == [CAPTURED]
        return got.data

    return CAPTURED, fetch


def through_postfix(
    world: World, milters: Peers, smtp_sink: Callable[..., Sink]
) -> tuple[str, Callable[[str], bytes]]:
    capture = milters.capture()
    postfix = milters.postfix([], relay_to=capture.address)
    world.configure(routes(pf=("127.0.0.1", postfix.ports["smtp"])))

    def fetch(token: str) -> bytes:
        got = capture.wait(1, log=lambda: world.server.log_tail() + "\n" + postfix.log_tail())
        [data] = [m.data for m in got if token.encode() in m.data]
        received = [v for n, v in header_fields(data) if n == "received"]
        assert "mx.postfix.test" in received[0], received  # Postfix's hop is on top
        return data

    return "carol@pf.test", fetch


def through_old_peer(
    world: World, milters: Peers, smtp_sink: Callable[..., Sink]
) -> tuple[str, Callable[[str], bytes]]:
    sink = smtp_sink("-8")  # Postfix's smtp-sink, not announcing 8BITMIME
    world.configure(routes(old=(sink.host, sink.port)))

    def fetch(token: str) -> bytes:
        [dump] = test_delivery_smtp.wait_dumps(sink, 1)
        assert b"X-Mail-Args: <" + ALICE.encode() + b">" in dump
        assert b"BODY=8BITMIME" not in dump  # no 8BITMIME: sent as 7 bit (RFC 6152 §3)
        data = crlf(test_delivery_smtp.sink_data(dump))
        assert data.isascii(), "the 8-bit body was sent as it was"
        encodings = [v.lower() for n, v in header_fields(data) if n == "content-transfer-encoding"]
        assert encodings in (["quoted-printable"], ["base64"]), encodings
        return data

    return "carol@old.test", fetch


def through_smarthost(
    world: World, milters: Peers, smtp_sink: Callable[..., Sink], factory: Callable[..., Postroom]
) -> tuple[str, Callable[[str], bytes]]:
    capture = milters.capture()
    # The smarthost signs nothing itself: what arrives carries only the first server's work.
    smarthost = factory(
        name="smarthost", extra=routes(far=capture.address) + "[dkim]\nsign = false\n"
    )
    cert = smarthost.data_dir / "tls" / "cert.pem"
    world.configure(
        f'[relay]\nhost = "127.0.0.1:{smarthost.submission_port}"\ntls = "starttls"\n'
        f'username = "{ALICE}"\npassword = "{smarthost.passwords[ALICE]}"\nca_file = "{cert}"\n'
    )

    def fetch(token: str) -> bytes:
        got = capture.wait(1, log=lambda: world.server.log_tail() + smarthost.log_tail())
        [data] = [m.data for m in got if token.encode() in m.data]
        received = [v for n, v in header_fields(data) if n == "received"]
        assert "ESMTPSA" in received[0], received  # the smarthost's hop: TLS and AUTH
        return data

    return "carol@far.test", fetch


@pytest.mark.parametrize("path", ["capture", "postfix", "no-8bitmime", "smarthost"])
def test_our_signatures_verify_after_every_path(
    path: str,
    postroom_factory: Callable[..., Postroom],
    dns_server: DnsServerFactory,
    milters: Peers,
    smtp_sink: Callable[..., Sink],
) -> None:
    world = make_world(postroom_factory, dns_server)
    if path == "capture":
        to, fetch = through_capture(world, milters, smtp_sink)
    elif path == "postfix":
        to, fetch = through_postfix(world, milters, smtp_sink)
    elif path == "no-8bitmime":
        to, fetch = through_old_peer(world, milters, smtp_sink)
    else:
        to, fetch = through_smarthost(world, milters, smtp_sink, postroom_factory)
    world.server.start()
    resolver = world.resolver(milters)
    token = new_token("path")
    submit(world.server, ALICE, to, eight_bit_message(token, ALICE, to))
    data = fetch(token)
    if path != "no-8bitmime":
        assert "Grüße aus Köln".encode() in data, "the 8-bit body did not arrive as it was"
    ours = assert_signed_by_us(data, world, resolver)
    # The selectors are the domain's active keys, as `dkim list` shows them.
    listed = world.server.run_cli("dkim", "list", DOMAIN).stdout.splitlines()
    active = sorted(line.split("\t")[1] for line in listed if line.endswith("\tactive"))
    assert sorted(s["s"] for s in ours) == active


def test_postroom_verifies_its_own_mail_as_the_receiving_mx(
    postroom_factory: Callable[..., Postroom], dns_server: DnsServerFactory
) -> None:
    """The issue: "the server must then verify its own mail against it". A second postroom,
    the MX of dest.test found through nsd, checks what the first one signed."""
    world = make_world(postroom_factory, dns_server, zones={"dest.test": remote_zone("dest.test")})
    receiver = postroom_factory(start=False, name="receiver", services=("smtp",))
    receiver.domain, receiver.hostname = "dest.test", "mx.dest.test"
    receiver.extra = (
        f'[dns]\nnameservers = ["{world.nsd.nameserver}"]\n\n[verify]\nenabled = true\n'
    )
    receiver.write_config()
    receiver.add_user("carol@dest.test", "carol-secret")
    receiver.start()
    world.configure(f"[delivery]\nport = {receiver.smtp_port}\n")  # MX lookup, then this port
    world.server.start()
    token = new_token("mx")
    submit(
        world.server, ALICE, "carol@dest.test", eight_bit_message(token, ALICE, "carol@dest.test")
    )
    receiver.wait_for_messages("carol@dest.test", 1)
    [stored] = receiver.export("carol@dest.test")
    assert token.encode() in stored
    results = authentication_results(crlf(stored), "mx.dest.test")
    assert f"spf=pass smtp.mailfrom={ALICE}" in results, results
    dkim_results = re.findall(r"dkim=(\w+)[^;]*header\.d=([\w.]+)", results)
    assert dkim_results == [("pass", DOMAIN), ("pass", DOMAIN)], results
    assert f"dmarc=pass header.from={DOMAIN}" in results, results
    line = receiver.wait_for_log(r"queued id=\S+ .*").group(0)
    assert "spf=pass dkim=pass,pass dmarc=pass" in line and "action=deliver" in line, line


# --- 2. a foreign From: is not signed by us --------------------------------------------------


def test_mail_with_a_foreign_from_is_relayed_unsigned(
    postroom_factory: Callable[..., Postroom], dns_server: DnsServerFactory, milters: Peers
) -> None:
    world = make_world(postroom_factory, dns_server)
    capture = milters.capture()
    world.configure(routes(cap=capture.address))
    world.server.start()
    foreign, ours = new_token("foreign"), new_token("ours")
    # alice relays a message written by someone at another domain (a forward, a list post)...
    submit(
        world.server, ALICE, CAPTURED, eight_bit_message(foreign, "someone@foreign.test", CAPTURED)
    )
    # ...and, the control, one of her own.
    submit(world.server, ALICE, CAPTURED, eight_bit_message(ours, ALICE, CAPTURED))
    got = capture.wait(2, log=world.server.log_tail)
    [relayed] = [m.data for m in got if foreign.encode() in m.data]
    [signed] = [m.data for m in got if ours.encode() in m.data]
    assert dkim_signatures(relayed) == [], relayed[:600]
    assert len(dkim_signatures(signed)) == 2


# --- 3. what postroom itself sends: a bounce to a remote sender -----------------------------


# The host name inside the domain and as the domain: bounces come From MAILER-DAEMON@ the host
# name, signed with the keys of the local domain it is (below).
HOSTNAMES = [DOMAIN, HOSTNAME]


def bounce_world(
    hostname: str,
    postroom_factory: Callable[..., Postroom],
    dns_server: DnsServerFactory,
    smtp_sink: Callable[..., Sink],
    senders_mx: tuple[str, int],
) -> World:
    """bob@sender.test writes to an alias of ours that forwards to a host refusing the
    recipient (550 at RCPT): postroom returns the mail to bob, through `senders_mx`."""
    world = make_world(postroom_factory, dns_server, hostname=hostname)
    refusing = smtp_sink("-f", "RCPT")
    world.configure(routes(refuse=(refusing.host, refusing.port), sender=senders_mx))
    world.server.run_cli("alias", "add", f"fwd@{DOMAIN}", "carol@refuse.test")
    world.server.start()
    return world


def send_to_refused_alias(world: World, token: str) -> None:
    with open_session(world.server.smtp_port, helo=f"mail.{SENDER_DOMAIN}") as wire:
        reply = send_message(
            wire, f"bob@{SENDER_DOMAIN}", [f"fwd@{DOMAIN}"], sender_signed(token, f"fwd@{DOMAIN}")
        )
    assert reply.code == 250, reply


@pytest.mark.parametrize("hostname", HOSTNAMES)
def test_a_bounce_to_a_remote_sender_is_signed(
    hostname: str,
    postroom_factory: Callable[..., Postroom],
    dns_server: DnsServerFactory,
    milters: Peers,
    smtp_sink: Callable[..., Sink],
) -> None:
    """The bounce, From MAILER-DAEMON@hostname, is signed by the local domain it is (below)."""
    capture = milters.capture()
    world = bounce_world(hostname, postroom_factory, dns_server, smtp_sink, capture.address)
    resolver = world.resolver(milters)
    token = new_token("bounce")
    send_to_refused_alias(world, token)
    bounce = capture.wait(1, log=world.server.log_tail)[0]
    assert (bounce.mail_from, bounce.rcpt_tos) == ("<>", [f"bob@{SENDER_DOMAIN}"])
    assert token.encode() in bounce.data
    [author] = [v for n, v in header_fields(bounce.data) if n == "from"]
    assert f"MAILER-DAEMON@{hostname}" in author, author
    assert_signed_by_us(bounce.data, world, resolver, domain=DOMAIN)


@pytest.mark.parametrize("hostname", HOSTNAMES)
def test_a_bounce_passes_dmarc_at_a_checking_postroom(
    hostname: str,
    postroom_factory: Callable[..., Postroom],
    dns_server: DnsServerFactory,
    smtp_sink: Callable[..., Sink],
) -> None:
    """The same bounce into a postroom with [verify] on, sender.test's MX: example.test
    publishes p=reject (as `dns records` prints it), which covers MAILER-DAEMON@mx.example.test
    too; only an aligned signature lets the bounce in (DMARC ignores SPF of the null sender)."""
    receiver = postroom_factory(start=False, name="receiver", services=("smtp",))
    receiver.domain, receiver.hostname = SENDER_DOMAIN, f"mx.{SENDER_DOMAIN}"
    world = bounce_world(
        hostname, postroom_factory, dns_server, smtp_sink, ("127.0.0.1", receiver.smtp_port)
    )
    receiver.extra = (
        f'[dns]\nnameservers = ["{world.nsd.nameserver}"]\n\n[verify]\nenabled = true\n'
    )
    receiver.write_config()
    receiver.add_user(f"bob@{SENDER_DOMAIN}", "bob-secret")
    receiver.start()
    token = new_token("dsn")
    send_to_refused_alias(world, token)
    bob = f"bob@{SENDER_DOMAIN}"
    refused = re.compile(rf"failed id=\S+ to=<{re.escape(bob)}> .*")

    def settled() -> bool:
        return (
            bool(refused.search(world.server.log())) or receiver.mailbox_status(bob)["messages"] > 0
        )

    wait_until(settled, 30.0, "the bounce to be delivered or refused")
    found = refused.search(world.server.log())
    assert found is None, found.group(0)
    [stored] = receiver.export(bob)
    results = authentication_results(crlf(stored), receiver.hostname)
    assert re.search(rf"dkim=pass [^;]*header\.d={re.escape(DOMAIN)}", results), results
    assert f"dmarc=pass header.from={hostname}" in results, results


# --- 6. key rotation ------------------------------------------------------------------------


def selectors(data: bytes) -> list[str]:
    return sorted(s["s"] for s in dkim_signatures(data) if s["d"] == DOMAIN)


def keys_by_state(server: Postroom) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in server.run_cli("dkim", "list", DOMAIN).stdout.splitlines():
        _, selector, _, _, state = line.split("\t")
        out.setdefault(state, []).append(selector)
    return {state: sorted(found) for state, found in out.items()}


def test_a_rotated_key_signs_only_once_dns_shows_it_and_old_signatures_still_verify(
    postroom_factory: Callable[..., Postroom], dns_server: DnsServerFactory, milters: Peers
) -> None:
    world = make_world(postroom_factory, dns_server)
    server = world.server
    capture = milters.capture()
    world.configure(routes(cap=capture.address))
    server.start()
    resolver = world.resolver(milters)
    sent: dict[str, bytes] = {}

    def send(label: str) -> bytes:
        token = new_token(label)
        submit(server, ALICE, CAPTURED, eight_bit_message(token, ALICE, CAPTURED))
        sent[label] = arrived(capture, server, token).data
        return sent[label]

    first = keys_by_state(server)["active"]
    assert selectors(send("before")) == first

    # Rotation announces a new pair; nsd does not have its records yet.
    rotated = server.run_cli("dkim", "rotate", DOMAIN).stdout
    assert rotated.count("announced") == 2, rotated
    announced = keys_by_state(server)["announced"]
    assert server.run_cli("dkim", "promote").stdout.count("not in DNS yet") == 2
    server.stop()
    server.start()  # a fresh process: no keys remembered; its own promotion finds nothing
    assert selectors(send("announced")) == first
    assert keys_by_state(server)["announced"] == announced

    # The records printed now (old and new side by side) go into DNS: the server's own
    # promotion, at its start, moves signing to the new pair and retires the old one.
    server.stop()
    world.republish(DOMAIN, our_zone(server.run_cli("dns", "records", DOMAIN).stdout, serial=2))
    server.start()
    wait_until(
        lambda: server.log(current=True).count("dkim key activated") == 2,
        30.0,
        "the server's promotion of the announced keys",
    )
    states = keys_by_state(server)
    assert states == {"active": announced, "retired": first}, states
    assert selectors(send("promoted")) == announced

    # --now: a third pair signs at once, before anyone could see its records...
    now = server.run_cli("dkim", "rotate", DOMAIN, "--now").stdout
    assert now.count("active") >= 2, now
    server.stop()
    third = keys_by_state(server)["active"]
    assert set(third).isdisjoint(announced + first)
    world.republish(DOMAIN, our_zone(server.run_cli("dns", "records", DOMAIN).stdout, serial=3))
    server.start()
    assert selectors(send("now")) == third

    # Every key ever used is still published (retired ones for a week): all of it verifies.
    for label, data in sent.items():
        assert_signed_by_us(data, world, resolver if label in ("before", "now") else None)
    for selector in first + announced + third:
        assert world.txt_records(f"{selector}._domainkey.{DOMAIN}"), selector
