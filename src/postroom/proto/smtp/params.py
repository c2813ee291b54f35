"""Parsing of MAIL FROM / RCPT TO arguments: the path, the address inside it, ESMTP parameters.

Strict where it matters (address syntax, parameter values), lenient where real clients and the
seed transcripts are sloppy: no angle brackets, a space after the colon, a display name before
the bracketed address. Raises `ClientError` carrying the reply to send.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from postroom.proto.smtp import replies
from postroom.proto.smtp.replies import ClientError

# RFC 5321 §4.1.2: atext characters for dot-atom local parts.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
# RFC 6531 §3.3: with SMTPUTF8, any non-ASCII character is also atext.
_UTF8_ATEXT = r"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\x00-\x7f])"
_UTF8_DOT_ATOM = re.compile(rf"{_UTF8_ATEXT}+(?:\.{_UTF8_ATEXT}+)*")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e]|[^\x00-\x7f])*"')
# RFC 5321 §4.1.2 sub-domain (Let-dig [Ldh-str]); RFC 6531 §3.3: U-labels may mix ASCII and
# non-ASCII letters ("bücher"), so a non-ASCII character counts as a letter.
_LET_DIG = r"(?:[A-Za-z0-9]|[^\x00-\x7f])"
_LABEL = re.compile(rf"{_LET_DIG}(?:(?:{_LET_DIG}|-){{0,61}}{_LET_DIG})?")
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
_PARAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")

# RFC 5321 §4.5.3.1: size limits for address parts.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


@dataclass(frozen=True, slots=True)
class MailParams:
    """ESMTP parameters of MAIL FROM (RFC 1870, 6152, 6531, 3461, 4954)."""

    size: int | None = None
    body: str | None = None  # "7BIT" or "8BITMIME"
    smtputf8: bool = False
    ret: str | None = None  # "FULL" or "HDRS"
    envid: str | None = None  # decoded xtext
    auth: str | None = None  # RFC 4954 §5 AUTH= value, decoded


@dataclass(frozen=True, slots=True)
class RcptParams:
    """ESMTP parameters of RCPT TO (RFC 3461 §4)."""

    notify: tuple[str, ...] | None = None  # ("NEVER",) or a subset of SUCCESS/FAILURE/DELAY
    orcpt: str | None = None  # "addr-type;address", xtext decoded


def decode_xtext(value: str) -> str:
    """RFC 3461 §4: xtext encodes octets outside printable ASCII, "+" and "=" as "+HH".

    The octets are read as UTF-8 (what `encode_xtext` writes); octets that are not UTF-8 are
    kept as the Latin-1 characters of the same value, so nothing a client sends is lost.
    """
    if any(ch < "!" or ch > "~" or ch == "=" for ch in value):
        raise ClientError(replies.syntax("Invalid xtext value"))
    stripped = _XTEXT_HEX.sub("", value)
    if "+" in stripped:
        raise ClientError(replies.syntax("Invalid xtext encoding"))
    octets = _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), value).encode("latin-1")
    try:
        return octets.decode("utf-8")
    except UnicodeDecodeError:
        return octets.decode("latin-1")


def encode_xtext(value: str) -> str:
    """RFC 3461 §4: each octet of the UTF-8 form outside "!".."~" (and "+", "=") as "+HH"."""
    return "".join(
        chr(octet) if 0x21 <= octet <= 0x7E and octet not in (0x2B, 0x3D) else f"+{octet:02X}"
        for octet in value.encode("utf-8")
    )


def validate_domain(domain: str, utf8: bool) -> bool:
    if domain.startswith("[") and domain.endswith("]"):
        return _valid_address_literal(domain[1:-1])
    if not domain or len(domain) > MAX_DOMAIN:
        return False
    if not utf8 and not domain.isascii():
        return False
    labels = domain.rstrip(".").split(".") if domain.endswith(".") else domain.split(".")
    return all(_LABEL.fullmatch(label) for label in labels)


def _valid_address_literal(literal: str) -> bool:
    # RFC 5321 §4.1.3: IPv4 dotted quad or "IPv6:" followed by an IPv6 address.
    try:
        if literal.lower().startswith("ipv6:"):
            ipaddress.IPv6Address(literal[5:])
        else:
            ipaddress.IPv4Address(literal)
    except ValueError:
        return False
    return True


def validate_mailbox(address: str, utf8: bool) -> None:
    """Raise ClientError unless `address` is a valid RFC 5321 §4.1.2 Mailbox."""
    # RFC 5321 §4.5.3.1.3: the path, angle brackets included, is at most 256 octets (not
    # characters: UTF-8 addresses, RFC 6531, count their encoded length).
    if len(address.encode("utf-8")) > MAX_PATH - 2:
        raise ClientError(replies.bad_address("Address too long"))
    at = address.rfind("@")
    if at <= 0:
        raise ClientError(replies.bad_address(f"Bad address syntax: <{address}>"))
    local, domain = address[:at], address[at + 1 :]
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise ClientError(replies.bad_address("Local part too long"))
    if not address.isascii() and not utf8:
        # RFC 6531 §3.4: non-ASCII addresses only in SMTPUTF8 transactions.
        raise ClientError(replies.SMTPUTF8_REQUIRED)
    local_ok = (_UTF8_DOT_ATOM if utf8 else _DOT_ATOM).fullmatch(local) or _QUOTED.fullmatch(local)
    if not local_ok or not validate_domain(domain, utf8):
        raise ClientError(replies.bad_address(f"Bad address syntax: <{address}>"))


def canonical_mailbox(address: str) -> str:
    """The plainest spelling of a valid mailbox, so equal mailboxes compare equal.

    A quoted local part whose content is a plain dot-atom is unquoted (RFC 5321 §4.1.2 /
    RFC 5322 §3.2.4: "alice" and alice are the same), and a trailing root dot on the domain is
    dropped ("user@example.test." is "user@example.test", as Postfix treats it), so a local
    domain is never mistaken for a remote one.
    """
    at = address.rfind("@")
    local, domain = address[:at], address[at + 1 :]
    if local.startswith('"') and local.endswith('"') and len(local) > 2:
        unquoted = re.sub(r"\\(.)", r"\1", local[1:-1])
        if _UTF8_DOT_ATOM.fullmatch(unquoted):
            local = unquoted
    if domain.endswith(".") and not domain.startswith("["):
        domain = domain[:-1]
    return f"{local}@{domain}"


def split_path(argument: str) -> tuple[str, str]:
    """Split "<path> params" into (address, params text), accepting the lenient seed forms.

    Forms accepted: `<a@b> X=Y`, `a@b X=Y` (no brackets), `Name <a@b>` (display name before the
    bracketed address), `<@relay,@relay2:a@b>` (RFC 5321 §4.1.2 source route, ignored).
    """
    text = argument.strip()
    if "<" in text:
        start = text.index("<")
        end = _closing_bracket(text, start)
        path = text[start + 1 : end]
        rest = text[end + 1 :]
        if rest and not rest[0].isspace():
            raise ClientError(replies.syntax("Syntax error in parameters after the address"))
    else:
        path, _, rest = text.partition(" ")
    # RFC 5321 §4.1.2 / Appendix C: a source route "@a,@b:" before the mailbox is ignored.
    if path.startswith("@"):
        colon = path.find(":")
        if colon < 0:
            raise ClientError(replies.bad_address("Bad source route"))
        path = path[colon + 1 :]
    return path, rest.strip()


def _closing_bracket(text: str, start: int) -> int:
    in_quotes = False
    escaped = False
    for index in range(start + 1, len(text)):
        ch = text[index]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch == ">" and not in_quotes:
            return index
    raise ClientError(replies.syntax("Missing closing '>' in path"))


def parse_params(text: str) -> dict[str, str | None]:
    """RFC 5321 §4.1.2 esmtp-param: keyword["=" value], separated by spaces."""
    params: dict[str, str | None] = {}
    for item in text.split():
        name, eq, value = item.partition("=")
        if not _PARAM_NAME.fullmatch(name):
            raise ClientError(replies.syntax(f"Bad parameter syntax: {item}"))
        key = name.upper()
        if key in params:
            raise ClientError(replies.syntax(f"Duplicate parameter {key}"))
        if eq and not value:
            raise ClientError(replies.syntax(f"Empty value for {key}"))
        params[key] = value if eq else None
    return params


def parse_mail(argument: str, size_limit: int) -> tuple[str, MailParams]:
    """Parse the part after "MAIL FROM:"; returns (reverse-path, params). "" is the null path."""
    if not argument.strip():
        # RFC 5321 §4.1.1.2: Reverse-path is "<>" or a Path; an empty argument is neither.
        raise ClientError(replies.syntax("Syntax: MAIL FROM:<address>"))
    path, param_text = split_path(argument)
    raw = parse_params(param_text)
    size: int | None = None
    body: str | None = None
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None
    smtputf8 = False
    for key, value in raw.items():
        if key == "SIZE":  # RFC 1870 §6
            # RFC 1870 §3: size-value = 1*20DIGIT (ASCII: str.isdigit also takes "²", which
            # int() refuses), checked before any conversion.
            if value is None or not (value.isascii() and value.isdigit()) or len(value) > 20:
                raise ClientError(replies.syntax("SIZE requires a number"))
            size = int(value)
            if size_limit and size > size_limit:
                raise ClientError(replies.message_too_big(size_limit))
        elif key == "BODY":  # RFC 6152 §2
            upper = (value or "").upper()
            if upper == "BINARYMIME":
                raise ClientError(replies.BODY_8BIT_REQUIRED)
            if upper not in ("7BIT", "8BITMIME"):
                raise ClientError(replies.syntax("BODY must be 7BIT or 8BITMIME"))
            body = upper
        elif key == "SMTPUTF8":  # RFC 6531 §3.4
            if value is not None:
                raise ClientError(replies.syntax("SMTPUTF8 takes no value"))
            smtputf8 = True
        elif key == "RET":  # RFC 3461 §4.3
            upper = (value or "").upper()
            if upper not in ("FULL", "HDRS"):
                raise ClientError(replies.syntax("RET must be FULL or HDRS"))
            ret = upper
        elif key == "ENVID":  # RFC 3461 §4.4
            if value is None:
                raise ClientError(replies.syntax("ENVID requires a value"))
            envid = decode_xtext(value)
            if len(envid) > 100:
                raise ClientError(replies.syntax("ENVID too long"))
        elif key == "AUTH":  # RFC 4954 §5
            if value is None:
                raise ClientError(replies.syntax("AUTH requires a value"))
            auth = "" if value == "<>" else decode_xtext(value)
        else:
            raise ClientError(replies.unknown_parameter(key))
    if path:
        validate_mailbox(path, smtputf8)
        path = canonical_mailbox(path)
    return path, MailParams(size, body, smtputf8, ret, envid, auth)


def parse_rcpt(argument: str, smtputf8: bool) -> tuple[str, RcptParams]:
    """Parse the part after "RCPT TO:"; returns (forward-path, params)."""
    path, param_text = split_path(argument)
    raw = parse_params(param_text)
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    for key, value in raw.items():
        if key == "NOTIFY":  # RFC 3461 §4.1
            items = tuple(part.upper() for part in (value or "").split(","))
            if items == ("NEVER",) or (
                items
                and all(item in NOTIFY_VALUES for item in items)
                and len(set(items)) == len(items)
            ):
                notify = items
            else:
                raise ClientError(
                    replies.syntax("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
                )
        elif key == "ORCPT":  # RFC 3461 §4.2
            addr_type, semi, original = (value or "").partition(";")
            if not semi or not addr_type or not original:
                raise ClientError(replies.syntax("ORCPT must be addr-type;address"))
            if addr_type.upper() == "UTF-8":
                orcpt = f"utf-8;{original}"  # RFC 6533 §3: utf-8-addr-xtext, kept encoded
            else:
                orcpt = f"{addr_type.lower()};{decode_xtext(original)}"
        else:
            raise ClientError(replies.unknown_parameter(key))
    if path.lower() == "postmaster":
        # RFC 5321 §4.5.1: "<Postmaster>" without a domain must be accepted.
        return "postmaster", RcptParams(notify, orcpt)
    if not path:
        raise ClientError(replies.bad_address("Recipient address required"))
    validate_mailbox(path, smtputf8)
    return canonical_mailbox(path), RcptParams(notify, orcpt)
