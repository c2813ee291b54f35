"""IMAP argument trees for the imaptest driver: a parser and a renderer.

The parser follows the rules imaptest (through Dovecot's lib-imap parser) applies to both the
script's expected replies and the server's responses: atoms may contain any byte except SP,
CR and LF (and `)` inside a list), `NIL` in any case is NIL, `~{n}` literal8 and `{n}` literals
are both literals, quoted strings may span lines. Everything is bytes; `latin-1` is only used
to render arguments for humans.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

SP, CR, LF = 0x20, 0x0D, 0x0A


class Kind(enum.Enum):
    """Type of one IMAP argument."""

    NIL = "nil"
    ATOM = "atom"
    STRING = "string"
    LITERAL = "literal"
    LIST = "list"


@dataclass
class Arg:
    """One IMAP argument; `items` is only used by lists, `text` by everything else."""

    kind: Kind
    text: bytes = b""
    items: list[Arg] = field(default_factory=list)

    def atom(self) -> bytes | None:
        """Text of an atom or NIL (Dovecot's imap_arg_get_atom), else None."""
        return self.text if self.kind in (Kind.ATOM, Kind.NIL) else None

    def astring(self) -> bytes | None:
        """Text of an astring (atom, string, literal; NIL reads as "NIL"), else None."""
        return None if self.kind is Kind.LIST else self.text


class ParseError(ValueError):
    """The bytes are not a well-formed argument list."""


def atom(text: bytes) -> Arg:
    return Arg(Kind.NIL if text.upper() == b"NIL" else Kind.ATOM, text)


def parse_args(data: bytes) -> list[Arg]:
    """Parse one line of arguments (literals inline as `{n}\\r\\n<n bytes>`) up to CR/LF or end."""
    root: list[Arg] = []
    stack: list[list[Arg]] = [root]
    pos, size = 0, len(data)
    while True:
        while pos < size and data[pos] == SP:
            pos += 1
        if pos >= size or data[pos] in (CR, LF):
            break
        char = data[pos]
        if char == ord('"'):
            arg, pos = _read_quoted(data, pos + 1)
            stack[-1].append(arg)
        elif char == ord("{") or (char == ord("~") and data[pos + 1 : pos + 2] == b"{"):
            arg, pos = _read_literal(data, pos + (2 if char == ord("~") else 1))
            stack[-1].append(arg)
        elif char == ord("("):
            new = Arg(Kind.LIST)
            stack[-1].append(new)
            stack.append(new.items)
            pos += 1
        elif char == ord(")"):
            if len(stack) == 1:
                raise ParseError("Unexpected ')'")
            stack.pop()
            pos += 1
        else:
            end = pos
            while end < size and data[end] not in (SP, CR, LF):
                if data[end] == ord(")") and len(stack) > 1:
                    break
                end += 1
            stack[-1].append(atom(data[pos:end]))
            pos = end
    if len(stack) > 1:
        raise ParseError("Missing ')'")
    return root


def _read_quoted(data: bytes, pos: int) -> tuple[Arg, int]:
    out = bytearray()
    while pos < len(data):
        char = data[pos]
        if char == ord('"'):
            return Arg(Kind.STRING, bytes(out)), pos + 1
        if char == ord("\\") and pos + 1 < len(data):
            pos += 1
            char = data[pos]
        out.append(char)
        pos += 1
    raise ParseError("Missing '\"'")


def _read_literal(data: bytes, pos: int) -> tuple[Arg, int]:
    close = data.find(b"}", pos)
    if close < 0:
        raise ParseError("Missing '}'")
    digits = data[pos:close].removesuffix(b"+")
    if not digits.isdigit():
        raise ParseError("Invalid literal size")
    pos = close + 1
    if data[pos : pos + 1] == b"\r":
        pos += 1
    if data[pos : pos + 1] != b"\n":
        raise ParseError("Missing LF after literal size")
    pos += 1
    length = int(digits)
    if pos + length > len(data):
        raise ParseError("Missing data")
    return Arg(Kind.LITERAL, data[pos : pos + length]), pos + length


def render(args: list[Arg]) -> str:
    """Human-readable form of an argument list (for failure messages)."""
    return " ".join(_render_one(arg) for arg in args)


def _render_one(arg: Arg) -> str:
    if arg.kind is Kind.LIST:
        return "(" + render(arg.items) + ")"
    text = arg.text.decode("latin-1")
    if arg.kind in (Kind.ATOM, Kind.NIL):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\r", "\\r").replace("\n", "\\n").replace("\0", "\\0")
    if arg.kind is Kind.LITERAL:
        return f'{{{len(arg.text)}}}"{escaped}"'
    return f'"{escaped}"'


def quote(text: bytes) -> bytes:
    """An IMAP quoted string for `text` (which must not contain CR, LF or NUL)."""
    return b'"' + text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
