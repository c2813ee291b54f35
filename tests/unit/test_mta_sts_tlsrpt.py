"""The MTA-STS record and policy (RFC 8461) and TLS-RPT record (RFC 8460) parsers: what
they accept, what they refuse and why, MX pattern matching, and that any text whatever ends
in a result or their own error, never another exception."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.mailauth import mta_sts, tlsrpt
from postroom.mailauth.mta_sts import MtaStsError, Policy, StsRecord
from postroom.mailauth.tlsrpt import TlsRptError, TlsRptRecord

POLICY = (
    b"version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmx: *.backup.example\r\n"
    b"max_age: 604800\r\n"
)


def test_records() -> None:
    assert mta_sts.parse_record("v=STSv1; id=20261207T1") == StsRecord("20261207T1")
    assert mta_sts.parse_record("v=STSv1;id=abc;") == StsRecord("abc")
    assert mta_sts.parse_record("v=STSv1; ext_1=x!y; id=A1") == StsRecord("A1")
    for bad, why in [
        ("v=STSv1", "does not begin"),
        ("v=STSv1x; id=1", "does not begin"),
        ("v=STSv1;", "no fields"),
        ("v=STSv1; id=", "not name=value"),
        ("v=STSv1; id=has-dash", "1 to 32"),
        ("v=STSv1; id=" + "1" * 33, "1 to 32"),
        ("v=STSv1; other=1", "no id"),
        ("v=STSv1; -x=1; id=1", "bad field name"),
        ("v=STSv1; x=a b; id=1", "bad characters"),
    ]:
        with pytest.raises(MtaStsError, match=why):
            mta_sts.parse_record(bad)
    assert mta_sts.select_record(["spf", "v=STSv1; id=1"]) == StsRecord("1")
    with pytest.raises(MtaStsError, match="2 v=STSv1 records"):
        mta_sts.select_record(["v=STSv1; id=1", "v=STSv1; id=2"])
    with pytest.raises(MtaStsError, match="no v=STSv1"):
        mta_sts.select_record(["v=spf1 -all"])


def test_policies() -> None:
    assert mta_sts.parse_policy(POLICY) == Policy(
        "enforce", 604800, ("mx.example.test", "*.backup.example")
    )
    lf = b"version: STSv1\nmode: testing\nmx: MX.Example.Test.\nmax_age: 0\nfuture: x\n"
    assert mta_sts.parse_policy(lf) == Policy("testing", 0, ("mx.example.test",))
    assert mta_sts.parse_policy(b"version: STSv1\nmode: none\nmax_age: 1\n").mx == ()
    for bad, why in [
        (b"mode: enforce\nmx: a.b\nmax_age: 1\n", "version"),
        (b"version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n", "version"),
        (b"version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n", "mode"),
        (b"version: STSv1\nmode: enforce\nmx: a.b\n", "max_age"),
        (b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n", "max_age"),
        (b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601\n", "over"),
        (b"version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
        (b"version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n", "not a host name"),
        (b"version: STSv1\nmode: enforce\nmx: **.b\nmax_age: 1\n", "not a host name"),
        (b"version STSv1\n", "line 1"),
        (b"\xff\xfe", "UTF-8"),
        (b"x" * (mta_sts.MAX_POLICY + 1), "larger"),
    ]:
        with pytest.raises(MtaStsError, match=why):
            mta_sts.parse_policy(bad)


def test_mx_patterns() -> None:
    patterns = ("mx.example.test", "*.backup.example")
    assert mta_sts.mx_matches("MX.example.test.", patterns)
    assert mta_sts.mx_matches("b1.backup.example", patterns)
    # RFC 8461 §4.1: the wildcard is one label, and not the name itself.
    assert not mta_sts.mx_matches("backup.example", patterns)
    assert not mta_sts.mx_matches("a.b1.backup.example", patterns)
    assert not mta_sts.mx_matches("mx2.example.test", patterns)


def test_tlsrpt_records() -> None:
    assert tlsrpt.parse_record("v=TLSRPTv1; rua=mailto:tls@example.test") == TlsRptRecord(
        ("mailto:tls@example.test",)
    )
    assert tlsrpt.parse_record(
        "v=TLSRPTv1;rua=mailto:a@b.example, https://r.example/x;ext=1;"
    ) == TlsRptRecord(("mailto:a@b.example", "https://r.example/x"))
    for bad, why in [
        ("v=TLSRPTv1", "does not begin"),
        ("v=TLSRPTv1;", "no rua"),
        ("v=TLSRPTv1; rua=ftp://x.example", "neither mailto"),
        ("v=TLSRPTv1; rua=mailto:nobody", "no mailbox"),
        ("v=TLSRPTv1; rua=https://a b", "spaces"),
        ("v=TLSRPTv1; rua=mailto:a@b.example; rua=mailto:c@d.example", "twice"),
        ("v=TLSRPTv1; rua", "not name=value"),
        ("v=TLSRPTv1; rua=" + ",".join(["mailto:a@b.example"] * 17), "more than 16"),
    ]:
        with pytest.raises(TlsRptError, match=why):
            tlsrpt.parse_record(bad)
    with pytest.raises(TlsRptError, match="2 v=TLSRPTv1"):
        tlsrpt.select_record(["v=TLSRPTv1; rua=mailto:a@b.c", "v=TLSRPTv1; rua=mailto:d@e.f"])


@given(st.text(max_size=300))
def test_any_record_text_parses_or_is_refused(text: str) -> None:
    for parse, error in (
        (mta_sts.parse_record, MtaStsError),
        (tlsrpt.parse_record, TlsRptError),
    ):
        prefix = "v=STSv1;" if parse is mta_sts.parse_record else "v=TLSRPTv1;"
        with contextlib.suppress(error):
            parse(prefix + text)


@given(st.binary(max_size=500))
def test_any_policy_body_parses_or_is_refused(body: bytes) -> None:
    try:
        policy = mta_sts.parse_policy(b"version: STSv1\nmode: enforce\nmax_age: 5\n" + body)
    except MtaStsError:
        return
    assert policy.mode in ("enforce", "testing", "none") and 0 <= policy.max_age <= 31557600
