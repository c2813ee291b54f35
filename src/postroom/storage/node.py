"""This server's node name: who holds a queue lease (issue 16 §2, storage.api Queue.claim_due).

`[storage] node` names it; without it, the name is made once per data directory and kept in
`<data_dir>/node-id` (0600, storage/private.py): the host name's first label and a random
suffix, so two servers on one machine (each with its own data_dir) never share one, and a
restarted server keeps its own and can end the leases it held before it stopped.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from pathlib import Path

from postroom.storage.private import create_missing, make_data_dir
from postroom.storage.records import StorageFailure

NODE_FILE = "node-id"
# The same rule as config_storage's `[storage] node` check: short, printable, one word.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_SUFFIX_BYTES = 3  # six hex digits


def node_name(data_dir: Path, configured: str = "") -> str:
    """`configured` when set, else the name kept in data_dir (made and kept on first use)."""
    if configured:
        return configured
    path = data_dir / NODE_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = _make(path)
    except (OSError, UnicodeDecodeError) as error:
        problem = error.strerror if isinstance(error, OSError) else "is not ASCII"
        raise StorageFailure(
            f"{path}: {problem}; delete it (a new node name is made) or set [storage] node"
        ) from None
    if not NODE_NAME.fullmatch(text):
        raise StorageFailure(
            f"{path}: {text[:40]!r} is not a node name (letters, digits, '.', '_', '-', up to 63);"
            " delete it (a new one is made) or set [storage] node"
        )
    return text


def new_name(host: str | None = None) -> str:
    """The host name's first label (what a node name may hold of it) and a random suffix."""
    label = (host if host is not None else socket.gethostname()).split(".", 1)[0]
    label = re.sub(r"[^A-Za-z0-9-]", "", label)[:40].strip("-") or "node"
    return f"{label}-{secrets.token_hex(_SUFFIX_BYTES)}"


def _make(path: Path) -> str:
    """A new name written to `path` (0600); the one found there when another process made it
    first."""
    name = new_name()
    try:
        make_data_dir(path.parent)
    except OSError as error:
        raise StorageFailure(f"{path.parent}: {error.strerror}") from None
    temporary = path.with_name(f".{NODE_FILE}.{os.getpid()}")
    try:
        create_missing(temporary)
        temporary.write_text(name + "\n", encoding="ascii")
        try:
            os.link(temporary, path)  # fails when it exists: the first name made is kept
        except FileExistsError:
            name = path.read_text(encoding="ascii").strip()
    except OSError as error:
        raise StorageFailure(f"{path}: cannot make the node name: {error.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return name
