"""DMARC (mailauth/dmarc.py) as DMARCbis defines it: the record grammar and its fallbacks, the
DNS Tree Walk (the draft's own examples), alignment, the policy a failing message gets, and the
Author Domain of a header section."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import pytest

from postroom.dns.lookup import StaticLookup
from postroom.dns.resolver import DnsTemporaryError
from postroom.mailauth.dmarc import (
    DmarcOutcome,
    DmarcRecord,
    DmarcRecordError,
    FromError,
    Policy,
    discover,
    evaluate,
    from_domains,
    is_dmarc_record,
    mailto_addresses,
    organizational_domain,
    parse_record,
    report_destinations,
)

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def zone(
    txt: dict[str, str | list[str]] | None = None,
    *,
    hosts: Iterable[str] = (),
    failing: Iterable[str] = (),
) -> StaticLookup:
    """Zone data: TXT records by name, names that exist with an A record, failing names."""
    records: dict[tuple[str, str], list[str]] = {}
    for name, texts in (txt or {}).items():
        records[(name, "TXT")] = [texts] if isinstance(texts, str) else texts
    for host in hosts:
        records[(host, "A")] = ["192.0.2.1"]
    return StaticLookup(records, failing=frozenset(failing))


# -- the record ----------------------------------------------------------------------------


def test_a_full_record_is_read_tag_by_tag() -> None:
    record = parse_record(
        "v=DMARC1; p=reject; sp=quarantine; np=reject; adkim=s; aspf=s; pct=50; t=y; psd=n;"
        " rua=mailto:agg@example.com,mailto:other@example.net; ruf=mailto:fail@example.com;"
        " fo=1:d"
    )
    assert record == DmarcRecord(
        p="reject",
        sp="quarantine",
        np="reject",
        adkim="s",
        aspf="s",
        pct=50,
        t=True,
        psd="n",
        rua=("mailto:agg@example.com", "mailto:other@example.net"),
        ruf=("mailto:fail@example.com",),
        fo="1:d",
    )


def test_defaults_white_space_and_case() -> None:
    record = parse_record("v = DMARC1 ;P=Quarantine ;\tunknown=tag; garbage ;")
    assert record == DmarcRecord(p="quarantine")
    assert (record.adkim, record.aspf, record.pct, record.t, record.psd, record.fo) == (
        "r",
        "r",
        100,
        False,
        "u",
        "0",
    )


@pytest.mark.parametrize(
    "text",
    [
        "p=none; v=DMARC1",  # v must come first
        "v=dmarc1; p=none",  # and is case-sensitive
        "v=DMARC10; p=none",
        "v=spf1 -all",
        "",
        "v=DMARC1 p=none",  # no separator: the version value is not DMARC1
    ],
)
def test_a_record_must_start_with_v_dmarc1(text: str) -> None:
    assert not is_dmarc_record(text)
    with pytest.raises(DmarcRecordError):
        parse_record(text)


@pytest.mark.parametrize(
    "text",
    [
        "v=DMARC1; p=bogus",
        "v=DMARC1",
        "v=DMARC1; p=reject; sp=maybe",
        "v=DMARC1; p=reject; np=",
        "v=DMARC1; p=bogus; rua=not a uri",
    ],
)
def test_an_unusable_policy_without_a_report_uri_is_an_error(text: str) -> None:
    with pytest.raises(DmarcRecordError):
        parse_record(text)


@pytest.mark.parametrize(
    "text",
    [
        "v=DMARC1; p=bogus; rua=mailto:agg@example.com",
        "v=DMARC1; rua=mailto:agg@example.com",
        "v=DMARC1; p=reject; sp=maybe; rua=mailto:agg@example.com",
        "v=DMARC1; p=reject; np=what; rua=https://reports.example/dmarc",
    ],
)
def test_an_unusable_policy_with_a_report_uri_means_p_none(text: str) -> None:
    """DMARCbis §4.10.1: act as if the record said p=none (and report)."""
    record = parse_record(text)
    assert (record.p, record.sp, record.np) == ("none", None, None)


def test_invalid_optional_values_fall_back_to_their_defaults() -> None:
    record = parse_record("v=DMARC1; p=none; adkim=x; aspf=; pct=101; t=maybe; psd=q; fo=2")
    assert record == DmarcRecord(p="none")
    for pct in ("-1", "abc", "1e2", "١٠", "00000050"):
        assert parse_record(f"v=DMARC1; p=none; pct={pct}").pct == 100
    assert parse_record("v=DMARC1; p=none; pct=0").pct == 0
    assert parse_record("v=DMARC1; p=none; pct=007").pct == 7


def test_report_uris_keep_mailto_only_without_size_suffix() -> None:
    record = parse_record(
        "v=DMARC1; p=none; rua=mailto:a@example.com!10m , https://x.example/r,"
        " mailto:b%40x@example.net, mailto:nodomain, ftp:, mailto:c@example.org!20"
    )
    assert record.rua == (
        "mailto:a@example.com",
        "mailto:b%40x@example.net",
        "mailto:c@example.org",
    )
    assert mailto_addresses(record.rua) == (
        "a@example.com",
        "b@x@example.net",
        "c@example.org",
    )
    assert mailto_addresses(["mailto:Agg@Example.COM?subject=x", "https://a@b"]) == (
        "Agg@example.com",
    )


def test_the_first_of_repeated_tags_counts() -> None:
    assert parse_record("v=DMARC1; p=none; p=reject").p == "none"


# -- the Tree Walk -------------------------------------------------------------------------


def test_a_record_at_the_author_domain_applies_with_p() -> None:
    lookup = zone(
        {"_dmarc.example.com": "v=DMARC1; p=reject; sp=none", "_dmarc.com": "v=DMARC1; p=none"}
    )
    policy = run(discover(lookup, "Example.COM."))
    assert policy == Policy(parse_record("v=DMARC1; p=reject; sp=none"), "example.com", "p")
    assert policy.requested == "reject"
    assert lookup.asked == [("_dmarc.example.com", "TXT")]


def test_a_subdomain_gets_sp_and_a_nonexistent_one_np() -> None:
    record = "v=DMARC1; p=none; sp=quarantine; np=reject"
    lookup = zone({"_dmarc.example.com": record}, hosts=["mail.example.com"])
    existing = run(discover(lookup, "mail.example.com"))
    assert existing is not None
    assert (existing.domain, existing.applies, existing.requested) == (
        "example.com",
        "sp",
        "quarantine",
    )
    missing = run(discover(lookup, "nowhere.example.com"))
    assert missing is not None
    assert (missing.applies, missing.requested) == ("np", "reject")
    # np falls back to sp, sp to p (DMARCbis §4.7)
    assert DmarcRecord(p="reject").policy_for("np") == "reject"
    assert DmarcRecord(p="reject", sp="none").policy_for("np") == "none"


def test_existence_is_asked_only_when_np_changes_the_policy() -> None:
    lookup = zone({"_dmarc.example.com": "v=DMARC1; p=reject; sp=quarantine; np=quarantine"})
    policy = run(discover(lookup, "nowhere.example.com"))
    assert policy is not None and policy.requested == "quarantine"
    assert all(rtype == "TXT" for _, rtype in lookup.asked)


def test_a_name_with_any_record_exists() -> None:
    record = "v=DMARC1; p=none; np=reject"
    lookup = StaticLookup(
        {("_dmarc.example.com", "TXT"): [record], ("mx-only.example.com", "MX"): ["10 mx.x"]}
    )
    policy = run(discover(lookup, "mx-only.example.com"))
    assert policy is not None and policy.applies == "sp"
    asked = [rtype for name, rtype in lookup.asked if name == "mx-only.example.com"]
    assert asked == ["A"]  # StaticLookup: the name exists, the first answer is NODATA


def test_no_record_anywhere_is_none() -> None:
    lookup = zone({"_dmarc.other.example": "v=DMARC1; p=reject"})
    assert run(discover(lookup, "a.b.example.com")) is None
    assert [name for name, _ in lookup.asked] == [
        "_dmarc.a.b.example.com",
        "_dmarc.b.example.com",
        "_dmarc.example.com",
        "_dmarc.com",
    ]


def test_a_long_name_takes_at_most_eight_queries() -> None:
    """DMARCbis §4.10: the draft's own example of a full walk."""
    lookup = zone()
    run(discover(lookup, "a.b.c.d.e.f.g.h.i.j.mail.example.com"))
    assert [name for name, _ in lookup.asked] == [
        "_dmarc.a.b.c.d.e.f.g.h.i.j.mail.example.com",
        "_dmarc.g.h.i.j.mail.example.com",
        "_dmarc.h.i.j.mail.example.com",
        "_dmarc.i.j.mail.example.com",
        "_dmarc.j.mail.example.com",
        "_dmarc.mail.example.com",
        "_dmarc.example.com",
        "_dmarc.com",
    ]
    eight = zone()
    run(discover(eight, "a.b.c.d.e.f.g.h"))
    assert [name for name, _ in eight.asked][:2] == [
        "_dmarc.a.b.c.d.e.f.g.h",
        "_dmarc.b.c.d.e.f.g.h",
    ]
    assert len(eight.asked) == 8


