"""Header fields as SEARCH reads them (proto/imap/header_fields.py): the quick lookup of one
field gives exactly what splitting the whole block gives, on any header block."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.proto.imap.header_fields import field_values, raw_headers

# Pieces that make header blocks hard: names in any case, folds, bare LF, stray CR, blanks and
# tabs around names, latin-1 blanks, colons inside values, empty lines and non-ASCII bytes.
PIECES = (
    b"Subject", b"SUBJECT", b"subject", b"X-Subject", b"From", b":", b": ", b" ", b"\t", b"\r",
    b"\n", b"\r\n", b"\r\n ", b"\r\n\t", b"\xa0", b"\x85", b"report 2424", b"golf", b"\xc3\xa9",
    b"=?utf-8?q?x?=",
)  # fmt: skip
blocks = st.lists(st.sampled_from(PIECES), max_size=30).map(b"".join)


@settings(max_examples=2000, deadline=None)
@given(blocks, st.sampled_from(("subject", "Subject", "from", "x-subject", "to", "é")))
def test_one_field_is_read_as_the_whole_block_reads_it(block: bytes, name: str) -> None:
    assert field_values(block, name) == raw_headers(block).get(name.lower(), [])


def test_folded_and_repeated_fields() -> None:
    block = b"Subject: one\r\n two\r\nX-Subject: no\r\nsubject:three\r\n\r\nSubject: body\r\n"
    assert field_values(block, "SUBJECT") == [b"one two", b"three"]
    assert field_values(block, "x-subject") == [b"no"]
    assert field_values(block, "to") == []
