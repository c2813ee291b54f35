"""The PROXY protocol header parser (HAProxy's proxy-protocol.txt): version 1 lines, version 2
binary headers for IPv4, IPv6, LOCAL, UNSPEC and UNIX with TLVs, every way to be malformed,
input cut at every byte, and a fuzz test that only ever sees a header, None or the parser's
own error."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.proto.proxy import (
    MAX_HEADER,
    V1_MAX,
    V2_MAX_BODY,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    parse,
)


def v2(
    command: int = 1,
    family: int = 1,
    transport: int = 1,
    body: bytes | None = None,
    version: int = 2,
    length: int | None = None,
) -> bytes:
    if body is None:
        body = ipv4_body("192.0.2.7", "198.51.100.1", 40000, 25)
    size = len(body) if length is None else length
    return (
        V2_SIGNATURE
        + bytes([version << 4 | command, family << 4 | transport])
        + (struct.pack("!H", size) + body)
    )


def ipv4_body(source: str, destination: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv4Address(source).packed
        + ipaddress.IPv4Address(destination).packed
        + struct.pack("!HH", sport, dport)
    )


def ipv6_body(source: str, destination: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv6Address(source).packed
        + ipaddress.IPv6Address(destination).packed
        + struct.pack("!HH", sport, dport)
    )


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


# --- version 1 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "client"),
    [
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n", ("192.0.2.7", 40000)),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n", ("2001:db8::7", 1)),
        (b"PROXY TCP6 ::ffff:192.0.2.9 ::1 0 993\r\n", ("192.0.2.9", 0)),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", None),
    ],
)
def test_version_1_lines(line: bytes, client: tuple[str, int] | None) -> None:
    assert parse(line + b"EHLO x\r\n") == ProxyHeader(1, client, len(line))


def test_the_longest_version_1_lines() -> None:
    six = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY TCP6 {six} {six} 65535 65535\r\n".encode()
    assert parse(line) == ProxyHeader(1, (six, 65535), 104)
    unknown = f"PROXY UNKNOWN {six} {six} 65535 65535\r\n".encode()
    assert len(unknown) == V1_MAX  # spec §2.1's worst case
    assert parse(unknown) == ProxyHeader(1, None, V1_MAX)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"EHLO example.org\r\n", "other bytes"),
        (b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "other bytes"),
        (b"PROXY\tTCP4", "other bytes"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "family, 2 addresses"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", "family, 2 addresses"),
        (b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", "family, 2 addresses"),
        (b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n", "IPv4"),
        (b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n", "IPv6"),
        (b"PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n", "IPv4"),
        (b"PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n", "IPv4"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "IPv6"),
        (b"PROXY TCP4 1.2.3.4 example.org 1 2\r\n", "IPv4"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 025 2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 +2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 \r\n", "port"),
        (b"PROXY TCP4 1.2.3.4\n", "bare LF"),
        (b"PROXY TCP4 1.2.3.4\x00", "NUL"),
        (b"PROXY UNKNOWN " + b"x" * 100, "longer than 107"),
    ],
)
def test_malformed_version_1(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError, match=reason):
        parse(data)


def test_a_line_without_crlf_within_107_bytes_is_refused_even_if_one_follows() -> None:
    with pytest.raises(ProxyHeaderError, match="longer than 107"):
        parse(b"PROXY UNKNOWN " + b"x" * 93 + b"\r\n")
    assert parse(b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n") == ProxyHeader(1, None, 107)


# --- version 2 -----------------------------------------------------------------------------


def test_version_2_ipv4() -> None:
    header = v2()
    assert parse(header + b"\x16\x03\x01") == ProxyHeader(2, ("192.0.2.7", 40000), 28)


def test_version_2_ipv6_and_mapped_ipv4() -> None:
    header = v2(family=2, body=ipv6_body("2001:db8::7", "2001:db8::1", 5, 143))
    assert parse(header) == ProxyHeader(2, ("2001:db8::7", 5), 16 + 36)
    mapped = v2(family=2, body=ipv6_body("::ffff:192.0.2.9", "::1", 6, 143))
    assert parse(mapped) == ProxyHeader(2, ("192.0.2.9", 6), 16 + 36)


def test_version_2_tlvs_are_skipped() -> None:
    tlvs = tlv(0x01, b"smtp") + tlv(0x04, b"") + tlv(0x20, b"\x01" + bytes(4) + tlv(0x21, b"x"))
    header = v2(body=ipv4_body("203.0.113.5", "10.0.0.1", 1234, 25) + tlvs)
    assert parse(header + b"rest") == ProxyHeader(2, ("203.0.113.5", 1234), len(header))


@pytest.mark.parametrize(
    "header",
    [
        v2(command=0, family=0, transport=0, body=b""),  # HAProxy's health check
        v2(command=0),  # LOCAL with addresses: ignored
        v2(command=1, family=0, transport=0, body=b""),  # UNSPEC
        v2(command=1, family=3, transport=1, body=bytes(216)),  # UNIX: no IP client
        v2(command=1, family=0, transport=0, body=tlv(0x04, b"abc")),
    ],
)
def test_version_2_without_a_client_keeps_the_socket_peer(header: bytes) -> None:
    assert parse(header) == ProxyHeader(2, None, len(header))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (V2_SIGNATURE[:5] + b"X", "other bytes"),
        (v2(version=1), "another version"),
        (v2(version=3)[:13], "another version"),
        (v2(command=2), "neither LOCAL nor PROXY"),
        (v2(command=0xF), "neither LOCAL nor PROXY"),
        (v2(family=4), "out of range"),
        (v2(transport=3), "out of range"),
        (v2(transport=2), "no TCP stream"),
        (v2(transport=0), "no TCP stream"),
        (v2(body=bytes(11)), "too short for its address family"),
        (v2(family=2), "too short for its address family"),
        (v2(family=3, body=bytes(215)), "too short for its address family"),
        (v2(body=ipv4_body("1.2.3.4", "1.2.3.4", 1, 2) + b"\x01\x00"), "TLV cut short"),
        (v2(body=ipv4_body("1.2.3.4", "1.2.3.4", 1, 2) + tlv(1, b"ab")[:-1]), "TLV longer"),
        (v2(body=b"", length=V2_MAX_BODY + 1), f"longer than {V2_MAX_BODY}"),
        (v2(body=b"", length=0xFFFF), f"longer than {V2_MAX_BODY}"),
    ],
)
def test_malformed_version_2(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError, match=reason):
        parse(data)


def test_the_largest_version_2_header_is_accepted() -> None:
    body = ipv4_body("1.2.3.4", "5.6.7.8", 9, 10)
    body += tlv(0x04, bytes(V2_MAX_BODY - len(body) - 3))
    header = v2(body=body)
    assert len(header) == MAX_HEADER
    assert parse(header) == ProxyHeader(2, ("1.2.3.4", 9), MAX_HEADER)


# --- input cut short -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n",
        b"PROXY UNKNOWN\r\n",
        v2(),
        v2(family=2, body=ipv6_body("2001:db8::7", "::1", 1, 2) + tlv(0xEE, b"x" * 40)),
        v2(command=0, family=0, transport=0, body=b""),
    ],
)
def test_every_prefix_asks_for_more(header: bytes) -> None:
    for end in range(len(header)):
        assert parse(header[:end]) is None, end
    assert parse(header) is not None


# --- fuzz ----------------------------------------------------------------------------------

_SEEDS = [
    b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n",
    b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n",
    b"PROXY UNKNOWN\r\n",
    v2(),
    v2(family=2, body=ipv6_body("2001:db8::7", "::1", 1, 2) + tlv(1, b"h2")),
    v2(command=0, family=0, transport=0, body=b""),
]


def _mutated(seed: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    data = bytearray(seed)
    for at, value in edits:
        data[at % len(data)] = value
    return bytes(data[: max(cut, 0)] if cut < len(data) else data)


@settings(max_examples=1500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(lambda tail: b"PROXY " + tail, st.binary(max_size=120)),
        st.builds(lambda tail: V2_SIGNATURE + tail, st.binary(max_size=300)),
        st.builds(
            _mutated,
            st.sampled_from(_SEEDS),
            st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
            st.integers(0, 200),
        ),
    )
)
def test_fuzz_only_headers_none_or_our_error(data: bytes) -> None:
    try:
        header = parse(data)
    except ProxyHeaderError:
        return
    if header is None:
        assert len(data) < MAX_HEADER
        return
    assert 0 < header.length <= min(len(data), MAX_HEADER)
    assert header.version in (1, 2)
    if header.client is not None:
        ipaddress.ip_address(header.client[0])
        assert 0 <= header.client[1] <= 65535
    # What was taken is a header on its own: nothing after it changes the answer.
    assert parse(data[: header.length]) == header
