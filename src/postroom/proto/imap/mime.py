"""Byte-offset MIME parser: a raw RFC 5322 message becomes a tree of `Part`s.

Every part records where its header block and its body sit in the raw bytes, its header fields
(as offsets; values are unfolded on demand) and its decoded MIME metadata (RFC 2045 Content-*
fields, RFC 2231 parameters). multipart bodies are split on their boundaries (RFC 2046 §5.1.1),
message/rfc822 and message/global bodies are parsed as embedded messages. CRLF and bare LF
line ends are both accepted. Parsing never raises: broken input yields the best tree it can,
and nesting deeper than `MAX_DEPTH` is kept as opaque leaves.

Boundary handling follows Dovecot's parser, which IMAP clients have long been tested against:
a boundary line only has to start with `--boundary` (the innermost matching boundary, then the
longest, wins), a boundary of an enclosing multipart also ends the inner ones, and the line end
before a boundary line belongs to the boundary.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Final, Literal

MAX_DEPTH: Final = 100

PartKind = Literal["text", "multipart", "message", "other"]
Params = tuple[tuple[bytes, bytes], ...]

# RFC 2045 §5.1: token := 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>; like
# Dovecot we also let 8-bit bytes through.
_TOKEN: Final = re.compile(rb"[A-Za-z0-9!#$%&'*+\-.^_`{|}~\x80-\xff]*")
# RFC 5322 §3.2.3 atext, used by Content-Language tags (RFC 3282 §2).
_ATOM: Final = re.compile(rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\xff]+")
_NEWLINES: Final = re.compile(rb"[\r\n]+")
# RFC 2231 §3: name*N continuations; a section number of more than 9 digits is no
# continuation (the key stays as written), so int() never sees an unbounded run of digits.
_RFC2231_KEY: Final = re.compile(rb"([^*]*)\*(?:([0-9]{1,9}))?(\*)?")


@dataclass(slots=True, eq=False)
class HeaderField:
    """One header field: `name` lowercased, offsets into the raw message."""

    name: bytes
    start: int  # first byte of the field name
    value_start: int  # just after the colon; -1 for a line without a colon
    end: int  # after the line end of the field's last (continuation) line


@dataclass(slots=True, eq=False)
class Part:
    """A MIME entity: a message, an embedded message, or a part of a multipart."""

    header_start: int
    body_start: int  # end of the header block, including the empty line that ends it
    body_end: int
    fields: list[HeaderField] = field(default_factory=list)
    kind: PartKind = "text"
    # Content-Type as written (case kept); None when absent, invalid, or not a MIME entity.
    content_type: bytes | None = None
    content_subtype: bytes | None = None
    params: Params = ()  # RFC 2231 continuations merged, as Dovecot writes them
    content_id: bytes | None = None
    description: bytes | None = None
    encoding: bytes | None = None
    disposition: bytes | None = None
    disposition_params: Params = ()
    language: tuple[bytes, ...] | None = None
    location: bytes | None = None
    md5: bytes | None = None
    lines: int = 0  # number of LF in the body (text and message parts only)
    children: list[Part] = field(default_factory=list)
    message: Part | None = None  # the embedded message of a message/rfc822 part

    @property
    def size(self) -> int:
        """Body size in octets."""
        return self.body_end - self.body_start

    def header(self, raw: bytes) -> bytes:
        """The header block, with the empty line that ends it."""
        return raw[self.header_start : self.body_start]

    def body(self, raw: bytes) -> bytes:
        return raw[self.body_start : self.body_end]

    def header_value(self, raw: bytes, name: str, *, last: bool = False) -> bytes | None:
        """The value of the first (or last) field called `name`, see `field_value`."""
        key = name.lower().encode("ascii", "replace")
        found: HeaderField | None = None
        for f in self.fields:
            if f.name == key and f.value_start >= 0:
                found = f
                if not last:
                    break
        return None if found is None else field_value(raw, found)

    def param(self, name: str) -> str | None:
        """A Content-Type parameter, RFC 2231-decoded (`name*` included)."""
        return param_value(self.params, name)


def field_value(raw: bytes, f: HeaderField) -> bytes:
    """The value of a field: leading blanks of the first line dropped, line ends kept.

    Like Dovecot, when the first line holds only blanks just one of them is dropped.
    NUL bytes become U+FFFD so the value is always a valid IMAP string.
    """
    if f.value_start < 0:
        return b""
    end = f.end
    if end > f.value_start and raw[end - 1] == 10:
        end -= 1
        if end > f.value_start and raw[end - 1] == 13:
            end -= 1
    value = raw[f.value_start : end]
    eol = value.find(b"\n")
    first = value if eol < 0 else value[:eol]
    stripped = first.lstrip(b" \t")
    if stripped.rstrip(b"\r"):
        value = value[len(first) - len(stripped) :]
    elif first[:1] in (b" ", b"\t"):
        value = value[1:]
    if b"\0" in value:
        value = value.replace(b"\0", "\ufffd".encode())
    return value


def unfold(value: bytes) -> bytes:
    """RFC 5322 §2.2.3 unfolding: line ends removed (a blank is kept between the lines)."""
    if b"\n" not in value and b"\r" not in value:
        return value
    return _NEWLINES.sub(_newline_replacement, value)


def _newline_replacement(m: re.Match[bytes]) -> bytes:
    following = m.string[m.end() : m.end() + 1]
    return b"" if following in (b"", b" ", b"\t") else b" "


def param_value(params: Params, name: str) -> str | None:
    """Look a parameter up by name (case-insensitive); RFC 2231 `name*` values are decoded."""
    key = name.lower().encode("ascii", "replace")
    for pname, pvalue in params:
        low = pname.lower()
        if low == key:
            return pvalue.decode("utf-8", "replace")
        if low == key + b"*":
            return decode_rfc2231(pvalue)
    return None


def decode_rfc2231(value: bytes) -> str:
    """RFC 2231 §4: `charset'language'percent-encoded` to text (charset errors replaced)."""
    parts = value.split(b"'", 2)
    if len(parts) != 3:
        return urllib.parse.unquote_to_bytes(value).decode("utf-8", "replace")
    charset = parts[0].decode("ascii", "replace") or "us-ascii"
    data = urllib.parse.unquote_to_bytes(parts[2])
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def parse(raw: bytes) -> Part:
    """Parse a whole message."""
    part, _ = _Parser(raw).entity(0, (), 0, in_multipart=False, digest_parent=False)
    return part


def header_section(raw: bytes) -> bytes:
    """The message's header with the empty line that ends it (all of `raw` when there is
    none): `parse(raw).header(raw)`, found without reading the fields."""
    if raw.startswith(b"\n"):
        return raw[:1]
    if raw.startswith(b"\r\n"):
        return raw[:2]
    # An empty line: a line end followed by LF or CRLF (as `_Parser.header` reads it).
    ends = [i + 2 for i in (raw.find(b"\n\n"),) if i >= 0]
    ends += [i + 3 for i in (raw.find(b"\n\r\n"),) if i >= 0]
    return raw[: min(ends)] if ends else raw


@dataclass(slots=True)
class _Hit:
    """A boundary line found while scanning."""

    before: int  # where the content before the boundary ends (its line end excluded)
    index: int  # which boundary of the stack
    final: bool  # `--boundary--`
    after: int  # first byte after the boundary line


class _Parser:
    __slots__ = ("n", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.n = len(raw)

    def entity(
        self,
        start: int,
        stack: tuple[bytes, ...],
        depth: int,
        *,
        in_multipart: bool,
        digest_parent: bool,
    ) -> tuple[Part, _Hit | None]:
        fields, body_start, hit = self.header(start, stack)
        part = Part(start, body_start, body_start, fields)
        _apply_mime(part, self.raw, in_multipart=in_multipart, digest_parent=digest_parent)
        if hit is not None:
            if part.kind == "message":
                part.message = Part(body_start, body_start, body_start)
            return part, hit
        if part.kind == "multipart" and depth < MAX_DEPTH:
            boundary = _boundary(part.params)
            if boundary:
                return part, self.multipart(part, stack, boundary, depth)
        if part.kind == "message" and depth < MAX_DEPTH:
            child, hit = self.entity(
                body_start, stack, depth + 1, in_multipart=False, digest_parent=False
            )
            part.message = child
            part.body_end = child.body_end
        else:
            hit = self.find_boundary(body_start, stack)
            part.body_end = self.n if hit is None else hit.before
            if part.kind == "message":
                part.message = Part(part.body_end, part.body_end, part.body_end)
        if part.kind in ("text", "message"):
            part.lines = self.raw.count(b"\n", part.body_start, part.body_end)
        return part, hit

    def multipart(
        self, part: Part, stack: tuple[bytes, ...], boundary: bytes, depth: int
    ) -> _Hit | None:
        # RFC 2046 §5.1.1: preamble, parts separated by --boundary, --boundary--, epilogue.
        inner = (*stack, boundary)
        own = len(stack)
        digest = part.content_subtype is not None and part.content_subtype.lower() == b"digest"
        hit = self.find_boundary(part.body_start, inner)
        while hit is not None and hit.index == own:
            if hit.final:
                hit = self.find_boundary(hit.after, stack)
                break
            child, hit = self.entity(
                hit.after, inner, depth + 1, in_multipart=True, digest_parent=digest
            )
            part.children.append(child)
        part.body_end = self.n if hit is None else hit.before
        return hit

    def header(
        self, pos: int, stack: tuple[bytes, ...]
    ) -> tuple[list[HeaderField], int, _Hit | None]:
        raw, n = self.raw, self.n
        start = pos
        fields: list[HeaderField] = []
        while pos < n:
            c = raw[pos]
            if c == 10:
                return fields, pos + 1, None
            if c == 13 and raw[pos + 1 : pos + 2] == b"\n":
                return fields, pos + 2, None
            if c == 45 and stack:
                hit = self.match(pos, stack, start)
                if hit is not None:
                    return fields, hit.before, hit
            eol = raw.find(b"\n", pos)
            nxt = n if eol < 0 else eol + 1
            if c == 32 or c == 9:
                if fields:
                    fields[-1].end = nxt  # RFC 5322 §2.2.3: a folded continuation line
            else:
                colon = raw.find(b":", pos, nxt)
                if colon < 0:
                    name = raw[pos:nxt].rstrip(b"\r\n").lower()
                else:
                    name = raw[pos:colon].rstrip(b" \t").lower()
                fields.append(HeaderField(name, pos, colon + 1 if colon >= 0 else -1, nxt))
            pos = nxt
        return fields, n, None

    def find_boundary(self, pos: int, stack: tuple[bytes, ...]) -> _Hit | None:
        """The first boundary line at or after `pos` (a line start)."""
        if not stack:
            return None
        raw = self.raw
        floor = pos
        while True:
            if raw.startswith(b"--", pos):
                hit = self.match(pos, stack, floor)
                if hit is not None:
                    return hit
            nl = raw.find(b"\n--", pos)
            if nl < 0:
                return None
            pos = nl + 1

    def match(self, pos: int, stack: tuple[bytes, ...], floor: int) -> _Hit | None:
        """Is the line at `pos` a boundary line of `stack`? `floor` is where the scan began."""
        raw = self.raw
        if not raw.startswith(b"--", pos):
            return None
        eol = raw.find(b"\n", pos)
        line_end = self.n if eol < 0 else eol
        content = raw[pos + 2 : min(line_end, pos + 1026)]
        if content.endswith(b"\r"):
            content = content[:-1]
        wanted = content[:-2] if len(content) > 2 and content.endswith(b"--") else content
        best = -1
        for i in range(len(stack) - 1, -1, -1):
            b = stack[i]
            if wanted.startswith(b) and (best < 0 or len(stack[best]) < len(b)):
                best = i
                if len(b) == len(wanted):
                    break
        if best < 0:
            return None
        blen = len(stack[best])
        before = pos
        if pos > floor:
            before = pos - 1
            if before > floor and raw[before - 1] == 13:
                before -= 1
        return _Hit(before, best, content[blen : blen + 2] == b"--", self.n if eol < 0 else eol + 1)


def _boundary(params: Params) -> bytes:
    for name, value in params:
        if name.lower() == b"boundary":
            return value
    return b""


_CONTENT_FIELDS: Final = frozenset(
    {
        b"content-type",
        b"content-transfer-encoding",
        b"content-id",
        b"content-description",
        b"content-disposition",
        b"content-language",
        b"content-location",
        b"content-md5",
    }
)


def _apply_mime(part: Part, raw: bytes, *, in_multipart: bool, digest_parent: bool) -> None:
    first: dict[bytes, HeaderField] = {}
    is_mime = in_multipart
    for f in part.fields:
        name = f.name
        if name in _CONTENT_FIELDS:
            if name not in first and f.value_start >= 0:
                first[name] = f
        elif name == b"mime-version":
            is_mime = True
    # Like Dovecot: Content-* fields count when the entity is MIME, i.e. it is a part of a
    # multipart or has a MIME-Version (RFC 2045 §4) or at least a Content-Type field.
    if b"content-type" in first:
        is_mime = True
    if is_mime and first:
        _read_content_fields(part, raw, first)
    ctype = part.content_type
    if ctype is None:
        # RFC 2045 §5.2 default text/plain; RFC 2046 §5.1.5 message/rfc822 in a digest.
        part.kind = "message" if digest_parent else "text"
        return
    low = ctype.lower()
    sub = (part.content_subtype or b"").lower()
    if low == b"multipart":
        part.kind = "multipart"
    elif low == b"text":
        part.kind = "text"
    elif low == b"message" and sub in (b"rfc822", b"global"):
        part.kind = "message"  # RFC 2046 §5.2.1, RFC 6532 §3.7
    else:
        part.kind = "other"


def _read_content_fields(part: Part, raw: bytes, first: dict[bytes, HeaderField]) -> None:
    f = first.get(b"content-type")
    if f is not None:
        _read_content_type(part, field_value(raw, f))
    f = first.get(b"content-transfer-encoding")
    if f is not None:
        # RFC 2045 §6.1: mechanism := token, nothing else but comments.
        mp = _ValueParser(field_value(raw, f))
        if mp.skip_cfws():
            token = mp.token()
            if token and mp.skip_cfws() and mp.at_end():
                part.encoding = token
    f = first.get(b"content-disposition")
    if f is not None:
        # RFC 2183 §2: disposition-type *(";" disposition-parm)
        mp = _ValueParser(field_value(raw, f))
        if mp.skip_cfws():
            token = mp.token()
            if token:
                part.disposition = token
                part.disposition_params = mp.params()
    f = first.get(b"content-language")
    if f is not None:
        part.language = _read_language(field_value(raw, f))
    for name, attr in (
        (b"content-id", "content_id"),
        (b"content-description", "description"),
        (b"content-location", "location"),
        (b"content-md5", "md5"),
    ):
        f = first.get(name)
        if f is not None:
            setattr(part, attr, field_value(raw, f))


def _read_content_type(part: Part, value: bytes) -> None:
    # RFC 2045 §5.1: type "/" subtype *(";" parameter); invalid → the §5.2 default.
    mp = _ValueParser(value)
    if not mp.skip_cfws():
        return
    ctype = mp.token()
    if not ctype or not mp.skip_cfws() or not mp.take(b"/") or not mp.skip_cfws():
        return
    subtype = mp.token()
    if not subtype:
        return
    part.content_type = ctype
    part.content_subtype = subtype
    part.params = mp.params()


def _read_language(value: bytes) -> tuple[bytes, ...] | None:
    # RFC 3282 §2: Content-Language: 1#Language-tag
    mp = _ValueParser(value)
    tags: list[bytes] = []
    mp.skip_cfws()
    while True:
        m = _ATOM.match(mp.data, mp.pos)
        if m is None:
            break
        tags.append(m.group())
        mp.pos = m.end()
        mp.skip_cfws()
        if not mp.take(b","):
            break
        mp.skip_cfws()
    return tuple(tags) or None


class _ValueParser:
    """Tokens, quoted strings, comments and parameters of a structured MIME field value."""

    __slots__ = ("data", "n", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.n = len(data)

    def at_end(self) -> bool:
        return self.pos >= self.n

    def take(self, char: bytes) -> bool:
        if self.data.startswith(char, self.pos):
            self.pos += 1
            return True
        return False

    def skip_cfws(self) -> bool:
        """Skip blanks, line ends and (nested) comments; False on an unterminated comment."""
        data, n = self.data, self.n
        pos = self.pos
        while pos < n:
            c = data[pos]
            if c in (32, 9, 13, 10):
                pos += 1
            elif c == 40:  # "(" RFC 5322 §3.2.2 comment
                level = 0
                while pos < n:
                    c = data[pos]
                    if c == 92:
                        pos += 1
                    elif c == 40:
                        level += 1
                    elif c == 41:
                        level -= 1
                        if level == 0:
                            break
                    pos += 1
                if pos >= n:
                    self.pos = n
                    return False
                pos += 1
            else:
                break
        self.pos = pos
        return True

    def token(self) -> bytes:
        m = _TOKEN.match(self.data, self.pos)
        assert m is not None  # the pattern matches the empty string
        self.pos = m.end()
        return m.group()

    def quoted(self) -> bytes | None:
        """A quoted-string (RFC 5322 §3.2.4) at a DQUOTE: unescaped, folding removed."""
        data, n = self.data, self.n
        out = bytearray()
        pos = self.pos + 1
        while pos < n:
            c = data[pos]
            if c == 34:
                self.pos = pos + 1
                return bytes(out)
            if c == 92:
                pos += 1
                if pos >= n:
                    break
                out.append(data[pos])
            elif c != 10 and not (c == 13 and data[pos + 1 : pos + 2] == b"\n"):
                out.append(c)
            pos += 1
        self.pos = n
        return None

    def params(self) -> Params:
        """`*(";" attribute "=" value)`, skipping what does not parse (as Dovecot does)."""
        plain: list[tuple[bytes, bytes]] = []
        extended: list[tuple[bytes, int, bool, bytes]] = []
        data = self.data
        while True:
            self.skip_cfws()
            if self.at_end():
                break
            if not self.take(b";"):
                self.pos += 1
                continue
            if not self.skip_cfws():
                break
            key = self.token()
            if not key or not self.take(b"="):
                continue
            if not self.skip_cfws():
                value = b""
            elif data.startswith(b'"', self.pos):
                quoted = self.quoted()
                if quoted is None:
                    break
                value = quoted
            elif data.startswith(b"=", self.pos):
                # broken but common: name==?utf-8?b?...?=
                end = self.pos
                while end < self.n and data[end] not in b"; \t\r\n":
                    end += 1
                value = data[self.pos : end]
                self.pos = end
            else:
                value = self.token()
            m = _RFC2231_KEY.fullmatch(key)
            if m is not None:
                # RFC 2231 §3-4: name*N continuations, name* and name*N* extended values
                digits = m.group(2)
                is_ext = digits is None or m.group(3) is not None
                extended.append((m.group(1), int(digits or 0), is_ext, value))
            else:
                plain.append((key, value))
        if extended:
            plain.extend(_merge_rfc2231(extended))
        return tuple(plain)


def _merge_rfc2231(pieces: list[tuple[bytes, int, bool, bytes]]) -> list[tuple[bytes, bytes]]:
    """Join RFC 2231 continuations; an extended value stays encoded, its name ends in `*`.

    This is the form Dovecot puts in BODYSTRUCTURE: clients decode `name*` values themselves.
    Continuations with missing indexes are kept apart as `name*N` / `name*N*`.
    """
    pieces.sort(key=lambda p: (p[0], p[1]))
    out: list[tuple[bytes, bytes]] = []
    i = 0
    while i < len(pieces):
        key = pieces[i][0].lower()
        j = i
        while j < len(pieces) and pieces[j][0].lower() == key:
            j += 1
        group = pieces[i:j]
        complete = all(p[1] == k for k, p in enumerate(group))
        if not complete:
            for name, index, ext, value in group:
                out.append((b"%s*%d%s" % (name, index, b"*" if ext else b""), value))
        else:
            any_ext = any(p[2] for p in group)
            value = b"''" if any_ext and not group[0][2] else b""
            for _, _, ext, piece in group:
                value += piece.replace(b"%", b"%25") if any_ext and not ext else piece
            out.append((group[0][0] + (b"*" if any_ext else b""), value))
        i = j
    return out
