"""DESIGN.md rule 1: the protocol engines under postroom/proto never do I/O themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import postroom

PROTO = Path(postroom.__file__).parent / "proto"
FORBIDDEN = {"asyncio", "socket", "ssl", "sqlite3", "selectors", "threading", "subprocess"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
            if node.module.startswith("postroom.") and not node.module.startswith("postroom.proto"):
                names.add(node.module)
    return names


def test_protocol_engines_import_no_io_and_nothing_outside_proto() -> None:
    files = sorted(PROTO.rglob("*.py"))
    assert len(files) > 20  # smtp, sasl, imap, pop3 are all there
    offenders = {}
    for path in files:
        bad = {
            name
            for name in imported_modules(path)
            if name in FORBIDDEN or name.startswith("postroom.")
        }
        if bad:
            offenders[str(path.relative_to(PROTO))] = sorted(bad)
    assert offenders == {}
