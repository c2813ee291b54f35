"""The message as Sieve sees it: header fields (unfolded, RFC 2047 decoded for header tests as
Pigeonhole does), addresses in header fields, the body for the body extension, the date in a
header. Parsing is linear and bounded: at most MAX_HEADERS fields are looked at.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import Message

MAX_HEADERS = 1000
# One encoded word (RFC 2047 §2): no nested or overlapping quantifiers, linear to scan.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")


def split_message(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """(header fields as (name, raw value without the line endings of folding), body)."""
    end = raw.find(b"\r\n\r\n")
    lf_end = raw.find(b"\n\n")
    if end < 0 and lf_end < 0:
        head, body = raw, b""
    elif end >= 0 and (lf_end < 0 or end <= lf_end):
        head, body = raw[:end], raw[end + 4 :]
    else:
        head, body = raw[:lf_end], raw[lf_end + 2 :]
    if head.startswith((b"\r\n", b"\n")):
        return [], raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    fields: list[tuple[str, str]] = []
    text = head.decode("utf-8", "surrogateescape")
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + line)  # RFC 5322 §2.2.3 unfolding
            continue
        colon = line.find(":")
        if colon <= 0:
            continue
        if len(fields) >= MAX_HEADERS:
            break
        fields.append((line[:colon].strip(), line[colon + 1 :]))
    return fields, body


def decode_2047(value: str) -> str:
    """Encoded words decoded (RFC 2047 §6.2); white space between adjacent ones dropped."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pos = 0
    last_end = -1
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        if not (last_end == match.start() - len(between) and last_end >= 0 and not
                between.strip()):
            out.append(between)
        charset, encoding, text = match.group(1), match.group(2).upper(), match.group(3)
        charset = charset.split("*")[0]  # RFC 2231 language suffix
        try:
            data = _b64(text) if encoding == "B" else _q(text)
            out.append(data.decode(charset, "replace"))
        except (LookupError, ValueError):
            out.append(match.group(0))
        pos = match.end()
        last_end = pos
    out.append(value[pos:])
    return "".join(out)


def _b64(text: str) -> bytes:
    import base64
    import binascii

    try:
        return base64.b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _q(text: str) -> bytes:
    out = bytearray()
    raw = text.encode("ascii", "replace")
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == 0x5F:  # "_" is a space in Q encoding
            out.append(0x20)
        elif c == 0x3D and i + 2 < len(raw) + 0 and i + 2 <= len(raw) - 1 + 1:
            try:
                out.append(int(raw[i + 1 : i + 3], 16))
                i += 3
                continue
            except ValueError:
                out.append(c)
        else:
            out.append(c)
        i += 1
    return bytes(out)


def header_text(value: str) -> str:
    """What a header test compares: unfolded, decoded, surrounding white space removed, and
    bytes that are not UTF-8 turned back into characters of Latin-1."""
    value = value.strip(" \t")
    if any("\udc80" <= c <= "\udcff" for c in value):
        value = value.encode("utf-8", "surrogateescape").decode("latin-1")
    return decode_2047(value)


@dataclass(frozen=True, slots=True)
class Address:
    local: str
    domain: str | None  # None for an address without "@"

    @property
    def all(self) -> str:
        return self.local if self.domain is None else f"{self.local}@{self.domain}"


def _strip_comments(text: str) -> str:
    out: list[str] = []
    depth = 0
    quoted = False
    escape = False
    for c in text:
        if escape:
            escape = False
            if depth == 0:
                out.append(c)
            continue
        if c == "\\":
            escape = True
            if depth == 0:
                out.append(c)
            continue
        if quoted:
            out.append(c)
            if c == '"':
                quoted = False
            continue
        if c == "(":
            depth += 1
            continue
        if c == ")" and depth:
            depth -= 1
            continue
        if depth == 0:
            if c == '"':
                quoted = True
            out.append(c)
    return "".join(out)


def _split_top(text: str, separators: str) -> list[tuple[str, str]]:
    """Pieces of `text` split at separators outside quotes and angle brackets: (piece, sep)."""
    pieces: list[tuple[str, str]] = []
    current: list[str] = []
    quoted = angle = escape = False
    for c in text:
        if escape:
            current.append(c)
            escape = False
            continue
        if c == "\\":
            escape = True
            current.append(c)
            continue
        if c == '"' and not angle:
            quoted = not quoted
        elif not quoted:
            if c == "<":
                angle = True
            elif c == ">":
                angle = False
            elif c in separators and not angle:
                pieces.append(("".join(current), c))
                current = []
                continue
        current.append(c)
    pieces.append(("".join(current), ""))
    return pieces


def _mailbox(text: str) -> Address | None:
    text = text.strip()
    if not text:
        return None
    if "<" in text:
        inner = text[text.rfind("<") + 1 :]
        inner = inner.split(">", 1)[0].strip()
        if ":" in inner and inner.startswith("@"):  # obsolete route
            inner = inner.split(":", 1)[1]
        text = inner
    else:
        text = "".join(text.split()) if '"' not in text else text
    if not text:
        return None
    at = text.rfind("@")
    if at < 0:
        return Address(_unquote(text), None)
    return Address(_unquote(text[:at]), text[at + 1 :])


def _unquote(local: str) -> str:
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        inner = local[1:-1]
        out = []
        escape = False
        for c in inner:
            if escape:
                out.append(c)
                escape = False
            elif c == "\\":
                escape = True
            else:
                out.append(c)
        return "".join(out)
    return local


def parse_addresses(value: str) -> list[Address]:
    """The addresses of an address-list header value (RFC 5322 §3.4), groups flattened."""
    text = _strip_comments(value)
    result: list[Address] = []
    for piece, _sep in _split_top(text, ",;"):
        # A group "name: a, b;" leaves "name: a" as the first piece.
        parts = _split_top(piece, ":")
        if len(parts) > 1 and "<" not in parts[0][0] and "@" not in parts[0][0]:
            piece = ":".join(p for p, _ in parts[1:])
        address = _mailbox(piece)
        if address is not None:
            result.append(address)
    return result


def body_parts(raw: bytes) -> Message:
    """The message as a MIME tree (the standard library's parser, no I/O)."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def text_of(part: Message) -> str:
    """The decoded text of a leaf part: transfer encoding and charset undone."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("latin-1")


def html_to_text(html: str) -> str:
    """A crude HTML to text conversion for body :text (tags dropped, entities decoded)."""
    import html as html_module

    out: list[str] = []
    pos = 0
    while True:
        start = html.find("<", pos)
        if start < 0:
            out.append(html[pos:])
            break
        out.append(html[pos:start])
        end = html.find(">", start)
        if end < 0:
            break
        pos = end + 1
    return html_module.unescape("".join(out))
