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
import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import dkim  # type: ignore[import-untyped]
import dkim.crypto  # type: ignore[import-untyped]
import nacl.encoding
import nacl.signing
from dkim.canonicalization import CanonicalizationPolicy  # type: ignore[import-untyped]

from postroom.dns.lookup import DnsLookup
from postroom.dns.resolver import DnsTemporaryError
from postroom.mailauth.keys import ALGORITHMS, SIGNATURE_ALGORITHM, SigningKey
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
        "from", "to", "cc", "subject", "date", "message-id", "mime-version", "content-type",
        "content-transfer-encoding", "in-reply-to", "references", "reply-to",
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


def _check_key(sig: _Signature) -> DkimOutcome | None:
    """The key record's tags and size (RFC 8301 §3.2); None if the key is usable."""
    record = read_key_record(sig.key_text, sig.tags["a"])
    if isinstance(record, str):
        return _decide(sig, "permerror", record)
    if record.same_domain and sig.identity_domain != sig.outcome.domain:
        return _decide(sig, "permerror", "key requires i= in exactly d= (t=s)")
    sig.testing = record.testing
    sig.key_text = record.dkimpy_text
    try:
        _key, bits, kind, _tlsrpt = dkim.evaluate_pk(
            sig.key_name.encode(), sig.key_text.encode("latin-1")
        )
    except Exception as error:  # dkimpy: KeyFormatError; base64/ASN.1 errors from bad p=
        return _decide(sig, "permerror", f"key record unusable: {str(error)[:80]}")
    if kind == b"rsa" and (bits or 0) < MIN_RSA_BITS:
        return _decide(sig, "permerror", f"RSA key of {bits} bits is too small (RFC 8301)")
    return None


def _verify_signatures(message: bytes, ready: list[_Signature]) -> list[DkimOutcome]:
    """Step 3, on a worker thread: key checks, then dkimpy's hashing and signature check."""
    try:
        verifier = dkim.DKIM(message, minkey=MIN_RSA_BITS)
        fields = [(n, v) for n, v in verifier.headers if n.lower() == _DKIM_SIGNATURE]
    except Exception as error:
        return [_decide(sig, "permerror", f"message cannot be parsed: {error}") for sig in ready]
    bodies = {"simple": verifier.body}
    if any(sig.body_canon == "relaxed" for sig in ready):
        bodies["relaxed"] = relaxed_safe_body(verifier.body)
    lengths: dict[str, int] = {}
    problems = [_check_key(sig) for sig in ready]
    usable = zip(ready, problems, strict=True)
    dnsfunc = PrefetchedTxt({sig.key_name: sig.key_text for sig, problem in usable if not problem})
    return [
        problem or _verify_one(verifier, fields, sig, bodies, lengths, dnsfunc)
        for sig, problem in zip(ready, problems, strict=True)
    ]


def _verify_one(
    verifier: Any,
    fields: list[tuple[bytes, bytes]],
    sig: _Signature,
    bodies: dict[str, bytes],
    lengths: dict[str, int],
    dnsfunc: PrefetchedTxt,
) -> DkimOutcome:
    if sig.index >= len(fields):
        return _decide(sig, "permerror", "message cannot be parsed")
    body = bodies[sig.body_canon]
    body_length = None
    if sig.body_length is not None:
        if sig.body_canon not in lengths:
            policy = CanonicalizationPolicy.from_c_value(f"simple/{sig.body_canon}".encode())
            lengths[sig.body_canon] = len(policy.canonicalize_body(body))
        body_length = lengths[sig.body_canon]
        if sig.body_length > body_length:
            # RFC 6376 §3.5 l=: the count cannot exceed the canonicalized body.
            return _decide(sig, "permerror", "l= is longer than the body")
    verifier.body = body
    tags = {name.encode("latin-1"): value.encode("latin-1") for name, value in sig.tags.items()}
    try:
        valid = verifier.verify_sig(tags, [name.encode() for name in sig.signed], fields[sig.index],
                                    dnsfunc)
    except dkim.ValidationError as error:
        if "body hash" in str(error):
            return _decide(sig, "fail", "body hash did not verify")
        return _decide(sig, "permerror", str(error)[:80])
    except Exception as error:  # dkimpy: DKIMException subclasses; anything else is a bug there
        return _decide(sig, "permerror", f"cannot verify: {str(error)[:80]}")
    testing = " (key in testing mode, t=y)" if sig.testing else ""
    if not valid:
        return _decide(sig, "fail", "signature did not verify" + testing)
    if body_length is not None and sig.body_length is not None and body_length > sig.body_length:
        # l= leaves content unsigned; anything could have been appended (RFC 6376 §8.2).
        unsigned = body_length - sig.body_length
        return _decide(sig, "policy", f"{unsigned} body octets after l= are unsigned" + testing)
    return _decide(sig, "pass", "signature verified" + testing)


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
    ed25519 first. Raises ValueError for a message without From or a bad key/domain."""
    names = signed_field_names(message)
    if "from" not in names[: -len(OVERSIGNED)]:
        raise ValueError("the message has no From field to sign")  # RFC 6376 §5.4
    timestamp = str(int(time.time() if now is None else now)).encode()
    signer = dkim.DKIM(message)
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    body_hash = hashlib.sha256(policy.canonicalize_body(relaxed_safe_body(signer.body)))
    encoded_hash = base64.b64encode(body_hash.digest())
    include = [name.encode() for name in names]
    out = []
    for key in sorted(keys, key=lambda k: ALGORITHMS.index(k.algorithm)):
        if not is_domain(key.domain) or not is_domain(key.selector):
            raise ValueError(f"not a domain name: {key.domain!r} / {key.selector!r}")
        algorithm = SIGNATURE_ALGORITHM[key.algorithm].encode()
        fields = [
            (b"v", b"1"),
            (b"a", algorithm),
            (b"c", b"relaxed/relaxed"),
            (b"d", key.domain.lower().encode()),
            (b"s", key.selector.encode()),
            (b"t", timestamp),
            (b"h", b" : ".join(include)),
            (b"bh", encoded_hash),
            (b"b", b"0" * 60),  # dkimpy's placeholder: b= folds onto its own line
        ]
        signer.signature_algorithm = algorithm
        signer.hasher = hashlib.sha256
        value = signer.gen_header(fields, include, policy, b"DKIM-Signature", private_key(key))
        out.append(b"DKIM-Signature: " + value)
    return b"".join(out)


async def sign_async(
    message: bytes, keys: Sequence[SigningKey], *, now: float | None = None
) -> bytes:
    """`sign` on a worker thread (RSA signing and body hashing are CPU work)."""
    return await asyncio.to_thread(sign, message, keys, now=now)


def private_key(key: SigningKey) -> Any:
    """The key in the form dkimpy's signing code takes: parsed RSA numbers or a PyNaCl key."""
    if key.algorithm == "ed25519":
        return nacl.signing.SigningKey(key.private, encoder=nacl.encoding.Base64Encoder)
    try:
        return dkim.crypto.parse_pem_private_key(key.private)
    except dkim.crypto.UnparsableKeyError as error:
        raise ValueError(f"unusable RSA key for {key.selector}._domainkey.{key.domain}") from error