def test_the_policy_is_the_highest_record_not_the_nearest() -> None:
    """DMARCbis Appendix B.4.2: without psd tags, the record with the fewest labels wins."""
    lookup = zone(
        {
            "_dmarc.example.com": "v=DMARC1; p=reject",
            "_dmarc.signing.example.com": "v=DMARC1; p=none",
        },
        hosts=["a.signing.example.com"],
    )
    policy = run(discover(lookup, "a.signing.example.com"))
    assert policy is not None and (policy.domain, policy.requested) == ("example.com", "reject")


def test_psd_n_stops_the_walk_and_marks_the_organizational_domain() -> None:
    lookup = zone(
        {
            "_dmarc.mail.example.com": "v=DMARC1; p=quarantine; psd=n",
            "_dmarc.example.com": "v=DMARC1; p=reject",
        },
        hosts=["a.mail.example.com"],
    )
    policy = run(discover(lookup, "a.mail.example.com"))
    assert policy is not None and (policy.domain, policy.requested) == (
        "mail.example.com",
        "quarantine",
    )
    assert ("_dmarc.example.com", "TXT") not in lookup.asked


def test_a_public_suffix_record_applies_when_the_organizational_domain_has_none() -> None:
    lookup = zone({"_dmarc.bank.example": "v=DMARC1; p=reject; psd=y"})
    policy = run(discover(lookup, "mail.giant.bank.example"))
    assert policy is not None
    assert (policy.domain, policy.applies, policy.requested) == ("bank.example", "sp", "reject")


