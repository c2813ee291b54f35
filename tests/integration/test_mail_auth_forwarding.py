"""Mail from outside, over real sockets and real peers (issue 13 §3, §4): a real signer's mail
verified by postroom, and mail forwarded by an alias with SRS and ARC.

- Postfix with two opendkim milters (rsa and ed25519 keys of sender.test, published in nsd)
  relays to postroom's port 25 with [verify] on: postroom's Authentication-Results says
  spf=pass (sender.test authorises loopback), dkim=pass for both signatures, dmarc=pass.
- An alias of ours forwards mail that sender.test signed to a remote address: it leaves with an
  SRS0 envelope sender of example.test (which passes SPF at the next hop), an ARC set (i=1,
  cv=none) that validates against the records `dns records` printed, and the original DKIM
  signature intact; a second postroom as that next hop says spf, dkim, dmarc and arc pass. A
  bounce to the SRS0 address goes back to the original sender; a tampered one is 550 5.1.1.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
from collections.abc import Callable

from postroom.mailauth import arc, spf

from . import dns_server as dns_server_module
from . import milters as milters_module
from .conftest import ALICE, DOMAIN, HOSTNAME, Postroom, wait_until
from .dns_server import DnsServerFactory
from .mail_auth_world import (
    SENDER_DOMAIN,
    SENDER_SELECTORS,
    World,
    authentication_results,
    crlf,
    dkim_signatures,
    dkimpy_verifies,
    header_fields,
    make_world,
    remote_zone,
    routes,
    sender_signed,
    tags,
)
from .milters import Capture, Captured, Peers, opendkim_testmsg
from .wire import new_token, open_session, send_message

dns_server = dns_server_module.dns_server
milters = milters_module.milters

BOB = f"bob@{SENDER_DOMAIN}"
ALIAS = f"fwd@{DOMAIN}"
SRS0 = re.compile(r"^SRS0=[^=@]+=[A-Za-z2-7]{2}=sender\.test=bob@example\.test$")


def results_of(server: Postroom, address: str) -> tuple[bytes, str]:
    """The one message in `address`'s INBOX (CRLF) and our Authentication-Results on it."""
    server.wait_for_messages(address, 1)
    [stored] = server.export(address)
    data = crlf(stored)
    return data, authentication_results(data, server.hostname)


# --- 4. inbound from a real signer -----------------------------------------------------------


