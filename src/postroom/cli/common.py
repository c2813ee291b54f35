"""What every `postroom` subcommand shares: one-line errors, the loaded config, the store."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from postroom.config import Config, ConfigError, load_config
from postroom.services.accounts import AccountError
from postroom.storage.api import DirectStore, Tx
from postroom.storage.backend import direct_store
from postroom.storage.records import StorageFailure, StoreError


class CliError(click.ClickException):
    """One clear line, exit status 1."""

    def show(self, file: object = None) -> None:
        click.echo(f"postroom: error: {self.message}", err=True)


def load(ctx: click.Context) -> Config:
    try:
        return load_config(ctx.obj)
    except ConfigError as error:
        raise CliError(str(error)) from None


def storage_problem(failure: StorageFailure, config: Config) -> str:
    """One line for a data_dir or database that cannot be used: path, problem, fix."""
    key = "[storage] dsn" if config.storage.database is not None else "data_dir"
    return f"{failure} ({key} is set in {config.path})"


@contextlib.contextmanager
def open_store(config: Config, *, accounts: bool = False) -> Iterator[DirectStore]:
    """The store, for one command; `accounts=True` tells a running server users/aliases
    changed, once the command succeeded."""
    try:
        store = direct_store(
            config.data_dir, database=config.storage.database, password=config.storage.password
        )
    except StorageFailure as failure:
        raise CliError(storage_problem(failure, config)) from None
    try:
        yield store
        if accounts:
            store.signals.mark("accounts")
    except (StoreError, AccountError) as error:
        raise CliError(str(error)) from None
    except Exception as error:
        trouble = store.failure(error)
        if trouble is None:
            raise
        raise CliError(storage_problem(trouble, config)) from None
    finally:
        store.close()


def user_id_of(tx: Tx, address: str) -> int:
    """The ID of the user ADDRESS names; a one-line error when there is none."""
    user = tx.accounts.get_user(address)
    if user is None:
        raise CliError(f"no user {address} (postroom user list shows them)")
    return user.id
