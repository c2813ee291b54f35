"""Layers only point down: `cli → app → net → services → delivery → queue → storage → model →
proto`, with mail authentication (over dns) below the services, delivery and queue that use it,
and config, dns and logging beside them. Every package's imports of other postroom
packages are checked against a table, so a wrong arrow fails the build; the protocol engines
do no I/O (DESIGN.md rule 1); SQL stays inside the storage backend that owns it."""

from __future__ import annotations

import ast
from pathlib import Path

import postroom

ROOT = Path(postroom.__file__).parent
IO_MODULES = {"asyncio", "socket", "ssl", "sqlite3", "selectors", "threading", "subprocess"}

# The configuration: read by the layers that take settings, importing nothing else of postroom.
CONFIG = {
    "config",
    "config_checks",
    "config_web",
    "config_server",
    "config_log",
    "config_template",
    "config_common",
    "config_listen",
    "config_limits",
    "config_queue",
    "config_outbound",
    "config_verify",
    "config_antispam",
    "config_milter",
    "config_storage",  # PASSWORD_VARIABLE: `storage migrate` reads the target's password there
    "durations",
}
# The table modules config.py reads the file through (each imports the shared reader interface).
CONFIG_TABLES = {
    "config_web",
    "config_server",
    "config_log",
    "config_listen",
    "config_limits",
    "config_queue",
    "config_outbound",
    "config_verify",
    "config_antispam",
    "config_milter",
    "config_storage",
}

# For each package (or top-level module), the postroom packages it may import. Anything not
# listed is forbidden; a package may always import its own modules.
ALLOWED: dict[str, set[str]] = {
    "cli": {
        "app",
        "net",
        "services",
        "storage",
        "model",
        "mailauth",
        "junk",
        "proto",
        "dns",
        "logsetup",
        *CONFIG,
    },
    "app": {
        "web",
        "net",
        "services",
        "delivery",
        "queue",
        "storage",
        "model",
        "mailauth",
        "proto",
        "dns",
        *CONFIG,
    },
    "net": {"services", "storage", "proto", "config"},
    # The HTTP surface: a listener like net's, calling the same services the CLI calls.
    "web": {"net", "services", "storage", "model", "proto", "dns", *CONFIG},
    "services": {
        "delivery",
        "queue",
        "storage",
        "model",
        "mailauth",
        "junk",
        "proto",
        "dns",
        "config",
        "config_verify",
        "config_milter",
    },
    "delivery": {"queue", "storage", "model", "mailauth", "proto", "dns"},
    "queue": {"storage", "model", "mailauth", "proto"},
    "mailauth": {"dns", "proto"},
    "junk": {"proto"},
    "storage": {"model", "proto"},
    "model": {"proto"},
    "proto": set(),
    "dns": set(),
    "logsetup": set(),
    "config": {"config_checks", "config_common", *CONFIG_TABLES, "durations"},
    **{table: {"config_checks", "config_common", "durations"} for table in CONFIG_TABLES},
    "config_common": set(),
    "config_checks": {"durations"},
    "config_template": {
        "config",
        "config_checks",
        "config_limits",
        "config_listen",
        "config_outbound",
        "config_queue",
        "durations",
    },
    "durations": set(),
}


def postroom_imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level modules imported, full postroom module names imported) of one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()
    full: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top.add(alias.name.split(".")[0])
                full.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top.add(node.module.split(".")[0])
            full.add(node.module)
            full.update(f"{node.module}.{alias.name}" for alias in node.names)
    return top, {name for name in full if name.startswith("postroom.")}


def package_of(path: Path) -> str:
    relative = path.relative_to(ROOT)
    return relative.parts[0].removesuffix(".py")


def test_every_package_is_in_the_table() -> None:
    packages = {
        package_of(p) for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT
    }
    assert packages - {"__init__"} <= set(ALLOWED), packages - set(ALLOWED)


def test_imports_only_point_down() -> None:
    offenders: dict[str, list[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        if path.parent == ROOT and path.name == "__init__.py":
            continue
        package = package_of(path)
        _, names = postroom_imports(path)
        wrong = sorted(
            name
            for name in names
            if (target := name.split(".")[1]) != package and target not in ALLOWED[package]
        )
        if wrong:
            offenders[str(path.relative_to(ROOT))] = wrong
    assert offenders == {}


def test_the_table_has_no_cycle() -> None:
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for step in ALLOWED[start]:
            if step == goal or (step not in seen and reaches(step, goal, seen | {step})):
                return True
        return False

    assert [package for package in ALLOWED if reaches(package, package, {package})] == []


def test_protocol_engines_import_no_io() -> None:
    files = sorted((ROOT / "proto").rglob("*.py"))
    assert len(files) > 20  # smtp, sasl, imap, pop3 are all there
    offenders = {}
    for path in files:
        top, _ = postroom_imports(path)
        if top & IO_MODULES:
            offenders[str(path.relative_to(ROOT))] = sorted(top & IO_MODULES)
    assert offenders == {}


def test_only_the_storage_backend_knows_sqlite() -> None:
    """SQL lives in storage/sqlite/; the rest of the program reaches a store through
    storage.api (and storage.backend, which picks the implementation)."""
    offenders = {}
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[:2] == ("storage", "sqlite") or relative == Path("storage/backend.py"):
            continue
        top, names = postroom_imports(path)
        bad = sorted(n for n in names if n.startswith("postroom.storage.sqlite"))
        if "sqlite3" in top:
            bad.append("sqlite3")
        if bad:
            offenders[str(relative)] = bad
    assert offenders == {}


def test_only_the_postgresql_backend_knows_psycopg() -> None:
    """SQL for PostgreSQL lives in storage/postgresql/, the only code that imports psycopg."""
    offenders = {}
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[:2] == ("storage", "postgresql") or relative == Path(
            "storage/backend.py"
        ):
            continue
        top, names = postroom_imports(path)
        bad = sorted(n for n in names if n.startswith("postroom.storage.postgresql"))
        bad += sorted(top & {"psycopg"})
        if bad:
            offenders[str(relative)] = bad
    assert offenders == {}