def test_mail_signed_by_postfix_and_opendkim_passes_postroom_checks(
    postroom_factory: Callable[..., Postroom], dns_server: DnsServerFactory, milters: Peers
) -> None:
    world = make_world(postroom_factory, dns_server)
    world.configure("")
    world.server.start()
    signers = [
        milters.signer(SENDER_DOMAIN, selector, pair.private, pair.algorithm)
        for selector, pair in SENDER_SELECTORS.items()
    ]
    postfix = milters.postfix(signers, relay_to=("127.0.0.1", world.server.smtp_port))
    token = new_token("inbound")
    content = (
        f"From: Bob <{BOB}>\r\nTo: <{ALICE}>\r\nSubject: {token}\r\n"
        f"Date: Mon, 07 Dec 2026 08:00:00 +0000\r\nMessage-ID: <{token}@{SENDER_DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        f"\r\nSigned on its way out by opendkim, {token}.\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", postfix.ports["smtp"], local_hostname="ws.sender.test") as c:
        assert c.sendmail(BOB, [ALICE], content) == {}
    try:
        data, results = results_of(world.server, ALICE)
    except AssertionError as error:
        raise AssertionError(f"{error}\npostfix:\n{postfix.log_tail()}") from None
    assert token.encode() in data
    # Both signatures were opendkim's, not something we made up.
    assert sorted(s["s"] for s in dkim_signatures(data)) == sorted(SENDER_SELECTORS)
    assert f"spf=pass smtp.mailfrom={BOB}" in results, results
    dkim_results = re.findall(r"dkim=(\w+)[^;]*header\.d=([\w.]+)[^;]*header\.s=(\w+)", results)
    assert sorted(dkim_results) == [("pass", SENDER_DOMAIN, s) for s in sorted(SENDER_SELECTORS)]
    assert f"dmarc=pass header.from={SENDER_DOMAIN}" in results, results
    assert "arc=none" in results, results
    line = world.server.wait_for_log(r"queued id=\S+ .*").group(0)
    assert "spf=pass dkim=pass,pass dmarc=pass arc=none action=deliver" in line, line


# --- 5. forwarding with SRS and ARC ------------------------------------------------------------


def forwarding_world(
    postroom_factory: Callable[..., Postroom], dns_server: DnsServerFactory, next_hop: str
) -> World:
    world = make_world(postroom_factory, dns_server, zones={"dest.test": remote_zone("dest.test")})
    world.server.run_cli("alias", "add", ALIAS, f"carol@{next_hop}")
    return world


def send_from_sender(world: World, token: str) -> None:
    with open_session(world.server.smtp_port, helo=f"mail.{SENDER_DOMAIN}") as wire:
        reply = send_message(wire, BOB, [ALIAS], sender_signed(token, ALIAS))
    assert reply.code == 250, reply


def one(capture: Capture, server: Postroom) -> Captured:
    [got] = capture.wait(1, log=server.log_tail)
    return got


def test_forwarded_mail_gets_srs_and_an_arc_set_and_keeps_its_signature(
    postroom_factory: Callable[..., Postroom], dns_server: DnsServerFactory, milters: Peers
) -> None:
    world = forwarding_world(postroom_factory, dns_server, "dest.test")
    onward, back = milters.capture(), milters.capture()
    world.configure(routes(dest=onward.address, sender=back.address))
    world.server.start()
    resolver = world.resolver(milters)
    token = new_token("fwd")
    send_from_sender(world, token)

    forwarded = one(onward, world.server)
    assert forwarded.rcpt_tos == ["carol@dest.test"]
    srs_address = forwarded.mail_from
    assert SRS0.match(srs_address), srs_address
    data = forwarded.data
    assert token.encode() in data
    lookup = world.lookup()
    # SPF at the next hop: the SRS0 sender is ours, and we send from our MX's address.
    checked = asyncio.run(
        spf.verify_sender(lookup, "127.0.0.1", srs_address, HOSTNAME, receiver="mx.dest.test")
    )
    assert (checked.result, checked.domain) == ("pass", DOMAIN), checked

    # The ARC set: instance 1, no chain before it, sealed by example.test's active RSA key.
    fields = header_fields(data)
    names = [name for name, _ in fields]
    assert names[:3] == ["arc-seal", "arc-message-signature", "arc-authentication-results"]
    seal = tags(fields[0][1])
    assert (seal["i"], seal["cv"], seal["a"], seal["d"]) == ("1", "none", "rsa-sha256", DOMAIN)
    listed = world.server.run_cli("dkim", "list", DOMAIN).stdout.splitlines()
    [rsa] = [line.split("\t")[1] for line in listed if "\trsa\t" in line and "active" in line]
    assert seal["s"] == rsa
    aar = fields[2][1]
    assert aar.startswith(f"i=1; {HOSTNAME};"), aar
    for verdict in ("spf=pass", "dkim=pass", "dmarc=pass"):
        assert verdict in aar, aar
    validated = asyncio.run(arc.validate(data, lookup))
    assert (validated.result, validated.sealers) == ("pass", (DOMAIN,)), validated
    # ...and it breaks when the message is changed on the way.
    tampered = data.replace(b"Hello from the sender", b"Hello from the forger")
    assert asyncio.run(arc.validate(tampered, lookup)).result == "fail"

    # The original signature is intact, and we did not add one (From is not ours).
    signatures = dkim_signatures(data)
    assert [s["d"] for s in signatures] == [SENDER_DOMAIN], signatures
    assert dkimpy_verifies(data, 0, world.dnsfunc())
    assert opendkim_testmsg(data, resolver).returncode == 0

    # A bounce to the SRS0 address goes back to bob, from the null sender.
    bounce = (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.dest.test>\r\nTo: <{srs_address}>\r\n"
        f"Subject: Undelivered Mail Returned to Sender ({token})\r\n"
        "Date: Mon, 07 Dec 2026 10:30:00 +0000\r\nMessage-ID: <b1@mx.dest.test>\r\n"
        f"\r\ncarol@dest.test: mailbox full; your message {token} was not delivered.\r\n"
    ).encode()
    with open_session(world.server.smtp_port, helo="mx.dest.test") as wire:
        reply = send_message(wire, "", [srs_address], bounce)
        assert reply.code == 250, reply
        # A damaged SRS address (one character of its hash changed) is no address of ours.
        hash_start = srs_address.index("=") + 1
        damaged = (
            srs_address[:hash_start]
            + ("B" if srs_address[hash_start] != "B" else "C")
            + srs_address[hash_start + 1 :]
        )
        wire.cmd("MAIL FROM:<>", 250)
        refused = wire.cmd(f"RCPT TO:<{damaged}>")
        assert (refused.code, refused.enhanced) == (550, "5.1.1"), refused
    returned = one(back, world.server)
    assert (returned.mail_from, returned.rcpt_tos) == ("<>", [BOB])
    assert f"your message {token} was not delivered".encode() in returned.data
    wait_until(lambda: world.server.queue_list() == "", 30.0, "the queue to empty")
    assert len(back.messages()) == 1 and len(onward.messages()) == 1


def test_forwarded_mail_passes_every_check_at_a_postroom_next_hop(
    postroom_factory: Callable[..., Postroom], dns_server: DnsServerFactory
) -> None:
    world = forwarding_world(postroom_factory, dns_server, "dest.test")
    receiver = postroom_factory(start=False, name="receiver", services=("smtp",))
    receiver.domain, receiver.hostname = "dest.test", "mx.dest.test"
    receiver.extra = (
        f'[dns]\nnameservers = ["{world.nsd.nameserver}"]\n\n[verify]\nenabled = true\n'
        f'arc_trusted = ["{DOMAIN}"]\n'
    )
    receiver.write_config()
    receiver.add_user("carol@dest.test", "carol-secret")
    receiver.start()
    world.configure(f"[delivery]\nport = {receiver.smtp_port}\n")  # dest.test's MX, this port
    world.server.start()
    token = new_token("hop")
    send_from_sender(world, token)
    data, results = results_of(receiver, "carol@dest.test")
    assert token.encode() in data
    [return_path] = [v for n, v in header_fields(data) if n == "return-path"]
    assert SRS0.match(return_path.strip("<>")), return_path
    spf_result = re.search(r"spf=(\w+) smtp\.mailfrom=(\S+)", results)
    assert spf_result and spf_result[1] == "pass", results
    assert SRS0.match(spf_result[2].rstrip(";")), results
    assert re.search(rf"dkim=pass [^;]*header\.d={re.escape(SENDER_DOMAIN)}", results), results
    assert f"dmarc=pass header.from={SENDER_DOMAIN}" in results, results
    assert "arc=pass" in results, results
