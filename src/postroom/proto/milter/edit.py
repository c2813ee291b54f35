"""A message as milters see it (header fields, body), and their modifications applied to it.

Pure. `split_message` cuts a message into its header fields and body in one pass (RFC 5322
§2.1: the header ends at the first empty line); `fields_for_milter` gives the (name, value)
pairs sent as SMFIC_HEADER; `apply` rebuilds the message after the header and body
modifications of one milter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postroom.proto.milter.codec import AddHeader, ChangeHeader, InsertHeader, Modification


@dataclass(slots=True)
class Field:
    """One header field as it is in the message: its name and raw value (from after the colon
    up to, not including, the final CRLF; folded lines keep their CRLF)."""

    name: str
    raw: bytes


def split_message(message: bytes) -> tuple[list[Field], bytes]:
    """(header fields, body). A line that is neither a field nor a continuation ends the
    header there (and is kept as the body's first line), as a lenient MTA does."""
    fields: list[Field] = []
    pos = 0
    end = len(message)
    while pos < end:
        nl = message.find(b"\n", pos)
        line_end = end if nl < 0 else nl + 1
        line = message[pos:line_end]
        stripped = line.rstrip(b"\r\n")
        if not stripped:
            return fields, message[line_end:]  # RFC 5322 §2.1: the empty line
        if line[:1] in (b" ", b"\t") and fields:
            # RFC 5322 §2.2.3: a folded continuation of the previous field.
            fields[-1].raw += b"\r\n" + stripped
        else:
            colon = stripped.find(b":")
            name = stripped[:colon] if colon > 0 else b""
            if not name or any(c <= 32 or c >= 127 for c in name):
                return fields, message[pos:]
            fields.append(Field(name.decode("ascii"), stripped[colon + 1 :]))
        pos = line_end
    return fields, b""


def value_for_milter(raw: bytes, leading_space: bool) -> str:
    """The value sent in SMFIC_HEADER: folding as LF (as Postfix sends), and without its one
    leading space unless SMFIP_HDR_LEADSPC was negotiated."""
    value = raw.replace(b"\r\n", b"\n")
    if not leading_space and value.startswith(b" "):
        value = value[1:]
    return value.decode("utf-8", "surrogateescape")


def raw_from_milter(value: str, leading_space: bool) -> bytes:
    """A value a milter gave, as it goes after the colon: CRLF folding, every continuation
    line starting with white space (so a value can never start a field of its own)."""
    data = value.encode("utf-8", "surrogateescape").replace(b"\r\n", b"\n").replace(b"\r", b"")
    lines = data.split(b"\n")
    out = [lines[0]] + [ln if ln[:1] in (b" ", b"\t") else b"\t" + ln for ln in lines[1:] if ln]
    joined = b"\r\n".join(out)
    return joined if leading_space else b" " + joined


def apply(
    fields: list[Field],
    body: bytes,
    modifications: Sequence[Modification],
    new_body: bytes | None,
    leading_space: bool,
) -> bytes:
    """The message after one milter's header modifications (in the order sent) and, when
    `new_body` is not None, its replaced body (LF line ends made CRLF)."""
    current = list(fields)
    for mod in modifications:
        if isinstance(mod, AddHeader):
            current.append(Field(mod.name, raw_from_milter(mod.value, leading_space)))
        elif isinstance(mod, InsertHeader):
            index = min(mod.index, len(current))
            current.insert(index, Field(mod.name, raw_from_milter(mod.value, leading_space)))
        elif isinstance(mod, ChangeHeader):
            _change(current, mod, leading_space)
    if new_body is not None:
        body = _crlf(new_body)
    out = bytearray()
    for f in current:
        out += f.name.encode("ascii") + b":" + f.raw + b"\r\n"
    out += b"\r\n"
    out += body
    return bytes(out)


def _change(fields: list[Field], mod: ChangeHeader, leading_space: bool) -> None:
    """smfi_chgheader: the index-th field of that name (1-based, names compared without case)
    changes, or goes with an empty value; past the last one the field is added."""
    wanted = mod.name.lower()
    seen = 0
    for position, f in enumerate(fields):
        if f.name.lower() == wanted:
            seen += 1
            if seen == max(mod.index, 1):
                if mod.value == "":
                    del fields[position]
                else:
                    fields[position] = Field(f.name, raw_from_milter(mod.value, leading_space))
                return
    if mod.value != "":
        fields.append(Field(mod.name, raw_from_milter(mod.value, leading_space)))


def _crlf(data: bytes) -> bytes:
    """Bare LF (and bare CR) line ends as CRLF, in one pass."""
    if b"\n" not in data and b"\r" not in data:
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
