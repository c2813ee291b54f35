"""Benchmark aiosmtpd with a write-and-fsync-before-250 handler.

Starts ``bench/aiosmtpd_sink.py`` in a subprocess on a free loopback port,
drives it with the common smtp-source load and reports messages / time until
smtp-source exits (every 250 means the message was already fsynced).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    BenchError,
    Load,
    check_smtp_source,
    free_port,
    rate,
    start_smtp_source,
    stop_process,
    tail,
    wait_port,
)

SINK = Path(__file__).resolve().parent / "aiosmtpd_sink.py"


def run(load: Load, timeout: float = 600.0) -> dict[str, Any]:
    """Measure aiosmtpd under ``load``."""
    try:
        import aiosmtpd
    except ImportError as exc:
        raise BenchError("aiosmtpd is not installed in this Python (make install)") from exc
    tmp = Path(tempfile.mkdtemp(prefix="postroom-bench-aiosmtpd-"))
    server: subprocess.Popen[bytes] | None = None
    source: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        spool = tmp / "spool"
        server_log = tmp / "server.log"
        with open(server_log, "wb") as out:
            server = subprocess.Popen(
                [sys.executable, str(SINK), str(port), str(spool)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_port(port, timeout=30, proc=server, log=server_log)
        source_log = tmp / "smtp-source.log"
        start = time.monotonic()
        source = start_smtp_source(load, port, source_log)
        try:
            source.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"smtp-source did not finish in {timeout:.0f}s") from exc
        elapsed = time.monotonic() - start
        check_smtp_source(source, source_log)
        stored = len(os.listdir(spool))
        if stored != load.messages:
            raise BenchError(
                f"{stored} files stored for {load.messages} messages\n{tail(server_log)}".rstrip()
            )
        return {
            "messages": load.messages,
            "seconds": round(elapsed, 3),
            "msg_per_s": round(rate(load.messages, elapsed), 1),
            "measure": "smtp-source start until it exits (each 250 after write+fsync)",
            "version": getattr(aiosmtpd, "__version__", ""),
        }
    finally:
        stop_process(source)
        stop_process(server)
        shutil.rmtree(tmp, ignore_errors=True)
