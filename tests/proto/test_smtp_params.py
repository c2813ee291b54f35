"""Tests for MAIL FROM / RCPT TO argument parsing: paths, addresses, ESMTP parameters, xtext."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.proto.smtp.params import (
    MailParams,
    RcptParams,
    decode_xtext,
    encode_xtext,
    parse_mail,
    parse_params,
    parse_rcpt,
    split_path,
    validate_domain,
    validate_mailbox,
)
from postroom.proto.smtp.replies import ClientError


def refusal(call: object, *args: object) -> str:
    """Run `call(*args)`, expecting a ClientError; return its reply as "code enhanced"."""
    assert callable(call)
    with pytest.raises(ClientError) as info:
        call(*args)
    reply = info.value.reply
    return f"{reply.code} {reply.enhanced}"


# --- split_path -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("<a@example.org>", ("a@example.org", "")),
        ("<a@example.org> SIZE=10 BODY=8BITMIME", ("a@example.org", "SIZE=10 BODY=8BITMIME")),
        ("<a@example.org>\tSIZE=10", ("a@example.org", "SIZE=10")),
        ("  <a@example.org>   ", ("a@example.org", "")),
        # Seed forms: no brackets, space after the colon, a display name before the address.
        ("a@example.org", ("a@example.org", "")),
        (" test@testingsmtp.com", ("test@testingsmtp.com", "")),
        ("a@example.org SIZE=10", ("a@example.org", "SIZE=10")),
        (" Bill Clinton <clinton@whitehouse.gov>", ("clinton@whitehouse.gov", "")),
        ('"Clinton, Bill" <clinton@whitehouse.gov> SIZE=1', ("clinton@whitehouse.gov", "SIZE=1")),
        ("<>", ("", "")),
        ("<> SIZE=1", ("", "SIZE=1")),
        ("", ("", "")),
        # RFC 5321 §4.1.2 / Appendix C: the source route is dropped.
        ("<@relay.example:u@example.org>", ("u@example.org", "")),
        ("<@a.example,@b.example:u@example.org> X=1", ("u@example.org", "X=1")),
        # A ">" or an escaped quote inside a quoted local part does not end the path.
        ('<"a>b"@example.org>', ('"a>b"@example.org', "")),
        ('<"a\\"> b"@example.org> X', ('"a\\"> b"@example.org', "X")),
        ("<postmaster>", ("postmaster", "")),
    ],
)
def test_split_path(argument: str, expected: tuple[str, str]) -> None:
    assert split_path(argument) == expected


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("<a@example.org", "501 5.5.4"),
        ('<"a>b@example.org', "501 5.5.4"),  # unterminated quote swallows the ">"
        ("<a@example.org>SIZE=10", "501 5.5.4"),
        ("<@relay.example>", "501 5.1.3"),
    ],
)
def test_split_path_refusals(argument: str, expected: str) -> None:
    assert refusal(split_path, argument) == expected


# --- xtext (RFC 3461 §4) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        ("", ""),
        ("QQ314159", "QQ314159"),
        ("a+2Bb", "a+b"),
        ("+3D", "="),
        ("a+20b", "a b"),
        ("+2B2B", "+2B"),
        ("+00", "\x00"),
        ("!~", "!~"),
        ("+E9", "\xe9"),
    ],
)
def test_decode_xtext(text: str, decoded: str) -> None:
    assert decode_xtext(text) == decoded


@pytest.mark.parametrize(
    "text", ["a+", "a+2", "+2b", "+G0", "a=b", "a b", "\x7f", "é", "+", "++2B", "a\tb"]
)
def test_decode_xtext_refuses_malformed(text: str) -> None:
    assert refusal(decode_xtext, text) == "501 5.5.4"


def test_encode_xtext() -> None:
    assert encode_xtext("a+b=c d") == "a+2Bb+3Dc+20d"
    assert encode_xtext("QQ314159") == "QQ314159"
    assert encode_xtext("\x00\x7f") == "+00+7F"
    assert encode_xtext("") == ""


@given(st.text(alphabet=st.characters(max_codepoint=0xFF)))
def test_xtext_round_trip(text: str) -> None:
    encoded = encode_xtext(text)
    # RFC 3461 §4: xtext is printable ASCII with "+" and "=" only as escapes or not at all.
    assert all("!" <= ch <= "~" and ch != "=" for ch in encoded)
    assert decode_xtext(encoded) == text


# --- validate_mailbox / validate_domain -------------------------------------------------------

VALID_ASCII = [
    "a@example.org",
    "first.last@example.org",
    "a+tag@sub.example.org",
    "!#$%&'*+-/=?^_`{|}~@example.org",
    "A@EXAMPLE.ORG",
    "a@localhost",
    "a@x--y.example",
    "a@1.2.3.example",
    '"quoted string"@example.org',
    '"a\\"b"@example.org',
    '"a@b"@example.org',
    '""@example.org',
    "a@[192.0.2.1]",
    "a@[IPv6:2001:db8::1]",
    "a@[ipv6:::1]",
    "x" * 64 + "@example.org",
    "a@" + "d" * 63 + ".example",
]


@pytest.mark.parametrize("address", VALID_ASCII)
@pytest.mark.parametrize("utf8", [False, True])
def test_valid_mailboxes(address: str, utf8: bool) -> None:
    validate_mailbox(address, utf8)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "a",
        "@example.org",
        "a@",
        "a@@example.org",
        ".a@example.org",
        "a.@example.org",
        "a..b@example.org",
        "a b@example.org",
        'a"b@example.org',
        '"unterminated@example.org',
        "a(comment)@example.org",
        "a@-example.org",
        "a@example-.org",
        "a@exa_mple.org",
        "a@example..org",
        "a@.example.org",
        "a@ex ample.org",
        "a@[192.0.2.256]",
        "a@[1.2.3]",
        "a@[]",
        "a@[IPv6:zz::1]",
        "a@[IPv6:192.0.2.1]",
        "a@[tag:content]",
        "a@" + "d" * 64 + ".example",
        "x" * 65 + "@example.org",
    ],
)
def test_invalid_mailboxes(address: str) -> None:
    assert refusal(validate_mailbox, address, False) == "501 5.1.3"


def test_path_length_limit() -> None:
    # RFC 5321 §4.5.3.1.3: 256 octets for the path with its brackets → 254 for the address.
    domain = ("x" * 63 + ".") * 3 + "y" * 60
    longest = "a@" + domain
    assert len(longest) == 254
    validate_mailbox(longest, False)
    assert refusal(validate_mailbox, "ab@" + domain, False) == "501 5.1.3"


def test_length_limits_count_octets_for_utf8() -> None:
    validate_mailbox("ü" * 32 + "@example.org", True)  # 64 octets
    assert refusal(validate_mailbox, "ü" * 33 + "@example.org", True) == "501 5.1.3"
    label = "ü" * 40  # 40 characters, 80 octets
    domain = ".".join([label] * 3)  # 122 characters, 242 octets
    validate_mailbox("abcdefghijk@" + domain, True)  # 254 octets
    assert refusal(validate_mailbox, "abcdefghijkl@" + domain, True) == "501 5.1.3"


@pytest.mark.parametrize(
    "address",
    [
        "ü@example.org",
        "用户@例子.广告",
        "δοκιμή@παράδειγμα.δοκιμή",
        "josé@bücher.example",  # a U-label mixing ASCII and non-ASCII letters
        "a@bücher.example",
        '"ü x"@example.org',
    ],
)
def test_utf8_mailboxes_need_smtputf8(address: str) -> None:
    assert refusal(validate_mailbox, address, False) == "553 5.6.7"
    validate_mailbox(address, True)


@pytest.mark.parametrize(
    ("domain", "utf8", "valid"),
    [
        ("example.org", False, True),
        ("EXAMPLE.org", False, True),
        ("a", False, True),
        ("[192.0.2.1]", False, True),
        ("[IPv6:::1]", False, True),
        ("[example.org]", False, False),
        ("", False, False),
        ("a" * 63 + ".b", False, True),
        ("a" * 64 + ".b", False, False),
        (".".join(["a" * 63] * 4), False, True),  # 255 octets: the RFC 5321 §4.5.3.1.2 limit
        ("-a.b", False, False),
        ("a-.b", False, False),
        ("a..b", False, False),
        ("bücher.example", False, False),
        ("bücher.example", True, True),
        ("例子.广告", True, True),
        ("ü-.example", True, False),
    ],
)
def test_validate_domain(domain: str, utf8: bool, valid: bool) -> None:
    assert validate_domain(domain, utf8) is valid


def test_domain_over_255_octets_is_invalid() -> None:
    assert not validate_domain(".".join(["a" * 63] * 4) + "b", False)


# --- parse_params -----------------------------------------------------------------------------


def test_parse_params() -> None:
    assert parse_params("") == {}
    assert parse_params("SIZE=10 body=8BITMIME  SMTPUTF8") == {
        "SIZE": "10",
        "BODY": "8BITMIME",
        "SMTPUTF8": None,
    }
    assert parse_params("ENVID=a=b") == {"ENVID": "a=b"}  # "=" inside the value is kept


@pytest.mark.parametrize("text", ["SIZE=1 size=2", "SIZE=", "=x", "-X=1", "X_Y=1", "ü=1"])
def test_parse_params_refusals(text: str) -> None:
    assert refusal(parse_params, text) == "501 5.5.4"


# --- parse_mail -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("<a@example.org>", ("a@example.org", MailParams())),
        ("<>", ("", MailParams())),
        ("<> SIZE=0", ("", MailParams(size=0))),
        ("<a@example.org> SIZE=1000", ("a@example.org", MailParams(size=1000))),
        ("<a@example.org> size=01000", ("a@example.org", MailParams(size=1000))),
        ("<a@example.org> BODY=8bitmime", ("a@example.org", MailParams(body="8BITMIME"))),
        ("<a@example.org> BODY=7BIT", ("a@example.org", MailParams(body="7BIT"))),
        ("<a@example.org> SMTPUTF8", ("a@example.org", MailParams(smtputf8=True))),
        ("<ü@example.org> SMTPUTF8", ("ü@example.org", MailParams(smtputf8=True))),
        ("<a@example.org> RET=full", ("a@example.org", MailParams(ret="FULL"))),
        ("<a@example.org> RET=HDRS", ("a@example.org", MailParams(ret="HDRS"))),
        ("<a@example.org> ENVID=QQ314159", ("a@example.org", MailParams(envid="QQ314159"))),
        ("<a@example.org> ENVID=a+2Bb+3D", ("a@example.org", MailParams(envid="a+b="))),
        ("<a@example.org> ENVID=" + "e" * 100, ("a@example.org", MailParams(envid="e" * 100))),
        ("<a@example.org> AUTH=<>", ("a@example.org", MailParams(auth=""))),
        (
            "<a@example.org> AUTH=e+3Dmc2@example.com",
            ("a@example.org", MailParams(auth="e=mc2@example.com")),
        ),
        (
            "<a@example.org> SIZE=5 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x AUTH=<>",
            ("a@example.org", MailParams(5, "8BITMIME", True, "HDRS", "x", "")),
        ),
        ("a@example.org SIZE=5", ("a@example.org", MailParams(size=5))),
    ],
)
def test_parse_mail(argument: str, expected: tuple[str, MailParams]) -> None:
    assert parse_mail(argument, 1000) == expected


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("", "501 5.5.4"),
        ("   ", "501 5.5.4"),
        ("<a@example.org> SIZE=1001", "552 5.3.4"),
        ("<a@example.org> SIZE=-1", "501 5.5.4"),
        ("<a@example.org> SIZE=1e3", "501 5.5.4"),
        ("<a@example.org> SIZE=" + "9" * 21, "501 5.5.4"),
        ("<a@example.org> SIZE", "501 5.5.4"),
        ("<a@example.org> BODY=BINARYMIME", "554 5.6.0"),
        ("<a@example.org> BODY=8BIT", "501 5.5.4"),
        ("<a@example.org> BODY", "501 5.5.4"),
        ("<a@example.org> SMTPUTF8=YES", "501 5.5.4"),
        ("<a@example.org> RET=NONE", "501 5.5.4"),
        ("<a@example.org> RET", "501 5.5.4"),
        ("<a@example.org> ENVID", "501 5.5.4"),
        ("<a@example.org> ENVID=" + "e" * 101, "501 5.5.4"),
        ("<a@example.org> ENVID=a+2", "501 5.5.4"),
        ("<a@example.org> AUTH", "501 5.5.4"),
        ("<a@example.org> NOTIFY=NEVER", "555 5.5.4"),  # an RCPT parameter
        ("<a@example.org> XFOO=1", "555 5.5.4"),
        ("<ü@example.org>", "553 5.6.7"),
        ("<a@@example.org>", "501 5.1.3"),
        ("<postmaster>", "501 5.1.3"),  # only RCPT accepts the bare postmaster
    ],
)
def test_parse_mail_refusals(argument: str, expected: str) -> None:
    assert refusal(parse_mail, argument, 1000) == expected


def test_parse_mail_without_a_size_limit() -> None:
    assert parse_mail("<a@example.org> SIZE=99999999999", 0) == (
        "a@example.org",
        MailParams(size=99999999999),
    )


def test_parse_mail_refusal_names_the_limit() -> None:
    with pytest.raises(ClientError) as info:
        parse_mail("<a@example.org> SIZE=2000", 1000)
    assert info.value.reply.text == "Message size exceeds fixed limit of 1000 octets"


# --- parse_rcpt -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("<b@example.test>", ("b@example.test", RcptParams())),
        (" hgs@fokus.gmd.de", ("hgs@fokus.gmd.de", RcptParams())),
        ("<postmaster>", ("postmaster", RcptParams())),
        ("<POSTMASTER>", ("postmaster", RcptParams())),
        ("postmaster", ("postmaster", RcptParams())),
        ("<Postmaster@example.test>", ("Postmaster@example.test", RcptParams())),
        ("<b@example.test> NOTIFY=never", ("b@example.test", RcptParams(notify=("NEVER",)))),
        (
            "<b@example.test> NOTIFY=success,FAILURE,Delay",
            ("b@example.test", RcptParams(notify=("SUCCESS", "FAILURE", "DELAY"))),
        ),
        (
            "<b@example.test> ORCPT=rfc822;b+40example.test",
            ("b@example.test", RcptParams(orcpt="rfc822;b@example.test")),
        ),
        (
            "<b@example.test> ORCPT=RFC822;x;y",
            ("b@example.test", RcptParams(orcpt="rfc822;x;y")),
        ),
        (
            # RFC 6533 §3: utf-8-addr-xtext is kept as sent.
            "<b@example.test> ORCPT=UTF-8;caf\\x{E9}@example.test",
            ("b@example.test", RcptParams(orcpt="utf-8;caf\\x{E9}@example.test")),
        ),
        (
            "<b@example.test> NOTIFY=FAILURE ORCPT=rfc822;b@example.test",
            ("b@example.test", RcptParams(("FAILURE",), "rfc822;b@example.test")),
        ),
    ],
)
def test_parse_rcpt(argument: str, expected: tuple[str, RcptParams]) -> None:
    assert parse_rcpt(argument, False) == expected


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("<>", "501 5.1.3"),
        ("", "501 5.1.3"),
        ("<b@example.test> NOTIFY=NEVER,SUCCESS", "501 5.5.4"),
        ("<b@example.test> NOTIFY=SUCCESS,SUCCESS", "501 5.5.4"),
        ("<b@example.test> NOTIFY=SUCCESS,,FAILURE", "501 5.5.4"),
        ("<b@example.test> NOTIFY=ALWAYS", "501 5.5.4"),
        ("<b@example.test> NOTIFY", "501 5.5.4"),
        ("<b@example.test> ORCPT=rfc822", "501 5.5.4"),
        ("<b@example.test> ORCPT=rfc822;", "501 5.5.4"),
        ("<b@example.test> ORCPT=;b@example.test", "501 5.5.4"),
        ("<b@example.test> ORCPT=rfc822;b+4", "501 5.5.4"),
        ("<b@example.test> ORCPT", "501 5.5.4"),
        ("<b@example.test> SIZE=10", "555 5.5.4"),
        ("<ü@example.test>", "553 5.6.7"),
        ("<b@example..test>", "501 5.1.3"),
    ],
)
def test_parse_rcpt_refusals(argument: str, expected: str) -> None:
    assert refusal(parse_rcpt, argument, False) == expected


def test_parse_rcpt_utf8_in_a_smtputf8_transaction() -> None:
    assert parse_rcpt("<ü@bücher.example>", True) == ("ü@bücher.example", RcptParams())


def test_xtext_encodes_utf8_octets_and_round_trips_beyond_latin1() -> None:
    # RFC 3461 §4: xtext encodes octets; a character above U+00FF is several "+HH".
    assert encode_xtext("€ x") == "+E2+82+AC+20x"
    assert decode_xtext("+E2+82+AC+20x") == "€ x"
    assert decode_xtext(encode_xtext("Grüße 😀")) == "Grüße 😀"
    # Octets that are not UTF-8 are kept (as Latin-1), not dropped.
    assert decode_xtext("+E4") == "ä"
