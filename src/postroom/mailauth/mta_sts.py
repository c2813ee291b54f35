"""MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file served at
`https://mta-sts.DOMAIN/.well-known/mta-sts.txt`, and whether an MX host name matches a
policy's `mx` patterns.

Both texts come from the network and are untrusted: each is read in one pass over its
characters or lines (no regular expressions), sizes are bounded (`MAX_POLICY` octets, at most
`MAX_MX` patterns) and numbers range-checked before conversion. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Mode = Literal["enforce", "testing", "none"]

RECORD_PREFIX = "v=STSv1"
POLICY_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.3
MAX_POLICY = 64 * 1024  # octets of a policy body we read (RFC 8461 §3.3 lets senders limit it)
MAX_AGE = 31_557_600  # RFC 8461 §3.2: max_age is at most a year (in seconds)
MAX_MX = 100  # mx patterns kept; a real policy has a handful
MAX_ID = 32  # RFC 8461 §3.1: sts-id = 1*32(ALPHA / DIGIT)
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_EXT_NAME = _ALNUM | frozenset("_-.")
_WSP = " \t"


class MtaStsError(ValueError):
    """A record or policy that does not follow RFC 8461's grammar; the text says where."""


@dataclass(frozen=True, slots=True)
class StsRecord:
    """The `_mta-sts.DOMAIN` TXT record: its policy id (RFC 8461 §3.1)."""

    id: str


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy file (RFC 8461 §3.2)."""

    mode: Mode
    max_age: int
    mx: tuple[str, ...]


def is_sts_record(text: str) -> bool:
    """RFC 8461 §3.1: TXT records that do not begin with "v=STSv1;" are discarded."""
    rest = text.removeprefix(RECORD_PREFIX)
    return rest != text and rest.lstrip(_WSP).startswith(";")


def parse_record(text: str) -> StsRecord:
    """The fields of one `v=STSv1` record (RFC 8461 §3.1); MtaStsError when it is not one or
    has no valid `id`."""
    if not is_sts_record(text):
        raise MtaStsError(f"does not begin with {RECORD_PREFIX};")
    fields = text.split(";")[1:]
    if fields and not fields[-1].strip(_WSP):
        fields.pop()  # RFC 8461 §3.1: a final sts-sep is allowed
    if not fields:
        raise MtaStsError("no fields after v=STSv1")
    ident: str | None = None
    for field in fields:
        name, equals, value = field.strip(_WSP).partition("=")
        if not equals or not name or not value:
            raise MtaStsError(f"field {field.strip(_WSP)[:40]!r} is not name=value")
        if name == "id":
            # RFC 8461 §3.1: sts-id = %s"id=" 1*32(ALPHA / DIGIT)
            if len(value) > MAX_ID or not set(value) <= _ALNUM:
                raise MtaStsError(f"id={value[:40]!r}: 1 to 32 letters and digits expected")
            if ident is None:
                ident = value
        elif len(name) > 32 or name[0] not in _ALNUM or not set(name) <= _EXT_NAME:
            # RFC 8461 §3.1: sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
            raise MtaStsError(f"bad field name {name[:40]!r}")
        elif any(not ("!" <= c <= "~") or c in "=;" for c in value):
            # RFC 8461 §3.1: sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)
            raise MtaStsError(f"bad characters in the value of {name}=")
    if ident is None:
        raise MtaStsError("no id= field")
    return StsRecord(ident)


def select_record(texts: Sequence[str]) -> StsRecord:
    """The domain's record among its `_mta-sts` TXT texts: exactly one must begin with
    "v=STSv1;" and parse (RFC 8461 §3.1); MtaStsError otherwise."""
    candidates = [text for text in texts if is_sts_record(text)]
    if not candidates:
        raise MtaStsError("no v=STSv1 record")
    if len(candidates) > 1:
        raise MtaStsError(f"{len(candidates)} v=STSv1 records (senders ignore them all)")
    return parse_record(candidates[0])


def parse_policy(body: bytes) -> Policy:
    """A policy file (RFC 8461 §3.2): `key: value` lines ending in CRLF or LF; `version`
    must be STSv1, `mode` enforce/testing/none, `max_age` 0..31557600, `mx` (one or more)
    required unless mode is none. Unknown keys are ignored; for a repeated single-valued key
    the first counts."""
    if len(body) > MAX_POLICY:
        raise MtaStsError(f"policy larger than {MAX_POLICY} octets")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MtaStsError("policy is not UTF-8 text") from None
    single: dict[str, str] = {}
    mx: list[str] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r").strip(_WSP)  # RFC 8461 §3.2: CRLF or LF
        if not line:
            continue
        key, colon, value = line.partition(":")
        key, value = key.strip(_WSP), value.strip(_WSP)
        if not colon or not key:
            raise MtaStsError(f"line {number}: not 'key: value'")
        if key == "mx":
            if len(mx) < MAX_MX:
                mx.append(value.lower().removesuffix("."))
        elif key not in single:
            single[key] = value
    version = single.get("version")
    if version != "STSv1":
        raise MtaStsError(f"version is {version!r}, STSv1 expected")
    mode = single.get("mode")
    if mode not in ("enforce", "testing", "none"):
        raise MtaStsError(f"mode is {mode!r}: enforce, testing or none expected")
    age_text = single.get("max_age", "")
    # RFC 8461 §3.2: sts-policy-max-age-value = 1*10(DIGIT), at most 31557600
    if not age_text or len(age_text) > 10 or not age_text.isascii() or not age_text.isdigit():
        raise MtaStsError(f"max_age is {age_text[:20]!r}: a number of seconds expected")
    max_age = int(age_text)
    if max_age > MAX_AGE:
        raise MtaStsError(f"max_age {max_age} is over {MAX_AGE} (a year)")
    if not mx and mode != "none":
        raise MtaStsError("no mx lines")
    for pattern in mx:
        if not _valid_pattern(pattern):
            raise MtaStsError(f"mx {pattern[:80]!r} is not a host name or *.name pattern")
    return Policy(mode, max_age, tuple(mx))  # type: ignore[arg-type]


def _valid_pattern(pattern: str) -> bool:
    """RFC 8461 §3.2: sts-policy-mx-value = ["*."] Domain."""
    name = pattern.removeprefix("*.")
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(
        0 < len(label) <= 63
        and label.isascii()
        and all(c.isalnum() or c == "-" for c in label)
        and not label.startswith("-")
        and not label.endswith("-")
        for label in labels
    )


def mx_matches(host: str, patterns: Sequence[str]) -> bool:
    """Whether MX host name `host` is allowed by a policy's `mx` patterns (RFC 8461 §4.1): an
    exact match, or "*.rest" matching one more label on the left of "rest" (not "rest" itself,
    not two labels)."""
    name = host.lower().removesuffix(".")
    for pattern in patterns:
        if pattern.startswith("*."):
            label, dot, rest = name.partition(".")
            if dot and label and rest == pattern[2:]:
                return True
        elif name == pattern:
            return True
    return False
