"""ARC validation and sealing (mailauth/arc.py): sets we seal validate hop after hop; changes
after a seal, missing keys and broken structures fail (the latter without DNS); a server
failure is marked temporary; oldest-pass follows RFC 8617 §5.2; garbage never raises."""

from __future__ import annotations

import asyncio

import dkim as dkimpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.dns.lookup import StaticLookup
from postroom.mailauth import arc
from postroom.mailauth.arc import ArcOutcome
from postroom.mailauth.dkim import PrefetchedTxt, header_fields
from postroom.mailauth.keys import SigningKey, generate, record_text

MESSAGE = (
    b"Authentication-Results: mx.forwarder.example; spf=pass smtp.mailfrom=alice@example.com\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: list@forwarder.example\r\n"
    b"Subject: minutes\r\n"
    b"Date: Mon, 7 Dec 2026 00:00:00 +0000\r\n"
    b"Message-ID: <2@example.com>\r\n"
    b"\r\n"
    b"The minutes are attached.\r\n"
)
VERDICT = b"spf=pass smtp.mailfrom=alice@example.com; dkim=pass header.d=example.com; dmarc=pass"
NOW = 1796600000


@pytest.fixture(scope="module")
def sealers() -> tuple[SigningKey, SigningKey, dict[tuple[str, str], list[str]]]:
    records: dict[tuple[str, str], list[str]] = {}
    keys = []
    for domain in ("forwarder.example", "list.example"):
        pair = generate("rsa")
        keys.append(SigningKey(domain, "arc1", "rsa", pair.private))
        records[(f"arc1._domainkey.{domain}", "TXT")] = [record_text("rsa", pair.public)]
    return keys[0], keys[1], records


def check(message: bytes, zone: StaticLookup) -> ArcOutcome:
    return asyncio.run(arc.validate(message, zone))


def first_hop(key: SigningKey, message: bytes = MESSAGE) -> bytes:
    return (
        arc.seal(
            message, key, authserv_id="mx.forwarder.example", results=VERDICT, chain="none", now=NOW
        )
        + message
    )


def test_a_first_seal_validates_and_carries_our_verdict(
    sealers: tuple[SigningKey, SigningKey, dict[tuple[str, str], list[str]]],
) -> None:
    forwarder, _, records = sealers
    sealed = first_hop(forwarder)
    names = [name for name, _value in header_fields(sealed)][:3]
    assert names == [b"arc-seal", b"arc-message-signature", b"arc-authentication-results"]
    aar = dict(header_fields(sealed))[b"arc-authentication-results"]
    assert aar == " i=1; mx.forwarder.example; " + VERDICT.decode() + "\r\n"
    outcome = check(sealed, StaticLookup(records))
    assert outcome == ArcOutcome("pass", 1, ("forwarder.example",), "chain verified", 0)


def test_the_authserv_id_at_the_head_of_results_is_not_repeated(
    sealers: tuple[SigningKey, SigningKey, dict[tuple[str, str], list[str]]],
) -> None:
    forwarder, _, records = sealers
    with_id = arc.seal(
        MESSAGE,
        forwarder,
        authserv_id="mx.forwarder.example",
        results=b"MX.forwarder.example;\r\n " + VERDICT,
        chain="none",
        now=NOW,
    )
    assert with_id == arc.seal(
        MESSAGE,
        forwarder,
        authserv_id="mx.forwarder.example",
        results=b" " + VERDICT + b"\r\n",
        chain="none",
        now=NOW,
    )
    assert check(with_id + MESSAGE, StaticLookup(records)).result == "pass"


def test_two_hops_pass_and_changes_after_sealing_fail(
    sealers: tuple[SigningKey, SigningKey, dict[tuple[str, str], list[str]]],
) -> None:
    forwarder, mailing_list, records = sealers
    zone = StaticLookup(records)
    once = first_hop(forwarder)
    assert check(once, zone).result == "pass"
    twice = (
        arc.seal(
            once,
            mailing_list,
            authserv_id="mx.list.example",
            results=b"arc=pass",
            chain="pass",
            now=NOW + 60,
        )
        + once
    )
    outcome = check(twice, zone)
    assert (outcome.result, outcome.instance, outcome.sealers, outcome.oldest_pass) == (
        "pass",
        2,
        ("forwarder.example", "list.example"),
        0,
    )
    # The newest AMS covers the body and Subject: a change after the last seal fails.
    assert check(twice.replace(b"attached", b"missing"), zone).result == "fail"
    assert check(twice.replace(b"Subject: minutes", b"Subject: invoice"), zone).result == "fail"
    # An unsigned field may change.
    unsigned = twice.replace(
        b"\r\nAuthentication-Results: mx.forwarder.example; spf=pass",
        b"\r\nAuthentication-Results: mx.forwarder.example; spf=fail",
    )
    assert unsigned != twice and check(unsigned, zone).result == "pass"
    # A seal covers the sets under it: changing the first AAR breaks the chain.
    assert (
        check(
            twice.replace(
                b"i=1; mx.forwarder.example; spf=pass", b"i=1; mx.forwarder.example; spf=none"
            ),
            zone,
        ).result
        == "fail"
    )


