"""ARC (RFC 8617): validating the Authenticated Received Chain of a message, and sealing a
message we forward with the next ARC set.

`validate` works like dkim.verify: the ARC fields are read and the chain's structure checked
here (RFC 8617 §5.2 steps 1-3, no DNS for a chain that is already broken), the keys of every
ARC-Seal and ARC-Message-Signature are fetched through the caller's `DnsLookup`, and dkimpy
checks the signatures on a worker thread with a dnsfunc answering only from those records.

`seal` makes the ARC-Seal, ARC-Message-Signature and ARC-Authentication-Results fields of the
next instance with dkimpy's signing primitives. dkimpy's own `arc_sign` reads the verdict from
the message's Authentication-Results fields (through the `authres` package) and derives cv= from
their arc= result; here the caller passes both directly, so the ARC-Authentication-Results
carries exactly the verdict our verifier produced and cv= is the chain status it found.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dkim  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy  # type: ignore[import-untyped]

from postroom.dns.lookup import DnsLookup
from postroom.dns.resolver import DnsTemporaryError
from postroom.mailauth.dkim import (
    MAX_SIGNED_FIELDS,
    MIN_RSA_BITS,
    PrefetchedTxt,
    fetch_keys,
    read_header_fields,
    read_key_record,
    relaxed_safe_body,
    rsa_private_key,
    signed_field_names,
)
from postroom.mailauth.keys import SigningKey
from postroom.mailauth.taglist import (
    MAX_WSP_RUN,
    TagListError,
    is_decimal,
    is_domain,
    longest_wsp_run,
    parse_tag_list,
)

ArcResult = Literal["none", "pass", "fail"]
ChainStatus = Literal["none", "pass", "fail"]

MAX_INSTANCE = 50  # RFC 8617 §4.2.1: at most 50 ARC sets
MAX_ARC_FIELD = 16384  # octets of one ARC field
ALGORITHM = b"rsa-sha256"  # the one algorithm ARC signers use and dkimpy's ARC accepts
SEAL, SIGNATURE, RESULTS = b"arc-seal", b"arc-message-signature", b"arc-authentication-results"
ARC_FIELDS = (RESULTS, SIGNATURE, SEAL)  # the order a seal hashes a set in (RFC 8617 §5.1.1)
_INSTANCE_PREFIX = re.compile(r"[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([0-9]{1,3})[ \t\r\n]*;")
_WSP_RUN = re.compile(rb"[\t ]+")


@dataclass(frozen=True, slots=True)
class ArcOutcome:
    """The chain validation status (RFC 8617 §4.4) and what A-R and policy want of it.

    `instance` is the highest i= (0 without a chain); `sealers` the d= of each ARC-Seal from
    i=1 up; `oldest_pass` (for a passing chain) the lowest instance whose AMS and every later
    one still validate, 0 when all do (RFC 8617 §5.2 step 5, arc.oldest-pass). `temporary` says
    a key lookup failed with a server error and the result might be different later."""

    result: ArcResult
    instance: int
    sealers: tuple[str, ...]
    reason: str
    oldest_pass: int | None
    temporary: bool = False


@dataclass
class _Field:
    name: bytes  # lowercased
    value: str
    instance: int
    tags: dict[str, str]  # empty for ARC-Authentication-Results

    @property
    def raw(self) -> bytes:
        return self.value.encode("latin-1")


# --- validating --------------------------------------------------------------------------------


async def validate(message: bytes, lookup: DnsLookup) -> ArcOutcome:
    """The ARC chain validation of RFC 8617 §5.2 for `message`."""
    headers, parsable = read_header_fields(message)
    fields = [(name, value) for name, value in headers if name in ARC_FIELDS]
    if not fields:
        return ArcOutcome("none", 0, (), "no ARC sets", None)  # RFC 8617 §5.2 step 1
    chain = _read_chain(fields)
    if isinstance(chain, ArcOutcome):
        return chain
    top = len(chain)
    sealers = tuple(chain[i][SEAL].tags["d"].lower() for i in range(1, top + 1))
    if not parsable:  # dkimpy would refuse to hash it
        return ArcOutcome("fail", top, sealers, "the header section is malformed", None)
    names = {
        f"{arc_field.tags['s']}._domainkey.{arc_field.tags['d']}".lower()
        for arc_set in chain.values()
        for arc_field in (arc_set[SEAL], arc_set[SIGNATURE])
    }
    answers = await fetch_keys(lookup, names)
    records: dict[str, str] = {}
    failed = False
    for name, answer in answers.items():
        if isinstance(answer, DnsTemporaryError):
            failed = True
        elif answer:
            records[name] = _usable_record(answer)
    canons = {_body_canonicalization(chain[i][SIGNATURE].tags) for i in range(1, top + 1)}
    result, reason, oldest = await asyncio.to_thread(_verify_chain, message, records, canons)
    if result != "pass" and failed:
        return ArcOutcome(
            result, top, sealers, f"key lookup failed; {reason}", None, temporary=True
        )
    return ArcOutcome(result, top, sealers, reason, oldest)


def _read_chain(
    fields: list[tuple[bytes, str]],
) -> dict[int, dict[bytes, _Field]] | ArcOutcome:
    """The ARC sets by instance, or the failing outcome when the structure is not a chain
    (RFC 8617 §5.2 steps 1-3)."""

    sealers: tuple[str, ...] = ()

    def fail(reason: str, top: int = 0) -> ArcOutcome:
        return ArcOutcome("fail", top, sealers, reason, None)

    if len(fields) > 3 * MAX_INSTANCE:
        return fail("more than 50 ARC sets")  # RFC 8617 §5.2 step 1
    parsed: list[_Field] = []
    for name, value in fields:
        arc_field = _read_field(name, value)
        if isinstance(arc_field, str):
            return fail(arc_field)
        parsed.append(arc_field)
    top = max(arc_field.instance for arc_field in parsed)
    seals = sorted((f.instance, f.tags.get("d", "").lower()) for f in parsed if f.name == SEAL)
    sealers = tuple(domain for _instance, domain in seals)
    if top > MAX_INSTANCE:
        return fail("more than 50 ARC sets", top)  # RFC 8617 §4.2.1
    chain: dict[int, dict[bytes, _Field]] = {i: {} for i in range(1, top + 1)}
    for arc_field in parsed:
        if arc_field.name in chain[arc_field.instance]:
            return fail(f"ARC set {arc_field.instance} has two {arc_field.name.decode()}", top)
        chain[arc_field.instance][arc_field.name] = arc_field
    if chain[top].get(SEAL) is not None and chain[top][SEAL].tags.get("cv") == "fail":
        return fail(f"ARC-Seal i={top} says cv=fail", top)  # RFC 8617 §5.2 step 2
    for instance, arc_set in chain.items():  # RFC 8617 §5.2 step 3
        if len(arc_set) != len(ARC_FIELDS):
            return fail(f"ARC set {instance} is incomplete", top)
        cv = arc_set[SEAL].tags.get("cv")
        if cv != ("none" if instance == 1 else "pass"):
            return fail(f"ARC-Seal i={instance} has cv={cv}", top)
        for arc_field in (arc_set[SEAL], arc_set[SIGNATURE]):
            if not is_domain(arc_field.tags.get("d", "")) or not is_domain(
                arc_field.tags.get("s", "")
            ):
                return fail(f"ARC set {instance} has no usable d= and s=", top)
    return chain


def _read_field(name: bytes, value: str) -> _Field | str:
    """One ARC field with its instance (RFC 8617 §4.2.1), or why it is unusable."""
    label = name.decode()
    if len(value) > MAX_ARC_FIELD or longest_wsp_run(value) > MAX_WSP_RUN:
        return f"{label} is implausibly long"
    if name == RESULTS:
        match = _INSTANCE_PREFIX.match(value)  # RFC 8617 §4.1.1: "i=" instance ";" payload
        if match is None:
            return f"{label} has no i= instance"
        instance, tags = int(match.group(1)), {}
    else:
        try:
            tags = parse_tag_list(value)
        except TagListError as error:
            return f"{label} syntax error: {error}"
        if not is_decimal(tags.get("i", ""), 2):
            return f"{label} has no usable i= instance"
        if len(tags.get("h", "").split(":")) > MAX_SIGNED_FIELDS:
            return f"{label} names too many fields"
        instance = int(tags["i"])
    if not 1 <= instance <= MAX_INSTANCE:
        return f"{label} has instance {instance}, outside 1..50"
    return _Field(name, value, instance, tags)


def _usable_record(records: Sequence[str]) -> str:
    """What dkimpy gets of a key name's TXT records: the first usable rsa key record ("k=rsa;
    p=..."), or nothing, so the signatures under it fail."""
    for text in records:
        record = read_key_record(text, ALGORITHM.decode())
        if not isinstance(record, str):
            return record.dkimpy_text
    return ""