def test_multiple_records_at_one_name_are_discarded() -> None:
    lookup = zone(
        {
            "_dmarc.sub.example.com": ["v=DMARC1; p=none", "v=DMARC1; p=reject"],
            "_dmarc.example.com": ["v=DMARC1; p=quarantine", "v=spf1 -all", "hello"],
        },
        hosts=["sub.example.com"],
    )
    policy = run(discover(lookup, "sub.example.com"))
    assert policy is not None and (policy.domain, policy.requested) == ("example.com", "quarantine")
    only_duplicates = zone({"_dmarc.example.com": ["v=DMARC1; p=none", "v=DMARC1; p=none"]})
    assert run(discover(only_duplicates, "example.com")) is None


def test_a_dns_failure_propagates() -> None:
    lookup = zone({"_dmarc.example.com": "v=DMARC1; p=reject"}, failing=["_dmarc.a.example.com"])
    with pytest.raises(DnsTemporaryError):
        run(discover(lookup, "a.example.com"))


def test_an_unusable_record_that_applies_is_an_error() -> None:
    lookup = zone({"_dmarc.example.com": "v=DMARC1; p=junk"})
    with pytest.raises(DmarcRecordError):
        run(discover(lookup, "example.com"))
    with pytest.raises(DmarcRecordError):
        run(discover(lookup, "not a domain"))


