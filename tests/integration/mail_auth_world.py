"""The pieces the end-to-end mail-authentication tests share (test_mail_auth_*.py): a postroom
for example.test whose DNS is a real nsd serving what `postroom dns records example.test`
printed, a remote sender domain (sender.test) with SPF, DMARC p=reject and a DKIM key, and the
checks of "signed by us" that a receiver makes: dkimpy over postroom's resolver and
opendkim-testmsg through a resolv.conf naming a port-53 copy of the same nsd.

Every name under .test gets an authoritative answer (a zone for "test" itself answers no such
name for the rest), as the real DNS does for names that do not exist: nsd refuses questions for
zones it does not serve, which postroom's checks rightly count as a temporary failure.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dkim

from postroom.dns.lookup import ResolverLookup
from postroom.mailauth import keys

from .conftest import DOMAIN, HOSTNAME, Postroom, wait_until
from .dns_server import DnsServer, DnsServerFactory
from .milters import Peers, ResolvConfDns, dkimpy_dnsfunc, opendkim_testmsg

SENDER_DOMAIN = "sender.test"
SENDER_SELECTORS = {"s1": keys.generate("rsa"), "s2": keys.generate("ed25519")}
OUR_ALGORITHMS = ["ed25519-sha256", "rsa-sha256"]
OVERSIGNED = ("from", "subject", "to", "date")
REPUBLISH_TIMEOUT = 15.0

SOA = (
    "$TTL 300\n"
    "{origin}. IN SOA ns.{origin}. hostmaster.{origin}. {serial} 3600 600 86400 120\n"
    "{origin}. IN NS ns.{origin}.\n"
    "ns.{origin}. IN A 127.0.0.1\n"
)


def zone(origin: str, body: str = "", serial: int = 1) -> str:
    return SOA.format(origin=origin, serial=serial) + body


def txt(text: str) -> str:
    """A TXT record's data, split into strings of at most 255 octets (RFC 1035 §3.3.14)."""
    return " ".join(f'"{part}"' for part in keys.txt_parts(text))


def our_zone(records: str, serial: int = 1) -> str:
    """example.test as its owner publishes it: what `dns records` printed, plus the address of
    the host name (a line the command can only print as a comment)."""
    return zone(DOMAIN, f"{HOSTNAME}. IN A 127.0.0.1\n" + records, serial)


def sender_zone() -> str:
    """sender.test: mail from loopback passes SPF, failures are to be refused, two DKIM keys."""
    lines = [
        '@ IN TXT "v=spf1 ip4:127.0.0.0/8 -all"',
        '_dmarc IN TXT "v=DMARC1; p=reject"',
        *(
            f"{selector}._domainkey IN TXT {txt(keys.record_text(pair.algorithm, pair.public))}"
            for selector, pair in SENDER_SELECTORS.items()
        ),
    ]
    return zone(SENDER_DOMAIN, "\n".join(lines) + "\n")


def remote_zone(origin: str) -> str:
    """A remote domain whose MX is a loopback host that may send from there (SPF a)."""
    return zone(
        origin,
        f"@ IN MX 10 mx.{origin}.\nmx IN A 127.0.0.1\n"
        f'mx IN TXT "v=spf1 a -all"\n@ IN TXT "v=spf1 mx -all"\n',
    )


@dataclass
class World:
    """example.test's postroom (not started yet when made), the nsd holding its records and
    the remote zones, and what talks to that nsd."""

    server: Postroom
    nsd: DnsServer
    zones: dict[str, str]
    resolvers: list[ResolvConfDns] = field(default_factory=list)

    def configure(self, extra: str, *, verify: bool = True) -> None:
        """The server's tables besides the defaults: [dns] is always this world's nsd."""
        tables = f'[dns]\nnameservers = ["{self.nsd.nameserver}"]\n\n'
        if verify:
            tables += "[verify]\nenabled = true\n\n"
        self.server.extra = tables + extra
        self.server.write_config()

    def resolver(self, peers: Peers) -> ResolvConfDns:
        """The nsd's zones on port 53 too, for the programs that read resolv.conf; reloaded
        with the first by `republish`."""
        resolver = peers.resolver(self.nsd)
        self.resolvers.append(resolver)
        return resolver

    def dnsfunc(self) -> Callable[..., bytes]:
        return dkimpy_dnsfunc(self.nsd.nameserver)

    def lookup(self) -> ResolverLookup:
        return ResolverLookup((self.nsd.nameserver,), timeout=5)

    def txt_records(self, name: str) -> tuple[str, ...]:
        return asyncio.run(self.lookup().query(name, "TXT")).records

    def republish(self, origin: str, text: str) -> None:
        """Replace a zone's file and have every nsd of this world load it (SIGHUP: NSD reads
        zone files whose mtime changed); wait until the new SOA serial is served."""
        path = self.nsd.directory / "zones" / f"{origin}.zone"
        path.write_text(text, encoding="utf-8")
        serial = re.search(r"IN SOA \S+ \S+ (\d+)", text)
        assert serial, "a republished zone needs a SOA with a serial"
        wanted = int(serial[1])
        later = time.time() + 2  # a later mtime than the loaded file, even within one second
        os.utime(path, (later, later))
        for proc in [self.nsd.proc, *(r.proc for r in self.resolvers)]:
            proc.send_signal(signal.SIGHUP)

        def served() -> bool:
            import dns.message
            import dns.query
            import dns.rdatatype

            query = dns.message.make_query(origin, dns.rdatatype.SOA)
            places = [(self.nsd.host, self.nsd.port), *((r.address, 53) for r in self.resolvers)]
            for host, port in places:
                answer = dns.query.udp(query, host, port=port, timeout=2)
                if not answer.answer or answer.answer[0][0].serial != wanted:
                    return False
            return True

        wait_until(served, REPUBLISH_TIMEOUT, f"nsd serving {origin} serial {wanted}")
        self.zones[origin] = text


