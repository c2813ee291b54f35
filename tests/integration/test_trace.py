"""`postroom trace` end to end: a real server, a real DNS server (nsd) and a real peer (Postfix
with STARTTLS) that first answers 451, then accepts; the trace read back through the CLI.

What must show: how each message was received (TLS, login), a local delivery's mailbox, every
remote attempt with its MX host, address, TLS and reply, the next attempt after the 451, the
failure report sent for a 550 (its queue ID, itself traceable), and lookups by queue ID,
Message-ID and address; the inbound checks and their verdict on mail from outside; what a Sieve
script did; a query naming nothing is one line and exit status 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from . import dns_server as dns_server_module
from . import test_inbound_checks, test_outbound, test_sieve_delivery
from .conftest import ALICE, BOB, Postroom, wait_until
from .dns_server import DnsServer
from .postfix_instance import Postfix
from .wire import new_token, simple_message

dns = test_outbound.dns  # nsd serving remote.test: MX mx.remote.test → 127.0.0.1
dns_server = dns_server_module.dns_server
checked = test_inbound_checks.checked  # port 25 with [verify] on, DNS with SPF and DMARC

CAROL = "carol@remote.test"  # 451 at first, then accepted
NOBODY = "nobody@remote.test"  # always 550
# Postfix's access(5) actions, and the replies they make.
DEFER, REFUSE = "451 4.3.0 try again later", "550 5.1.1 no such user here"
DEFERRAL = "451 4.3.0 <carol@remote.test>: Recipient address rejected: try again later"
REFUSAL = "550 5.1.1 <nobody@remote.test>: Recipient address rejected: no such user here"


@pytest.fixture
def peer() -> Iterator[Postfix]:
    with Postfix(
        listeners={"plain": {}},
        main={
            "smtpd_recipient_restrictions": (
                "check_recipient_access {recipient_access}, permit_mynetworks, "
                "reject_unauth_destination"
            )
        },
        tables={"recipient_access": {CAROL: DEFER, NOBODY: REFUSE}},
        mailboxes=(CAROL,),
        tls=True,
    ) as postfix:
        yield postfix


def traces(server: Postroom, query: str) -> list[dict[str, Any]]:
    found = json.loads(server.run_cli("trace", query, "--json").stdout)
    assert isinstance(found, list)
    return found


def test_trace_shows_reception_local_delivery_remote_attempts_and_reports(
    postroom_factory: Callable[..., Postroom], dns: DnsServer, peer: Postfix
) -> None:
    server = postroom_factory(
        extra=(
            f'[dns]\nnameservers = ["{dns.nameserver}"]\n\n'
            f'[delivery]\nport = {peer.ports["plain"]}\n\n[queue]\nretry = ["1h"]\n'
        )
    )
    local_token, remote_token = new_token(), new_token()
    with server.submission() as client:
        client.sendmail(ALICE, [BOB], simple_message(local_token, ALICE, BOB))
        client.sendmail(ALICE, [CAROL, NOBODY], simple_message(remote_token, ALICE, CAROL))
    wait_until(lambda: "deferred" in server.queue_list(), 30, "carol to be deferred")
    peer.set_table("recipient_access", {NOBODY: REFUSE})  # carol is welcome now
    server.run_cli("queue", "retry", "--all")
    peer.wait_for_messages(CAROL, 1, remote_token.encode(), timeout=30)
    wait_until(lambda: CAROL not in server.queue_list(), 30, "carol's entry to leave the queue")

    # By Message-ID (with or without <>), then by its queue ID: the same one message.
    [remote] = traces(server, f"<{remote_token}@y.test>")
    assert traces(server, f"{remote_token}@Y.TEST") == [remote]
    assert traces(server, remote["queue_id"].lower()) == [remote]
    assert remote["message_id"] == f"<{remote_token}@y.test>"
    assert remote["sender"] == ALICE and remote["queued"] is False
    received = remote["received"]
    assert received["auth_user"] == ALICE and received["protocol"] == "ESMTPSA"
    assert received["client_addr"] == "127.0.0.1" and received["tls"].startswith("TLSv1.")

    carol, nobody = remote["recipients"]
    assert (carol["address"], carol["local"], carol["state"]) == (CAROL, False, "delivered")
    first, *_, last = carol["steps"]
    assert first["event"] == "deferred" and first["reply"] == DEFERRAL
    assert (first["mx"], first["ip"]) == ("mx.remote.test", "127.0.0.1")
    assert first["tls"].startswith("TLSv1.")  # Postfix offers STARTTLS: opportunistic TLS
    assert first["next_attempt"] >= first["time"] + 3000  # retry = ["1h"], ±10%
    assert last["event"] == "delivered" and last["reply"].startswith("250 2.0.0 Ok")
    assert last["tls"].startswith("TLSv1.") and last["next_attempt"] is None
    [refused] = nobody["steps"]
    assert (nobody["state"], refused["event"], refused["reply"]) == ("failed", "failed", REFUSAL)

    # The failure report about nobody: its own queue ID, itself traced (delivered to alice).
    [report] = remote["reports"]
    assert (report["kind"], report["to"]) == ("failure", ALICE)
    [bounce] = traces(server, report["queue_id"])
    assert bounce["sender"] == ""
    [to_alice] = bounce["recipients"]
    assert (to_alice["address"], to_alice["local"], to_alice["state"]) == (
        ALICE,
        True,
        "delivered",
    )

    # By address: a recipient finds its message; the sender finds all three, newest first.
    [local] = traces(server, BOB)
    [to_bob] = local["recipients"]
    [delivery] = to_bob["steps"]
    assert delivery["event"] == "delivered" and "delivered to INBOX" in delivery["reply"]
    by_alice = [t["queue_id"] for t in traces(server, ALICE)]
    assert by_alice == sorted({bounce["queue_id"], remote["queue_id"], local["queue_id"]})[::-1]

    # The terminal timeline says the same in words.
    text = server.run_cli("trace", remote["queue_id"]).stdout
    assert f"<{CAROL}> deferred mx=mx.remote.test [127.0.0.1] tls=TLSv1." in text
    assert DEFERRAL in text and "(next attempt " in text
    assert f"failure report to <{ALICE}> sent as {report['queue_id']}" in text
    assert f"login: {ALICE}" in text


def test_trace_of_nothing_is_one_line_and_exit_1(postroom: Postroom) -> None:
    for query in ("nobody@nowhere.test", "0000000000000000Z", "not-a-query"):
        result = postroom.run_cli("trace", query, check=False)
        assert result.returncode == 1, result
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1 and "no message found" in result.stderr


def test_trace_shows_the_inbound_checks_and_their_verdict(checked: Postroom) -> None:
    token = new_token()
    sender = "eve@quarantine.test"  # SPF fails, DMARC fails with p=quarantine: Junk
    code, text = test_inbound_checks.send(
        checked, sender, test_inbound_checks.message(sender, token)
    )
    assert code == 250, text
    [found] = traces(checked, f"<{token}@checks.test>")
    received = found["received"]
    assert "spf=fail" in received["checks"] and "dmarc=fail" in received["checks"]
    assert received["verdict"].startswith("junk (") and received["junk"] is True
    assert (received["auth_user"], received["tls"], received["protocol"]) == ("", "", "ESMTP")
    [rcpt] = found["recipients"]
    [step] = rcpt["steps"]
    assert rcpt["address"] == ALICE and "delivered to Junk" in step["reply"]
    text = checked.run_cli("trace", found["queue_id"]).stdout
    assert "login: none" in text and "tls: none" in text and "verdict: junk (" in text


def test_trace_shows_what_a_sieve_script_did(postroom: Postroom) -> None:
    """The script runs while the message is accepted, before its history is written: what it
    sent is in the trace all the same."""
    test_sieve_delivery.activate(
        postroom,
        ALICE,
        f'require ["copy", "fileinto"];\nredirect :copy "{BOB}";\nfileinto "Archive";\n',
    )
    token = new_token()
    with postroom.smtp() as client:
        client.sendmail("ann@remote.test", [ALICE], simple_message(token, "ann@remote.test", ALICE))
    [found] = traces(postroom, f"<{token}@y.test>")
    [alice] = found["recipients"]
    redirect, filed = alice["steps"]
    assert redirect["event"] == "sieve"
    assert redirect["reply"].startswith(f"redirected to <{BOB}> sent as ")
    assert filed["event"] == "delivered" and "delivered to Archive" in filed["reply"]
    [forwarded] = traces(postroom, redirect["reply"].rsplit(" ", 1)[1])
    [bob] = forwarded["recipients"]
    assert (bob["address"], bob["state"]) == (BOB, "delivered")