@pytest.mark.parametrize(
    ("records", "start", "expected"),
    [
        # DMARCbis §4.10.2's three examples
        (
            {"_dmarc.mail.example.com": "v=DMARC1; p=none", "_dmarc.example.com": "v=DMARC1"},
            "a.mail.example.com",
            "example.com",
        ),
        ({"_dmarc.mail.example.com": "v=DMARC1; psd=n"}, "a.mail.example.com", "mail.example.com"),
        ({"_dmarc.com": "v=DMARC1; p=none; psd=y"}, "a.mail.example.com", "example.com"),
        # Appendix B.4.3: the PSD example
        (
            {
                "_dmarc.giant.bank.example": "v=DMARC1; p=reject",
                "_dmarc.bank.example": "v=DMARC1; psd=y",
            },
            "giant.bank.example",
            "giant.bank.example",
        ),
        (
            {
                "_dmarc.giant.bank.example": "v=DMARC1; p=reject",
                "_dmarc.bank.example": "v=DMARC1; psd=y",
            },
            "mail.giant.bank.example",
            "giant.bank.example",
        ),
        ({"_dmarc.bank.example": "v=DMARC1; psd=y"}, "mail.mega.bank.example", "mega.bank.example"),
        # no record at all: the name itself; a psd=y record at the start: the name itself
        ({}, "x.example.org", "x.example.org"),
        ({"_dmarc.co.uk": "v=DMARC1; p=none; psd=y"}, "co.uk", "co.uk"),
    ],
)
def test_organizational_domains(
    records: dict[str, str | list[str]], start: str, expected: str
) -> None:
    assert run(organizational_domain(zone(records), start)) == expected


# -- evaluation ----------------------------------------------------------------------------

EXAMPLE = {"_dmarc.example.com": "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"}


def outcome(
    records: dict[str, str | list[str]],
    author: str,
    *,
    spf: tuple[str, str] | None = None,
    dkim: tuple[tuple[str, str], ...] = (),
    failing: Iterable[str] = (),
    sample: float = 0.0,
) -> DmarcOutcome:
    lookup = zone(records, hosts=[author], failing=failing)
    return run(evaluate(lookup, author, spf=spf, dkim=dkim, sample=lambda: sample))


def test_an_aligned_spf_pass_passes_in_relaxed_mode_only() -> None:
    result = outcome(EXAMPLE, "example.com", spf=("pass", "bounces.example.com"))
    assert (result.result, result.policy, result.spf_aligned, result.dkim_aligned) == (
        "pass",
        "none",
        True,
        False,
    )
    assert result.policy_domain == "example.com"
    strict = {"_dmarc.example.com": "v=DMARC1; p=reject; aspf=s"}
    result = outcome(strict, "example.com", spf=("pass", "bounces.example.com"))
    assert (result.result, result.policy, result.spf_aligned) == ("fail", "reject", False)
    assert outcome(strict, "example.com", spf=("pass", "EXAMPLE.com.")).result == "pass"


def test_an_aligned_dkim_pass_passes() -> None:
    result = outcome(
        EXAMPLE, "news.example.com", dkim=(("fail", "example.com"), ("pass", "example.com"))
    )
    assert (result.result, result.dkim_aligned, result.spf_aligned) == ("pass", True, False)
    strict = {"_dmarc.example.com": "v=DMARC1; p=reject; adkim=s"}
    assert outcome(strict, "news.example.com", dkim=(("pass", "example.com"),)).result == "fail"


def test_only_passing_results_count() -> None:
    result = outcome(
        EXAMPLE,
        "example.com",
        spf=("softfail", "example.com"),
        dkim=(("fail", "example.com"), ("neutral", "example.com"), ("pass", "evil.example")),
    )
    assert (result.result, result.policy, result.requested) == ("fail", "reject", "reject")
    assert result.reason.startswith("no aligned identifier")


def test_unrelated_passing_domains_do_not_align_and_cost_no_walk() -> None:
    lookup = zone(EXAMPLE, hosts=["example.com"])
    result = run(
        evaluate(lookup, "example.com", spf=("pass", "example.net"), dkim=[("pass", "x.org")])
    )
    assert result.result == "fail"
    assert lookup.asked == [("_dmarc.example.com", "TXT")]


