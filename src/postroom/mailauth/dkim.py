"""DKIM signatures (RFC 6376): verifying every DKIM-Signature of a message and signing outbound
mail, over dkimpy, with ed25519-sha256 (RFC 8463) and the RFC 8301 rules (no rsa-sha1, RSA keys
of at least 1024 bits).

`verify` keeps dkimpy off the network and the CPU work off the event loop:
  1. the DKIM-Signature fields are read from the header section and checked here (cheap): a
     signature that is malformed, unsupported or expired gets its outcome without any DNS;
  2. the key records SELECTOR._domainkey.DOMAIN of the others are fetched through the caller's
     `DnsLookup` (a server failure there makes that signature's outcome temperror, no record
     permerror "no key for signature");
  3. the key records are checked here, then dkimpy hashes and verifies on a worker thread with a
     `PrefetchedTxt` dnsfunc that answers only from the records fetched in step 2.
One `DkimOutcome` comes back per signature (the first `max_signatures`, top first). An empty
list means the message has no signature: the caller reports dkim=none.

`sign` returns the DKIM-Signature fields to prepend (one per key, ed25519 first), relaxed/relaxed,
over the fields a reader sees, with From, Subject, To and Date signed once more than they occur
so that added copies break the signature (RFC 6376 §8.15). It is CPU work: `sign_async` runs it
on a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import dkim  # type: ignore[import-untyped]
import dkim.crypto  # type: ignore[import-untyped]
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from postroom.dns.lookup import DnsLookup
from postroom.dns.resolver import DnsTemporaryError
from postroom.mailauth.keys import ALGORITHMS, SIGNATURE_ALGORITHM, SigningKey
from postroom.mailauth.message_fields import Field, split_header
from postroom.mailauth.taglist import (
    MAX_WSP_RUN,
    TagListError,
    field_names,
    is_base64,
    is_decimal,
    is_domain,
    longest_wsp_run,
    parse_tag_list,
    strip_fws,
)

DkimResult = Literal["pass", "fail", "neutral", "temperror", "permerror", "policy"]

MAX_SIGNATURES = 8
MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers MUST NOT consider smaller RSA keys valid
CLOCK_SLOP = 36000  # seconds a t= may lie in the future (a sender's clock may be off)
MAX_SIGNATURE_FIELD = 16384  # octets; a real DKIM-Signature is well under 2 KiB
MAX_KEY_NAME = 253
# h= names at most: dkimpy looks each one up by scanning the header section, so a signature
# naming thousands of fields would cost seconds per signature; real ones name under 50.
MAX_SIGNED_FIELDS = 256
B_PREFIX = 8  # RFC 6008 §4: header.b carries at least the first 8 characters of b=
ACCEPTED_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
REQUIRED_TAGS = ("v", "a", "b", "bh", "d", "h", "s")  # RFC 6376 §6.1.1
CANONICALIZATIONS = ("simple", "relaxed")

# What `sign` covers when present (RFC 6376 §5.4.1's list, trimmed to what readers see), each
# occurrence once; List-* fields too (RFC 8058 wants List-Unsubscribe-Post signed).
SIGNED_FIELDS = frozenset(
    {
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "in-reply-to",
        "references",
        "reply-to",
    }
)
# Signed once more than they occur (RFC 6376 §8.15): a copy added later breaks the signature.
OVERSIGNED = ("from", "subject", "to", "date")

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_WSP_RUN = re.compile(rb"[\t ]+")
_DKIM_SIGNATURE = b"dkim-signature"


@dataclass(frozen=True, slots=True)
class DkimOutcome:
    """One signature's result (RFC 8601 §2.7.1) with what A-R reports of it: header.d (domain),
    header.s (selector), header.a (algorithm), header.b (b_prefix, RFC 6008)."""

    result: DkimResult
    domain: str
    selector: str
    algorithm: str
    b_prefix: str
    reason: str


@dataclass
class _Signature:
    """A DKIM-Signature that passed the checks of step 1, waiting for its key."""

    index: int  # among the message's DKIM-Signature fields, top first
    tags: dict[str, str]
    outcome: DkimOutcome  # the fields for the outcome; result and reason are filled in later
    signed: list[str]  # h=, lowercased
    identity_domain: str  # the domain of i= (d= when i= is absent)
    header_canon: str  # "simple" or "relaxed"
    body_canon: str  # "simple" or "relaxed"
    body_length: int | None  # l=
    key_name: str
    key_text: str = ""
    testing: bool = field(default=False)


class PrefetchedTxt:
    """dkimpy's `dnsfunc(name, timeout=5) -> bytes`, answering only from records fetched before
    through a `DnsLookup`; any other name gets an empty answer. `asked` lists the names dkimpy
    asked for (lowercase, without the final dot)."""

    def __init__(self, records: Mapping[str, str]) -> None:
        self.records = {name.rstrip(".").lower(): text for name, text in records.items()}
        self.asked: list[str] = []

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes:
        key = (name.decode("latin-1") if isinstance(name, bytes) else name).rstrip(".").lower()
        self.asked.append(key)
        return self.records.get(key, "").encode("latin-1")


# --- verifying ---------------------------------------------------------------------------------


async def verify(
    message: bytes,
    lookup: DnsLookup,
    *,
    max_signatures: int = MAX_SIGNATURES,
    now: float | None = None,
) -> list[DkimOutcome]:
    """One outcome per DKIM-Signature (the first `max_signatures`, top first; RFC 6376 §6)."""
    clock = time.time() if now is None else now
    headers, parsable = read_header_fields(message)
    fields = [value for name, value in headers if name == _DKIM_SIGNATURE]
    outcomes: list[DkimOutcome | None] = []
    pending: list[_Signature] = []
    for index, value in enumerate(fields[: max(max_signatures, 0)]):
        parsed = _parse_signature(index, value, clock)
        if isinstance(parsed, DkimOutcome):
            outcomes.append(parsed)
        elif not parsable:
            outcomes.append(_decide(parsed, "permerror", "the header section is malformed"))
        else:
            outcomes.append(None)
            pending.append(parsed)
    if pending:
        answers = await fetch_keys(lookup, {sig.key_name for sig in pending})
        ready: list[_Signature] = []
        for sig in pending:
            answer = answers[sig.key_name]
            if isinstance(answer, DnsTemporaryError):
                outcomes[sig.index] = _decide(sig, "temperror", f"key lookup failed: {answer}")
            elif not answer:
                outcomes[sig.index] = _decide(sig, "permerror", "no key for signature")
            else:
                sig.key_text = _choose_record(answer)
                ready.append(sig)
        if ready:
            for sig, outcome in zip(
                ready, await asyncio.to_thread(_verify_signatures, message, ready), strict=True
            ):
                outcomes[sig.index] = outcome
    return [outcome for outcome in outcomes if outcome is not None]


def signature_fields(message: bytes) -> list[str]:
    """The values of the DKIM-Signature fields, top first, decoded as Latin-1."""
    return [value for name, value in header_fields(message) if name == _DKIM_SIGNATURE]


def header_fields(message: bytes) -> list[tuple[bytes, str]]:
    """(lowercased name, value) of each field of the header section, as dkimpy splits them.
    Only the header section is read; see `read_header_fields` for a section dkimpy refuses."""
    return read_header_fields(message)[0]


def read_header_fields(message: bytes) -> tuple[list[tuple[bytes, str]], bool]:
    """The header fields and whether dkimpy can parse the header section.

    When it cannot (a line that is neither a field nor a fold, or a fold before any field),
    the fields are still split leniently, skipping such lines, so every signature gets an
    outcome: permerror, as dkimpy refuses to hash the message."""
    section = header_section(message)
    try:
        parsed = dkim.rfc822_parse(section)[0]
    except Exception:  # dkimpy raises MessageFormatError, and IndexError on a leading fold
        found: list[tuple[bytes, str]] = []
        continuing = False
        for line in section.splitlines(keepends=True):
            if line[:1] in (b" ", b"\t"):
                if continuing:
                    last_name, last_value = found[-1]
                    found[-1] = (last_name, last_value + line.decode("latin-1"))
                continue
            field_name, colon, rest = line.partition(b":")
            field_name = field_name.strip()
            continuing = bool(colon) and bool(field_name) and b" " not in field_name
            if continuing:
                found.append((field_name.lower(), rest.decode("latin-1")))
        return found, False
    return [(bytes(name).lower(), bytes(value).decode("latin-1")) for name, value in parsed], True


def header_section(message: bytes) -> bytes:
    """The header section with its final line break, without the empty line (RFC 5322 §2.1)."""
    if message.startswith((b"\n", b"\r\n")):
        return b""
    end = _HEADER_END.search(message)
    if end is None:
        return message
    return message[: end.start()] + b"\r\n"


def _parse_signature(index: int, value: str, now: float) -> _Signature | DkimOutcome:
    """Step 1: the tag checks of RFC 6376 §6.1.1 (and RFC 8301), before any DNS."""

    def outcome(result: DkimResult, reason: str, tags: Mapping[str, str] = {}) -> DkimOutcome:
        return DkimOutcome(
            result,
            tags.get("d", "").lower(),
            tags.get("s", ""),
            tags.get("a", ""),
            strip_fws(tags.get("b", ""))[:B_PREFIX],
            reason,
        )

    if len(value) > MAX_SIGNATURE_FIELD or longest_wsp_run(value) > MAX_WSP_RUN:
        return outcome("neutral", "signature field is implausibly long")
    try:
        tags = parse_tag_list(value)  # RFC 6376 §3.2
    except TagListError as error:
        return outcome("neutral", f"signature syntax error: {error}")
    missing = [tag + "=" for tag in REQUIRED_TAGS if tag not in tags]
    if missing:
        return outcome("neutral", "signature lacks " + ", ".join(missing), tags)
    if tags["v"] != "1":
        return outcome("permerror", f"unsupported version v={tags['v'][:20]}", tags)
    algorithm = tags["a"]
    if algorithm == "rsa-sha1":
        # RFC 8301 §3.1: rsa-sha1 signatures have permanently failed evaluation.
        return outcome("permerror", "rsa-sha1 is not accepted (RFC 8301)", tags)
    if algorithm not in ACCEPTED_ALGORITHMS:
        return outcome("permerror", f"unknown algorithm a={algorithm[:30]}", tags)
    if not tags["b"] or not is_base64(tags["b"]) or not is_base64(tags["bh"]):
        return outcome("neutral", "b= or bh= is not base64", tags)
    domain = tags["d"].lower()
    if not is_domain(domain) or not is_domain(tags["s"]):
        return outcome("neutral", "d= or s= is not a domain name", tags)
    canon = tags.get("c", "simple").split("/")
    if len(canon) == 1:
        canon.append("simple")  # RFC 6376 §3.5 c=: the body algorithm defaults to simple
    if len(canon) != 2 or any(part not in CANONICALIZATIONS for part in canon):
        return outcome("permerror", f"unknown canonicalization c={tags.get('c', '')[:30]}", tags)
    signed = field_names(tags["h"])
    if signed is None:
        return outcome("neutral", "h= is not a list of field names", tags)
    if "from" not in signed:
        return outcome("permerror", "From is not signed", tags)  # RFC 6376 §5.4, §6.1.1
    if len(signed) > MAX_SIGNED_FIELDS:
        return outcome("permerror", "h= names too many fields", tags)
    identity_domain = domain
    if "i" in tags:
        _local, at, identity_domain = tags["i"].rpartition("@")
        identity_domain = identity_domain.lower()
        # RFC 6376 §3.5 i=: the same domain as d= or a subdomain of it.
        if not at or not (identity_domain == domain or identity_domain.endswith("." + domain)):
            return outcome("permerror", "i= domain is not d= or a subdomain of it", tags)
    body_length: int | None = None
    if "l" in tags:
        if not is_decimal(tags["l"], 76):  # RFC 6376 §3.5 l=: 1*76DIGIT
            return outcome("neutral", "l= is not a number", tags)
        body_length = int(tags["l"])
    if "q" in tags and "dns/txt" not in [part.strip() for part in tags["q"].split(":")]:
        return outcome("permerror", f"unsupported query method q={tags['q'][:30]}", tags)
    for tag in ("t", "x"):
        if tag in tags and not is_decimal(tags[tag], 12):  # RFC 6376 §3.5: 1*12DIGIT
            return outcome("neutral", f"{tag}= is not a number", tags)
    signed_at = int(tags["t"]) if "t" in tags else None
    expires = int(tags["x"]) if "x" in tags else None
    if signed_at is not None and signed_at > now + CLOCK_SLOP:
        # RFC 6376 §3.5 t=: verifiers MAY ignore signatures with a timestamp in the future.
        return outcome("permerror", "signature timestamp is in the future", tags)
    if expires is not None:
        if signed_at is not None and expires <= signed_at:
            return outcome("permerror", "x= is not after t=", tags)  # RFC 6376 §3.5 x=
        if expires < now:
            # RFC 6376 §3.5 x= and §6.1.1: an expired signature has permanently failed.
            return outcome("permerror", "signature expired", tags)
    key_name = f"{tags['s']}._domainkey.{domain}".lower()  # RFC 6376 §3.6.2.1
    if len(key_name) > MAX_KEY_NAME:
        return outcome("permerror", "key name is too long", tags)
    return _Signature(
        index=index,
        tags=tags,
        outcome=outcome("neutral", "", tags),
        signed=signed,
        identity_domain=identity_domain,
        header_canon=canon[0],
        body_canon=canon[1],
        body_length=body_length,
        key_name=key_name,
    )


async def fetch_keys(
    lookup: DnsLookup, names: set[str]
) -> dict[str, tuple[str, ...] | DnsTemporaryError]:
    """The TXT records of each key name (empty for NXDOMAIN/NODATA), or the temporary error."""

    async def one(name: str) -> tuple[str, ...] | DnsTemporaryError:
        try:
            return (await lookup.query(name, "TXT")).records
        except DnsTemporaryError as error:
            return error

    ordered = sorted(names)
    answers = await asyncio.gather(*(one(name) for name in ordered))
    return dict(zip(ordered, answers, strict=True))


def _choose_record(records: Sequence[str]) -> str:
    """RFC 6376 §3.6.2.2 leaves the choice among several TXT records to the verifier: the first
    that parses as a key record with p=, else the first."""
    for text in records:
        try:
            if "p" in parse_tag_list(text):
                return text
        except TagListError:
            continue
    return records[0]


def _decide(sig: _Signature, result: DkimResult, reason: str) -> DkimOutcome:
    return replace(sig.outcome, result=result, reason=reason)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A usable key record: what dkimpy is given of it ("k=...; p=..."), and its t= flags."""

    dkimpy_text: str
    testing: bool  # t=y
    same_domain: bool  # t=s: i= must be in exactly d=


