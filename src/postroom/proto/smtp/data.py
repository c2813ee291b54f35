"""Message content readers: DATA (dot-stuffed, ends at CRLF.CRLF) and BDAT (counted chunks).

Both work on whole buffers with C-speed `bytes` methods, never byte by byte, and hand back
content in pieces so a large message never sits in memory. Both report bare CR / bare LF: only
CRLF ends a line, and only CRLF "." CRLF ends DATA (RFC 5321 §2.3.8, §4.1.1.4), which is what
defeats SMTP smuggling (CVE-2023-51764 class).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A line longer than this is passed through in pieces (RFC 5321 §4.5.3.1.6 allows us to refuse
# it, but we keep it and stay bounded in memory).
MAX_HELD_LINE = 64 * 1024


class LineEndingChecker:
    """Detects a CR not followed by LF, or an LF not preceded by CR, across chunk borders."""

    __slots__ = ("_pending_cr", "bare")

    def __init__(self) -> None:
        self.bare = False
        self._pending_cr = False

    def feed(self, chunk: bytes) -> None:
        if self.bare or not chunk:
            return
        start = 0
        if self._pending_cr:
            if chunk[0] != 0x0A:
                self.bare = True
                return
            start = 1
        self._pending_cr = chunk.endswith(b"\r")
        end = len(chunk) - 1 if self._pending_cr else len(chunk)
        body = chunk[start:end] if (start or end != len(chunk)) else chunk
        pairs = body.count(b"\r\n")
        if body.count(b"\r") != pairs or body.count(b"\n") != pairs:
            self.bare = True

    def finish(self) -> bool:
        """True when the content had a bare CR or LF (a trailing lone CR counts)."""
        return self.bare or self._pending_cr


@dataclass
class DataReader:
    """Incremental reader for DATA content (RFC 5321 §4.1.1.4, dot-unstuffing per §4.5.2)."""

    checker: LineEndingChecker = field(default_factory=LineEndingChecker)
    at_line_start: bool = True
    done: bool = False
    # How much of the held buffer is known to hold no CRLF: a client trickling a long line byte
    # by byte must not make us rescan it every time (that would be quadratic).
    _scanned: int = 0

    def feed(self, buffer: bytearray) -> tuple[bytes, bool]:
        """Consume what can be consumed from `buffer` (mutated in place).

        Returns (unstuffed content, finished). When finished, `buffer` holds the bytes that
        followed the terminating ".CRLF" (pipelined commands).
        """
        if self.done:
            return b"", True
        if self.at_line_start and buffer[:3] == b".\r\n":
            del buffer[:3]
            self.done = True
            return b"", True
        start = max(0, self._scanned - 1)
        self._scanned = 0
        terminator = buffer.find(b"\r\n.\r\n", start)
        if terminator >= 0:
            region = bytes(buffer[: terminator + 2])
            del buffer[: terminator + 5]
            self.done = True
            return self._unstuff(region), True
        last_crlf = buffer.rfind(b"\r\n", start)
        if last_crlf >= 0:
            region = bytes(buffer[: last_crlf + 2])
            del buffer[: last_crlf + 2]
            content = self._unstuff(region)
            self.at_line_start = True
            return content, False
        if len(buffer) > MAX_HELD_LINE:
            # An endless line: pass it on, holding back one byte that may be the CR of a CRLF.
            region = bytes(buffer[:-1])
            del buffer[:-1]
            content = self._unstuff(region)
            self.at_line_start = False
            return content, False
        self._scanned = len(buffer)
        return b"", False

    def _unstuff(self, region: bytes) -> bytes:
        self.checker.feed(region)
        # RFC 5321 §4.5.2: remove the first "." of every line that starts with one.
        if b"\r\n." in region:
            region = region.replace(b"\r\n.", b"\r\n")
        if self.at_line_start and region[:1] == b".":
            region = region[1:]
        return region


@dataclass
class ChunkReader:
    """Reads exactly `remaining` octets of one BDAT chunk (RFC 3030 §2), no unstuffing."""

    remaining: int
    checker: LineEndingChecker

    def feed(self, buffer: bytearray) -> tuple[bytes, bool]:
        take = min(self.remaining, len(buffer))
        content = bytes(buffer[:take])
        del buffer[:take]
        self.remaining -= take
        self.checker.feed(content)
        return content, self.remaining == 0