def test_a_public_suffix_without_psd_would_align_everything_below_it() -> None:
    """The draft's rule, as written: a record at a TLD without psd=y makes the TLD the
    Organizational Domain (why §11.8 asks PSOs for psd=y); with psd=y, it does not."""
    records = {"_dmarc.example.com": "v=DMARC1; p=reject", "_dmarc.com": "v=DMARC1; p=none"}
    assert outcome(records, "example.com", dkim=(("pass", "evil.com"),)).result == "pass"
    records["_dmarc.com"] = "v=DMARC1; p=none; psd=y"
    assert outcome(records, "example.com", dkim=(("pass", "evil.com"),)).result == "fail"


def test_the_policy_follows_p_sp_and_np() -> None:
    records = {"_dmarc.example.com": "v=DMARC1; p=reject; sp=quarantine; np=none"}
    assert outcome(records, "example.com").policy == "reject"
    sub = outcome(records, "sub.example.com")
    assert (sub.result, sub.policy, sub.applies) == ("fail", "quarantine", "sp")
    lookup = zone(records)  # the Author Domain does not exist
    gone = run(evaluate(lookup, "gone.example.com", spf=None, dkim=[]))
    assert (gone.result, gone.policy, gone.applies) == ("fail", "none", "np")


def test_testing_mode_applies_the_policy_one_level_lower() -> None:
    """DMARCbis §4.7 t=y: reject becomes quarantine, quarantine none; pct=0 meant the same."""
    for record in ("v=DMARC1; p=reject; t=y", "v=DMARC1; p=reject; pct=0"):
        result = outcome({"_dmarc.example.com": record}, "example.com")
        assert (result.result, result.policy, result.requested, result.override) == (
            "fail",
            "quarantine",
            "reject",
            "policy_test_mode",
        )
    result = outcome({"_dmarc.example.com": "v=DMARC1; p=quarantine; t=y"}, "example.com")
    assert (result.policy, result.override) == ("none", "policy_test_mode")
    result = outcome({"_dmarc.example.com": "v=DMARC1; p=none; t=y"}, "example.com")
    assert (result.policy, result.override) == ("none", None)
    result = outcome({"_dmarc.example.com": "v=DMARC1; p=reject; t=n"}, "example.com")
    assert (result.policy, result.override) == ("reject", None)


def test_pct_samples_failing_messages() -> None:
    records = {"_dmarc.example.com": "v=DMARC1; p=reject; pct=30"}
    assert outcome(records, "example.com", sample=0.1).policy == "reject"
    sampled = outcome(records, "example.com", sample=0.5)
    assert (sampled.policy, sampled.override) == ("quarantine", "sampled_out")


def test_no_record_is_none_and_an_unusable_one_permerror() -> None:
    result = outcome({}, "example.com", spf=("pass", "example.com"))
    assert (result.result, result.policy, result.record, result.policy_domain) == (
        "none",
        "none",
        None,
        None,
    )
    broken = outcome({"_dmarc.example.com": "v=DMARC1; p=nonsense"}, "example.com")
    assert (broken.result, broken.policy) == ("permerror", "none")
    assert outcome(EXAMPLE, "bad..example.com").result == "permerror"


def test_dns_failures_are_temperror_unless_something_else_passed() -> None:
    result = outcome(EXAMPLE, "example.com", failing=["_dmarc.example.com"])
    assert (result.result, result.policy) == ("temperror", "none")
    # the DKIM domain's walk fails: no conclusion without another aligned pass
    result = outcome(
        EXAMPLE,
        "example.com",
        dkim=(("pass", "mail.example.com"),),
        failing=["_dmarc.mail.example.com"],
    )
    assert result.result == "temperror"
    result = outcome(
        EXAMPLE,
        "example.com",
        spf=("pass", "example.com"),
        dkim=(("pass", "mail.example.com"),),
        failing=["_dmarc.mail.example.com"],
    )
    assert result.result == "pass"
    gone = {"_dmarc.example.com": "v=DMARC1; p=reject; np=none"}
    result = outcome(gone, "x.example.com", failing=["x.example.com"])
    assert result.result == "temperror"  # the existence question failed


