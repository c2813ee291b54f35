"""Command lines of the line-based protocols (SMTP, POP3): split, bounded, decoded.

A line longer than its limit is refused once, when its end arrives; the bytes in between are
dropped as they come, so a client cannot make a session hold an endless line. CRLF or a bare LF
ends a line; NUL or invalid UTF-8 makes it unusable. The engines turn the outcomes into replies.
"""

from __future__ import annotations

import enum


class LineProblem(enum.Enum):
    TOO_LONG = "too long"
    BAD_ENCODING = "bad encoding"


class LineSplitter:
    def __init__(self) -> None:
        self._skipping = False  # inside an overlong line whose end has not come yet

    @property
    def skipping(self) -> bool:
        """Inside an overlong line: its bytes were dropped, its end has not come yet."""
        return self._skipping

    def take(self, buf: bytearray, limit: int) -> str | LineProblem | None:
        """The next line from `buf` (consumed), a problem, or None when more input is needed.
        `limit` counts the line with its line ending."""
        newline = buf.find(b"\n")
        if newline < 0:
            if len(buf) > limit:
                self._skipping = True
                buf.clear()
            return None
        end = newline - 1 if newline and buf[newline - 1] == 0x0D else newline
        raw = buf[:end]
        del buf[: newline + 1]
        if self._skipping or newline + 1 > limit:
            self._skipping = False
            return LineProblem.TOO_LONG
        if b"\0" in raw:
            return LineProblem.BAD_ENCODING
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return LineProblem.BAD_ENCODING