def make_world(
    postroom_factory: Callable[..., Postroom],
    dns_server: DnsServerFactory,
    *,
    zones: Mapping[str, str] | None = None,
    hostname: str = HOSTNAME,
    name: str = "ours",
) -> World:
    """A postroom for example.test (not started) and an nsd serving its printed records, the
    sender.test zone, the "test" parent and `zones`."""
    server = postroom_factory(start=False, name=name)
    server.hostname = hostname
    server.write_config()
    records = server.run_cli("dns", "records", DOMAIN).stdout
    all_zones = {
        DOMAIN: our_zone(records),
        SENDER_DOMAIN: sender_zone(),
        "test": zone("test"),
        **(zones or {}),
    }
    nsd = dns_server(all_zones)
    return World(server, nsd, dict(all_zones))


# --- messages ----------------------------------------------------------------------------------


def eight_bit_message(token: str, sender: str, to: str) -> bytes:
    """A text message with an 8-bit UTF-8 body (needs BODY=8BITMIME), a dot-led line and
    trailing blanks: what the 7-bit downgrade and canonicalisation have to get right."""
    return (
        f"From: Alice <{sender}>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {token}\r\n"
        "Date: Mon, 07 Dec 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{token}@example.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        f"Grüße aus Köln, {token}.\r\n"
        ".a line that starts with a dot\r\n"
        "trailing blanks   \r\n"
        "Ünïcödé all the way down — ✓\r\n"
    ).encode()


def submit(server: Postroom, sender: str, to: str, content: bytes) -> None:
    """Submission (port 587, STARTTLS, AUTH as alice) of one message, 8-bit declared."""
    with server.submission() as client:
        refused = client.sendmail(sender, [to], content, mail_options=["BODY=8BITMIME"])
        assert refused == {}, refused


def routes(**entries: tuple[str, int]) -> str:
    """A [routes] table: routes(cap=(host, port)) sends mail for cap.test there."""
    lines = [f'"{domain.replace("_", "-")}.test" = "{h}:{p}"' for domain, (h, p) in entries.items()]
    return "[routes]\n" + "\n".join(lines) + "\n\n"