def _body_canonicalization(tags: dict[str, str]) -> str:
    canon = tags.get("c", "relaxed/relaxed").split("/")  # dkimpy's ARC default
    return canon[1] if len(canon) == 2 else "simple"


def _verify_chain(
    message: bytes, records: dict[str, str], canons: set[str]
) -> tuple[ArcResult, str, int | None]:
    """dkimpy's chain validation (RFC 8617 §5.2 steps 4-6), on a worker thread."""
    try:
        validator = dkim.ARC(message, minkey=MIN_RSA_BITS)
    except Exception as error:
        return "fail", f"message cannot be parsed: {str(error)[:80]}", None
    if canons == {"relaxed"}:
        validator.body = relaxed_safe_body(validator.body)
    elif "relaxed" in canons and _has_long_wsp_run(validator.body):
        # Mixed body canonicalizations: the relaxed ones would meet dkimpy's quadratic pattern.
        return "fail", "body white space too long to check", None
    dnsfunc = PrefetchedTxt(records)
    try:
        status, results, reason = validator.verify(dnsfunc=dnsfunc)
    except Exception as error:  # dkimpy raises its DKIMExceptions here only through bugs
        return "fail", f"cannot validate: {str(error)[:80]}", None
    if status == dkim.CV_Pass:
        return "pass", "chain verified", _oldest_pass(results)
    if status == dkim.CV_None:
        return "none", str(reason), None
    return "fail", str(reason)[:120], None


