"""Logging for `postroom serve`: one line per event on stderr, with a cheap timestamp; as text
(the default) or, with `[log] format = "json"`, as one JSON object per line.

The formatters cache the date-time text per second: the server logs a line per transaction,
and `time.strftime` on every line is measurable at a thousand messages a second. For the same
reason a record does not collect what the format never prints (the caller's frame, thread and
process: the switches the Logging HOWTO lists under "Optimization"); about 2% of the rate at
which mail is received.

A JSON line holds `time` (UTC, ISO 8601), `level`, `logger` and `message` (the text line's
message, unchanged), then the fields the message names: a placeholder written after `key=` in
the message's template ("login failed service=%s client=%s user=<%s>") gives the field `key`
with its argument's value, so `client`, `user`, `id`, `reply`, ... need no parsing of the
message, and a value with spaces in it stays whole. A traceback goes in `exception`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import sys
import time
from typing import Any

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# A %-placeholder of a message template (printf-style, as logging uses), with the `key=` (and
# an opening "<") written before it, if any.
_PLACEHOLDER = re.compile(
    r"%%|(?:\b([A-Za-z_][A-Za-z0-9_]*)=<?)?%(?:\(\w+\))?[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"
)
_RESERVED = frozenset({"time", "level", "logger", "message", "exception", "stack"})


class CachedTimeFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int(record.msecs):03d}"


@functools.lru_cache(maxsize=1024)
def field_names(template: str) -> tuple[str | None, ...]:
    """The key each placeholder of a message template follows ("client=%s" → "client"),
    None for a placeholder without one; `%%` is no placeholder."""
    return tuple(
        match.group(1) for match in _PLACEHOLDER.finditer(template) if match.group(0) != "%%"
    )


def _plain(value: object) -> Any:
    """A JSON value for a message argument: numbers and text as they are, the rest as text."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry: dict[str, Any] = {
            "time": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        args = record.args
        if isinstance(args, tuple) and args and isinstance(record.msg, str):
            names = field_names(record.msg)
            if len(names) == len(args):  # else a template we cannot read: the message only
                for name, value in zip(names, args, strict=True):
                    if name is not None and name not in _RESERVED:
                        entry[name] = _plain(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


def configure(verbose: bool, log_format: str = "text") -> None:
    # Neither format uses funcName/lineno/pathname, thread, process or processName.
    logging._srcfile = None  # the HOWTO's switch: no stack walk for the caller per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else CachedTimeFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
