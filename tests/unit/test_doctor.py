"""The doctor's judgements on zone data (`StaticLookup`) and local files: DKIM records that
are or are not the stored key's, MX, DMARC found at the domain or inherited, block-list
answers, the certificate's names and dates, the queue's health, and time bounds: each
failure with the record or command that fixes it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from postroom.config import Config, load_config
from postroom.dns.lookup import Answer, RecordType, StaticLookup
from postroom.mailauth.keys import generate, public_of, record_text
from postroom.services import doctor_local
from postroom.services.dns_records import dkim_line
from postroom.services.doctor import Doctor, StoreFacts
from postroom.services.doctor_report import Check
from postroom.storage.records import DkimKey, QueuedRecipientView, QueueEntry

DOMAIN = "example.test"
HOST = "mx.example.test"
NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC).timestamp()
DAY = 86400.0


def config(tmp_path: Path, extra: str = "") -> Config:
    path = tmp_path / "postroom.toml"
    path.write_text(
        f'hostname = "{HOST}"\ndata_dir = "{tmp_path / "data"}"\ndomains = ["{DOMAIN}"]\n'
        '[listen]\nsmtp = "127.0.0.1:1"\n' + extra,
        encoding="utf-8",
    )
    return load_config(path)


async def no_policy(domain: str) -> bytes:
    raise AssertionError("no policy is fetched without an _mta-sts record")


def doctor(
    tmp_path: Path,
    zone: Mapping[tuple[str, str], Sequence[str]],
    keys: Sequence[DkimKey] = (),
    queue: Sequence[QueueEntry] = (),
    failing: frozenset[str] = frozenset(),
) -> Doctor:
    return Doctor(
        config(tmp_path),
        StaticLookup(zone, failing=failing),
        StoreFacts({DOMAIN: list(keys)}, list(queue)),
        [DOMAIN],
        no_policy,
        now=NOW,
    )


def run(job: Awaitable[list[Check]]) -> list[Check]:
    return asyncio.run(job)  # type: ignore[arg-type]


def key(algorithm: str = "ed25519", state: str = "active", selector: str = "s1") -> DkimKey:
    pair = generate("rsa" if algorithm == "rsa" else "ed25519")
    return DkimKey(DOMAIN, selector, algorithm, pair.private, pair.public, NOW, state, NOW)  # type: ignore[arg-type]


def test_public_of_gives_the_public_half_of_each_kind() -> None:
    for algorithm in ("ed25519", "rsa"):
        pair = generate(algorithm)  # type: ignore[arg-type]
        assert public_of(algorithm, pair.private) == pair.public  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        public_of("rsa", b"not a key")


def test_dkim_records(tmp_path: Path) -> None:
    ours, announced, retired = (
        key(),
        key("rsa", "announced", "s2"),
        key(state="retired", selector="s3"),
    )
    other = generate("ed25519")
    zone = {
        (f"s1._domainkey.{DOMAIN}", "TXT"): [record_text("ed25519", ours.public)],
        (f"s3._domainkey.{DOMAIN}", "TXT"): [record_text("ed25519", other.public)],
    }
    keys = [ours, announced, retired]
    checks = {c.subject: c for c in run(doctor(tmp_path, zone, keys).dkim(DOMAIN))}
    assert checks[f"s1._domainkey.{DOMAIN}"].status == "ok"
    # An announced key's record missing: a warning with the line to publish.
    missing = checks[f"s2._domainkey.{DOMAIN}"]
    assert missing.status == "warn" and missing.fix == f"publish {dkim_line(announced)}"
    wrong = checks[f"s3._domainkey.{DOMAIN}"]
    assert wrong.status == "warn" and "is not the stored one" in wrong.detail
    assert wrong.fix == f"replace it with {dkim_line(retired)}"

    # The same for an active key is a failure; so is a revoked record (empty p=).
    zone = {(f"s1._domainkey.{DOMAIN}", "TXT"): [record_text("ed25519", other.public)]}
    (check,) = run(doctor(tmp_path, zone, [ours]).dkim(DOMAIN))
    assert check.status == "fail" and check.fix == f"replace it with {dkim_line(ours)}"
    zone = {(f"s1._domainkey.{DOMAIN}", "TXT"): ["v=DKIM1; k=ed25519; p="]}
    (check,) = run(doctor(tmp_path, zone, [ours]).dkim(DOMAIN))
    assert check.status == "fail" and "revoked" in check.detail
    # Two records at the name, one of them ours: verifiers may take the other.
    zone = {
        (f"s1._domainkey.{DOMAIN}", "TXT"): [
            record_text("ed25519", ours.public),
            record_text("ed25519", other.public),
        ]
    }
    (check,) = run(doctor(tmp_path, zone, [ours]).dkim(DOMAIN))
    assert check.status == "warn" and "2 TXT records" in check.detail
    # Spacing inside p= (folded base64) is no difference.
    spaced = ours.public[:10] + " " + ours.public[10:]
    zone = {(f"s1._domainkey.{DOMAIN}", "TXT"): [f"v=DKIM1; k=ed25519; p={spaced}"]}
    (check,) = run(doctor(tmp_path, zone, [ours]).dkim(DOMAIN))
    assert check.status == "ok"


def test_a_stored_pair_that_does_not_belong_together_fails(tmp_path: Path) -> None:
    ours = key()
    broken = DkimKey(
        DOMAIN, "s1", "ed25519", ours.private, generate("ed25519").public, NOW, "active", NOW
    )
    zone = {(f"s1._domainkey.{DOMAIN}", "TXT"): [record_text("ed25519", broken.public)]}
    (check,) = run(doctor(tmp_path, zone, [broken]).dkim(DOMAIN))
    assert check.status == "fail" and "postroom dkim rotate example.test --now" in check.fix
    (check,) = run(doctor(tmp_path, {}, []).dkim(DOMAIN))
    assert check.status == "fail" and f"postroom dns records {DOMAIN}" in check.fix


def test_mx(tmp_path: Path) -> None:
    def mx(*records: str) -> Check:
        zone = {(DOMAIN, "MX"): list(records), (DOMAIN, "TXT"): []}
        (check,) = run(doctor(tmp_path, zone).mx(DOMAIN))
        return check

    assert mx("10 mx.example.test", "20 backup.example.net").status == "ok"
    assert mx("0 .").status == "fail" and "null MX" in mx("0 .").detail
    assert mx().status == "fail" and "no MX record" in mx().detail
    (gone,) = run(doctor(tmp_path, {}).mx(DOMAIN))
    assert gone.status == "fail" and "does not exist" in gone.detail
    assert gone.fix == f"publish {DOMAIN}. 3600 IN MX 10 {HOST}."


def test_dmarc(tmp_path: Path) -> None:
    # A subdomain without its own record is covered by its organisational domain's.
    sub = "lists.example.test"
    zone = {
        (f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=quarantine; sp=reject"],
        (sub, "A"): ["192.0.2.1"],
    }
    (check,) = run(doctor(tmp_path, zone).dmarc(sub))
    assert check.status == "ok" and "the one of example.test applies (sp=reject)" in check.detail
    zone = {(f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=none", "v=DMARC1; p=reject"]}
    (check,) = run(doctor(tmp_path, zone).dmarc(DOMAIN))
    assert check.status == "fail" and "2 DMARC records" in check.detail
    zone = {(f"_dmarc.{DOMAIN}", "TXT"): ["v=DMARC1; p=bogus"]}
    (check,) = run(doctor(tmp_path, zone).dmarc(DOMAIN))
    assert check.status == "fail"
    assert check.fix == (
        f'publish _dmarc.{DOMAIN}. 3600 IN TXT "v=DMARC1; p=reject; '
        f'rua=mailto:dmarc-reports@{DOMAIN}"'
    )


def test_block_list_answers(tmp_path: Path) -> None:
    name = "7.2.0.192.zen.spamhaus.org"
    cases = {
        "127.0.0.2": "fail",
        "127.255.255.254": "warn",  # Spamhaus refusing a public resolver: not a listing
        "10.0.0.1": "warn",  # outside 127/8: a broken list
    }
    for answer, status in cases.items():
        zone = {(name, "A"): [answer]}
        (check,) = run(doctor(tmp_path, zone).dnsbl("192.0.2.7", "zen.spamhaus.org", "u"))
        assert check.status == status, (answer, check)
    (check,) = run(doctor(tmp_path, {}).dnsbl("192.0.2.7", "zen.spamhaus.org", "u"))
    assert check.status == "ok"
    failing = frozenset({name})
    (check,) = run(
        doctor(tmp_path, {}, failing=failing).dnsbl("192.0.2.7", "zen.spamhaus.org", "u")
    )
    assert check.status == "warn" and "did not answer" in check.detail


def test_spf_that_cannot_be_evaluated_is_a_warning(tmp_path: Path) -> None:
    zone = {(DOMAIN, "TXT"): ["v=spf1 include:broken.example -all"]}
    checks = run(
        doctor(tmp_path, zone, failing=frozenset({"broken.example"})).spf(DOMAIN, ["192.0.2.7"])
    )
    assert [c.status for c in checks] == ["warn"] and "temperror" in checks[0].detail
    zone = {(DOMAIN, "TXT"): ["v=spf1 -all", "v=spf1 +all"]}
    (check,) = run(doctor(tmp_path, zone).spf(DOMAIN, ["192.0.2.7"]))
    assert check.status == "fail" and "2 SPF records" in check.detail


class _Silent:
    """A resolver that never answers (a fake for the time bound)."""

    async def query(self, name: str, rtype: RecordType) -> Answer:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_every_check_is_bounded_in_time(tmp_path: Path) -> None:
    checker = Doctor(
        config(tmp_path),
        _Silent(),
        StoreFacts({DOMAIN: [key()]}, []),
        [DOMAIN],
        no_policy,
        now=NOW,
        check_limit=0.3,
    )
    started = time.monotonic()
    checks = asyncio.run(checker.run())
    assert time.monotonic() - started < 5
    late = [c for c in checks if "no result within 0.3 s" in c.detail]
    assert {c.check for c in late} >= {"addresses", "mx", "spf", "dmarc", "tls-rpt", "mta-sts"}
    assert all(c.status == "warn" for c in late)


# --- certificate -----------------------------------------------------------------------------


def write_pair(
    tmp_path: Path, names: list[str], *, days: float, self_signed: bool = False
) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    issuer_key = key if self_signed else ec.generate_private_key(ec.SECP256R1())
    issuer = subject if self_signed else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")])
    now = datetime.datetime.fromtimestamp(NOW, datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {"cert": str(cert_path), "key": str(key_path)}


def certificate(tmp_path: Path, pair: dict[str, str]) -> Check:
    extra = f'[tls]\ncert = "{pair["cert"]}"\nkey = "{pair["key"]}"\n'
    (check,) = asyncio.run(doctor_local.certificate(config(tmp_path, extra), NOW))
    return check


def test_certificate(tmp_path: Path) -> None:
    assert certificate(tmp_path, write_pair(tmp_path, [HOST], days=90)).status == "ok"
    wildcard = certificate(tmp_path, write_pair(tmp_path, ["*.example.test"], days=90))
    assert wildcard.status == "ok"
    soon = certificate(tmp_path, write_pair(tmp_path, [HOST], days=10))
    assert soon.status == "warn" and "expires in 10 days" in soon.detail
    expired = certificate(tmp_path, write_pair(tmp_path, [HOST], days=-1))
    assert expired.status == "fail" and "expired" in expired.detail
    other = certificate(tmp_path, write_pair(tmp_path, ["mail.example.net"], days=90))
    assert other.status == "fail" and "names mail.example.net, not mx.example.test" in other.detail
    deeper = certificate(tmp_path, write_pair(tmp_path, ["*.test"], days=90))
    assert deeper.status == "fail"  # RFC 6125: the wildcard is one label
    own = certificate(tmp_path, write_pair(tmp_path, [HOST], days=90, self_signed=True))
    assert own.status == "warn" and "self-signed" in own.detail
    pair = write_pair(tmp_path, [HOST], days=90)
    (tmp_path / "other").mkdir()
    stranger = write_pair(tmp_path / "other", [HOST], days=90)
    mixed = certificate(tmp_path, {"cert": pair["cert"], "key": stranger["key"]})
    assert mixed.status == "fail" and "does not belong" in mixed.detail
    (missing,) = asyncio.run(doctor_local.certificate(config(tmp_path), NOW))
    assert missing.status == "fail" and "postroom serve makes it" in missing.detail


def test_an_acme_pair_must_name_every_wanted_host(tmp_path: Path) -> None:
    """With the ACME pair in use the fixes point at `postroom acme`, and a certificate that
    lacks a wanted name (the MTA-STS host) is a warning; no listener: the files are read."""
    pair = write_pair(tmp_path, [HOST], days=90)
    wanted = (HOST, "mta-sts.example.test")
    source = doctor_local.CertificateSource.of(
        config(tmp_path), (Path(pair["cert"]), Path(pair["key"])), wanted
    )
    source = dataclasses.replace(source, listener=None)
    assert source.acme and source.names == wanted
    (check,) = asyncio.run(doctor_local.certificate(config(tmp_path), NOW, source))
    assert check.status == "warn" and check.detail.endswith("but not for mta-sts.example.test")
    assert "postroom acme renew --force" in check.fix
    whole = write_pair(tmp_path, list(wanted), days=90)
    source = dataclasses.replace(source, cert_path=Path(whole["cert"]), key_path=Path(whole["key"]))
    (check,) = asyncio.run(doctor_local.certificate(config(tmp_path), NOW, source))
    assert check.status == "ok" and check.detail.endswith("(ACME, 1 in the chain)")


def test_a_ca_issued_chain_is_read_whole(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert(HOST)
    cert, key_path = tmp_path / "chain.pem", tmp_path / "leaf.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_path))
    check = certificate(tmp_path, {"cert": str(cert), "key": str(key_path)})
    assert check.status == "ok" and "until 3000-01-01" in check.detail


# --- queue -----------------------------------------------------------------------------------


def entry(id: str, age_days: float, state: str, held: bool = False) -> QueueEntry:
    rcpt = QueuedRecipientView("bob@example.net", state, 3, NOW + 600, "451 4.7.1 try later")
    return QueueEntry(id, NOW - age_days * DAY, 100, "alice@example.test", held, (rcpt,))


def test_queue_health() -> None:
    def judge(entries: list[QueueEntry]) -> Check:
        (check,) = asyncio.run(doctor_local.queue(entries, NOW))
        return check

    fresh = judge([entry("A1", 0.5, "deferred"), entry("A2", 0.1, "queued")])
    assert fresh.status == "ok" and "2 messages queued for 2 recipients" in fresh.detail
    old = judge(
        [entry("A1", 0.5, "deferred"), entry("OLD", 3, "deferred"), entry("B", 2, "deferred")]
    )
    assert old.status == "warn"
    assert "2 recipients deferred for over a day (oldest OLD" in old.detail
    assert "451 4.7.1 try later" in old.detail and "queue show ID" in old.fix
    held = judge([entry("H1", 0.1, "queued", held=True)])
    assert held.status == "warn" and "1 held (H1)" in held.detail


def test_disk(tmp_path: Path) -> None:
    (check,) = asyncio.run(doctor_local.disk(tmp_path / "not" / "yet"))
    assert check.status in ("ok", "warn", "fail") and f"at {tmp_path}" in check.detail
