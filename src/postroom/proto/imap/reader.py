"""Framing of IMAP client input: bytes in, complete command lines (with literals) out.

Sans-I/O: `feed()` appends bytes; `next_event()` does the work lazily, so the engine can switch
modes (`expect_raw_line()` after IDLE or AUTHENTICATE) between two events and the bytes already
buffered are read in the new mode. Results do not depend on how the input was split.

A command line is handed over as `CommandLine.parts`: text segments (`bytes`, never containing
the literal markers or the line ending) alternating with literal contents, so the grammar never
rescans a literal. Every literal, synchronising `{n}` (RFC 3501 §4.3), non-synchronising
`{n+}` (RFC 7888 §3) or literal8 `~{n}` (RFC 3516 §4.1), pauses the reader on a
`NeedContinuation` until the engine calls `accept_literal()` (it sends "+ " itself for a
synchronising one) or `reject_literal()` (it answers the tag with BAD/NO). Literals above the
streaming threshold are not kept: their bytes come out as `LiteralChunk`s and the line carries a
`StreamedLiteral` in their place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, auto


class NeedData:
    """Sentinel: more input is needed before another event can be produced."""


class Paused:
    """Sentinel: the reader waits for `accept_literal()` or `reject_literal()`."""


NEED_DATA = NeedData()
PAUSED = Paused()


@dataclass(frozen=True, slots=True)
class LiteralData:
    """The contents of a literal kept in memory."""

    data: bytes
    binary: bool  # RFC 3516 literal8 "~{n}": may hold NUL


@dataclass(frozen=True, slots=True)
class StreamedLiteral:
    """Stands in a command line for a literal whose bytes went out as `LiteralChunk` events."""

    size: int
    binary: bool


Part = bytes | LiteralData | StreamedLiteral


@dataclass(frozen=True, slots=True)
class CommandLine:
    """A complete command: text, literal, text, ... text (odd length; text never has CRLF)."""

    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class NeedContinuation:
    """Decision: a literal was announced; call `accept_literal()` or `reject_literal()`.

    For a synchronising literal the engine sends "+ ..." after accepting, or a tagged BAD/NO
    after rejecting (the client then abandons the command). A rejected non-synchronising literal
    is still on its way: the reader discards it and the rest of the command line (RFC 7888 §4).
    `streamed` says whether accepted contents will come out as `LiteralChunk` events;
    `earlier` and `earlier_octets` count the literals the command already carries, so that the
    engine can bound them per command.
    """

    size: int  # MAX_LITERAL + 1 for any size past RFC 9051's number64
    synchronizing: bool
    binary: bool
    streamed: bool
    tag: str | None  # the command's tag, when the line starts with one
    command: str | None  # upper-case command name, "UID FETCH" for UID commands
    earlier: int  # literals accepted before this one in the same command
    earlier_octets: int  # their octets together


@dataclass(frozen=True, slots=True)
class LiteralChunk:
    """A piece of a streamed literal; `last` marks its final piece."""

    data: bytes
    last: bool


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """The line exceeded the limit; answer BAD. The reader skips to the end of that command."""

    tag: str | None


@dataclass(frozen=True, slots=True)
class RawLine:
    """One line read in raw mode (a SASL response, IDLE's DONE), without its line ending."""

    data: bytes


Event = CommandLine | NeedContinuation | LiteralChunk | LineTooLong | RawLine | NeedData | Paused

# RFC 9051 §9: literal = "{" number64 ["+"] "}"; number64 is a signed 64-bit integer's range.
MAX_LITERAL = 2**63 - 1
# Enough of a line's end to hold a marker, so discarding can keep only this much.
_TAIL = 32
# RFC 3501 §9: tag = 1*<any ASTRING-CHAR except "+">; command names are atoms.
_HEAD = re.compile(rb"([^\x00-\x20\x7f-\xff(){%*\"\\+]+) ([A-Za-z0-9.-]+)(?: ([A-Za-z]+))?")


@dataclass(frozen=True, slots=True)
class _Marker:
    start: int  # where the marker begins in the line
    size: int
    synchronizing: bool
    binary: bool


def _marker(line: bytes) -> _Marker | None:
    """The literal announced at the end of `line`, if any: RFC 3501 §9 literal "{n}", RFC 7888
    §8 literal+ "{n+}", RFC 3516 §4.1 literal8 "~{n}". Linear in the line however many digits
    it ends with; they are counted before any conversion, and a size past number64 comes back
    as MAX_LITERAL + 1 (a marker that is not read as one would leave its octets to be taken
    for commands)."""
    if not line.endswith(b"}"):
        return None
    synchronizing = not line.endswith(b"+}")
    body = line[: -1 if synchronizing else -2]
    digits_at = len(body.rstrip(b"0123456789"))
    if digits_at == len(body) or not body.endswith(b"{", 0, digits_at):
        return None
    start = digits_at - 1
    binary = body.endswith(b"~", 0, start)
    digits = body[digits_at:].lstrip(b"0") or b"0"
    size = min(int(digits), MAX_LITERAL + 1) if len(digits) <= 19 else MAX_LITERAL + 1
    return _Marker(start - 1 if binary else start, size, synchronizing, binary)


def _head(text: bytes) -> tuple[str | None, str | None]:
    match = _HEAD.match(text)
    if match is None:
        return None, None
    name = match[2].upper().decode("ascii")
    if name == "UID" and match[3] is not None:
        name = f"UID {match[3].upper().decode('ascii')}"
    return match[1].decode("ascii"), name


class _State(Enum):
    LINE = auto()  # reading command text up to a line end
    DECIDE = auto()  # a literal was announced, waiting for the engine
    LITERAL = auto()  # reading an accepted literal
    DISCARD_LINE = auto()  # skipping to the end of a refused command line
    DISCARD_LITERAL = auto()  # skipping a refused (or overlong line's) non-synchronising literal


class CommandReader:
    """Splits client input into IMAP command lines, literals and raw lines."""

    def __init__(
        self,
        *,
        max_line: int = 65536,
        stream_threshold: int = 65536,
        max_inline_total: int = 1 << 20,
        chunk_size: int = 65536,
    ) -> None:
        self.max_line = max_line  # text of one command (markers included, literals not)
        self.stream_threshold = stream_threshold  # larger literals are streamed
        self.max_inline_total = max_inline_total  # literal bytes kept in memory per command
        self.chunk_size = chunk_size
        self._buf = bytearray()
        self._scan = 0  # no line end in _buf[:_scan] (LINE / DISCARD_LINE)
        self._state = _State.LINE
        self._raw = False
        self._raw_discard = False  # the overlong line being skipped was a raw one
        self._parts: list[Part] = []
        self._text_len = 0
        self._inline_total = 0
        self._literals = 0  # literals accepted in the command being read
        self._literal_octets = 0  # and their octets
        self._pending: NeedContinuation | None = None
        self._remaining = 0
        self._collected = bytearray()

    # -- input and engine decisions -------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def accept_literal(self) -> None:
        """Read the announced literal."""
        pending = self._take_pending()
        self._remaining = pending.size
        self._collected = bytearray()
        if not pending.streamed:
            self._inline_total += pending.size
        self._literals += 1
        self._literal_octets += pending.size
        self._state = _State.LITERAL

    def reject_literal(self) -> None:
        """Refuse the announced literal; the command is over."""
        pending = self._take_pending()
        self._reset_command()
        if pending.synchronizing:
            # RFC 3501 §7.5: without "+" the client sends no literal and abandons the command.
            self._state = _State.LINE
        else:
            # RFC 7888 §4: the octets of a non-synchronising literal are already on their way.
            self._remaining = pending.size
            self._raw_discard = False
            self._state = _State.DISCARD_LITERAL

    @property
    def mid_command(self) -> bool:
        """Part of a command is in, not all of it (text, literals, a raw line, or what is being
        skipped of a refused one); the driver times it. Meaningful when `NEED_DATA` came."""
        return self._state is not _State.LINE or bool(self._parts) or bool(self._buf)

    def expect_raw_line(self) -> None:
        """Read the next line verbatim (no literals): a SASL response or IDLE's "DONE"."""
        if self._state is not _State.LINE or self._parts:
            raise RuntimeError("raw line requested in the middle of a command")
        self._raw = True

    def discard_buffered(self) -> int:
        """Drop input not yet consumed (RFC 3207-style STARTTLS hygiene); return its size."""
        if self._state is not _State.LINE or self._parts:
            raise RuntimeError("buffer discarded in the middle of a command")
        dropped = len(self._buf)
        self._buf.clear()
        self._scan = 0
        return dropped

    # -- events -----------------------------------------------------------------------------

    def next_event(self) -> Event:
        """The next event, `NEED_DATA` when input is exhausted, `PAUSED` during a decision."""
        while True:
            state = self._state
            if state is _State.DECIDE:
                return PAUSED
            if state is _State.LINE:
                event = self._read_line()
            elif state is _State.LITERAL:
                event = self._read_literal()
            elif state is _State.DISCARD_LINE:
                event = self._discard_line()
            else:
                event = self._discard_literal()
            if event is not None:
                return event

    # -- states -----------------------------------------------------------------------------

    def _read_line(self) -> Event | None:
        buf = self._buf
        end = buf.find(b"\n", self._scan)
        if end < 0:
            self._scan = len(buf)
            pending = len(buf) - (1 if buf.endswith(b"\r") else 0)
            if self._text_len + pending > self.max_line:
                return self._too_long(bytes(buf))
            return NEED_DATA
        line = bytes(buf[:end])
        del buf[: end + 1]
        self._scan = 0
        # RFC 3501 §2.2: lines end in CRLF; a bare LF is tolerated for hand-typed sessions.
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._text_len + len(line) > self.max_line:
            too_long = self._too_long(line)
            self._end_discarded_line(line)
            return too_long
        if self._raw:
            self._raw = False
            return RawLine(line)
        marker = _marker(line)
        if marker is None:
            if not self._parts and not line.strip():
                return None  # an empty line is no command: skip it
            self._parts.append(line)
            complete = CommandLine(tuple(self._parts))
            self._reset_command()
            return complete
        text = line[: marker.start]
        self._parts.append(text)
        # The marker counts too: endless "{0+}" lines must still hit the limit.
        self._text_len += len(line)
        size = marker.size
        first = self._parts[0]
        assert isinstance(first, bytes)
        tag, command = _head(first)
        streamed = size > self.stream_threshold or self._inline_total + size > self.max_inline_total
        self._pending = NeedContinuation(
            size=size,
            synchronizing=marker.synchronizing,
            binary=marker.binary,
            streamed=streamed,
            tag=tag,
            command=command,
            earlier=self._literals,
            earlier_octets=self._literal_octets,
        )
        self._state = _State.DECIDE
        return self._pending

    def _read_literal(self) -> Event | None:
        pending = self._pending_literal
        if pending.streamed:
            # Fixed-size chunks: the events do not depend on how the input was split.
            want = min(self.chunk_size, self._remaining)
            if len(self._buf) < want:
                return NEED_DATA
            chunk = bytes(self._buf[:want])
            del self._buf[:want]
            self._remaining -= want
            last = self._remaining == 0
            if last:
                self._parts.append(StreamedLiteral(pending.size, pending.binary))
                self._state = _State.LINE
            return LiteralChunk(chunk, last)
        take = min(self._remaining, len(self._buf))
        self._collected += self._buf[:take]
        del self._buf[:take]
        self._remaining -= take
        if self._remaining:
            return NEED_DATA
        self._parts.append(LiteralData(bytes(self._collected), pending.binary))
        self._collected = bytearray()
        self._state = _State.LINE
        return None

    def _discard_line(self) -> Event | None:
        buf = self._buf
        end = buf.find(b"\n", self._scan)
        if end < 0:
            if len(buf) > _TAIL:
                del buf[:-_TAIL]
            self._scan = len(buf)
            return NEED_DATA
        line = bytes(buf[:end])
        del buf[: end + 1]
        self._scan = 0
        self._end_discarded_line(line.removesuffix(b"\r"))
        return None

    def _discard_literal(self) -> Event | None:
        take = min(self._remaining, len(self._buf))
        del self._buf[:take]
        self._remaining -= take
        if self._remaining:
            return NEED_DATA
        self._scan = 0
        self._state = _State.DISCARD_LINE
        return None

    # -- helpers ----------------------------------------------------------------------------

    @property
    def _pending_literal(self) -> NeedContinuation:
        assert self._pending is not None
        return self._pending

    def _take_pending(self) -> NeedContinuation:
        if self._state is not _State.DECIDE or self._pending is None:
            raise RuntimeError("no literal is waiting for a decision")
        return self._pending

    def _too_long(self, current: bytes) -> LineTooLong:
        first = self._parts[0] if self._parts else current
        assert isinstance(first, bytes)
        tag = None if self._raw else _head(first)[0]
        self._raw_discard = self._raw
        self._raw = False
        self._reset_command()
        self._state = _State.DISCARD_LINE
        return LineTooLong(tag)

    def _end_discarded_line(self, line: bytes) -> None:
        """A skipped line ended: go on skipping a non-synchronising literal it announces."""
        marker = None if self._raw_discard else _marker(line)
        if marker is not None and not marker.synchronizing:
            self._remaining = marker.size
            self._state = _State.DISCARD_LITERAL
        else:
            # A synchronising literal is never sent: the client got its BAD instead of "+".
            self._raw_discard = False
            self._state = _State.LINE

    def _reset_command(self) -> None:
        self._parts = []
        self._text_len = 0
        self._inline_total = 0
        self._literals = 0
        self._literal_octets = 0
        self._pending = None