def read_key_record(text: str, algorithm: str) -> KeyRecord | str:
    """The key record's tags (RFC 6376 §3.6.1) checked for a signature of `algorithm` (a=);
    the problem as a short reason when it cannot be used."""
    try:
        tags = parse_tag_list(text)
    except TagListError as error:
        return f"key record syntax error: {error}"
    if tags.get("v", "DKIM1") != "DKIM1":
        return "key record is not v=DKIM1"
    if "p" not in tags:
        return "key record has no p="
    if not strip_fws(tags["p"]):
        return "key revoked"  # RFC 6376 §3.6.1 p=: an empty value means revoked
    wanted = "ed25519" if algorithm == "ed25519-sha256" else "rsa"
    if tags.get("k", "rsa") != wanted:
        return f"key type k={tags.get('k', '')[:20]} does not suit a="
    if "h" in tags and "sha256" not in [part.strip() for part in tags["h"].split(":")]:
        return "key does not allow sha256 (h=)"
    if "s" in tags and not {"*", "email"} & {part.strip() for part in tags["s"].split(":")}:
        return "key is not for email (s=)"
    flags = {part.strip() for part in tags.get("t", "").split(":")}
    # dkimpy gets only what it needs of the record: its own reading of s= and t= differs (a
    # service list such as "email:*" makes it drop the key), and those were checked here.
    return KeyRecord(f"k={wanted}; p={strip_fws(tags['p'])}", "y" in flags, "s" in flags)


