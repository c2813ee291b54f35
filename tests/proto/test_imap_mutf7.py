"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3): encoding, strict decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.proto.imap.mutf7 import MUTF7Error, decode, encode


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 §5.1.3
        ("pää", "p&AOQA5A-"),
        ("&", "&-"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("INBOX", "INBOX"),
        ("", ""),
        ("😀", "&2D3eAA-"),
        ("a\U0001f600b&c", "a&2D3eAA-b&-c"),
    ],
)
def test_known_names(text: str, wire: str) -> None:
    assert encode(text) == wire
    assert decode(wire) == text


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_round_trip(text: str) -> None:
    wire = encode(text)
    assert wire.isascii() and all(" " <= c <= "~" for c in wire)
    assert decode(wire) == text


@pytest.mark.parametrize(
    "wire",
    [
        "&",  # unterminated
        "&AOQ",  # unterminated
        "ä",  # raw 8-bit
        "a\tb",  # control character
        "&AGE-",  # "a" hidden in BASE64
        "&AOQ-&AOQ-",  # one run split in two shifts
        "&AOR-",  # non-zero spare bits
        "&AO/-",  # "/" instead of ","
        "&A-",  # truncated BASE64
        "&AOQA-",  # not whole UTF-16 units
        "&2D0-",  # lone high surrogate
        "&AOQ=-",  # padding
        "!#$&'+,-.0123456789:;<=>?@^_`|[}",  # imaptest "atoms": "&'+,-" is no valid shift
    ],
)
def test_invalid_names_are_refused(wire: str) -> None:
    with pytest.raises(MUTF7Error):
        decode(wire)


def test_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(MUTF7Error):
        encode("a\ud800")
