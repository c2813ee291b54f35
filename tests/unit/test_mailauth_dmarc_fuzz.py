"""Hypothesis against the DMARC record parser, the Authentication-Results parser and writer,
the forged-verdict remover and the aggregate report parser: whatever the input, only their own
errors escape, and what we write reads back as written."""

from __future__ import annotations

import contextlib
import gzip
import io
import zipfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.mailauth.authres import AuthResError, MethodResult, format_header, parse, remove_ours
from postroom.mailauth.dmarc import DmarcRecordError, FromError, from_domains, parse_record
from postroom.mailauth.dmarc_reports import ReportError, parse_report
from postroom.mailauth.message_fields import split_header

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that make random text look like the grammar, so the fuzzer reaches deep states.
RECORD_WORDS = st.sampled_from(
    [
        "v=DMARC1",
        ";",
        " ",
        "=",
        ",",
        "!",
        "p",
        "sp",
        "np",
        "rua",
        "ruf",
        "pct",
        "t",
        "psd",
        "fo",
        "adkim",
        "reject",
        "none",
        "quarantine",
        "mailto:",
        "a@example.com",
        "10m",
        "y",
        "s",
        "1:d",
        "%",
        "\t",
    ]
)


@FUZZ
@given(st.lists(st.one_of(RECORD_WORDS, st.text(max_size=8)), max_size=40).map("".join))
def test_dmarc_records_raise_only_their_own_error(text: str) -> None:
    try:
        record = parse_record(text)
    except DmarcRecordError:
        return
    assert record.p in ("none", "quarantine", "reject")
    assert 0 <= record.pct <= 100
    assert all(uri.startswith("mailto:") for uri in record.rua + record.ruf)


AR_WORDS = st.sampled_from(
    [
        "mx.example.net",
        ";",
        " ",
        "=",
        ".",
        "/",
        "(",
        ")",
        '"',
        "\\",
        "\r\n ",
        "dkim",
        "pass",
        "none",
        "reason",
        "header",
        "d",
        "smtp.mailfrom",
        "a@b",
        "1",
        "i=1;",
    ]
)


@FUZZ
@given(st.lists(st.one_of(AR_WORDS, st.text(max_size=6)), max_size=40).map("".join))
def test_authentication_results_raise_only_their_own_error(text: str) -> None:
    for value in (text, text.encode("utf-8", "surrogatepass")):
        with contextlib.suppress(AuthResError):
            parse(value)


NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
# Any printable text (RFC 8601 values may be UTF-8), no control characters.
VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f"),
    max_size=30,
)
RESULT = st.builds(
    MethodResult,
    method=NAME,
    result=NAME,
    reason=st.none() | VALUE,
    properties=st.lists(
        st.tuples(st.builds(lambda a, b: f"{a}.{b}", NAME, NAME), VALUE), max_size=5
    ).map(tuple),
)


@FUZZ
@given(NAME, st.lists(RESULT, max_size=6))
def test_what_we_write_reads_back(authserv_id: str, results: list[MethodResult]) -> None:
    field = format_header(authserv_id, results)
    assert field.startswith(b"Authentication-Results: ") and field.endswith(b"\r\n")
    assert b"\r\n" not in field[:-2].replace(b"\r\n\t", b"")  # every line break is a fold
    assert parse(field.split(b":", 1)[1]) == (authserv_id, results)


HEADER_LINES = st.sampled_from(
    [
        b"Authentication-Results: mx.example.net; dkim=pass\r\n",
        b"authentication-results: (x) MX.EXAMPLE.NET; none\n",
        b"Authentication-Results: other.example; spf=pass\r\n",
        b"ARC-Authentication-Results: i=1; mx.example.net; none\r\n",
        b"ARC-Seal: i=1; cv=none; b=x\r\n",
        b"ARC-Message-Signature: i=1; b=y\r\n",
        b" folded continuation\r\n",
        b"From: a@example.com\r\n",
        b"Garbage line without colon\r\n",
        b"\r\n",
    ]
)


@FUZZ
@given(st.lists(st.one_of(HEADER_LINES, st.binary(max_size=12)), max_size=30).map(b"".join))
def test_removal_never_raises_and_never_touches_the_body(head: bytes) -> None:
    body = b"\r\n\r\nAuthentication-Results: mx.example.net; dkim=pass\r\nbody\r\n"
    message = head + body
    cleaned = remove_ours(message, "mx.example.net")
    _, header_end = split_header(message)
    assert cleaned.endswith(message[header_end:])
    assert len(cleaned) <= len(message)
    # whatever was removed was a field of ours: removing again changes nothing
    assert remove_ours(cleaned, "mx.example.net") == cleaned


@FUZZ
@given(st.lists(st.one_of(HEADER_LINES, st.binary(max_size=20)), max_size=20).map(b"".join))
def test_author_domains_never_raise(head: bytes) -> None:
    result = from_domains(head)
    assert isinstance(result, FromError) or (result and all(isinstance(d, str) for d in result))


VALID = b"""<feedback><report_metadata><org_name>o</org_name><email>e@o</email>
<report_id>r</report_id><date_range><begin>1</begin><end>2</end></date_range></report_metadata>
<policy_published><domain>example.com</domain><p>none</p></policy_published><record><row>
<source_ip>192.0.2.1</source_ip><count>1</count><policy_evaluated><disposition>none</disposition>
<dkim>pass</dkim><spf>pass</spf></policy_evaluated></row><identifiers><header_from>example.com
</header_from></identifiers><auth_results><spf><domain>example.com</domain><result>pass</result>
</spf></auth_results></record></feedback>"""


def zipped(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("r.xml", data)
    return out.getvalue()


def test_the_fuzzed_report_is_valid_to_start_with() -> None:
    assert parse_report(VALID).records[0].count == 1


@FUZZ
@given(
    st.sampled_from([lambda d: d, gzip.compress, zipped]),
    st.integers(min_value=0, max_value=len(VALID)),
    st.integers(min_value=0, max_value=40),
    st.binary(max_size=40),
)
def test_mutated_reports_raise_only_report_error(
    container: object, at: int, cut: int, insert: bytes
) -> None:
    """Bytes cut and inserted into a valid report, before or after compression."""
    mutated = VALID[:at] + insert + VALID[at + cut :]
    for data in (container(mutated), _mutate(container(VALID), at, cut, insert)):  # type: ignore[operator]
        with contextlib.suppress(ReportError):
            parse_report(data)


def _mutate(data: bytes, at: int, cut: int, insert: bytes) -> bytes:
    at = at % (len(data) + 1)
    return data[:at] + insert + data[at + cut :]


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_report_error(data: bytes) -> None:
    for prefix in (b"", b"\x1f\x8b", b"PK\x03\x04", b"<feedback>"):
        with contextlib.suppress(ReportError):
            parse_report(prefix + data)
