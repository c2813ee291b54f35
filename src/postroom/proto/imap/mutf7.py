"""Modified UTF-7, the mailbox name encoding of RFC 3501 §5.1.3.

Printable US-ASCII stands for itself except "&", written "&-"; any other run of characters is
UTF-16BE in base64 (with "," instead of "/", no padding) between "&" and "-". Decoding is strict:
anything an encoder would not have produced (raw 8-bit or control characters, unterminated or
needlessly split shifts, printable ASCII hidden in base64, stray bits, lone surrogates) raises
`MUTF7Error`, so one mailbox has exactly one wire name.
"""

from __future__ import annotations

import base64
import binascii


class MUTF7Error(ValueError):
    """The name is not valid modified UTF-7."""


def _is_direct(char: str) -> bool:
    # RFC 3501 §5.1.3: octets 0x20-0x25 and 0x27-0x7e represent themselves.
    return "\x20" <= char <= "\x7e"


def _shift(run: list[str]) -> str:
    try:
        raw = "".join(run).encode("utf-16-be")
    except UnicodeEncodeError as exc:
        raise MUTF7Error("mailbox name contains a lone surrogate") from exc
    # RFC 3501 §5.1.3: modified BASE64 uses "," for "/" and omits the "=" padding.
    text = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
    return f"&{text}-"


def encode(name: str) -> str:
    """Encode a Unicode mailbox name for the wire."""
    out: list[str] = []
    run: list[str] = []
    for char in name:
        if _is_direct(char):
            if run:
                out.append(_shift(run))
                run = []
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    if run:
        out.append(_shift(run))
    return "".join(out)


_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def _unshift(text: str) -> str:
    if not set(text) <= _BASE64_CHARS:
        raise MUTF7Error("invalid character in a modified BASE64 sequence")
    padded = text.replace(",", "/") + "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except binascii.Error as exc:
        raise MUTF7Error("truncated modified BASE64 sequence") from exc
    if len(raw) % 2:
        raise MUTF7Error("modified BASE64 sequence is not whole UTF-16 units")
    try:
        return raw.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise MUTF7Error("modified BASE64 sequence holds a lone surrogate") from exc


def decode(wire: str) -> str:
    """Decode a wire mailbox name; raise `MUTF7Error` unless it is canonical modified UTF-7."""
    out: list[str] = []
    i = 0
    while i < len(wire):
        char = wire[i]
        if not _is_direct(char):
            raise MUTF7Error("mailbox name contains a character outside printable US-ASCII")
        if char != "&":
            out.append(char)
            i += 1
            continue
        end = wire.find("-", i + 1)
        if end < 0:
            raise MUTF7Error("unterminated modified BASE64 sequence")
        out.append("&" if end == i + 1 else _unshift(wire[i + 1 : end]))
        i = end + 1
    decoded = "".join(out)
    # One name, one spelling: ASCII hidden in BASE64, split shifts and non-zero spare bits all
    # decode to something that encodes differently.
    if encode(decoded) != wire:
        raise MUTF7Error("mailbox name is not in canonical modified UTF-7")
    return decoded