def _check_key(sig: _Signature) -> DkimOutcome | PublicKey:
    """The key record's tags and size (RFC 8301 §3.2): the public key, or why it is unusable."""
    record = read_key_record(sig.key_text, sig.tags["a"])
    if isinstance(record, str):
        return _decide(sig, "permerror", record)
    if record.same_domain and sig.identity_domain != sig.outcome.domain:
        return _decide(sig, "permerror", "key requires i= in exactly d= (t=s)")
    sig.testing = record.testing
    sig.key_text = record.dkimpy_text
    kind, _, encoded = record.dkimpy_text.partition("; p=")
    try:
        key = public_key(kind.removeprefix("k="), encoded)
    except ValueError as error:
        return _decide(sig, "permerror", f"key record unusable: {str(error)[:80]}")
    if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return _decide(sig, "permerror", f"RSA key of {key.key_size} bits is too small (RFC 8301)")
    return key


PublicKey = RSAPublicKey | Ed25519PublicKey


@functools.lru_cache(maxsize=1024)
def public_key(kind: str, encoded: str) -> PublicKey:
    """p= of a key record as a key (RFC 6376 §3.6.1: rsa as DER SubjectPublicKeyInfo, or the
    bare RSAPublicKey some publish; RFC 8463 §4: ed25519 as the raw 32 octets); ValueError."""
    try:
        data = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("p= is not base64") from None
    if kind == "ed25519":
        if len(data) != 32:
            raise ValueError("an ed25519 key is 32 octets")
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        loaded = serialization.load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            loaded = serialization.load_der_public_key(_spki_of_pkcs1(data))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ValueError("p= is not an RSA public key") from None
    if not isinstance(loaded, RSAPublicKey):
        raise ValueError("p= is not an RSA public key")
    return loaded


