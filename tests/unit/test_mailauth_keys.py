"""DKIM key pairs: what `generate` makes signs and verifies through dkimpy with the record
`record_text` publishes, and records split into 255-octet character-strings."""

from __future__ import annotations

import dkim
import pytest

from postroom.mailauth.keys import (
    SIGNATURE_ALGORITHM,
    Algorithm,
    generate,
    record_text,
    txt_parts,
)

MESSAGE = (
    b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n"
    b"Date: Mon, 7 Dec 2026 00:00:00 +0000\r\n\r\nbody\r\n"
)


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa"])
def test_a_generated_key_signs_what_its_record_verifies(algorithm: Algorithm) -> None:
    pair = generate(algorithm)
    assert pair.private.decode() not in repr(pair)
    signature = dkim.sign(
        MESSAGE,
        b"sel",
        b"example.com",
        pair.private,
        signature_algorithm=SIGNATURE_ALGORITHM[algorithm].encode(),
    )
    record = record_text(algorithm, pair.public).encode()
    assert dkim.verify(signature + MESSAGE, dnsfunc=lambda name, timeout=5: record)
    other = record_text(algorithm, generate(algorithm).public).encode()
    assert not dkim.verify(signature + MESSAGE, dnsfunc=lambda name, timeout=5: other)


def test_long_records_are_split_into_255_octet_strings() -> None:
    text = record_text("rsa", generate("rsa").public)
    parts = txt_parts(text)
    assert len(parts) == 2 and all(len(p) <= 255 for p in parts) and "".join(parts) == text
    assert txt_parts("short") == ["short"]
