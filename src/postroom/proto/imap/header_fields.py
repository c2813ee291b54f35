"""A message's header fields as SEARCH reads them: raw values, unfolded (RFC 5322 §2.2.3).

`raw_headers` splits a whole header block into fields; `field_values` finds the values of one
field without walking every line in Python: it looks for the field's name in the lower-cased
block and reads only the lines where it is, with the same rules as `raw_headers` (a test
compares the two on random header blocks).
"""

from __future__ import annotations

_CONTINUATION = (b" ", b"\t")


def header_block(content: bytes) -> bytes:
    """The header block of a message, its blank line included (the whole of it if none)."""
    for end in (b"\r\n\r\n", b"\n\n"):
        index = content.find(end)
        if index >= 0:
            return content[: index + len(end)]
    return content


def raw_headers(content: bytes) -> dict[str, list[bytes]]:
    """Every field of the header block: lower-case name → raw values, unfolded and stripped."""
    headers: dict[str, list[bytes]] = {}
    fields: list[bytes] = []
    for line in header_block(content).split(b"\n"):
        line = line.rstrip(b"\r")
        if line[:1] in _CONTINUATION and fields:
            fields[-1] += b" " + line.strip()  # RFC 5322 §2.2.3 unfolding
        elif line:
            fields.append(line)
    for line in fields:
        name, colon, value = line.partition(b":")
        if not colon or not name or b" " in name:
            continue
        headers.setdefault(_field_name(name), []).append(value.strip())
    return headers


def field_values(content: bytes, name: str) -> list[bytes]:
    """`raw_headers(content).get(name.lower(), [])`, reading only the lines that may hold it."""
    target = name.lower()
    if not target.isascii():
        return raw_headers(content).get(target, [])
    block = header_block(content)
    lowered = block.lower()
    wanted = target.encode("ascii")
    values: list[bytes] = []
    seen_line = -1
    at = lowered.find(wanted)
    while at >= 0:
        start = lowered.rfind(b"\n", 0, at) + 1
        if start != seen_line:
            seen_line = start
            value = _field_at(block, start, target)
            if value is not None:
                values.append(value)
        at = lowered.find(wanted, at + 1)
    return values


def _field_at(block: bytes, start: int, target: str) -> bytes | None:
    """The value of the field whose line starts at `start`, if it is field `target`."""
    end = _line_end(block, start)
    line = block[start:end].rstrip(b"\r")
    # A folded line continues the field before it, unless no line came before.
    if line[:1] in _CONTINUATION and block[:start].strip(b"\r\n"):
        return None
    name, colon, value = line.partition(b":")
    if not colon or not name or b" " in name or _field_name(name) != target:
        return None
    while end < len(block):
        start = end + 1
        end = _line_end(block, start)
        line = block[start:end].rstrip(b"\r")
        if line[:1] in _CONTINUATION:
            value += b" " + line.strip()  # RFC 5322 §2.2.3 unfolding
        elif line:
            break
    return value.strip()


def _line_end(block: bytes, start: int) -> int:
    end = block.find(b"\n", start)
    return len(block) if end < 0 else end


def _field_name(raw: bytes) -> str:
    return raw.decode("latin-1").strip().lower()
