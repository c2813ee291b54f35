"""Authentication-Results (RFC 8601) and ARC-Authentication-Results (RFC 8617 §4.1.1): writing
our verdict, reading other hosts' verdicts, and removing forged copies of ours.

- `format_header` / `arc_authentication_results` write a complete header field, folded near 78
  columns, values quoted where they are not RFC 2045 tokens.
- `parse` / `parse_arc` read a field value tolerantly (comments, quoted strings, "none",
  version numbers) and raise `AuthResError` (a ValueError) on anything else.
- `remove_ours` drops every Authentication-Results field that claims our authserv-id (RFC 8601
  §5), and ARC-Authentication-Results fields claiming it that belong to no complete ARC set.

Everything runs in one pass over its input: a hand-written scanner, no regular expressions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postroom.mailauth.message_fields import split_header

FOLD_AT = 78  # RFC 5322 §2.1.1: lines SHOULD be no longer than 78 characters
MAX_ARC_INSTANCE = 50  # RFC 8617 §4.2.1: i= is 1 to 50

# RFC 2045 §5.1: tspecials; a token is any printable US-ASCII character but these and space
_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')
# RFC 5322 §3.2.3: atext, for the local-part@domain form of a property value (RFC 8601 §2.2)
_ATEXT_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~")


class AuthResError(ValueError):
    """A header field value that is not Authentication-Results syntax."""


@dataclass(frozen=True, slots=True)
class MethodResult:
    """One resinfo (RFC 8601 §2.2): `method=result [reason=...] ptype.property=value ...`.

    `properties` are (ptype.property, value) pairs, e.g. ("smtp.mailfrom", "a@example.com"),
    ("header.d", "example.com"), ("header.s", "sel"), ("header.b", "AbCdEfGh"),
    ("header.from", "example.com"), ("policy.dmarc", "reject").
    """

    method: str
    result: str
    reason: str | None = None
    properties: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        """The value of the first property called `name` (e.g. "header.d"), if any."""
        wanted = name.lower()
        return next((value for key, value in self.properties if key.lower() == wanted), None)


# -- writing -------------------------------------------------------------------------------


def _is_token(value: str) -> bool:
    return bool(value) and all(" " < c < "\x7f" and c not in _TSPECIALS for c in value)


def _is_dot_atom(value: str) -> bool:
    return bool(value) and all(
        part and all(c.isascii() and (c.isalnum() or c in _ATEXT_SPECIALS) for c in part)
        for part in value.split(".")
    )


def _quoted(value: str) -> str:
    # RFC 5322 §3.2.4: quoted-string, backslash before '"' and '\'
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c >= " " or c == "\t" else " " for c in escaped) + '"'


def _value(value: str) -> str:
    return value if _is_token(value) else _quoted(value)


def _property_value(value: str) -> str:
    # RFC 8601 §2.2: pvalue = [CFWS] ( value / [ [ local-part ] "@" ] domain-name ) [CFWS]
    local, at, domain = value.rpartition("@")
    if at and (not local or _is_dot_atom(local)) and _is_dot_atom(domain):
        return value
    return _value(value)


def _resinfo_words(result: MethodResult) -> list[str]:
    words = [f"{result.method}={result.result}"]
    if result.reason is not None:
        words.append(f"reason={_value(result.reason)}")
    words.extend(f"{name}={_property_value(value)}" for name, value in result.properties)
    return words


def _fold(head: str, items: Sequence[list[str]]) -> bytes:
    """`head` then each item (a list of words) on its own continuation line, items separated
    by ';', words folded onto further lines when a line would pass FOLD_AT columns."""
    lines = [head]
    for index, words in enumerate(items):
        last = index == len(items) - 1
        if lines[-1] and not lines[-1].endswith(";"):
            lines[-1] += ";"
        line = "\t"
        for word in words:
            candidate = word if line == "\t" else " " + word
            if line != "\t" and len(line) + len(candidate) + (0 if last else 1) > FOLD_AT:
                lines.append(line)
                line = "\t  " + word
            else:
                line += candidate
        lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def format_header(authserv_id: str, results: Sequence[MethodResult]) -> bytes:
    """A complete `Authentication-Results:` field with its CRLF (RFC 8601 §2.2), one resinfo
    per line; "none" when there are no results (§2.2 no-result)."""
    head = f"Authentication-Results: {_value(authserv_id)};"
    if not results:
        return (head + " none\r\n").encode("utf-8")
    return _fold(head, [_resinfo_words(result) for result in results])


def arc_authentication_results(
    instance: int, authserv_id: str, results: Sequence[MethodResult]
) -> bytes:
    """A complete `ARC-Authentication-Results:` field (RFC 8617 §4.1.1: `i=N;` then the
    Authentication-Results payload)."""
    if not 1 <= instance <= MAX_ARC_INSTANCE:
        raise ValueError(f"ARC instance {instance} is outside 1-{MAX_ARC_INSTANCE}")
    head = f"ARC-Authentication-Results: i={instance}; {_value(authserv_id)};"
    if not results:
        return (head + " none\r\n").encode("utf-8")
    return _fold(head, [_resinfo_words(result) for result in results])


# -- reading -------------------------------------------------------------------------------

_STOP = frozenset(' \t\r\n;()"')
_NAME_STOP = _STOP | frozenset("=./")


class _Scanner:
    """The lexical layer of RFC 8601 §2.2 over a decoded field value."""

    __slots__ = ("n", "pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < self.n else ""

    def skip_cfws(self) -> None:
        """RFC 5322 §3.2.2: white space and (nested) comments."""
        text, n = self.text, self.n
        pos = self.pos
        while pos < n:
            c = text[pos]
            if c in " \t\r\n":
                pos += 1
            elif c == "(":
                depth = 0
                while pos < n:
                    c = text[pos]
                    if c == "\\":
                        pos += 1
                    elif c == "(":
                        depth += 1
                    elif c == ")":
                        depth -= 1
                        if depth == 0:
                            break
                    pos += 1
                if pos >= n:
                    raise AuthResError("unterminated comment")
                pos += 1
            else:
                break
        self.pos = pos

    def take(self, char: str) -> bool:
        if self.pos < self.n and self.text[self.pos] == char:
            self.pos += 1
            return True
        return False

    def run(self, stop: frozenset[str]) -> str:
        text, n = self.text, self.n
        start = pos = self.pos
        while pos < n and text[pos] not in stop:
            pos += 1
        self.pos = pos
        return text[start:pos]

    def quoted(self) -> str:
        """RFC 5322 §3.2.4 quoted-string, the opening quote at pos."""
        text, n = self.text, self.n
        pos = self.pos + 1
        out: list[str] = []
        start = pos
        while pos < n:
            c = text[pos]
            if c == '"':
                out.append(text[start:pos])
                self.pos = pos + 1
                return "".join(out)
            if c == "\\":
                out.append(text[start:pos])
                pos += 1
                start = pos
            elif c in "\r\n":
                out.append(text[start:pos])
                start = pos + 1
            pos += 1
        raise AuthResError("unterminated quoted string")

    def value(self) -> str:
        """RFC 8601 §2.2 value or pvalue: a quoted string, or a run of anything but white space,
        ';', comments and quotes (tolerant: '/', '=' and '@' are accepted unquoted)."""
        if self.peek() == '"':
            return self.quoted()
        word = self.run(_STOP)
        if not word:
            raise AuthResError(f"a value was expected at offset {self.pos}")
        return word

    def name(self) -> str:
        word = self.run(_NAME_STOP)
        if not word:
            raise AuthResError(f"a keyword was expected at offset {self.pos}")
        return word.lower()


def _decode(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def parse(value: bytes | str) -> tuple[str, list[MethodResult]]:
    """The authserv-id and the results of an Authentication-Results field value (the part
    after the colon, folded or not); "" as authserv-id for a field that has none (Microsoft's
    start with the first result)."""
    scanner = _Scanner(_decode(value))
    return _parse_payload(scanner)


def parse_arc(value: bytes | str) -> tuple[int, str, list[MethodResult]]:
    """The instance, authserv-id and results of an ARC-Authentication-Results field value."""
    scanner = _Scanner(_decode(value))
    instance = _arc_instance(scanner)
    if instance is None:
        raise AuthResError("ARC-Authentication-Results must start with i=1 to i=50")
    authserv_id, results = _parse_payload(scanner)
    return instance, authserv_id, results


def _arc_instance(scanner: _Scanner) -> int | None:
    """RFC 8617 §4.1.1: `i=N;` before the payload; None when it is not there."""
    scanner.skip_cfws()
    if scanner.run(_NAME_STOP).lower() != "i":
        return None
    scanner.skip_cfws()
    if not scanner.take("="):
        return None
    scanner.skip_cfws()
    digits = scanner.run(_STOP)
    scanner.skip_cfws()
    if not scanner.take(";") or not digits.isascii() or not digits.isdigit() or len(digits) > 2:
        return None
    instance = int(digits)
    return instance if 1 <= instance <= MAX_ARC_INSTANCE else None


def _parse_payload(scanner: _Scanner) -> tuple[str, list[MethodResult]]:
    # RFC 8601 §2.2: authserv-id [ CFWS authres-version ] ( no-result / 1*resinfo ) [CFWS]
    scanner.skip_cfws()
    start = scanner.pos
    quoted = scanner.peek() == '"'
    authserv_id = scanner.value()
    results: list[MethodResult] = []
    if not quoted and "=" in authserv_id:
        # Tolerance: Microsoft's fields start with the first resinfo, without authserv-id.
        scanner.pos = start
        authserv_id = ""
        results.append(_resinfo(scanner, scanner.name()))
    scanner.skip_cfws()
    if not results and scanner.peek().isdigit():
        version = scanner.run(_STOP)
        if not version.isdigit():
            raise AuthResError(f"bad version {version[:20]!r}")
        scanner.skip_cfws()
    none_seen = False
    while scanner.pos < scanner.n:
        if not scanner.take(";"):
            raise AuthResError(f"';' expected at offset {scanner.pos}")
        scanner.skip_cfws()
        if scanner.pos >= scanner.n:
            break  # a trailing ';'
        if scanner.peek() == ";":
            continue
        method = scanner.name()
        scanner.skip_cfws()
        if method == "none" and scanner.peek() in ("", ";"):
            none_seen = True  # §2.2 no-result
            continue
        results.append(_resinfo(scanner, method))
    if none_seen and results:
        raise AuthResError("'none' together with results")
    return authserv_id, results


def _resinfo(scanner: _Scanner, method: str) -> MethodResult:
    # RFC 8601 §2.2: resinfo = [CFWS] ";" methodspec [ CFWS reasonspec ] [ CFWS 1*propspec ]
    scanner.skip_cfws()
    if scanner.take("/"):
        scanner.skip_cfws()
        version = scanner.run(_NAME_STOP)
        if not version.isdigit():
            raise AuthResError(f"bad method version {version[:20]!r}")
        scanner.skip_cfws()
    if not scanner.take("="):
        raise AuthResError(f"'=' expected after method {method[:40]!r}")
    scanner.skip_cfws()
    result = scanner.name()
    reason: str | None = None
    properties: list[tuple[str, str]] = []
    scanner.skip_cfws()
    while scanner.pos < scanner.n and scanner.peek() != ";":
        ptype = scanner.name()
        scanner.skip_cfws()
        name = ptype
        if scanner.take("."):
            scanner.skip_cfws()
            name = f"{ptype}.{scanner.name()}"
            scanner.skip_cfws()
        if not scanner.take("="):
            raise AuthResError(f"'=' expected after {name[:40]!r}")
        scanner.skip_cfws()
        value = scanner.value()
        scanner.skip_cfws()
        if name == "reason" and reason is None and not properties:
            reason = value
        else:
            properties.append((name, value))  # ptype.property, or a vendor's bare name=value
    return MethodResult(method, result, reason, tuple(properties))


def authserv_id_of(value: bytes | str) -> str | None:
    """The authserv-id an Authentication-Results value claims, read leniently (whatever
    follows it), lower case; None when not even that can be read."""
    scanner = _Scanner(_decode(value))
    try:
        scanner.skip_cfws()
        return scanner.value().lower()
    except AuthResError:
        return None


# -- removing forged verdicts ----------------------------------------------------------------


def remove_ours(message: bytes, authserv_id: str) -> bytes:
    """The message without any Authentication-Results field claiming `authserv_id` (RFC 8601
    §5, compared case-insensitively), nor any ARC-Authentication-Results claiming it whose
    instance has no ARC-Seal and ARC-Message-Signature (no complete ARC set, RFC 8617 §4.1).
    Every other byte, the body included, is kept as it was."""
    ours = authserv_id.strip().lower()
    fields, _ = split_header(message)
    sealed: set[int] = set()
    signed: set[int] = set()
    for field in fields:
        if field.name == "arc-seal":
            _add_instance(sealed, field.value(message))
        elif field.name == "arc-message-signature":
            _add_instance(signed, field.value(message))
    complete = sealed & signed
    drop: list[tuple[int, int]] = []
    for field in fields:
        if field.name == "authentication-results":
            if authserv_id_of(field.value(message)) == ours:
                drop.append((field.start, field.end))
        elif field.name == "arc-authentication-results":
            scanner = _Scanner(_decode(field.value(message)))
            try:
                instance = _arc_instance(scanner)
                if instance is None:
                    scanner.pos = 0  # no instance: read the value as if it were plain A-R
                scanner.skip_cfws()
                claimed = scanner.value().lower()
            except AuthResError:
                continue
            if claimed == ours and (instance is None or instance not in complete):
                drop.append((field.start, field.end))
    if not drop:
        return message
    pieces: list[bytes] = []
    kept_from = 0
    for start, end in drop:
        pieces.append(message[kept_from:start])
        kept_from = end
    pieces.append(message[kept_from:])
    return b"".join(pieces)


def _add_instance(instances: set[int], value: bytes) -> None:
    """The i= tag of an ARC-Seal or ARC-Message-Signature tag list (RFC 8617 §4.2.1)."""
    for piece in value.split(b";"):
        name, equals, number = piece.partition(b"=")
        if equals and name.strip(b" \t\r\n") == b"i":
            digits = number.strip(b" \t\r\n")
            if digits.isdigit() and len(digits) <= 2:
                instances.add(int(digits))
            return