def _spki_of_pkcs1(der: bytes) -> bytes:
    """A bare PKCS#1 RSAPublicKey wrapped as SubjectPublicKeyInfo (RFC 3279 §2.3.1)."""
    algorithm = bytes.fromhex("300d06092a864886f70d0101010500")  # rsaEncryption, NULL
    bit_string = b"\x03" + _der_length(len(der) + 1) + b"\x00" + der
    content = algorithm + bit_string
    return b"\x30" + _der_length(len(content)) + content


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _verify_signatures(message: bytes, ready: list[_Signature]) -> list[DkimOutcome]:
    """Step 3, on a worker thread: key checks, then hashing (RFC 6376 §3.7) and the
    signature check with OpenSSL through `cryptography`."""
    fields, body_start = split_header(message)
    body = message[body_start:]
    body = body[2:] if body.startswith(b"\r\n") else body[1:] if body.startswith(b"\n") else body
    signature_fields = [f for f in fields if f.name == "dkim-signature"]
    bodies: dict[str, bytes] = {}
    out = []
    for sig in ready:
        key = _check_key(sig)
        if isinstance(key, DkimOutcome):
            out.append(key)
            continue
        if sig.index >= len(signature_fields):
            out.append(_decide(sig, "permerror", "message cannot be parsed"))
            continue
        if sig.body_canon not in bodies:
            canonicalize = relaxed_body if sig.body_canon == "relaxed" else simple_body
            bodies[sig.body_canon] = canonicalize(body)
        out.append(_verify_one(message, fields, signature_fields[sig.index], sig, key, bodies))
    return out


