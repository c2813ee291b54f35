"""The mail-authentication peers themselves (tests/integration/milters.py), not postroom:
Postfix with opendkim signing hands a Capture mail whose DKIM-Signature dkimpy (CLI and
library over postroom's resolver) and opendkim-testmsg accept, and reject once altered; Postfix
with opendkim verifying and opendmarc in front refuses a message failing DMARC under p=reject
and lets through the ones passing by aligned SPF or by an aligned DKIM signature.

All DNS answers come from a real nsd holding the zones below."""

from __future__ import annotations

import pwd
import smtplib
from email.utils import formatdate
from pathlib import Path

import dkim
import pytest

from postroom.mailauth import keys

from . import dns_server as dns_server_module
from . import milters as milters_module
from .dns_server import DnsServer, DnsServerFactory
from .milters import Peers, dkimpy_dnsfunc, dkimverify_cli, opendkim_testmsg
from .postfix_instance import SERVER_NAME

dns_server = dns_server_module.dns_server
milters = milters_module.milters

SENDER = "sender.example"
ELSEWHERE = "elsewhere.example"
LOCAL = "user@local.test"  # the Postfix Maildir of the DMARC tests
REMOTE = "someone@remote.example"  # relayed to the Capture

SOA = """$TTL 300
@       IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300
@       IN NS  ns.{origin}.
ns      IN A   127.0.0.1
"""


def txt(text: str) -> str:
    return " ".join(f'"{part}"' for part in keys.txt_parts(text))


def sender_zone(pairs: dict[str, keys.KeyPair]) -> str:
    """sender.example: SPF for loopback, DMARC p=reject, one DKIM key per selector."""
    lines = [
        SOA.format(origin=SENDER),
        '@       IN TXT "v=spf1 ip4:127.0.0.0/8 -all"',
        '_dmarc  IN TXT "v=DMARC1; p=reject"',
    ]
    for selector, pair in pairs.items():
        lines.append(
            f"{selector}._domainkey IN TXT {txt(keys.record_text(pair.algorithm, pair.public))}"
        )
    return "\n".join(lines) + "\n"


# SPF passes for loopback here too, but the domain is not the From domain: no alignment.
ELSEWHERE_ZONE = SOA.format(origin=ELSEWHERE) + '@ IN TXT "v=spf1 ip4:127.0.0.0/8 -all"\n'


@pytest.fixture(scope="module")
def key_pairs() -> dict[str, keys.KeyPair]:
    return {"rsa2048": keys.generate("rsa"), "ed": keys.generate("ed25519")}


@pytest.fixture
def dns(dns_server: DnsServerFactory, key_pairs: dict[str, keys.KeyPair]) -> DnsServer:
    return dns_server({SENDER: sender_zone(key_pairs), ELSEWHERE: ELSEWHERE_ZONE})


def message(subject: str, from_domain: str = SENDER, to: str = REMOTE) -> bytes:
    return (
        f"From: Alice <alice@{from_domain}>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {formatdate()}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@{from_domain}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "Hello,\r\n\r\nthis line has  two spaces and trailing blanks   \r\n.leading dot\r\n"
    ).encode()


def altered(data: bytes) -> bytes:
    """The same message with one body word changed: every signature over it must fail."""
    assert b"Hello," in data
    return data.replace(b"Hello,", b"Jello,", 1)


