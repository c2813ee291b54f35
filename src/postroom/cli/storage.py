"""`postroom storage check`: is the store reachable, and is its schema the one this postroom
uses? Reads the version only: nothing is made or migrated (the server and every other command
migrate an older schema when they open the store).

`postroom storage migrate --to postgresql --dsn ...`: the SQLite store of data_dir copied into
PostgreSQL (storage/migration.py: the SQLite export, the PostgreSQL import), batch by batch,
resuming where an interrupted run stopped; the counts of both sides compared at the end. It
holds the data_dir's pid-file lock (cli/pidlock.py) throughout: it refuses to start while the
server runs there, and the server cannot start during the copy."""

from __future__ import annotations

import os
import sys

import click

from postroom.cli.common import CliError, load, storage_problem
from postroom.cli.pidlock import serve_lock
from postroom.config_storage import PASSWORD_VARIABLE
from postroom.storage.backend import postgresql_import, schema, sqlite_export
from postroom.storage.migration import KINDS, Blob, ForeignTarget, Row, Source, Target
from postroom.storage.records import StorageFailure

BATCH_ROWS = 200  # rows written per transaction
BATCH_BYTES = 16 * 1024 * 1024  # or content bytes


@click.group()
def storage() -> None:
    """The store: SQLite in data_dir or PostgreSQL ([storage] backend) (check, migrate)."""


@storage.command("check")
@click.pass_context
def storage_check(ctx: click.Context) -> None:
    """Reach the store and compare its schema version with this postroom's."""
    config = load(ctx)
    try:
        state = schema(
            config.data_dir, database=config.storage.database, password=config.storage.password
        )
    except StorageFailure as failure:
        raise CliError(storage_problem(failure, config)) from None
    if state.found == state.current:
        click.echo(f"{state.where}: schema version {state.found}, this postroom's")
    elif state.found == 0:
        raise CliError(
            f"{state.where}: postroom has not made its tables there yet; any command"
            " (or `postroom serve`) makes them"
        )
    elif state.found < state.current:
        raise CliError(
            f"{state.where}: schema version {state.found}, older than this postroom's"
            f" ({state.current}); `postroom serve` (or any other command) migrates it"
        )
    else:
        raise CliError(
            f"{state.where}: schema version {state.found}, newer than this postroom's"
            f" ({state.current}); run the postroom that migrated it, or a newer one"
        )


@storage.command("migrate")
@click.option(
    "--to", "target", type=click.Choice(["postgresql"]), required=True, help="The backend."
)
@click.option(
    "--dsn",
    required=True,
    help="The PostgreSQL database, postgresql://USER@HOST/NAME (password: $POSTROOM_DB_PASSWORD).",
)
@click.pass_context
def storage_migrate(ctx: click.Context, target: str, dsn: str) -> None:
    """Copy the SQLite store of data_dir into an empty PostgreSQL database (resumable)."""
    config = load(ctx)
    if config.storage.database is not None:
        raise CliError(
            f"{config.path}: [storage] backend is already {target}; migrate copies the SQLite"
            " store of data_dir: run it with the configuration that uses SQLite"
        )
    with serve_lock(config):  # no server on this data_dir meanwhile (storage migrate is one)
        try:
            source = sqlite_export(config.data_dir)
        except StorageFailure as failure:
            raise CliError(storage_problem(failure, config)) from None
        try:
            copy_store(source, dsn, os.environ.get(PASSWORD_VARIABLE))
        finally:
            source.close()
    click.echo(
        f'done: set [storage] backend = "{target}" and dsn in {config.path}'
        " (the password in password_file or $POSTROOM_DB_PASSWORD), then start postroom"
    )


def copy_store(source: Source, dsn: str, password: str | None) -> None:
    """Copy, resuming an earlier copy; the counts of both sides printed and compared."""
    try:
        target = postgresql_import(dsn, password)
    except (StorageFailure, ForeignTarget) as error:
        raise CliError(str(error)) from None
    try:
        expected = source.counts()
        state = target.begin()
        if state == "complete":
            click.echo(f"{target.where} holds a complete copy already; comparing counts")
        else:
            if state == "resumed":
                click.echo(f"{target.where}: resuming the copy an earlier run began", err=True)
            _copy(source, target, expected)
            target.finish()
        _verify(expected, target.counts(), target.where)
    except KeyboardInterrupt:
        raise CliError(
            "interrupted; what was copied is kept: run the same command again to go on"
        ) from None
    except ForeignTarget as error:
        raise CliError(str(error)) from None
    except Exception as error:
        trouble = target.failure(error)
        if trouble is None:
            raise
        raise CliError(f"{trouble}; run the same command again to go on") from None
    finally:
        target.close()


def _copy(source: Source, target: Target, expected: dict[str, int]) -> None:
    already = target.counts()
    total = sum(max(expected[k.name] - already[k.name], 0) for k in KINDS)
    counter = _Counter(total)
    for kind in KINDS:
        batch: list[Row] = []
        size = 0
        for row in source.rows(kind, target.position(kind)):
            batch.append(row)
            if isinstance(row, Blob):
                size += int(str(row.values[1]))
            if len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
                target.write(kind, batch)
                counter.add(len(batch), kind.name)
                batch, size = [], 0
        target.write(kind, batch)
        counter.add(len(batch), kind.name)
    counter.end()


class _Counter:
    """The rows copied: a progress bar on a terminal, else a line per batch on stderr."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.bar = (
            click.progressbar(length=total, label="copying", file=sys.stderr)
            if sys.stderr.isatty()
            else None
        )
        if self.bar is not None:
            self.bar.__enter__()

    def add(self, rows: int, kind: str) -> None:
        if not rows:
            return
        self.done += rows
        if self.bar is not None:
            self.bar.update(rows)
        else:
            click.echo(f"copied {self.done}/{self.total} rows ({kind})", err=True)

    def end(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def _verify(expected: dict[str, int], found: dict[str, int], where: str) -> None:
    width = max(len(name) for name in expected)
    click.echo(f"{'':{width}}  {'sqlite':>10}  {'postgresql':>10}")
    for name, count in expected.items():
        mark = "" if found[name] == count else "  DIFFERS"
        click.echo(f"{name:{width}}  {count:>10}  {found[name]:>10}{mark}")
    differ = [name for name, count in expected.items() if found[name] != count]
    if differ:
        raise CliError(
            f"{where}: the counts differ ({', '.join(differ)}): the SQLite store changed since"
            " the copy began; drop the database, make it anew and migrate with the server"
            " stopped"
        )
