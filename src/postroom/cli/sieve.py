"""`postroom sieve list|get|put|activate|deactivate|delete|check`: users' Sieve scripts from the
command line, as ManageSieve (RFC 5804) manages them.

`sieve put ADDRESS NAME FILE` stores FILE as the script NAME (replacing one of that name; its
active mark stays), after compiling it: an invalid script is refused with
`FILE:LINE:COLUMN: message` on stderr and exit status 1, as `sieve check FILE` reports it
(which needs no configuration). The per-user limits are ManageSieve's. The server reads the
active script at each delivery, so changes count at once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from postroom.cli.common import CliError, load, open_store, user_id_of
from postroom.proto.managesieve import MAX_SCRIPT_SIZE, space_refusal, valid_name
from postroom.proto.sieve import SieveError, compile_script
from postroom.services.sieve_scripts import sizes


def _name(name: str) -> str:
    if not valid_name(name):
        raise CliError(
            f"{name!r} is not a script name (1 to 128 characters, no control characters, NFC)"
        )
    return name


def _read_script(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_SCRIPT_SIZE:
            raise CliError(f"{path}: larger than {MAX_SCRIPT_SIZE} bytes, the limit for a script")
        data = path.read_bytes()
    except OSError as error:
        raise CliError(f"{path}: {error.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CliError(f"{path}: not UTF-8 (byte {error.start})") from None


def _compile_or_exit(path: Path, source: str, name: str = "") -> None:
    """Compile; for an invalid script print FILE:LINE:COLUMN: message and exit 1."""
    try:
        compile_script(source, name)
    except SieveError as error:
        click.echo(f"{path}:{error.line}:{error.column}: {error.message}", err=True)
        raise click.exceptions.Exit(1) from None


@click.group()
def sieve() -> None:
    """Users' Sieve scripts (RFC 5228), one of them active."""


@sieve.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def sieve_check(file: Path) -> None:
    """Check that FILE is a valid Sieve script (FILE:LINE:COLUMN: message if not)."""
    _compile_or_exit(file, _read_script(file))
    click.echo(f"{file}: valid")


@sieve.command("list")
@click.argument("address")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of objects.")
@click.pass_context
def sieve_list(ctx: click.Context, address: str, as_json: bool) -> None:
    """ADDRESS's scripts, the active one marked."""
    config = load(ctx)
    with open_store(config) as store:
        tx = store.reader()
        uid = user_id_of(tx, address)
        scripts = tx.sieve.scripts(uid)
        size = sizes(tx, uid)
    if as_json:
        rows = [{"name": n, "active": a, "size": size.get(n, 0)} for n, a in scripts]
        click.echo(json.dumps(rows))
        return
    if not scripts:
        click.echo(f"{address} has no scripts")
    for name, active in scripts:
        click.echo(f"{name}\t{size.get(name, 0)}\t{'active' if active else '-'}")


@sieve.command("get")
@click.argument("address")
@click.argument("name")
@click.pass_context
def sieve_get(ctx: click.Context, address: str, name: str) -> None:
    """Print ADDRESS's script NAME."""
    config = load(ctx)
    with open_store(config) as store:
        tx = store.reader()
        source = tx.sieve.get(user_id_of(tx, address), name)
    if source is None:
        raise CliError(f"{address} has no script {name!r} (postroom sieve list {address})")
    click.echo(source, nl=False)


@sieve.command("put")
@click.argument("address")
@click.argument("name")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--activate", is_flag=True, help="Make it the active script too.")
@click.pass_context
def sieve_put(ctx: click.Context, address: str, name: str, file: Path, activate: bool) -> None:
    """Store FILE as ADDRESS's script NAME, once it compiles."""
    _name(name)
    source = _read_script(file)
    _compile_or_exit(file, source, name)
    config = load(ctx)
    with open_store(config) as store, store.transaction() as tx:
        uid = user_id_of(tx, address)
        refusal = space_refusal(sizes(tx, uid), name, len(source.encode("utf-8")))
        if refusal is not None:
            raise CliError(f"{address}: {refusal.text}")
        tx.sieve.put(uid, name, source, time.time())
        if activate:
            tx.sieve.activate(uid, name)
    size = len(source.encode("utf-8"))
    click.echo(f"{address}: stored {name} ({size} bytes){', active' if activate else ''}")


@sieve.command("activate")
@click.argument("address")
@click.argument("name")
@click.pass_context
def sieve_activate(ctx: click.Context, address: str, name: str) -> None:
    """Make NAME ADDRESS's active script (the one run at delivery)."""
    config = load(ctx)
    with open_store(config) as store, store.transaction() as tx:
        uid = user_id_of(tx, address)
        if tx.sieve.get(uid, name) is None:
            raise CliError(f"{address} has no script {name!r} (postroom sieve list {address})")
        tx.sieve.activate(uid, name)
    click.echo(f"{address}: {name} is active")


@sieve.command("deactivate")
@click.argument("address")
@click.pass_context
def sieve_deactivate(ctx: click.Context, address: str) -> None:
    """Leave ADDRESS with no active script (mail is kept in INBOX)."""
    config = load(ctx)
    with open_store(config) as store, store.transaction() as tx:
        tx.sieve.activate(user_id_of(tx, address), None)
    click.echo(f"{address}: no script is active")


@sieve.command("delete")
@click.argument("address")
@click.argument("name")
@click.pass_context
def sieve_delete(ctx: click.Context, address: str, name: str) -> None:
    """Delete ADDRESS's script NAME (not the active one: deactivate it first)."""
    config = load(ctx)
    with open_store(config) as store, store.transaction() as tx:
        uid = user_id_of(tx, address)
        listed = dict(tx.sieve.scripts(uid))
        if name not in listed:
            raise CliError(f"{address} has no script {name!r} (postroom sieve list {address})")
        if listed[name]:
            raise CliError(
                f"{name!r} is {address}'s active script; postroom sieve deactivate {address} first"
            )
        tx.sieve.delete(uid, name)
    click.echo(f"{address}: deleted {name}")
