"""The lock `postroom serve` holds on `data_dir/postroom.pid` while it runs.

Like Postfix's and Dovecot's master.pid: a second `serve` on the same data stops with one line
naming the running one, before it opens the store (two schedulers must never share a queue).
The lock is flock(2) on the open file, so the kernel drops it however the process ends; the file
stays behind, and an unlocked file only means that nothing runs. It holds the PID, then one
`service address` line per configured listener.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from postroom.cli.common import CliError
from postroom.config import Config
from postroom.storage import private

PID_FILE = "postroom.pid"


def _running(text: str, config: Config) -> str:
    lines = text.split("\n")
    pid = lines[0].strip() or "?"
    listening = [line.split(" ", 1) for line in lines[1:] if " " in line]
    where = f", listening on {listening[0][1]} (service {listening[0][0]})" if listening else ""
    return (
        f"another postroom (pid {pid}) is already running with data_dir {config.data_dir}"
        f"{where}; stop it first, or give this one another data_dir in {config.path}"
    )


@contextlib.contextmanager
def serve_lock(config: Config) -> Iterator[None]:
    """Hold the data_dir's pid-file lock for the duration; CliError when another serve has it."""
    path = config.data_dir / PID_FILE
    try:
        private.make_data_dir(config.data_dir)
        fd = private.open_file(path, os.O_RDWR)
    except OSError as error:
        raise CliError(
            f"{path}: cannot open the pid file ({error.strerror}); check data_dir in {config.path}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 4096, 0).decode(errors="replace")
            raise CliError(_running(owner, config)) from None
        listeners = [(name, e) for name, ends in config.listen.enabled().items() for e in ends]
        text = f"{os.getpid()}\n" + "".join(f"{name} {where}\n" for name, where in listeners)
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
        yield
    finally:
        os.close(fd)
