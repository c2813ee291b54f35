"""The data directory is its owner's alone: directories 0700, files 0600, whatever the umask.

It holds all mail, password hashes, SCRAM keys and the TLS key. Postfix keeps its queue
directories 0700 and queue files 0600 (its master runs under umask 077); Dovecot makes a new
mail root 0700 with 0600 files. Everything postroom creates under `data_dir` is created here
with its mode set explicitly (`os.open`/`os.mkdir` with the mode, then chmod: a umask can only
take bits away, and one that takes the owner's away would leave files postroom cannot use).
SQLite gives the -wal, -shm and journal files the mode of the database file, which is made
here before SQLite first opens it. What an older version left open is named, not changed
(`exposed`): the administrator may have opened it on purpose (a backup group).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_data_dir(data_dir: Path) -> None:
    """The data directory, made 0700 when missing (missing parents, outside it, as usual)."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    make_dir(data_dir)


def make_dir(path: Path) -> None:
    """`path` as a directory (its parent exists), made 0700 when missing."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)


def make_dirs(root: Path, *parts: str) -> Path:
    """`root`/parts..., each directory below `root` made 0700 when missing."""
    path = root
    for part in parts:
        path = path / part
        make_dir(path)
    return path


def open_file(path: Path, flags: int = os.O_WRONLY) -> int:
    """A descriptor on `path`, made 0600 when missing (an existing file keeps its mode)."""
    try:
        return _create(path, flags)
    except FileExistsError:
        return os.open(path, flags)


def create_missing(path: Path) -> None:
    """Make `path` an empty 0600 file unless something is there already."""
    try:
        os.close(_create(path, os.O_WRONLY))
    except FileExistsError:
        return


def _create(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken the owner's bits too
    except BaseException:
        os.close(fd)
        raise
    return fd


def exposed(path: Path) -> int | None:
    """The mode of `path` when group or others have any access to it (else None)."""
    try:
        current = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None
    return current if current & 0o077 else None