def _oldest_pass(results: list[dict[str, Any]]) -> int:
    """RFC 8617 §5.2 step 5: walking down from the newest set, the lowest instance whose AMS
    (and every later one) validates; 0 when all do. dkimpy lists the sets newest first."""
    oldest = results[0]["instance"]
    for result in results:
        if not result.get("ams-valid"):
            break
        oldest = result["instance"]
    return 0 if oldest == 1 else int(oldest)


def _has_long_wsp_run(body: bytes, limit: int = 1024) -> bool:
    return any(match.end() - match.start() > limit for match in _WSP_RUN.finditer(body))


# --- sealing -----------------------------------------------------------------------------------


def seal(
    message: bytes,
    key: SigningKey,
    *,
    authserv_id: str,
    results: bytes,
    chain: ChainStatus,
    now: float | None = None,
    headers: Sequence[str] | None = None,
    standard_layout: bool = False,
) -> bytes:
    """The ARC-Seal, ARC-Message-Signature and ARC-Authentication-Results fields (in that
    order, CRLF line ends) to prepend to `message` for the next instance (RFC 8617 §5.1).

    `results` is the Authentication-Results value our verifier produced, with or without its
    leading authserv-id; `chain` the chain validation status `validate` gave (cv=). Empty when
    the newest existing ARC-Seal already says cv=fail: that chain is over and gets no more sets
    (RFC 8617 §5.1). `headers` overrides the fields the AMS signs (default: those DKIM signing
    covers); `standard_layout` writes the tags sorted and unfolded, the layout the ValiMail
    reference suite compares. ValueError for an unusable key, id or chain status.
    """
    if key.algorithm != "rsa":
        raise ValueError("ARC sets are signed with rsa-sha256 (RFC 8617 §4.1.3)")
    authserv = authserv_id.strip().encode()
    if not authserv or any(char in authserv for char in b"; \t\r\n()"):
        raise ValueError(f"not an authserv-id: {authserv_id!r}")
    payload = _results_payload(results, authserv)
    signer = dkim.ARC(message)
    existing = _existing_sets(signer.headers)
    top = max(existing, default=0)
    newest_seal = existing.get(top, {}).get(SEAL)
    if newest_seal is not None and newest_seal.tags.get("cv") == "fail":
        return b""  # RFC 8617 §5.1: a chain whose newest seal says cv=fail is not continued
    instance = top + 1
    if instance > MAX_INSTANCE:
        raise ValueError("the message already carries 50 ARC sets")  # RFC 8617 §4.2.1
    if (instance == 1) != (chain == "none"):
        # RFC 8617 §4.1.3 (cv=): none for the first set only, pass or fail after it.
        raise ValueError(f"cv={chain} does not fit ARC instance {instance}")
    if chain == "pass" and any(len(existing.get(i, {})) != 3 for i in range(1, instance)):
        raise ValueError("cv=pass for a chain with incomplete ARC sets")
    names = [name.lower() for name in headers] if headers else signed_field_names(message)
    if "arc-seal" in names or "from" not in names:
        raise ValueError("the AMS must sign From and must not sign ARC-Seal")  # RFC 8617 §4.1.2
    stamp = str(int(time.time() if now is None else now)).encode()
    number = str(instance).encode()
    domain, selector = key.domain.lower().encode(), key.selector.encode()
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    signer.hasher = hashlib.sha256
    signer.signature_algorithm = ALGORITHM

    # RFC 8617 §4.1.1: the ARC-Authentication-Results copies our A-R, with the instance.
    results_value = b" i=" + number + b"; " + authserv + b"; " + payload + b"\r\n"
    message_headers = signer.headers
    signer.headers = [[b"ARC-Authentication-Results", results_value], *message_headers]

    # RFC 8617 §4.1.2: the ARC-Message-Signature, a DKIM signature of the message with i=.
    body = policy.canonicalize_body(relaxed_safe_body(signer.body))
    include = [name.encode() for name in names]
    fields = [
        (b"i", number),
        (b"a", ALGORITHM),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain),
        (b"s", selector),
        (b"t", stamp),
        (b"h", b" : ".join(include)),
        (b"bh", base64.b64encode(hashlib.sha256(body).digest())),
        (b"b", b"0" * 60),  # dkimpy's placeholder: b= folds onto its own line
    ]
    signature_value = _signed_value(
        signer.headers, fields, include, policy, b"ARC-Message-Signature", key, standard_layout
    )

    # RFC 8617 §4.1.3 and §5.1.1: the ARC-Seal over every set in instance order, each as
    # AAR, AMS, AS, ending with the new AAR and AMS; over the new set alone when cv=fail.
    earlier = range(1, instance) if chain != "fail" else range(0)
    ordered = [[name, existing[i][name].raw] for i in reversed(earlier) for name in ARC_FIELDS]
    signer.headers = [
        [b"ARC-Message-Signature", b" " + signature_value],
        [b"ARC-Authentication-Results", results_value],
        *ordered,
    ]
    seal_include = [name for _ in earlier for name in ARC_FIELDS] + [RESULTS, SIGNATURE]
    seal_fields = [
        (b"i", number),
        (b"cv", chain.encode()),
        (b"a", ALGORITHM),
        (b"d", domain),
        (b"s", selector),
        (b"t", stamp),
        (b"b", b"0" * 60),
    ]
    seal_value = _signed_value(
        signer.headers, seal_fields, seal_include, policy, b"ARC-Seal", key, standard_layout
    )
    return (
        b"ARC-Seal: "
        + seal_value
        + b"ARC-Message-Signature: "
        + signature_value
        + b"ARC-Authentication-Results:"
        + results_value
    )


