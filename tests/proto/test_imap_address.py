"""RFC 5322 address parsing for ENVELOPE: the quick path for plain addresses must give exactly
what the full parser gives, on every input."""

from __future__ import annotations

import random

import pytest

from postroom.proto.imap.address import _PLAIN_ADDRESS, _AddressParser, parse_addresses

PIECES = [
    b"Ann",
    b"Lee",
    b" ",
    b"  ",
    b"\t",
    b"<",
    b">",
    b"@",
    b".",
    b",",
    b'"',
    b"(",
    b")",
    b":",
    b";",
    b"\\",
    b"a.b",
    b"ex.test",
    b"=?utf-8?q?caf=C3=A9?=",
    b"\xc3\xa9",
    b"x",
    b"[1.2.3.4]",
    b"@r.test:",
]


@pytest.mark.parametrize(
    "value",
    [
        b"Walter Island <walter.0@example.com>",
        b"user@bench.test",
        b"<x@y.z>",
        b"Name<a@b>",
        b"  Ann Lee <ann@ex.test>\t",
        b"Ann  Lee <ann@ex.test>",
        b'"Ann Lee" <ann@ex.test>',
        b"ann@ex.test (Ann Lee)",
        b"A.B <a@b>",
        b"<@r.test:a@b>",
        b"a@b, c@d",
        b"Team: a@b;",
        b"=?utf-8?q?caf=C3=A9?= <a@b>",
        b"ann.@ex.test",
        b"<ann@ex..test>",
        b"",
    ],
)
def test_quick_path_agrees_with_the_parser(value: bytes) -> None:
    assert parse_addresses(value) == _AddressParser(value).address_list()


def _near_plain(rng: random.Random) -> bytes:
    """A plain address, often with one random piece put in somewhere."""
    words = [rng.choice([b"Ann", b"Lee", b"=?utf-8?q?x?=", b"\xc3\xa9", b"O'Neil"])]
    words += [rng.choice([b"Ann", b"Lee", b"x"]) for _ in range(rng.randint(0, 2))]
    spec = rng.choice([b"ann", b"a.b", b"x"]) + b"@" + rng.choice([b"ex.test", b"b", b"r.s.t"])
    form = rng.randint(0, 2)
    if form == 0:
        value = b" ".join(words) + rng.choice([b" ", b""]) + b"<" + spec + b">"
    elif form == 1:
        value = b"<" + spec + b">"
    else:
        value = spec
    value = rng.choice([b"", b" ", b"\t"]) + value + rng.choice([b"", b" ", b"\t "])
    if rng.random() < 0.6:
        at = rng.randint(0, len(value))
        value = value[:at] + rng.choice(PIECES) + value[at:]
    return value


def test_quick_path_agrees_with_the_parser_on_random_inputs() -> None:
    rng = random.Random(5322)
    quick = 0
    for _ in range(4000):
        value = _near_plain(rng)
        quick += _PLAIN_ADDRESS.fullmatch(value) is not None
        assert parse_addresses(value) == _AddressParser(value).address_list(), value
    assert quick > 1000  # both paths were exercised