def _verify_one(
    message: bytes,
    fields: Sequence[Field],
    own: Field,
    sig: _Signature,
    key: PublicKey,
    bodies: dict[str, bytes],
) -> DkimOutcome:
    body = bodies[sig.body_canon]
    if sig.body_length is not None:
        if sig.body_length > len(body):
            # RFC 6376 §3.5 l=: the count cannot exceed the canonicalized body.
            return _decide(sig, "permerror", "l= is longer than the body")
        hashed_body = body[: sig.body_length]
    else:
        hashed_body = body
    expected = base64.b64decode(strip_fws(sig.tags["bh"]))
    if not hmac.compare_digest(hashlib.sha256(hashed_body).digest(), expected):
        return _decide(sig, "fail", "body hash did not verify")  # RFC 6376 §6.1.3
    relaxed = sig.header_canon == "relaxed"
    data = _selected_headers(message, fields, sig.signed, own, relaxed)
    # RFC 6376 §3.7: the signature field itself, b= emptied, without its final CRLF.
    raw = message[own.start : own.end].rstrip(b"\r\n")
    emptied = _without_b_value(raw)
    if relaxed:
        name, _, value = emptied.partition(b":")
        data += relaxed_header(name.strip(b" \t"), value)[:-2]
    else:
        data += emptied
    signature = base64.b64decode(strip_fws(sig.tags["b"]))
    try:
        if isinstance(key, Ed25519PublicKey):
            key.verify(signature, hashlib.sha256(data).digest())  # RFC 8463 §3
        else:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        testing = " (key in testing mode, t=y)" if sig.testing else ""
        return _decide(sig, "fail", "signature did not verify" + testing)
    testing = " (key in testing mode, t=y)" if sig.testing else ""
    if sig.body_length is not None and len(body) > sig.body_length:
        # l= leaves content unsigned; anything could have been appended (RFC 6376 §8.2).
        unsigned = len(body) - sig.body_length
        return _decide(sig, "policy", f"{unsigned} body octets after l= are unsigned" + testing)
    return _decide(sig, "pass", "signature verified" + testing)


