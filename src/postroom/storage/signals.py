"""Notes from the CLI (another process) to a running server, as files in the data directory.

`postroom user add` or `queue retry` change the store behind the server's back; they touch a
stamp file, and the server compares its mtime (one stat, cheap enough for every RCPT) with the
one it saw last: accounts changed → drop lookup caches; queue changed → look at the queue now.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from postroom.storage import private
from postroom.storage.api import Signal

_FILES: dict[Signal, str] = {
    "accounts": "accounts.changed",
    "queue": "queue.changed",
    "limits": "limits.changed",  # `postroom limits clear`: the server reloads blocks and counts
    "blocks": "blocks.changed",  # a block made (by another node: services/antispam.py)
    "dkim": "dkim.changed",  # DKIM keys added, rotated, promoted: signing keys read again
}


class FileSignals:
    def __init__(self, data_dir: Path) -> None:
        self._paths = {what: os.fspath(data_dir / name) for what, name in _FILES.items()}

    def mark(self, what: Signal) -> None:
        path = self._paths[what]
        os.close(private.open_file(Path(path)))
        now = time.time_ns()
        os.utime(path, ns=(now, now))

    def announce(self, what: Signal) -> None:
        """Nothing: one server owns a SQLite store, no other node is there to tell."""

    def version(self, what: Signal) -> int:
        """The stamp's mtime in ns (0 when absent)."""
        try:
            return os.stat(self._paths[what]).st_mtime_ns
        except FileNotFoundError:
            return 0
