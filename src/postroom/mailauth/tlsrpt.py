"""SMTP TLS Reporting (RFC 8460): the `_smtp._tls.DOMAIN` TXT record that says where reports
on TLS with the domain's MX hosts go.

The record is untrusted DNS text: it is split on ";" and "," and each piece scanned once (no
regular expressions); at most `MAX_URIS` report addresses are kept. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RECORD_PREFIX = "v=TLSRPTv1"
MAX_URIS = 16
_WSP = " \t"
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_EXT_NAME = _ALNUM | frozenset("_-.")


class TlsRptError(ValueError):
    """Not a usable TLS-RPT record; the text says why."""


@dataclass(frozen=True, slots=True)
class TlsRptRecord:
    """Where reports go: `mailto:` and `https:` URIs (RFC 8460 §3)."""

    rua: tuple[str, ...]


def is_tlsrpt_record(text: str) -> bool:
    """RFC 8460 §3: records that do not begin with "v=TLSRPTv1;" are discarded."""
    rest = text.removeprefix(RECORD_PREFIX)
    return rest != text and rest.lstrip(_WSP).startswith(";")


def parse_record(text: str) -> TlsRptRecord:
    """RFC 8460 §3: tlsrpt-record = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim],
    with exactly one `rua=` of comma-separated mailto: or https: URIs."""
    if not is_tlsrpt_record(text):
        raise TlsRptError(f"does not begin with {RECORD_PREFIX};")
    fields = text.split(";")[1:]
    if fields and not fields[-1].strip(_WSP):
        fields.pop()
    rua: tuple[str, ...] | None = None
    for field in fields:
        name, equals, value = field.strip(_WSP).partition("=")
        if not equals or not name:
            raise TlsRptError(f"field {field.strip(_WSP)[:40]!r} is not name=value")
        if name == "rua":
            if rua is not None:
                raise TlsRptError("rua= given twice")
            rua = _uris(value)
        elif len(name) > 32 or name[0] not in _ALNUM or not set(name) <= _EXT_NAME:
            # RFC 8460 §3: tlsrpt-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
            raise TlsRptError(f"bad field name {name[:40]!r}")
    if rua is None:
        raise TlsRptError("no rua= field (where reports go)")
    return TlsRptRecord(rua)


def _uris(value: str) -> tuple[str, ...]:
    uris = [part.strip(_WSP) for part in value.split(",")]
    if len(uris) > MAX_URIS:
        raise TlsRptError(f"more than {MAX_URIS} rua= addresses")
    for uri in uris:
        scheme, colon, rest = uri.partition(":")
        # RFC 8460 §3: tlsrpt-uri is a mailto: (RFC 6068) or https: (RFC 2818) URI.
        if not colon or scheme.lower() not in ("mailto", "https") or not rest:
            raise TlsRptError(f"rua {uri[:80]!r} is neither mailto: nor https:")
        if any(not ("!" <= c <= "~") for c in rest):
            raise TlsRptError(f"rua {uri[:80]!r} holds spaces or non-ASCII characters")
        if scheme.lower() == "mailto" and "@" not in rest:
            raise TlsRptError(f"rua {uri[:80]!r} names no mailbox")
    return tuple(uris)


def select_record(texts: Sequence[str]) -> TlsRptRecord:
    """The domain's record among its `_smtp._tls` TXT texts: exactly one must begin with
    "v=TLSRPTv1;" (RFC 8460 §3); TlsRptError otherwise."""
    candidates = [text for text in texts if is_tlsrpt_record(text)]
    if not candidates:
        raise TlsRptError("no v=TLSRPTv1 record")
    if len(candidates) > 1:
        raise TlsRptError(f"{len(candidates)} v=TLSRPTv1 records (senders ignore them all)")
    return parse_record(candidates[0])