def sender_signed(token: str, to: str) -> bytes:
    """A message from bob@sender.test, DKIM-signed by sender.test (rsa, s1) as its MTA would."""
    content = (
        f"From: Bob <bob@{SENDER_DOMAIN}>\r\nTo: <{to}>\r\nSubject: {token}\r\n"
        f"Date: Mon, 07 Dec 2026 09:00:00 +0000\r\nMessage-ID: <{token}@{SENDER_DOMAIN}>\r\n"
        f"\r\nHello from the sender, {token}.\r\n"
    ).encode()
    signature: bytes = dkim.sign(
        content,
        b"s1",
        SENDER_DOMAIN.encode(),
        SENDER_SELECTORS["s1"].private,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return signature + content


# --- reading what arrived ----------------------------------------------------------------------


def header_fields(data: bytes) -> list[tuple[str, str]]:
    """(lowercased name, unfolded value) of every header field, in order."""
    head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    unfolded = re.sub(r"\n[ \t]", " ", head)
    out = []
    for line in unfolded.split("\n"):
        name, colon, value = line.partition(":")
        if colon:
            out.append((name.strip().lower(), value.strip()))
    return out


def tags(value: str) -> dict[str, str]:
    """A DKIM/ARC tag list (RFC 6376 §3.2), whitespace inside values removed."""
    out = {}
    for part in value.split(";"):
        name, equals, data = part.partition("=")
        if equals:
            out[name.strip()] = "".join(data.split())
    return out


def dkim_signatures(data: bytes) -> list[dict[str, str]]:
    return [tags(value) for name, value in header_fields(data) if name == "dkim-signature"]


def field_count(data: bytes, name: str) -> int:
    return sum(1 for field_name, _ in header_fields(data) if field_name == name)


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def altered(data: bytes) -> bytes:
    """One body character changed: every signature over the body must now fail."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert body, "no body to alter"
    index = next(i for i, c in enumerate(body) if chr(c).isalpha())
    flipped = bytes([body[index] ^ 0x20])
    return head + sep + body[:index] + flipped + body[index + 1 :]


def without_other_signatures(data: bytes, keep: int) -> bytes:
    """The message with only the `keep`-th DKIM-Signature field (the others are not signed
    by any signature, so dropping them changes nothing else): one verdict per signature for
    verifiers that report on the message as a whole."""
    lines = data.split(b"\r\n")
    out: list[bytes] = []
    index = -1
    dropping = False
    in_head = True
    for line in lines:
        if in_head and line == b"":
            in_head = False
        if in_head and line[:1] in (b" ", b"\t"):
            if not dropping:
                out.append(line)
            continue
        if in_head and line.lower().startswith(b"dkim-signature:"):
            index += 1
            dropping = index != keep
            if dropping:
                continue
        else:
            dropping = False
        out.append(line)
    return b"\r\n".join(out)


def dkimpy_verifies(data: bytes, index: int, dnsfunc: Callable[..., bytes]) -> bool:
    """dkimpy's verdict on the `index`-th DKIM-Signature (a body hash mismatch is an
    exception there)."""
    try:
        return bool(dkim.DKIM(data).verify(idx=index, dnsfunc=dnsfunc))
    except dkim.DKIMException:
        return False


def assert_signed_by_us(
    data: bytes, world: World, resolver: ResolvConfDns | None, domain: str = DOMAIN
) -> list[dict[str, str]]:
    """`data` carries an ed25519-sha256 and an rsa-sha256 DKIM-Signature by `domain`, relaxed/
    relaxed, over-signing From/Subject/To/Date; each verifies with dkimpy against what nsd
    serves, fails once the body is altered, and (with a resolver) each passes
    opendkim-testmsg. Returns our signatures' tags."""
    signatures = dkim_signatures(data)
    ours = [(i, s) for i, s in enumerate(signatures) if s.get("d", "").lower() == domain]
    assert sorted(s["a"] for _, s in ours) == OUR_ALGORITHMS, signatures
    dnsfunc = world.dnsfunc()
    for index, signature in ours:
        assert signature["c"] == "relaxed/relaxed", signature
        signed = [name.lower() for name in signature["h"].split(":")]
        for name in OVERSIGNED:
            present = field_count(data, name)
            assert present >= 1, f"the message has no {name}"
            assert signed.count(name) == present + 1, (name, signature["h"])
        for name in ("message-id", "mime-version", "content-type", "content-transfer-encoding"):
            assert signed.count(name) == field_count(data, name), (name, signature["h"])
        assert dkimpy_verifies(data, index, dnsfunc), (signature["a"], signature["s"])
        assert not dkimpy_verifies(altered(data), index, dnsfunc), signature["a"]
        if resolver is not None:
            alone = without_other_signatures(data, index)
            result = opendkim_testmsg(alone, resolver)
            assert result.returncode == 0, (signature["a"], result.stdout, result.stderr)
    if resolver is not None:
        result = opendkim_testmsg(data, resolver)
        assert result.returncode == 0, (result.stdout, result.stderr)
        bad = opendkim_testmsg(altered(data), resolver)
        assert bad.returncode != 0, "opendkim-testmsg accepted an altered message"
    return [s for _, s in ours]


def authentication_results(data: bytes, authserv_id: str) -> str:
    """Our Authentication-Results value (unfolded), which must be the first header field of
    the message as delivered, after the Return-Path and Received fields of delivery."""
    fields = [(n, v) for n, v in header_fields(data) if n not in ("return-path", "received")]
    assert fields, data[:300]
    name, value = fields[0]
    assert name == "authentication-results", fields[:3]
    assert value.split(";", 1)[0].strip() == authserv_id, value
    others = [v for n, v in fields[1:] if n == "authentication-results"]
    assert not any(v.split(";", 1)[0].strip() == authserv_id for v in others), others
    return value
