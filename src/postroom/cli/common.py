"""What every `postroom` subcommand shares: one-line errors, the loaded config, the store."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from postroom.config import Config, ConfigError, load_config
from postroom.services.accounts import PasswordError
from postroom.storage.api import DirectStore
from postroom.storage.backend import direct_store
from postroom.storage.records import StoreError


class CliError(click.ClickException):
    """One clear line, exit status 1."""

    def show(self, file: object = None) -> None:
        click.echo(f"postroom: error: {self.message}", err=True)


def load(ctx: click.Context) -> Config:
    try:
        return load_config(ctx.obj)
    except ConfigError as error:
        raise CliError(str(error)) from None


@contextlib.contextmanager
def open_store(config: Config, *, accounts: bool = False) -> Iterator[DirectStore]:
    """The store, for one command; `accounts=True` tells a running server users/aliases
    changed, once the command succeeded."""
    try:
        store = direct_store(config.data_dir)
    except Exception as error:  # sqlite3 errors on an unusable data_dir
        raise CliError(f"{config.data_dir}: cannot open the store: {error}") from None
    try:
        yield store
        if accounts:
            store.signals.mark("accounts")
    except (StoreError, PasswordError) as error:
        raise CliError(str(error)) from None
    finally:
        store.close()