def test_oldest_pass_is_the_oldest_instance_whose_ams_still_validates(
    sealers: tuple[SigningKey, SigningKey, dict[tuple[str, str], list[str]]],
) -> None:
    forwarder, mailing_list, records = sealers
    zone = StaticLookup(records)
    once = first_hop(forwarder)
    # A mailing list validates the chain, then tags the Subject (breaking AMS 1), then seals.
    tagged = once.replace(b"Subject: minutes", b"Subject: [list] minutes")
    twice = (
        arc.seal(
            tagged,
            mailing_list,
            authserv_id="mx.list.example",
            results=b"arc=pass",
            chain="pass",
            now=NOW,
        )
        + tagged
    )
    outcome = check(twice, zone)
    assert (outcome.result, outcome.oldest_pass) == ("pass", 2)


def test_a_sealer_that_found_a_failing_chain_seals_only_its_own_set(
    sealers: tuple[SigningKey, SigningKey, dict[tuple[str, str], list[str]]],
) -> None:
    forwarder, mailing_list, records = sealers
    zone = StaticLookup(records)
    broken = first_hop(forwarder).replace(b"attached", b"missing")
    assert check(broken, zone).result == "fail"
    sealed = arc.seal(
        broken,
        mailing_list,
        authserv_id="mx.list.example",
        results=b"arc=fail",
        chain="fail",
        now=NOW,
    )
    assert b"cv=fail" in sealed
    # RFC 8617 §5.2 step 2: the chain is over; nothing more is checked, nothing more added.
    zone.asked.clear()
    outcome = check(sealed + broken, zone)
    assert (outcome.result, outcome.reason) == ("fail", "ARC-Seal i=2 says cv=fail")
    assert zone.asked == []
    assert (
        arc.seal(
            sealed + broken,
            forwarder,
            authserv_id="mx.forwarder.example",
            results=b"arc=fail",
            chain="fail",
        )
        == b""
    )


def test_a_header_section_dkimpy_refuses_fails_without_dns(
    sealers: tuple[SigningKey, SigningKey, dict[tuple[str, str], list[str]]],
) -> None:
    forwarder, _, records = sealers
    zone = StaticLookup(records)
    damaged = first_hop(forwarder).replace(b"To: list", b"no field here\r\nTo: list")
    outcome = check(damaged, zone)
    assert (outcome.result, outcome.reason) == ("fail", "the header section is malformed")
    assert outcome.sealers == ("forwarder.example",) and zone.asked == []


def test_no_chain_is_none() -> None:
    assert check(MESSAGE, StaticLookup({})) == ArcOutcome("none", 0, (), "no ARC sets", None)


def test_missing_keys_fail_and_server_failures_are_temporary(
    sealers: tuple[SigningKey, SigningKey, dict[tuple[str, str], list[str]]],
) -> None:
    forwarder, _, records = sealers
    sealed = first_hop(forwarder)
    missing = check(sealed, StaticLookup({}))
    assert (missing.result, missing.temporary) == ("fail", False)
    name = "arc1._domainkey.forwarder.example"
    failing = check(sealed, StaticLookup(records, failing=frozenset({name})))
    assert (failing.result, failing.temporary) == ("fail", True)
    revoked = check(sealed, StaticLookup({(name, "TXT"): ["v=DKIM1; k=rsa; p="]}))
    assert revoked.result == "fail"


def arc_set(instance: int, cv: str = "pass") -> bytes:
    return (
        b"ARC-Seal: i=%d; a=rsa-sha256; cv=%s; d=x.example; s=s; b=AAAA\r\n"
        b"ARC-Message-Signature: i=%d; a=rsa-sha256; d=x.example; s=s; h=from; bh=AAAA; b=AAAA\r\n"
        b"ARC-Authentication-Results: i=%d; x.example; none\r\n"
    ) % (instance, cv.encode(), instance, instance)


