"""Mounts for one process only: `unshare --mount` gives the command a mount namespace of its
own, a shell script makes the mounts in it, then execs the command (same PID). The mounts
exist only in that namespace, so they go away with the process, however the test ends: there
is nothing to unmount. Needs root (CI runs as root) or user namespaces."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import STRICT, require_program


def private_mounts(script: str, *args: str) -> tuple[str, ...]:
    """The prefix that runs `script` (sh, with `args` as $1...) in a mount namespace of its
    own, then execs whatever follows the prefix."""
    unshare = require_program("unshare")
    probe = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        why = f"no mount namespace of its own: {probe.stderr.decode().strip()}"
        if STRICT:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    count = len(args)
    return (
        *(unshare, "--mount", "--propagation", "private"),
        *("sh", "-ec", f'{script}\nshift {count}; exec "$@"', "sh", *args),
    )


def read_only(path: str) -> tuple[str, ...]:
    """The prefix that runs a command with `path` (a file or a directory) mounted read-only."""
    return private_mounts('mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"', path)


def tmpfs(path: str, size: str, seed: str) -> tuple[str, ...]:
    """The prefix that runs a command with a tmpfs of `size` on `path` holding a copy of
    `seed`."""
    return private_mounts(
        'mount -t tmpfs -o size="$2",mode=0700 postroom-test "$1"; cp -a "$3"/. "$1"/',
        path,
        size,
        seed,
    )