# -- the Author Domain ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"From: a@Example.COM\r\n\r\n", ["example.com"]),
        (b'From: "Last, First" <a@example.com>\r\nTo: b@x\r\n\r\nbody', ["example.com"]),
        (b"FROM:\r\n  Someone\r\n  <a@example.com.>\r\n\r\n", ["example.com"]),
        (b"From : a@example.com\n\n", ["example.com"]),
        (b"From: a@example.com, b@EXAMPLE.com\r\n\r\n", ["example.com"]),
        (b"From: a@example.com, b@example.net\r\n\r\n", ["example.com", "example.net"]),
        (b"From: team: a@x.example, b@y.example;\r\n\r\n", ["x.example", "y.example"]),
        ("From: ü@bücher.example\r\n\r\n".encode(), ["xn--bcher-kva.example"]),
        (b"From: (comment) a @ example . com\r\n", ["example.com"]),
    ],
)
def test_author_domains(header: bytes, expected: list[str]) -> None:
    assert from_domains(header) == expected


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        (b"To: a@example.com\r\n\r\nFrom: x@y.example\r\n", "missing"),
        (b"From: a@example.com\r\nFrom: b@example.com\r\n\r\n", "multiple"),
        (b"From: a@example.com\r\nfrom : b@evil.example\r\n\r\n", "multiple"),
        (b"From: undisclosed-recipients:;\r\n\r\n", "no-domain"),
        (b"From: \r\n\r\n", "no-domain"),
        (b"From: <a>\r\n\r\n", "no-domain"),
        (b"From: a@[192.0.2.1]\r\n\r\n", "invalid-domain"),
        (b"From: a@\xff\xfe.example\r\n\r\n", "invalid-domain"),
    ],
)
def test_messages_dmarc_cannot_evaluate(header: bytes, kind: str) -> None:
    result = from_domains(header)
    assert isinstance(result, FromError) and result.kind == kind, result


def finishes(work: threading.Thread, seconds: float) -> bool:
    work.start()
    work.join(seconds)
    return not work.is_alive()


def test_author_domain_extraction_is_linear() -> None:
    """A header section of megabytes (many fields, a huge From, deep comments) is read in one
    pass; quadratic work would not finish in the time allowed."""
    many_fields = b"X-Junk: y\r\n" * 200_000 + b"From: a@example.com\r\n\r\n"
    huge_from = b"From: " + b"a@example.com, " * 100_000 + b"b@example.net\r\n\r\n"
    comments = b"From: " + b"(" * 100_000 + b"a@example.com\r\n\r\n"
    results: list[object] = []

    def work() -> None:
        for block in (many_fields, huge_from, comments):
            started = time.perf_counter()
            results.append((from_domains(block), time.perf_counter() - started))

    assert finishes(threading.Thread(target=work), 60.0)
    assert results[0][0] == ["example.com"]  # type: ignore[index]
    assert results[1][0] == ["example.com", "example.net"]  # type: ignore[index]
    assert isinstance(results[2][0], FromError)  # type: ignore[index]


# -- external report destinations ----------------------------------------------------------


def test_report_destinations_verify_external_addresses() -> None:
    lookup = zone(
        {
            "_dmarc.example.com": "v=DMARC1; p=none; rua=mailto:dmarc@example.com",
            "example.com._report._dmarc.reports.example.net": "v=DMARC1",
            "example.com._report._dmarc.override.example.org": (
                "v=DMARC1; rua=mailto:new@override.example.org"
            ),
            "example.com._report._dmarc.elsewhere.example": "v=DMARC1; rua=mailto:x@other.example",
        }
    )
    uris = (
        "mailto:dmarc@example.com",
        "mailto:agg@reports.example.net",
        "mailto:agg@unverified.example",
        "mailto:old@override.example.org",
        "mailto:r@elsewhere.example",
        "mailto:d@sub.example.com",
    )
    assert run(report_destinations(lookup, "example.com", uris)) == (
        "dmarc@example.com",
        "agg@reports.example.net",
        "new@override.example.org",
        "d@sub.example.com",
    )


def test_report_addresses_with_control_characters_are_dropped() -> None:
    uris = ("mailto:a%0D%0ARSET@example.com", "mailto:b%20c@example.com", "mailto:ok@example.com")
    assert mailto_addresses(uris) == ("ok@example.com",)
