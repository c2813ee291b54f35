"""Authentication-Results (mailauth/authres.py, RFC 8601): the field we write, reading the
fields large providers write, and removing forged copies of our verdict (RFC 8601 §5)."""

from __future__ import annotations

import threading

import pytest

from postroom.mailauth.authres import (
    AuthResError,
    MethodResult,
    arc_authentication_results,
    authserv_id_of,
    format_header,
    parse,
    parse_arc,
    remove_ours,
)

RESULTS = [
    MethodResult("spf", "pass", None, (("smtp.mailfrom", "bounce+x=y@example.com"),)),
    MethodResult(
        "dkim",
        "pass",
        None,
        (("header.d", "example.com"), ("header.s", "2024a"), ("header.b", "ab/cd+EF")),
    ),
    MethodResult(
        "dkim",
        "fail",
        "signature verification failed",
        (
            ("header.d", "example.org"),
            ("header.s", "selector-with-a-long-name-for-folding"),
            ("header.b", "XyZ12345"),
            ("header.i", "@example.org"),
        ),
    ),
    MethodResult(
        "dmarc", "pass", None, (("header.from", "example.com"), ("policy.dmarc", "reject"))
    ),
    MethodResult("arc", "none"),
]


def test_the_field_we_write() -> None:
    assert format_header("mx.example.net", RESULTS) == (
        b"Authentication-Results: mx.example.net;\r\n"
        b"\tspf=pass smtp.mailfrom=bounce+x=y@example.com;\r\n"
        b'\tdkim=pass header.d=example.com header.s=2024a header.b="ab/cd+EF";\r\n'
        b'\tdkim=fail reason="signature verification failed" header.d=example.org\r\n'
        b"\t  header.s=selector-with-a-long-name-for-folding header.b=XyZ12345\r\n"
        b"\t  header.i=@example.org;\r\n"
        b"\tdmarc=pass header.from=example.com policy.dmarc=reject;\r\n"
        b"\tarc=none\r\n"
    )
    assert (
        format_header("mx.example.net", []) == b"Authentication-Results: mx.example.net; none\r\n"
    )


def test_lines_stay_within_78_columns_and_values_are_quoted_when_not_tokens() -> None:
    results = [
        MethodResult(
            "dkim",
            "fail",
            'bad "key" \\ here',
            tuple((f"header.x{i}", f"value-{i}-" + "y" * 10) for i in range(12)),
        ),
        MethodResult(
            "spf", "pass", None, (("smtp.mailfrom", "a b@example.com"), ("smtp.helo", "ü.example"))
        ),
    ]
    field = format_header("mx.example.net", results)
    lines = field.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) <= 78 for line in lines)
    assert b'reason="bad \\"key\\" \\\\ here"' in field
    assert b'smtp.mailfrom="a b@example.com"' in field
    assert 'smtp.helo="ü.example"'.encode() in field
    assert parse(field.split(b":", 1)[1]) == ("mx.example.net", results)


def test_arc_authentication_results() -> None:
    field = arc_authentication_results(2, "mx.example.net", RESULTS[:1])
    assert field == (
        b"ARC-Authentication-Results: i=2; mx.example.net;\r\n"
        b"\tspf=pass smtp.mailfrom=bounce+x=y@example.com\r\n"
    )
    assert parse_arc(field.split(b":", 1)[1]) == (2, "mx.example.net", RESULTS[:1])
    with pytest.raises(ValueError):
        arc_authentication_results(51, "mx.example.net", [])


def test_round_trip() -> None:
    field = format_header("mx.example.net", RESULTS)
    assert parse(field.split(b":", 1)[1]) == ("mx.example.net", RESULTS)


def test_fields_from_the_wild() -> None:
    gmail = (
        b"mx.google.com;\r\n       dkim=pass header.i=@example.com header.s=20230601"
        b" header.b=AbCdEfGh;\r\n       spf=pass (google.com: domain of x@example.com designates"
        b" 192.0.2.1 as permitted sender) smtp.mailfrom=x@example.com;\r\n"
        b"       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.com"
    )
    authserv, results = parse(gmail)
    assert authserv == "mx.google.com"
    assert [(r.method, r.result) for r in results] == [
        ("dkim", "pass"),
        ("spf", "pass"),
        ("dmarc", "pass"),
    ]
    assert (
        results[0].get("HEADER.S") == "20230601" and results[2].get("header.from") == "example.com"
    )
    microsoft = (
        b"spf=pass (sender IP is 192.0.2.7) smtp.mailfrom=example.com; dkim=pass (signature was"
        b" verified) header.d=example.com;dmarc=pass action=none header.from=example.com;"
        b"compauth=pass reason=100"
    )
    authserv, results = parse(microsoft)
    assert authserv == ""
    assert results[2] == MethodResult(
        "dmarc", "pass", None, (("action", "none"), ("header.from", "example.com"))
    )
    assert results[3] == MethodResult("compauth", "pass", "100")
    assert parse(b"example.org 1; none") == ("example.org", [])
    assert parse(b'(c) "ex ample" (c); DKIM/1 = Pass (c) reason = "x;y" header . d = "a;b" ;') == (
        "ex ample",
        [MethodResult("dkim", "pass", "x;y", (("header.d", "a;b"),))],
    )
    assert parse("é.example; spf=pass smtp.mailfrom=ü@é.example".encode()) == (
        "é.example",
        [MethodResult("spf", "pass", None, (("smtp.mailfrom", "ü@é.example"),))],
    )


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"   ",
        b";",
        b"host; dkim",
        b"host; dkim=",
        b"host; dkim=pass header.d",
        b"host; dkim=pass header.d=",
        b'host; dkim=pass header.d="unterminated',
        b"host; (unterminated comment",
        b"host; none; spf=pass",
        b"host; dkim/x=pass",
        b"host stray; dkim=pass",
        b"host 1x; dkim=pass",
        b"host; dkim=pass (c) stray",
    ],
)
def test_garbage_raises(value: bytes) -> None:
    with pytest.raises(AuthResError):
        parse(value)


