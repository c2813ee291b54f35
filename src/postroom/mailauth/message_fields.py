"""The header fields of a message as mail authentication reads and edits them: each field's
name, its raw span (so a field can be dropped without touching a byte of anything else) and its
value unfolded (RFC 5322 §2.2.3).

One pass over the header section, linear in its length: lines are found with `bytes.find`,
never with a regular expression. Lines that are not fields (no colon, or a continuation with
nothing before it) are kept as fields with an empty name, so that rewriting a message keeps them
as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

_WSP = b" \t"


@dataclass(frozen=True, slots=True)
class Field:
    """One header field: `data[start:end]` is its raw text, line breaks included."""

    name: str  # lower case, without surrounding white space; "" for a line that is no field
    start: int
    end: int
    colon: int  # offset of the colon that ends the name, -1 when there is none

    def value(self, data: bytes) -> bytes:
        """The field body unfolded (RFC 5322 §2.2.3: CRLF before WSP removed), stripped."""
        if self.colon < 0:
            return b""
        raw = data[self.colon + 1 : self.end]
        return raw.replace(b"\r\n", b"").replace(b"\n", b"").replace(b"\r", b"").strip(b" \t")


def split_header(message: bytes) -> tuple[list[Field], int]:
    """The fields of the header section and the offset where the section ends: the start of
    the empty line that separates it from the body (len(message) when there is none)."""
    fields: list[Field] = []
    length = len(message)
    pos = 0
    current_start = -1
    while pos < length:
        newline = message.find(b"\n", pos)
        line_end = length if newline < 0 else newline + 1
        line = message[pos:line_end]
        if line in (b"\r\n", b"\n", b"\r"):
            break  # RFC 5322 §2.1: the empty line that ends the header section
        if line[:1] in (b" ", b"\t") and current_start >= 0:
            pos = line_end  # RFC 5322 §2.2.3: a continuation of the field before it
            continue
        if current_start >= 0:
            fields.append(_field(message, current_start, pos))
        current_start = pos
        pos = line_end
    if current_start >= 0:
        fields.append(_field(message, current_start, pos))
    return fields, pos


def _field(message: bytes, start: int, end: int) -> Field:
    first_line_end = message.find(b"\n", start, end)
    if first_line_end < 0:
        first_line_end = end
    colon = message.find(b":", start, first_line_end)
    if colon < 0 or message[start : start + 1] in (b" ", b"\t"):
        return Field("", start, end, -1)
    name = message[start:colon].strip(_WSP)  # RFC 5322 §4.5.8 obs-optional: WSP before ':'
    if not name or any(c <= 32 or c >= 127 for c in name):
        return Field("", start, end, -1)
    return Field(name.decode("ascii").lower(), start, end, colon)


def field_values(message: bytes, name: str) -> list[bytes]:
    """The unfolded values of every field called `name` (case-insensitive), in order."""
    wanted = name.lower()
    fields, _ = split_header(message)
    return [f.value(message) for f in fields if f.name == wanted]