@pytest.mark.parametrize(
    ("sets", "reason"),
    [
        (
            b"".join(arc_set(i, "pass" if i > 1 else "none") for i in range(51, 0, -1)),
            "more than 50 ARC sets",
        ),
        (arc_set(2) + arc_set(1, "none") + arc_set(1, "none"), "ARC set 1 has two arc-seal"),
        (arc_set(3) + arc_set(1, "none"), "ARC set 2 is incomplete"),
        (arc_set(2, "none") + arc_set(1, "none"), "ARC-Seal i=2 has cv=none"),
        (arc_set(1, "pass"), "ARC-Seal i=1 has cv=pass"),
        (arc_set(2) + arc_set(1, "fail"), "ARC-Seal i=1 has cv=fail"),
        (arc_set(2, "fail") + arc_set(1, "none"), "ARC-Seal i=2 says cv=fail"),
        (b"ARC-Seal: a=rsa-sha256; cv=none\r\n", "arc-seal has no usable i= instance"),
        (
            b"ARC-Authentication-Results: x.example; none\r\n",
            "arc-authentication-results has no i= instance",
        ),
    ],
)
def test_broken_structures_fail_without_dns(sets: bytes, reason: str) -> None:
    zone = StaticLookup({})
    outcome = check(sets + MESSAGE, zone)
    assert (outcome.result, outcome.reason) == ("fail", reason)
    assert zone.asked == []


def test_dkimpy_only_ever_sees_our_dnsfunc(
    sealers: tuple[SigningKey, SigningKey, dict[tuple[str, str], list[str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forwarder, _, records = sealers
    seen: list[object] = []
    original = dkimpy.load_pk_from_dns

    def spy(name: bytes, dnsfunc: object, timeout: int = 5) -> object:
        seen.append(dnsfunc)
        return original(name, dnsfunc, timeout=timeout)

    monkeypatch.setattr(dkimpy, "load_pk_from_dns", spy)
    zone = StaticLookup(records)
    assert check(first_hop(forwarder), zone).result == "pass"
    assert zone.asked == [("arc1._domainkey.forwarder.example", "TXT")]
    assert len(seen) == 2 and all(isinstance(func, PrefetchedTxt) for func in seen)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"chain": "pass"}, "cv=pass does not fit ARC instance 1"),
        ({"authserv_id": "bad id"}, "not an authserv-id"),
        ({"authserv_id": ""}, "not an authserv-id"),
        ({"results": b"spf=pass\r\nBcc: injected@example.net"}, "bare CR or LF"),
        ({"headers": ["to", "subject"]}, "must sign From"),
    ],
)
def test_seal_refuses_what_would_make_a_bad_set(
    sealers: tuple[SigningKey, SigningKey, dict[tuple[str, str], list[str]]],
    options: dict[str, object],
    message: str,
) -> None:
    forwarder, _, _ = sealers
    arguments: dict[str, object] = {
        "authserv_id": "mx.forwarder.example",
        "results": VERDICT,
        "chain": "none",
    }
    arguments.update(options)
    with pytest.raises(ValueError, match=message):
        arc.seal(MESSAGE, forwarder, **arguments)  # type: ignore[arg-type]


def test_seal_wants_rsa_and_the_right_cv_for_an_existing_chain(
    sealers: tuple[SigningKey, SigningKey, dict[tuple[str, str], list[str]]],
) -> None:
    forwarder, mailing_list, _ = sealers
    ed = generate("ed25519")
    with pytest.raises(ValueError, match="rsa-sha256"):
        arc.seal(
            MESSAGE,
            SigningKey("x.example", "e", "ed25519", ed.private),
            authserv_id="x.example",
            results=VERDICT,
            chain="none",
        )
    with pytest.raises(ValueError, match="cv=none does not fit ARC instance 2"):
        arc.seal(
            first_hop(forwarder),
            mailing_list,
            authserv_id="mx.list.example",
            results=VERDICT,
            chain="none",
        )


def test_seal_async_runs_seal_on_a_thread(
    sealers: tuple[SigningKey, SigningKey, dict[tuple[str, str], list[str]]],
) -> None:
    forwarder, _, _ = sealers
    fields = asyncio.run(
        arc.seal_async(
            MESSAGE,
            forwarder,
            authserv_id="mx.forwarder.example",
            results=VERDICT,
            chain="none",
            now=NOW,
        )
    )
    assert fields + MESSAGE == first_hop(forwarder)


ARC_NAMES = st.sampled_from(["ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results"])
VALUES = st.one_of(
    st.lists(
        st.sampled_from(
            [
                "i=1",
                "i=2",
                "i=51",
                "i=0",
                "cv=none",
                "cv=pass",
                "cv=fail",
                "a=rsa-sha256",
                "d=x.example",
                "s=s",
                "b=AAAA",
                "bh=AAAA",
                "h=from",
                "x.example",
                "none",
                "i=",
                "=",
                "",
            ]
        ),
        max_size=8,
    ).map("; ".join),
    st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=120),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(ARC_NAMES, VALUES), min_size=1, max_size=8))
def test_garbage_arc_fields_never_raise(fields: list[tuple[str, str]]) -> None:
    header = b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in fields)
    outcome = check(header + MESSAGE, StaticLookup({}))
    assert outcome.result == "fail"