def send(port: int, mail_from: str, rcpt: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.sender.example", timeout=60) as c:
        c.sendmail(mail_from, [rcpt], data)


# --- signing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("selector", ["rsa2048", "ed"])
def test_postfix_opendkim_signature_verifies_independently(
    dns: DnsServer, milters: Peers, key_pairs: dict[str, keys.KeyPair], selector: str
) -> None:
    pair = key_pairs[selector]
    signer = milters.signer(SENDER, selector, pair.private, pair.algorithm)
    capture = milters.capture()
    postfix = milters.postfix([signer], relay_to=capture.address)
    send(postfix.ports["smtp"], f"alice@{SENDER}", REMOTE, message(f"signed {selector}"))

    got = capture.wait(1, log=postfix.log_tail)[0]
    assert got.rcpt_tos == [REMOTE]
    data = got.data
    algorithm = milters_module.SIGNATURE_ALGORITHM[pair.algorithm]
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"DKIM-Signature:" in head, head.decode(errors="replace")
    assert f"a={algorithm}".encode() in head and f"s={selector}".encode() in head

    # dkimpy as a library, its DNS through postroom's resolver to the test's nsd.
    dnsfunc = dkimpy_dnsfunc(dns.nameserver)
    assert dkim.verify(data, dnsfunc=dnsfunc)
    assert not dkim.verify(altered(data), dnsfunc=dnsfunc)

    resolver = milters.resolver(dns)
    # dkimpy's command-line verifier (its dnspython reads our resolv.conf).
    ok = dkimverify_cli(data, resolver)
    assert ok.returncode == 0 and "signature ok" in ok.stdout, ok
    bad = dkimverify_cli(altered(data), resolver)
    # (a body hash mismatch ends dkimverify with dkimpy's exception, exit status 1)
    assert bad.returncode == 1 and "signature ok" not in bad.stdout, bad
    # opendkim-testmsg: libopendkim, silent and 0 when the signature verifies.
    ok_o = opendkim_testmsg(data, resolver)
    assert ok_o.returncode == 0, ok_o
    bad_o = opendkim_testmsg(altered(data), resolver)
    assert bad_o.returncode != 0 and "Bad signature" in bad_o.stderr, bad_o


def test_signer_leaves_foreign_domains_unsigned(
    dns: DnsServer, milters: Peers, key_pairs: dict[str, keys.KeyPair]
) -> None:
    pair = key_pairs["rsa2048"]
    signer = milters.signer(SENDER, "rsa2048", pair.private, "rsa")
    capture = milters.capture()
    postfix = milters.postfix([signer], relay_to=capture.address)
    send(postfix.ports["smtp"], f"bob@{ELSEWHERE}", REMOTE, message("foreign", ELSEWHERE))
    data = capture.wait(1, log=postfix.log_tail)[0].data
    assert b"DKIM-Signature:" not in data.split(b"\r\n\r\n", 1)[0]


# --- verifying: opendkim + opendmarc in front of Postfix ----------------------------------------


def presigned(pair: keys.KeyPair, selector: str, data: bytes) -> bytes:
    """`data` signed by sender.example with dkimpy (relaxed/relaxed), as a remote MTA would."""
    signature = dkim.sign(
        data,
        selector.encode(),
        SENDER.encode(),
        pair.private,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=milters_module.SIGNATURE_ALGORITHM[pair.algorithm].encode(),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return signature + data


def authentication_results(data: bytes) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").replace("\r\n", "\n")
    fields = []
    for block in head.replace("\n ", " ").replace("\n\t", " ").split("\n"):
        if block.lower().startswith("authentication-results:"):
            fields.append(block)
    return "\n".join(fields)


def test_opendmarc_rejects_dmarc_failure_and_passes_aligned_mail(
    dns: DnsServer, milters: Peers, key_pairs: dict[str, keys.KeyPair]
) -> None:
    verifier = milters.verifier(dns)
    resolver = milters.resolver(dns)
    dmarc = milters.dmarc(resolver)
    postfix = milters.postfix([verifier, dmarc], mailboxes=[LOCAL])
    port = postfix.ports["smtp"]

    # From: sender.example, unsigned, envelope from elsewhere.example (SPF pass, not aligned):
    # DMARC fails and sender.example says p=reject.
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(port, f"bob@{ELSEWHERE}", LOCAL, message("forged", to=LOCAL))
    assert refused.value.smtp_code == 550, refused.value
    reason = refused.value.smtp_error
    assert SENDER in (reason.decode() if isinstance(reason, bytes) else reason), reason

    # Aligned SPF (envelope from sender.example, sent from loopback): passes.
    send(port, f"alice@{SENDER}", LOCAL, message("aligned spf", to=LOCAL))
    # Aligned DKIM (ed25519 and rsa signatures by sender.example), unaligned envelope: passes.
    for selector in ("ed", "rsa2048"):
        signed = presigned(key_pairs[selector], selector, message(f"dkim {selector}", to=LOCAL))
        send(port, f"bob@{ELSEWHERE}", LOCAL, signed)

    delivered = postfix.wait_for_messages(LOCAL, 3)
    assert len(delivered) == 3, delivered
    by_subject = {
        next(line for line in m.split(b"\n") if line.startswith(b"Subject:")): m.replace(
            b"\n", b"\r\n"
        )
        for m in delivered
    }
    spf = authentication_results(by_subject[b"Subject: aligned spf"])
    assert f"{SERVER_NAME}; dmarc=pass" in spf and f"header.from={SENDER}" in spf, spf
    for selector in ("ed", "rsa2048"):
        results = authentication_results(by_subject[f"Subject: dkim {selector}".encode()])
        assert "dkim=pass" in results and f"header.s={selector}" in results, results
        assert "dmarc=pass" in results, results
    assert b"Subject: forged" not in b"".join(delivered)
    assert "milter-reject" in postfix.log()


def test_opendkim_verifier_can_reject_bad_signatures(
    dns: DnsServer, milters: Peers, key_pairs: dict[str, keys.KeyPair]
) -> None:
    verifier = milters.verifier(dns, on_bad_signature="reject")
    postfix = milters.postfix([verifier], mailboxes=[LOCAL])
    port = postfix.ports["smtp"]
    good = presigned(key_pairs["rsa2048"], "rsa2048", message("good", to=LOCAL))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(port, f"alice@{SENDER}", LOCAL, altered(good))
    assert refused.value.smtp_code == 550, refused.value
    send(port, f"alice@{SENDER}", LOCAL, good)
    [delivered] = postfix.wait_for_messages(LOCAL, 1)
    assert b"dkim=pass" in delivered and b"Subject: good" in delivered


def test_two_chained_signers_and_unprivileged_milters(
    dns: DnsServer, milters: Peers, key_pairs: dict[str, keys.KeyPair]
) -> None:
    """Two opendkim signers in a row give two signatures (ed25519 and rsa, as postroom signs)
    that both verify; every milter runs as its package's user, not root."""
    signers = [
        milters.signer(SENDER, selector, key_pairs[selector].private, key_pairs[selector].algorithm)
        for selector in ("ed", "rsa2048")
    ]
    capture = milters.capture()
    postfix = milters.postfix(signers, relay_to=capture.address)
    send(postfix.ports["smtp"], f"alice@{SENDER}", REMOTE, message("two signatures"))
    data = capture.wait(1, log=postfix.log_tail)[0].data
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"DKIM-Signature:") == 2, head.decode(errors="replace")
    resolver = milters.resolver(dns)
    for index in (0, 1):
        result = dkimverify_cli(data, resolver, index=index)
        assert result.returncode == 0 and "signature ok" in result.stdout, (index, result)
    assert opendkim_testmsg(data, resolver).returncode == 0
    dmarc = milters.dmarc(resolver)
    for milter in [*signers, dmarc]:
        uid = int(
            next(
                line.split()[1]
                for line in (Path("/proc") / str(milter.proc.pid) / "status")
                .read_text()
                .split("\n")
                if line.startswith("Uid:")
            )
        )
        expected = milters_module.milter_user("opendmarc" if milter is dmarc else "opendkim")
        assert expected is not None and uid == pwd.getpwnam(expected).pw_uid != 0, milter.name
