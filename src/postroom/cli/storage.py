"""`postroom storage check`: is the store reachable, and is its schema the one this postroom
uses? Reads the version only: nothing is made or migrated (the server and every other command
migrate an older schema when they open the store)."""

from __future__ import annotations

import click

from postroom.cli.common import CliError, load, storage_problem
from postroom.storage.backend import schema
from postroom.storage.records import StorageFailure


@click.group()
def storage() -> None:
    """The store: SQLite in data_dir or PostgreSQL ([storage] backend) (check)."""


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
