"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2), sans I/O.

A load balancer in front of a listener opens each connection with one header naming the
client it relays. :func:`parse` takes the bytes received so far and answers the header once it
is complete, ``None`` while more bytes are needed (no more than :data:`MAX_HEADER` in all), or
raises :class:`ProxyHeaderError`. It never consumes past the header, so what follows (a TLS
ClientHello, a pipelined command) stays for the session. Parsing is linear, without regular
expressions: fixed-width fields for version 2, one split of a bounded line for version 1.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # spec §2.1: the longest TCP6 line, CRLF included
V1_MIN = len(b"PROXY UNKNOWN\r\n")
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # spec §2.2: 12 bytes no text protocol starts with
V2_FIXED = 16  # signature, version/command, family/transport, length
V2_MAX_BODY = 4096  # our bound on addresses + TLVs (the field allows 65535)
MAX_HEADER = V2_FIXED + V2_MAX_BODY

_V2_LOCAL, _V2_PROXY = 0x0, 0x1  # spec §2.2: the low nibble of the 13th byte
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_STREAM = 0x1
_V2_ADDRESS_SIZE = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}
_DIGITS = frozenset(b"0123456789")
_V4_CHARS = frozenset(b"0123456789.")
_V6_CHARS = frozenset(b"0123456789abcdefABCDEF:.")


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY header this server accepts (the reason is the message)."""


@dataclass(frozen=True)
class ProxyHeader:
    """A complete header: `client` is the relayed (address, port), or None when the sender
    names no client (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC or UNIX) and the connection's own peer
    stands; `length` is how many bytes of the input the header took."""

    version: int
    client: tuple[str, int] | None
    length: int


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`, or None while it is a proper prefix of one."""
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    if data[:1] == V1_PREFIX[:1]:
        return _parse_v1(data)
    if not data:
        return None
    raise ProxyHeaderError("no PROXY header: the connection starts with other bytes")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    """spec §2.1: "PROXY" SP family SP src SP dst SP sport SP dport CRLF, at most 107 bytes."""
    head = data[: len(V1_PREFIX)]
    if not V1_PREFIX.startswith(head):
        raise ProxyHeaderError("no PROXY header: the connection starts with other bytes")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"version 1 line longer than {V1_MAX} bytes")
        if b"\n" in data or b"\x00" in data:
            raise ProxyHeaderError("version 1 line with a bare LF or a NUL")
        return None
    line = data[len(V1_PREFIX) : end]
    length = end + 2
    fields = line.split(b" ")
    if fields[0] == b"UNKNOWN":  # spec §2.1: the rest of the line is ignored
        return ProxyHeader(1, None, length)
    if len(fields) != 5:
        raise ProxyHeaderError("version 1 line must have family, 2 addresses and 2 ports")
    family, source, _destination, source_port, destination_port = fields
    if family == b"TCP4":
        allowed, version = _V4_CHARS, 4
    elif family == b"TCP6":
        allowed, version = _V6_CHARS, 6
    else:
        raise ProxyHeaderError("version 1 family must be TCP4, TCP6 or UNKNOWN")
    address = _v1_address(source, allowed, version)
    _v1_address(_destination, allowed, version)
    port = _v1_port(source_port)
    _v1_port(destination_port)
    return ProxyHeader(1, (address, port), length)


def _v1_address(text: bytes, allowed: frozenset[int], version: int) -> str:
    if not text or not allowed.issuperset(text):
        raise ProxyHeaderError(f"version 1 address is not an IPv{version} address")
    try:
        ip = ipaddress.ip_address(text.decode("ascii"))
    except ValueError:
        raise ProxyHeaderError(f"version 1 address is not an IPv{version} address") from None
    if ip.version != version:
        raise ProxyHeaderError(f"version 1 address is not an IPv{version} address")
    return _shown(ip)


def _v1_port(text: bytes) -> int:
    # spec §2.1: a decimal 0..65535; a leading zero is refused (HAProxy never sends one).
    if not text or len(text) > 5 or not _DIGITS.issuperset(text) or text[:1] == b"0" != text:
        raise ProxyHeaderError("version 1 port is not a number from 0 to 65535")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError("version 1 port is not a number from 0 to 65535")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    """spec §2.2: signature, version 2 and command, family and transport, length, addresses,
    then TLVs up to the length (walked for their bounds, otherwise ignored)."""
    if not V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]):
        raise ProxyHeaderError("no PROXY header: the connection starts with other bytes")
    if len(data) < V2_FIXED:
        if len(data) > len(V2_SIGNATURE) and data[12] >> 4 != 2:
            raise ProxyHeaderError("version 2 signature with another version")
        return None
    version_command, family_transport = data[12], data[13]
    if version_command >> 4 != 2:  # spec §2.2: the high nibble is the version
        raise ProxyHeaderError("version 2 signature with another version")
    command = version_command & 0x0F
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"version 2 command {command} is neither LOCAL nor PROXY")
    body_length = int.from_bytes(data[14:16], "big")
    if body_length > V2_MAX_BODY:
        raise ProxyHeaderError(f"version 2 header longer than {V2_MAX_BODY} bytes after its 16")
    length = V2_FIXED + body_length
    if len(data) < length:
        return None
    body = data[V2_FIXED:length]
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family > _AF_UNIX or transport > 0x2:
        raise ProxyHeaderError("version 2 family or transport out of range")
    address_size = _V2_ADDRESS_SIZE.get(family, 0)
    if body_length < address_size:
        raise ProxyHeaderError("version 2 length too short for its address family")
    _walk_tlvs(body, address_size)
    if command == _V2_LOCAL:  # spec §2.2: health checks; the real endpoints stand
        return ProxyHeader(2, None, length)
    if family in (_AF_UNSPEC, _AF_UNIX):  # spec §2.2: no IP client; keep the socket's
        return ProxyHeader(2, None, length)
    if transport != _STREAM:
        raise ProxyHeaderError("version 2 header relays no TCP stream")
    if family == _AF_INET:
        source: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(body[0:4])
        port = int.from_bytes(body[8:10], "big")
    else:
        source = ipaddress.IPv6Address(body[0:16])
        port = int.from_bytes(body[32:34], "big")
    return ProxyHeader(2, (_shown(source), port), length)


def _walk_tlvs(body: bytes, start: int) -> None:
    """spec §2.2.7: type (1 byte), length (2 bytes), value; each must end within the header."""
    at = start
    while at < len(body):
        if at + 3 > len(body):
            raise ProxyHeaderError("version 2 TLV cut short")
        at += 3 + int.from_bytes(body[at + 1 : at + 3], "big")
        if at > len(body):
            raise ProxyHeaderError("version 2 TLV longer than the header")


def _shown(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An IPv4-mapped IPv6 address as its IPv4 address, the way the listeners see IPv4."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