def _signed_value(
    headers: list[list[bytes]],
    fields: list[tuple[bytes, bytes]],
    include: list[bytes],
    policy: Any,
    name: bytes,
    key: SigningKey,
    standard_layout: bool,
) -> bytes:
    """The value of an ARC-Message-Signature or ARC-Seal field, signed: dkimpy lays the tags
    out and hashes the fields, the signature itself is OpenSSL's (dkimpy's own RSA is Python
    arithmetic holding the GIL for some 10 ms a signature)."""
    if standard_layout:
        # The reference suite's layout: tags sorted, values lower case and without spaces.
        fields = sorted(
            (tag, value.replace(b" ", b"") if tag == b"bh" else value.lower().replace(b" ", b""))
            for tag, value in fields
        )
    value = b"; ".join(b"=".join(field) for field in fields)
    if not standard_layout:
        value = dkim.fold(value, namelen=len(name), linesep=b"\r\n")
    value = dkim.RE_BTAG.sub(b"\\1", value)  # b= empty while hashing (RFC 6376 §3.7)
    hasher = hashlib.sha256()
    dkim.hash_headers(
        hasher,
        policy,
        policy.canonicalize_headers(headers),
        include,
        (name, b" " + value),
        dict(fields),
    )
    signature = rsa_private_key(key.private).sign(
        hasher.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256())
    )
    signed = [(tag, base64.b64encode(signature) if tag == b"b" else data) for tag, data in fields]
    value = b"; ".join(b"=".join(field) for field in signed) + b"\r\n"
    if not standard_layout:
        value = dkim.fold(value, namelen=len(name), linesep=b"\r\n")
    return bytes(value)