@pytest.mark.parametrize(
    "value", [b"host; spf=pass", b"i=0; host; spf=pass", b"i=51; host; none", b"i=x; h"]
)
def test_arc_needs_an_instance(value: bytes) -> None:
    with pytest.raises(AuthResError):
        parse_arc(value)


def test_authserv_id_is_read_whatever_follows() -> None:
    assert authserv_id_of(b" (forged) MX.Example.NET ; dkim=pass (unterminated") == "mx.example.net"
    assert authserv_id_of(b'"mx.example.net"; junk') == "mx.example.net"
    assert authserv_id_of(b"(unterminated") is None


BODY = b"Authentication-Results: mx.example.net; dkim=pass\r\n\r\nmore body\r\n"


def test_remove_ours_drops_only_our_verdicts() -> None:
    message = (
        b"Received: from x by y\r\n"
        b"Authentication-Results: MX.example.net; dkim=pass header.d=bank.example\r\n"
        b"Authentication-Results: other.example; spf=fail\r\n"
        b"authentication-results : (forged)\r\n mx.example.net;\r\n\tdmarc=pass\r\n"
        b'Authentication-Results: "mx.example.net"; none\r\n'
        b"Authentication-Results: mx.example.net.evil; none\r\n"
        b"Subject: hi\r\n"
        b"\r\n" + BODY
    )
    assert remove_ours(message, "mx.example.net") == (
        b"Received: from x by y\r\n"
        b"Authentication-Results: other.example; spf=fail\r\n"
        b"Authentication-Results: mx.example.net.evil; none\r\n"
        b"Subject: hi\r\n"
        b"\r\n" + BODY
    )
    untouched = b"Subject: x\n\n" + BODY
    assert remove_ours(untouched, "mx.example.net") is untouched


def test_remove_ours_keeps_arc_results_of_complete_sets_only() -> None:
    message = (
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=mx.example.net; s=s; b=abc\r\n"
        b"ARC-Message-Signature: i=1; a=rsa-sha256; d=mx.example.net; s=s; h=from; bh=x; b=y\r\n"
        b"ARC-Authentication-Results: i=1; mx.example.net; spf=pass\r\n"
        b"ARC-Authentication-Results: i=2; mx.example.net; dkim=pass\r\n"
        b"ARC-Authentication-Results: i=2; forwarder.example; dkim=pass\r\n"
        b"ARC-Authentication-Results: mx.example.net; dkim=pass\r\n"
        b"ARC-Seal: i=3; cv=pass; b=x\r\n"
        b"ARC-Authentication-Results: i=3;\r\n MX.example.net; dmarc=pass\r\n"
        b"From: a@example.com\n"
        b"\r\n" + BODY
    )
    assert remove_ours(message, "mx.example.net") == (
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=mx.example.net; s=s; b=abc\r\n"
        b"ARC-Message-Signature: i=1; a=rsa-sha256; d=mx.example.net; s=s; h=from; bh=x; b=y\r\n"
        b"ARC-Authentication-Results: i=1; mx.example.net; spf=pass\r\n"
        b"ARC-Authentication-Results: i=2; forwarder.example; dkim=pass\r\n"
        b"ARC-Seal: i=3; cv=pass; b=x\r\n"
        b"From: a@example.com\n"
        b"\r\n" + BODY
    )


def test_a_message_without_body_or_final_newline() -> None:
    assert remove_ours(b"Authentication-Results: h; none", "h") == b""
    assert remove_ours(b"X: y\nAuthentication-Results: h; none", "h") == b"X: y\n"
    assert remove_ours(b"", "h") == b""


def finishes(target: object, seconds: float) -> bool:
    work = threading.Thread(target=target)  # type: ignore[arg-type]
    work.start()
    work.join(seconds)
    return not work.is_alive()


def test_parsing_and_removal_are_linear() -> None:
    """Megabyte inputs built to hurt a backtracking or quadratic parser finish quickly."""
    many = b"host" + b"; dkim=pass header.d=example.com header.s=s" * 50_000
    nested = b"host; dkim=pass (" + b"(" * 200_000 + b")" * 200_001 + b" header.d=x"
    escapes = b'host; dkim=pass reason="' + b"\\x" * 300_000 + b'"'
    header = (b"Authentication-Results: mx.example.net; none\r\nX: y\r\n") * 50_000 + b"\r\nbody"
    outcome: list[object] = []

    def work() -> None:
        outcome.append(len(parse(many)[1]))
        outcome.append(parse(nested)[1][0].get("header.d"))
        outcome.append(len(parse(escapes)[1][0].reason or ""))
        outcome.append(remove_ours(header, "mx.example.net"))

    assert finishes(work, 60.0)
    assert outcome[:3] == [50_000, "x", 300_000]
    assert outcome[3] == b"X: y\r\n" * 50_000 + b"\r\nbody"
