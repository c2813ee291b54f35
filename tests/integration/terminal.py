"""Run the real `postroom` on a pseudo-terminal: what a user at a terminal sees and types.

The child gets a new session, so it has no controlling terminal: getpass (click's hidden
prompts) then reads the pseudo-terminal on stdin, never the terminal the tests run from.
Answers are typed only once their prompt is on screen (getpass flushes what was typed before).
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Sequence

from .conftest import postroom_executable

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_terminal(
    args: Sequence[str],
    *,
    columns: int = 80,
    answers: Sequence[tuple[str, str]] = (),
    timeout: float = 60.0,
) -> tuple[int, str]:
    """Run `postroom ARGS` with a terminal of `columns` columns as stdin, stdout and stderr.

    `answers` are (prompt, reply) pairs: each reply is typed once its prompt has appeared.
    Returns the exit status and everything the terminal showed, without colour codes.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [postroom_executable(), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    output = b""
    pending = list(answers)
    seen = 0  # answers look for their prompt after the previous answer's
    deadline = time.monotonic() + timeout
    try:
        while True:
            if pending and pending[0][0].encode() in output[seen:]:
                prompt, reply = pending.pop(0)
                seen = output.index(prompt.encode(), seen) + len(prompt)
                os.write(master, reply.encode())
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"postroom {' '.join(args)}: timed out; screen:\n{output!r}")
            ready, _, _ = select.select([master], [], [], left)
            try:
                chunk = os.read(master, 65536) if ready else b""
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        status = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert not pending, f"never prompted for {pending[0][0]!r}; screen:\n{output!r}"
    return status, ANSI.sub("", output.decode("utf-8", "replace")).replace("\r\n", "\n")