def _selected_headers(
    message: bytes, fields: Sequence[Field], names: Sequence[str], own: Field, relaxed: bool
) -> bytes:
    """RFC 6376 §5.4.2: for each name of h=, the last instance not yet used, from the bottom
    (the signature field being verified is never one of them)."""
    by_name: dict[str, list[Field]] = {}
    for found in fields:
        if found.name and found is not own:
            by_name.setdefault(found.name, []).append(found)
    out = []
    for name in names:
        instances = by_name.get(name)
        if not instances:
            continue
        found = instances.pop()
        if relaxed:
            raw = message[found.colon + 1 : found.end]
            out.append(relaxed_header(name.encode(), raw.rstrip(b"\r\n")))
        else:
            raw = message[found.start : found.end]
            out.append(raw if raw.endswith(b"\r\n") else raw.rstrip(b"\n") + b"\r\n")
    return b"".join(out)


def _without_b_value(raw: bytes) -> bytes:
    """A signature field with the value of its b= tag deleted, white space included (RFC 6376
    §3.7); everything else kept byte for byte."""
    name_end = raw.find(b":") + 1
    specs = raw[name_end:].split(b";")
    for index, spec in enumerate(specs):
        tag, equals, _value = spec.partition(b"=")
        if equals and tag.strip(b" \t\r\n") == b"b":
            specs[index] = spec[: len(tag) + 1]
            break
    return raw[:name_end] + b";".join(specs)


