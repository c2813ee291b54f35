"""The one exception the Sieve engine raises for a bad script: where (line:column) and why."""

from __future__ import annotations


class SieveError(Exception):
    """A script that cannot be parsed or validated (or, at run time, a broken include).
    `line` and `column` are 1-based; 0 means "no position" (an error of the whole script)."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(f"{line}:{column}: {message}")
        self.line = line
        self.column = column
        self.message = message


class SieveRuntimeError(Exception):
    """A script failed while running (a limit, a bad address, a missing include): the
    interpreter turns it into an Outcome with `error` set and the implicit keep."""
