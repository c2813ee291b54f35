"""`postroom user ...` and `postroom alias ...`: accounts and address aliases."""

from __future__ import annotations

import sys
import time

import click

from postroom.cli.common import CliError, load, open_store
from postroom.proto.smtp.params import validate_mailbox
from postroom.proto.smtp.replies import SmtpError
from postroom.services import accounts
from postroom.services.accounts import hash_password


def check_address(address: str) -> str:
    try:
        validate_mailbox(address, utf8=True)
    except SmtpError:
        raise CliError(f"{address!r} is not a valid mail address (user@domain)") from None
    return address


def read_password(password: str | None, from_stdin: bool) -> str:
    if password is not None and from_stdin:
        raise CliError("give --password or --password-stdin, not both")
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if password is not None:
        return password
    if not sys.stdin.isatty():
        raise CliError("no password: use --password P or --password-stdin")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.group()
def user() -> None:
    """Manage mail users (login = full address)."""


@user.command("add")
@click.argument("address")
@click.option("--password", default=None, help="Password (visible in shell history).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--admin", is_flag=True, help="May use the web admin (/admin/) and its API.")
@click.pass_context
def user_add(
    ctx: click.Context, address: str, password: str | None, password_stdin: bool, admin: bool
) -> None:
    """Create a user with its mailboxes (INBOX, Sent, Drafts, Trash, Junk, Archive)."""
    config = load(ctx)
    try:
        address = accounts.new_address(address, config.domains)
    except accounts.AccountError as error:
        raise CliError(str(error)) from None
    secret = read_password(password, password_stdin)
    with open_store(config, accounts=True) as store:
        hashed = hash_password(secret)
        with store.transaction() as tx:
            accounts.add_user(tx, address, hashed, admin=admin)
    click.echo(f"added {address}" + (" (admin)" if admin else ""))


@user.command("admin")
@click.argument("address")
@click.option("--off", is_flag=True, help="Take the admin flag away instead.")
@click.pass_context
def user_admin(ctx: click.Context, address: str, off: bool) -> None:
    """Let a user use the web admin (/admin/) and its API, or with --off no longer."""
    config = load(ctx)
    with open_store(config, accounts=True) as store, store.transaction() as tx:
        accounts.set_admin(tx, address, not off)
    click.echo(f"{address.lower()} is {'no longer ' if off else ''}an admin")


@user.command("token")
@click.argument("address")
@click.option("--name", default="api", show_default=True, help="What the token is for.")
@click.pass_context
def user_token(ctx: click.Context, address: str, name: str) -> None:
    """Make a bearer token for the JSON API (/api/v1/) acting as ADDRESS; printed once."""
    config = load(ctx)
    with open_store(config) as store, store.transaction() as tx:
        token = accounts.new_token(tx, address, name)
    click.echo(token)


@user.command("passwd")
@click.argument("address")
@click.option("--password", default=None)
@click.option("--password-stdin", is_flag=True)
@click.pass_context
def user_passwd(
    ctx: click.Context, address: str, password: str | None, password_stdin: bool
) -> None:
    """Change a user's password."""
    config = load(ctx)
    secret = read_password(password, password_stdin)
    with open_store(config, accounts=True) as store:
        hashed = hash_password(secret)
        with store.transaction() as tx:
            accounts.set_password(tx, address, hashed)
    click.echo(f"password changed for {address.lower()}")


@user.command("delete")
@click.argument("address")
@click.option("-y", "--yes", is_flag=True, help="Do not ask (needed when stdin is no terminal).")
@click.pass_context
def user_delete(ctx: click.Context, address: str, yes: bool) -> None:
    """Delete a user and all of their mail, after asking on a terminal."""
    config = load(ctx)
    with open_store(config, accounts=True) as store:
        if store.reader().accounts.get_user(address) is None:
            raise CliError(f"no user {address}")
        if not yes:
            if not sys.stdin.isatty():
                raise CliError(
                    f"deleting {address} removes all of their mail: add --yes to confirm "
                    "(stdin is not a terminal, so there is no one to ask)"
                )
            count = store.reader().accounts.count_messages(address)
            question = f"Delete {address} and all of their mail ({count} message(s))?"
            if not click.confirm(question, default=False):
                raise CliError(f"{address} not deleted")
        with store.transaction() as tx:
            accounts.delete_user(tx, address)
    click.echo(f"deleted {address.lower()}")


@user.command("list")
@click.pass_context
def user_list(ctx: click.Context) -> None:
    """List users: address, created, and "admin" for those who may use the web admin."""
    config = load(ctx)
    with open_store(config) as store:
        for summary in accounts.users(store.reader()):
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(summary.created))
            click.echo(f"{summary.address}\t{created}" + ("\tadmin" if summary.admin else ""))


@click.group()
def alias() -> None:
    """Manage aliases (one address delivered to several, local or remote)."""


@alias.command("add")
@click.argument("address")
@click.argument("targets", nargs=-1, required=True)
@click.pass_context
def alias_add(ctx: click.Context, address: str, targets: tuple[str, ...]) -> None:
    """Add TARGETS to alias ADDRESS ("@domain" catches every unknown address there)."""
    config = load(ctx)
    try:
        address, wanted = accounts.alias_request(address, targets, config.domains)
    except accounts.AccountError as error:
        raise CliError(str(error)) from None
    with open_store(config, accounts=True) as store, store.transaction() as tx:
        accounts.add_alias(tx, address, wanted)
    click.echo(f"{address} -> {', '.join(wanted)}")


@alias.command("delete")
@click.argument("address")
@click.pass_context
def alias_delete(ctx: click.Context, address: str) -> None:
    """Delete an alias."""
    config = load(ctx)
    with open_store(config, accounts=True) as store, store.transaction() as tx:
        accounts.delete_alias(tx, address)
    click.echo(f"deleted alias {address.lower()}")


@alias.command("list")
@click.pass_context
def alias_list(ctx: click.Context) -> None:
    """List aliases."""
    config = load(ctx)
    with open_store(config) as store:
        for address, targets in accounts.aliases(store.reader()).items():
            click.echo(f"{address} -> {', '.join(targets)}")