async def seal_async(
    message: bytes,
    key: SigningKey,
    *,
    authserv_id: str,
    results: bytes,
    chain: ChainStatus,
    now: float | None = None,
) -> bytes:
    """`seal` on a worker thread."""
    return await asyncio.to_thread(
        seal, message, key, authserv_id=authserv_id, results=results, chain=chain, now=now
    )


def _results_payload(results: bytes, authserv: bytes) -> bytes:
    """The results of an A-R value without its authserv-id (RFC 8601 §2.2), checked to be one
    header value: a CR or LF only as a fold."""
    text = results.strip(b" \t\r\n")
    head, semicolon, rest = text.partition(b";")
    if semicolon and head.strip().lower() == authserv.lower():
        text = rest.strip(b" \t\r\n")
    for index, octet in enumerate(text):
        if octet in b"\r\n":
            after = text[index + 1 : index + 2]
            if octet == 13 and after == b"\n":
                continue
            if after not in (b" ", b"\t"):
                raise ValueError("results would end the header field (bare CR or LF)")
    return text or b"none"


def _existing_sets(headers: list[list[bytes]]) -> dict[int, dict[bytes, _Field]]:
    """The message's readable ARC fields by instance and lowercased name."""
    sets: dict[int, dict[bytes, _Field]] = {}
    for name, value in headers:
        lowered = bytes(name).lower()
        if lowered not in ARC_FIELDS:
            continue
        arc_field = _read_field(lowered, bytes(value).decode("latin-1"))
        if isinstance(arc_field, _Field):
            sets.setdefault(arc_field.instance, {})[lowered] = arc_field
    return sets
