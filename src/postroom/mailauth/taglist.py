"""Tag=value lists (RFC 6376 §3.2), the syntax of DKIM-Signature, ARC-Seal,
ARC-Message-Signature and DKIM key records, and the small grammars their values use.

Everything here reads hostile header text: one pass over the input, no backtracking regular
expressions, sizes bounded by the caller's input. Values are `str` decoded as Latin-1 by the
caller, so no octet is lost and nothing here can fail on encoding.
"""

from __future__ import annotations

import re

# RFC 6376 §3.2: tag-name = ALPHA *ALNUMPUNC (ALNUMPUNC = ALPHA / DIGIT / "_").
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# A label of a domain name or selector (RFC 6376 §3.5 d= and s=: sub-domain; underscores
# are seen in real selectors). One character class, anchored: no backtracking.
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
# RFC 5322 §3.6.8 ftext: printable ASCII except ":".
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_FWS = " \t\r\n"
_WSP_RUNS = re.compile(r"[ \t\r\n]+")
# Control characters a tag-value must not hold once its folds are undone (HTAB is white space).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
MAX_DOMAIN = 253
MAX_WSP_RUN = 256  # longer runs of white space in a signature field are refused (see below)


class TagListError(ValueError):
    """The text is not a tag-list: the reason says where."""


def parse_tag_list(text: str) -> dict[str, str]:
    """{tag: value} of a tag-list, values with surrounding FWS removed (RFC 6376 §3.2).

    Tag names are case-sensitive; a tag given twice, a spec without "=", a bad tag name or a
    value with control characters is an error. A trailing ";" is allowed.
    """
    tags: dict[str, str] = {}
    specs = text.split(";")
    if specs and not specs[-1].strip(_FWS):
        specs.pop()  # RFC 6376 §3.2: the final ";" is optional
    for spec in specs:
        name, equals, value = spec.partition("=")
        name = name.strip(_FWS)
        if not equals:
            raise TagListError(f"tag-spec without '=': {spec.strip(_FWS)[:40]!r}")
        if _TAG_NAME.fullmatch(name) is None:
            raise TagListError(f"bad tag name {name[:40]!r}")
        if name in tags:
            raise TagListError(f"duplicate tag {name}")
        value = value.strip(_FWS)
        if not _is_tval_text(value):
            raise TagListError(f"bad characters in the value of {name}=")
        tags[name] = value
    return tags


def _is_tval_text(value: str) -> bool:
    """RFC 6376 §3.2 tag-value: visible characters (and octets above 127, for EAI i= values)
    separated by FWS; a CR or LF only as part of a fold (CRLF followed by WSP)."""
    unfolded = value.replace("\r\n", "\n").replace("\n ", " ").replace("\n\t", "\t")
    return _CONTROL.search(unfolded) is None


def strip_fws(value: str) -> str:
    """A value with all folding white space removed (for b=, bh=, p=: RFC 6376 §3.5)."""
    return "".join(value.split())


def longest_wsp_run(value: str) -> int:
    """The longest run of white space (SP, HTAB, CR, LF) in `value`.

    dkimpy removes b= from a signature field with a regular expression whose folding-white-space
    part backtracks quadratically on long white-space runs; signature fields with runs longer
    than MAX_WSP_RUN never reach it (no real signer folds like that).
    """
    return max((len(run) for run in _WSP_RUNS.findall(value)), default=0)


def is_base64(value: str) -> bool:
    """Base64 text once FWS is removed (RFC 6376 §2.4 base64string), length a multiple of 4."""
    compact = strip_fws(value)
    return len(compact) % 4 == 0 and _BASE64.fullmatch(compact) is not None


def is_domain(value: str) -> bool:
    """A domain name of LDH (and "_") labels, as d= and s= take them (RFC 6376 §3.5)."""
    if not value or len(value) > MAX_DOMAIN:
        return False
    return all(_LABEL.fullmatch(label) is not None for label in value.split("."))


def field_names(value: str) -> list[str] | None:
    """The lowercased header field names of an h= value (RFC 6376 §3.5), or None if malformed."""
    names: list[str] = []
    for part in value.split(":"):
        name = part.strip(_FWS)
        if _FIELD_NAME.fullmatch(name) is None:
            return None
        names.append(name.lower())
    return names


def is_decimal(value: str, max_digits: int) -> bool:
    """1*max_digits DIGIT (RFC 6376 §3.5: l= up to 76 digits, t= and x= up to 12)."""
    return 0 < len(value) <= max_digits and value.isascii() and value.isdigit()