def simple_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.3: empty lines at the end removed; an empty body is one CRLF."""
    normal = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    stripped = normal.rstrip(b"\r\n")
    # rstrip of CR/LF may eat a CR that ends a line's content: none can, lines end in CRLF.
    return stripped + b"\r\n"


def relaxed_safe_body(body: bytes) -> bytes:
    """The body with every run of SP/HTAB made one SP: the relaxed body canonicalization of RFC
    6376 §3.4.4 gives the same result for it, and dkimpy's trailing-white-space pattern (which
    backtracks quadratically on long runs) then only meets runs of one."""
    return _WSP_RUN.sub(b" ", body)


# --- signing -----------------------------------------------------------------------------------


def signed_field_names(message: bytes) -> list[str]:
    """h= for `message`: each present field of SIGNED_FIELDS or List-*, in order, once per
    occurrence, then OVERSIGNED once more (RFC 6376 §5.4.2: an absent field signed as null)."""
    names = [
        name.decode("ascii", "replace")
        for name, _value in header_fields(message)
        if name.decode("ascii", "replace") in SIGNED_FIELDS or name.startswith(b"list-")
    ]
    return names + list(OVERSIGNED)


def sign(message: bytes, keys: Sequence[SigningKey], *, now: float | None = None) -> bytes:
    """The DKIM-Signature fields (CRLF line ends) to prepend to `message`, one per key,
    ed25519 first. Raises ValueError for a message without From or a bad key/domain.

    Our own signer (RFC 6376 §5), so that the signing itself is OpenSSL's through
    `cryptography` (dkimpy computes RSA in Python: 10 ms a signature against 1 ms); what it
    makes is verified by dkimpy and OpenDKIM in the tests."""
    names = signed_field_names(message)
    if "from" not in names[: -len(OVERSIGNED)]:
        raise ValueError("the message has no From field to sign")  # RFC 6376 §5.4
    timestamp = str(int(time.time() if now is None else now))
    fields, body_start = split_header(message)
    body = message[body_start:]
    if body.startswith(b"\r\n"):
        body = body[2:]
    elif body.startswith(b"\n"):
        body = body[1:]
    body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()
    signed_headers = relaxed_selected_headers(message, fields, names)
    out = []
    for key in sorted(keys, key=lambda k: ALGORITHMS.index(k.algorithm)):
        if not is_domain(key.domain) or not is_domain(key.selector):
            raise ValueError(f"not a domain name: {key.domain!r} / {key.selector!r}")
        head = (
            f"v=1; a={SIGNATURE_ALGORITHM[key.algorithm]}; c=relaxed/relaxed;"
            f" d={key.domain.lower()}; s={key.selector};\r\n\tt={timestamp};"
            f" h={_folded_names(names)};\r\n\tbh={body_hash};\r\n\tb="
        )
        # RFC 6376 §3.7: the signature field itself, with b= empty, last and without CRLF.
        data = signed_headers + relaxed_header(b"dkim-signature", head.encode())[:-2]
        signature = base64.b64encode(_signature(key, hashlib.sha256(data).digest(), data))
        out.append(b"DKIM-Signature: " + head.encode() + _folded_b(signature) + b"\r\n")
    return b"".join(out)


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4: WSP runs made one SP, WSP at line ends and empty lines at the end
    removed, every line ending in CRLF (an empty body stays empty)."""
    lines = body.replace(b"\r\n", b"\n").split(b"\n")
    out = [_WSP_RUN.sub(b" ", line).rstrip(b" ") for line in lines]
    while out and not out[-1]:
        out.pop()
    return b"".join(line + b"\r\n" for line in out)


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 §3.4.2: the name in lower case, the value unfolded, WSP runs made one SP and
    removed around the colon and at the end."""
    unfolded = value.replace(b"\r\n", b"").replace(b"\n", b"")
    return name.lower() + b":" + _WSP_RUN.sub(b" ", unfolded).strip(b" ") + b"\r\n"


def relaxed_selected_headers(
    message: bytes, fields: Sequence[Field], names: Sequence[str]
) -> bytes:
    """RFC 6376 §5.4.2: for each name of h=, the last instance not yet used, from the bottom;
    a name with none left is signed as absent (nothing)."""
    by_name: dict[str, list[Field]] = {}
    for found in fields:
        if found.name:
            by_name.setdefault(found.name, []).append(found)
    out = []
    for name in names:
        instances = by_name.get(name)
        if instances:
            found = instances.pop()
            raw = message[found.colon + 1 : found.end]
            out.append(relaxed_header(name.encode(), raw.rstrip(b"\r\n")))
    return b"".join(out)


def _signature(key: SigningKey, digest: bytes, data: bytes) -> bytes:
    if key.algorithm == "ed25519":
        # RFC 8463 §3: PureEdDSA over the SHA-256 hash of the canonicalized data.
        seed = base64.b64decode(key.private)
        return Ed25519PrivateKey.from_private_bytes(seed).sign(digest)
    private = rsa_private_key(key.private)
    return private.sign(data, padding.PKCS1v15(), hashes.SHA256())


@functools.lru_cache(maxsize=64)
def rsa_private_key(pem: bytes) -> RSAPrivateKey:
    loaded = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return loaded


def _folded_names(names: Sequence[str]) -> str:
    """h= with a fold every few names, so no line grows long."""
    lines, line = [], []
    for name in names:
        line.append(name)
        if len(line) == 6:
            lines.append(":".join(line))
            line = []
    if line:
        lines.append(":".join(line))
    return ":\r\n\t ".join(lines)


def _folded_b(signature: bytes) -> bytes:
    """b= in lines of 72 characters (folding white space is ignored in b=, RFC 6376 §3.5)."""
    return b"\r\n\t ".join(signature[i : i + 72] for i in range(0, len(signature), 72))


async def sign_async(
    message: bytes, keys: Sequence[SigningKey], *, now: float | None = None
) -> bytes:
    """`sign` on a worker thread (RSA signing and body hashing are CPU work)."""
    return await asyncio.to_thread(sign, message, keys, now=now)
