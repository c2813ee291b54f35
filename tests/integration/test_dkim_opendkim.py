"""DKIM interop with OpenDKIM, an independent implementation: what mailauth.dkim signs
(ed25519-sha256 and rsa-sha256) passes OpenDKIM's verifier and fails it once changed; what
OpenDKIM signs (rsa-sha256; its Debian build signs no ed25519) passes ours.

OpenDKIM runs in its test mode (`opendkim -x CONF -t FILE`): it reads the message from a file,
takes the public keys from a `TestPublicKeys` file instead of DNS and prints the
Authentication-Results (verifying) or DKIM-Signature (signing) it would add. No daemon is
started."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest

from postroom.dns.lookup import StaticLookup
from postroom.mailauth import dkim
from postroom.mailauth.keys import SigningKey, generate, record_text
from unit import rfc8463  # the RFC 8463 vectors, beside the unit tests

from .conftest import require_program

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: interop\r\n"
    b"Date: Mon, 7 Dec 2026 00:00:00 +0000\r\n"
    b"Message-ID: <3@example.com>\r\n"
    b"\r\n"
    b"Hello  there, \r\n\r\n\r\n"
)
_RESULT = re.compile(r"dkim=(\w+)[^;]*?header\.a=([\w-]+)")


def opendkim(tmp_path: Path, config: str, message: bytes, *options: str) -> str:
    program = require_program("opendkim")
    conf = tmp_path / "opendkim.conf"
    conf.write_text(config + "Syslog no\nRequireSafeKeys false\n")
    path = tmp_path / "message.eml"
    path.write_bytes(message)
    done = subprocess.run(
        [program, "-x", str(conf), "-t", str(path), *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def verified_by_opendkim(
    tmp_path: Path, message: bytes, records: dict[str, str]
) -> list[tuple[str, str]]:
    """(result, algorithm) of each signature in the Authentication-Results OpenDKIM would add
    (printed with -vvv in test mode)."""
    keys = tmp_path / "keys.txt"
    keys.write_text("".join(f"{name} {text}\n" for name, text in records.items()))
    config = f"Mode v\nTestPublicKeys {keys}\nMinimumKeyBits 1024\n"
    return sorted(_RESULT.findall(opendkim(tmp_path, config, message, "-vvv")))


@pytest.fixture(scope="module")
def our_keys() -> tuple[list[SigningKey], dict[str, str]]:
    keys, records = [], {}
    for algorithm, selector in (("ed25519", "ed1"), ("rsa", "rsa1")):
        pair = generate(algorithm)  # type: ignore[arg-type]
        keys.append(SigningKey("example.com", selector, pair.algorithm, pair.private))
        records[f"{selector}._domainkey.example.com"] = record_text(pair.algorithm, pair.public)
    return keys, records


def test_opendkim_verifies_what_we_sign(
    tmp_path: Path, our_keys: tuple[list[SigningKey], dict[str, str]]
) -> None:
    keys, records = our_keys
    signed = dkim.sign(MESSAGE, keys) + MESSAGE
    assert verified_by_opendkim(tmp_path, signed, records) == [
        ("pass", "ed25519-sha256"),
        ("pass", "rsa-sha256"),
    ]
    changed = signed.replace(b"Hello", b"Goodbye")
    assert verified_by_opendkim(tmp_path, changed, records) == [
        ("fail", "ed25519-sha256"),
        ("fail", "rsa-sha256"),
    ]


def test_opendkim_and_we_agree_on_the_rfc_8463_example(tmp_path: Path) -> None:
    message = rfc8463.ED25519_SIGNATURE + rfc8463.RSA_SIGNATURE + rfc8463.MESSAGE
    records = {name: texts[0] for (name, _type), texts in rfc8463.RECORDS.items()}
    assert verified_by_opendkim(tmp_path, message, records) == [
        ("pass", "ed25519-sha256"),
        ("pass", "rsa-sha256"),
    ]


def test_we_verify_what_opendkim_signs(
    tmp_path: Path, our_keys: tuple[list[SigningKey], dict[str, str]]
) -> None:
    keys, records = our_keys
    rsa_key = keys[1]
    (tmp_path / "rsa.pem").write_bytes(rsa_key.private)
    output = opendkim(
        tmp_path,
        "Mode s\nDomain example.com\nSelector rsa1\n"
        f"KeyFile {tmp_path / 'rsa.pem'}\nCanonicalization relaxed/relaxed\n",
        MESSAGE,
    )
    start = output.index("DKIM-Signature:")
    field = output[start:].split("\n\n")[0].rstrip("\n")
    lines = [line for line in field.split("\n") if line.strip()]
    signature = "\r\n".join(lines).encode() + b"\r\n"
    zone = StaticLookup({(name, "TXT"): [text] for name, text in records.items()})
    outcomes = asyncio.run(dkim.verify(signature + MESSAGE, zone))
    assert [(o.result, o.algorithm, o.selector) for o in outcomes] == [
        ("pass", "rsa-sha256", "rsa1")
    ]
    tampered = signature + MESSAGE.replace(b"Subject: interop", b"Subject: changed")
    assert [o.result for o in asyncio.run(dkim.verify(tampered, zone))] == ["fail"]
