"""fdatasync latency of WAL-like commits on this machine: 11 frames (24-byte header + 4 KiB
page) written in place, then fdatasync; back to back, and with the idle gap an IMAP command
leaves between commits. Tells how much of a durable APPEND is the disk and the idle CPU.

    python bench/fsync_latency.py [directory]   (default: the current one)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

COMMITS = 300
FRAMES = 11  # pages one APPEND of an 11 KB message adds to the WAL
FRAME_HEADER, PAGE = 24, 4096


def median_sync_us(directory: str, gap: float) -> float:
    """Median fdatasync time in µs for COMMITS commits written over a preallocated file."""
    with tempfile.NamedTemporaryFile(dir=directory) as handle:
        fd = handle.fileno()
        os.write(fd, bytes(16 << 20))  # preallocated, as a WAL that is written over
        os.fsync(fd)
        offset, times = 0, []
        for _ in range(COMMITS):
            for _ in range(FRAMES):
                os.pwrite(fd, b"h" * FRAME_HEADER, offset)
                os.pwrite(fd, b"p" * PAGE, offset + FRAME_HEADER)
                offset += FRAME_HEADER + PAGE
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
            if gap:
                time.sleep(gap)
    return statistics.median(times) * 1e6


def main() -> None:
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    print(f"back to back:          {median_sync_us(directory, 0.0):6.0f} µs per fdatasync")
    print(f"1.5 ms idle in between: {median_sync_us(directory, 0.0015):6.0f} µs per fdatasync")


if __name__ == "__main__":
    main()
