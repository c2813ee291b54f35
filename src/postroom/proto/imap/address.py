"""RFC 5322 address lists as IMAP ENVELOPE sees them, and RFC 2047 encoded-word decoding.

`parse_addresses` turns a raw header value into the address structures of RFC 3501 §7.4.2
(name, route, mailbox, host), with the group start/end markers. Broken input never raises;
it is repaired the way Dovecot repairs it (MISSING_MAILBOX, MISSING_DOMAIN, SYNTAX_ERROR,
INVALID_ROUTE placeholders, a comment after an addr-spec taken as the display name), so that
ENVELOPE output matches what clients already meet in the wild. Values stay raw bytes: no
RFC 2047 decoding happens here, `decode_words` does that for the search and sort keys.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from dataclasses import dataclass
from typing import Final

MISSING_MAILBOX: Final = b"MISSING_MAILBOX"
MISSING_DOMAIN: Final = b"MISSING_DOMAIN"

# RFC 5322 §3.2.3 atext (8-bit bytes accepted, as RFC 6532 does for UTF-8)
_ATEXT: Final = frozenset(
    b"!#$%&'*+-/=?^_`{|}~"
    + bytes(range(48, 58))
    + bytes(range(65, 91))
    + bytes(range(97, 123))
    + bytes(range(128, 256))
)
_ATEXT_OR_DOT: Final = _ATEXT | {46}
_ATEXT_RUN: Final = re.compile(rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff]*")
_ATEXT_OR_DOT_RUN: Final = re.compile(rb"[A-Za-z0-9!#$%&'*+\-./=?^_`{|}~\x80-\xff]*")


@dataclass(frozen=True, slots=True)
class EnvelopeAddress:
    """One entry of an ENVELOPE address list (RFC 3501 §7.4.2).

    A group start has only `mailbox` (the group name); a group end has all four None.
    """

    name: bytes | None
    route: bytes | None
    mailbox: bytes | None
    host: bytes | None

    @property
    def is_group_marker(self) -> bool:
        return self.host is None


_ATOM_TEXT: Final = rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff]+"
_DOT_ATOM_TEXT: Final = _ATOM_TEXT + rb"(?:\." + _ATOM_TEXT + rb")*"
# The forms most mail carries: "Name Words <local@domain>", "<local@domain>", "local@domain".
_PLAIN_ADDRESS: Final = re.compile(
    rb"[ \t]*(?:(?:(%s(?: %s)*) ?)?<(%s)@(%s)>|(%s)@(%s))[ \t]*"
    % (_ATOM_TEXT, _ATOM_TEXT, _DOT_ATOM_TEXT, _DOT_ATOM_TEXT, _DOT_ATOM_TEXT, _DOT_ATOM_TEXT)
)


def parse_addresses(value: bytes) -> list[EnvelopeAddress]:
    """Parse an address-list header value (RFC 5322 §3.4); [] when it holds no address."""
    plain = _PLAIN_ADDRESS.fullmatch(value)
    if plain is not None:
        # One address without quotes, comments, routes or groups: what the parser below
        # would give, without walking it byte by byte.
        name, mailbox, host, bare_mailbox, bare_host = plain.groups()
        if mailbox is None:
            return [EnvelopeAddress(None, None, bare_mailbox, bare_host)]
        return [EnvelopeAddress(name, None, mailbox, host)]
    return _AddressParser(value).address_list()


class _Builder:
    __slots__ = ("host", "mailbox", "name", "route")

    def __init__(self) -> None:
        self.name: bytes | None = None
        self.route: bytes | None = None
        self.mailbox: bytes | None = None
        self.host: bytes | None = None


class _AddressParser:
    """Recursive descent over RFC 5322 §3.4 with the obsolete forms of §4.4."""

    __slots__ = ("addr", "data", "last_comment", "n", "out", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.n = len(data)
        self.pos = 0
        self.last_comment = b""
        self.out: list[EnvelopeAddress] = []
        self.addr = _Builder()

    # -- lexical layer (RFC 5322 §3.2) -------------------------------------------------------

    def cur(self) -> int:
        return self.data[self.pos] if self.pos < self.n else -1

    def skip_cfws(self) -> int:
        """Skip FWS and comments: 1 if data follows, 0 at the end, -1 in a broken comment."""
        data, n = self.data, self.n
        while self.pos < n:
            c = data[self.pos]
            if c in (32, 9, 13, 10):
                self.pos += 1
                continue
            if c != 40:
                break
            # RFC 5322 §3.2.2: comment; remember the last one (display name fallback)
            level = 1
            pos = self.pos + 1
            text = bytearray()
            while pos < n:
                c = data[pos]
                if c == 92:
                    pos += 1
                    if pos >= n:
                        self.pos = n
                        return -1
                    text.append(data[pos])
                elif c == 40:
                    level += 1
                    text.append(c)
                elif c == 41:
                    level -= 1
                    if level == 0:
                        break
                    text.append(c)
                else:
                    text.append(c)
                pos += 1
            if pos >= n:
                self.pos = n
                return -1
            self.last_comment = bytes(text)
            self.pos = pos + 1
        return 1 if self.pos < n else 0

    def quoted_string(self, out: bytearray) -> int:
        data, n = self.data, self.n
        pos = self.pos + 1
        while pos < n:
            c = data[pos]
            if c == 34:
                self.pos = pos + 1
                return self.skip_cfws()
            if c == 92:
                pos += 1
                if pos >= n:
                    break
                out.append(data[pos])
            elif c == 10:
                if out.endswith(b"\r"):
                    del out[-1]
            else:
                out.append(c)
            pos += 1
        self.pos = n
        return -1

    def run(self, chars: re.Pattern[bytes], out: bytearray) -> int:
        m = chars.match(self.data, self.pos)
        assert m is not None  # the patterns match the empty string
        out += m.group()
        self.pos = m.end()
        return self.skip_cfws() if self.pos < self.n else 0

    def phrase(self, out: bytearray) -> int:
        # RFC 5322 §3.2.5 phrase = 1*word / obs-phrase
        if self.pos >= self.n:
            return 0
        if self.cur() == 46:
            return -1
        while True:
            ret = self.quoted_string(out) if self.cur() == 34 else self.run(_ATEXT_OR_DOT_RUN, out)
            if ret <= 0:
                return ret
            c = self.cur()
            if c not in _ATEXT_OR_DOT and c != 34:
                break
            out.append(32)
        return self.skip_cfws()

    def dot_atom(self, out: bytearray) -> int:
        # RFC 5322 §3.2.3 dot-atom, allowing CFWS around the dots (obs-local-part)
        data, n = self.data, self.n
        if self.pos >= n or data[self.pos] not in _ATEXT:
            return -1
        while True:
            ret = self.run(_ATEXT_RUN, out)
            if ret <= 0:
                return ret
            if data[self.pos] != 46:
                return 1
            self.pos += 1
            out.append(46)
            ret = self.skip_cfws()
            if ret <= 0:
                return ret

    def domain(self, out: bytearray) -> int:
        # RFC 5322 §3.4.1 domain = dot-atom / domain-literal / obs-domain, after the "@"
        self.pos += 1
        if self.skip_cfws() <= 0:
            return -1
        if self.cur() != 91:
            return self.dot_atom(out)
        data, n = self.data, self.n
        start = pos = self.pos
        while pos < n:
            c = data[pos]
            if c == 92:
                pos += 1
            elif c == 93:
                out += data[start : pos + 1]
                self.pos = pos + 1
                return self.skip_cfws()
            pos += 1
        self.pos = n
        return -1

    def local_part(self, out: bytearray) -> int:
        ret = self.quoted_string(out) if self.cur() == 34 else self.dot_atom(out)
        if ret >= 0:
            self.addr.mailbox = bytes(out)
        return ret

    def host(self) -> int:
        out = bytearray()
        ret = self.domain(out)
        if ret >= 0:
            self.addr.host = bytes(out)
        return ret

    # -- address layer (RFC 5322 §3.4) -------------------------------------------------------

    def emit(self) -> None:
        a = self.addr
        self.out.append(EnvelopeAddress(a.name, a.route, a.mailbox, a.host))
        self.addr = _Builder()

    def emit_fixed(self) -> None:
        if self.addr.mailbox is None:
            self.addr.mailbox = MISSING_MAILBOX
        if not self.addr.host:
            self.addr.host = MISSING_DOMAIN
        self.emit()

    def route(self) -> int:
        # RFC 5322 §4.4 obs-domain-list = *(CFWS / ",") "@" domain *("," [CFWS] ["@" domain])
        out = bytearray()
        while True:
            if self.pos >= self.n:
                return 0
            if self.cur() != 64:
                break
            if out:
                out.append(44)
            out.append(64)
            ret = self.domain(out)
            if ret <= 0:
                return ret
            while self.skip_cfws() > 0 and self.cur() == 44:
                self.pos += 1
        self.addr.route = bytes(out)
        return 1

    def angle_addr(self) -> int:
        # RFC 5322 §3.4 angle-addr = [CFWS] "<" addr-spec ">" [CFWS] / obs-angle-addr
        self.pos += 1
        if self.skip_cfws() <= 0:
            return -1
        if self.cur() == 64:
            if self.route() > 0 and self.cur() == 58:
                self.pos += 1
            else:
                self.addr.route = b"INVALID_ROUTE"
                if self.pos >= self.n:
                    return -1
            if self.skip_cfws() <= 0:
                return -1
        if self.cur() != 62:
            if self.local_part(bytearray()) <= 0:
                return -1
            if self.cur() == 64 and self.host() <= 0:
                return -1
        if self.cur() != 62:
            return -1
        self.pos += 1
        return self.skip_cfws()

    def name_addr(self) -> int:
        # RFC 5322 §3.4 name-addr = [display-name] angle-addr
        name = bytearray()
        if self.phrase(name) <= 0 or self.cur() != 60:
            return -1
        self.addr.name = bytes(name) or None
        if self.angle_addr() < 0:
            self.addr.host = b"SYNTAX_ERROR"
        return 1 if self.pos < self.n else 0

    def addr_spec(self) -> int:
        # RFC 5322 §3.4.1 addr-spec = local-part "@" domain
        self.last_comment = b""
        quoted = self.cur() == 34
        local = bytearray()
        ret = self.local_part(local)
        ret2 = -2
        if ret != 0 and self.cur() == 64:
            ret2 = self.host()
            if ret2 <= 0:
                ret = ret2
        if self.last_comment:
            self.addr.name = self.last_comment
        elif ret2 == -2:
            # no "@domain": a lone word is a local part, several words a display name
            local.append(32)
            before = len(local)
            self.phrase(local)
            if len(local) != before:
                self.addr.mailbox = None
                self.addr.name = bytes(local)
            elif not quoted:
                self.addr.host = b""
            ret = -1
        return ret

    def mailbox(self) -> int:
        # RFC 5322 §3.4 mailbox = name-addr / addr-spec
        start = self.pos
        ret = self.name_addr()
        if ret < 0:
            self.pos = start
            self.addr = _Builder()
            ret = self.addr_spec()
            a = self.addr
            if ret < 0 and a.name is None and a.mailbox is not None and a.host is None:
                a.name, a.mailbox = a.mailbox, None
        self.emit_fixed()
        return ret

    def group(self) -> int:
        # RFC 5322 §3.4 group = display-name ":" [group-list] ";" [CFWS]
        name = bytearray()
        if self.phrase(name) <= 0 or self.cur() != 58:
            return -1
        self.pos += 1
        ret = self.skip_cfws()
        self.addr = _Builder()
        self.addr.mailbox = bytes(name)
        self.emit()
        if ret > 0 and self.cur() != 59:
            while True:
                self.mailbox()
                if self.cur() != 44:
                    break
                self.pos += 1
                if self.skip_cfws() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if self.cur() != 59:
                ret = -1
            else:
                self.pos += 1
                ret = self.skip_cfws()
        self.addr = _Builder()
        self.emit()
        return 0 if ret == 0 else 1

    def address(self) -> int:
        start = self.pos
        ret = self.group()
        if ret < 0:
            self.pos = start
            self.addr = _Builder()
            ret = self.mailbox()
        return ret

    def address_list(self) -> list[EnvelopeAddress]:
        if self.skip_cfws() <= 0:
            return self.out
        while True:
            if self.address() == 0:
                break
            if self.cur() != 44:
                break
            self.pos += 1
            ret = self.skip_cfws()
            if ret <= 0:
                if ret < 0:
                    self.emit_fixed()
                break
        return self.out


# RFC 2047 §2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
_ENCODED_WORD: Final = re.compile(rb"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BLANKS: Final = re.compile(rb"[ \t\r\n]*")
_Q_ESCAPE: Final = re.compile(rb"=([0-9A-Fa-f]{2})")


def decode_words(value: bytes) -> str:
    """Decode RFC 2047 encoded-words; raw 8-bit text is taken as UTF-8 (RFC 6532).

    Blanks between adjacent encoded-words vanish (RFC 2047 §6.2); adjacent words in one
    charset are joined before decoding, so a character split across words survives.
    Unknown charsets or broken encodings leave the word as it was written.
    """
    if b"=?" not in value:
        return value.decode("utf-8", "replace")
    out: list[str] = []
    pending: list[tuple[str, bytes]] = []
    pos = 0
    for m in _ENCODED_WORD.finditer(value):
        gap = value[pos : m.start()]
        if not (pending and _BLANKS.fullmatch(gap)):
            _flush(pending, out)
            out.append(gap.decode("utf-8", "replace"))
        decoded = _decode_word(m)
        if decoded is None:
            _flush(pending, out)
            out.append(m.group().decode("ascii", "replace"))
        else:
            charset, data = decoded
            if pending and pending[-1][0] == charset:
                pending[-1] = (charset, pending[-1][1] + data)
            else:
                pending.append((charset, data))
        pos = m.end()
    _flush(pending, out)
    out.append(value[pos:].decode("utf-8", "replace"))
    return "".join(out)


def _decode_word(m: re.Match[bytes]) -> tuple[str, bytes] | None:
    # RFC 2231 §5: the charset may carry a "*language" suffix
    charset = m.group(1).split(b"*", 1)[0].decode("ascii", "replace").lower()
    text = m.group(3)
    if m.group(2) in (b"B", b"b"):
        try:
            data = base64.b64decode(text + b"=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return None
    else:
        # RFC 2047 §4.2: "_" is a space, "=XX" an octet
        data = _Q_ESCAPE.sub(lambda e: bytes([int(e.group(1), 16)]), text.replace(b"_", b" "))
    try:
        codecs.lookup(charset)
    except LookupError:
        return None
    return charset, data


def _flush(pending: list[tuple[str, bytes]], out: list[str]) -> None:
    for charset, data in pending:
        out.append(data.decode(charset, "replace"))
    pending.clear()
