"""aiosmtpd server for the benchmark: every message is written and fsynced before 250.

Run as ``python bench/aiosmtpd_sink.py PORT DIR``.  Listens on 127.0.0.1:PORT
with stock asyncio and aiosmtpd's SMTP protocol; ``handle_DATA`` writes the
message to a new file in DIR, fsyncs it (in a worker thread, so the event loop
keeps serving other sessions) and only then answers 250.  Stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

_counter = itertools.count()


def write_durably(directory: Path, data: bytes) -> None:
    """Write ``data`` to a new file in ``directory`` and fsync it."""
    path = directory / f"{os.getpid()}.{next(_counter)}.eml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


class FileHandler:
    """aiosmtpd handler storing each message as a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        await asyncio.to_thread(write_durably, self.directory, data)
        return "250 OK: queued"


async def serve(port: int, directory: Path) -> None:
    loop = asyncio.get_running_loop()
    handler = FileHandler(directory)

    def factory() -> Any:
        return SMTP(handler, hostname="mx.aiosmtpd-bench.test", data_size_limit=64 * 2**20)

    server = await loop.create_server(factory, host="127.0.0.1", port=port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    port, directory = int(sys.argv[1]), Path(sys.argv[2])
    directory.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(port, directory))


if __name__ == "__main__":
    main()
