"""The `postroom` command: init, serve, user, alias, mailbox, queue, send, dkim, dns, doctor,
dmarc, spam, limits, sieve, quickstart, service, acme, trace, storage.

Every failure the user can cause (bad config, unknown user, unusable password, a mistyped
option) is one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from postroom import logsetup
from postroom.cli.common import CliError, load, storage_problem
from postroom.cli.pidlock import serve_lock
from postroom.cli.usage import OneLineUsageGroup
from postroom.config import DEFAULT_DOMAINS, Config, default_hostname
from postroom.config_template import render_default_config
from postroom.storage.records import StorageFailure

if TYPE_CHECKING:
    from postroom.net.listener import ListenError

DEFAULT_CONFIG = "postroom.toml"


@click.group(cls=OneLineUsageGroup)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=lambda: os.environ.get("POSTROOM_CONFIG", DEFAULT_CONFIG),
    show_default=f"$POSTROOM_CONFIG or ./{DEFAULT_CONFIG}",
    help="Configuration file (TOML).",
)
@click.version_option(package_name="postroom")
@click.pass_context
def cli(ctx: click.Context, config_path: Path) -> None:
    """postroom — an all-in-one Internet mail server."""
    ctx.obj = config_path


@cli.command()
@click.option(
    "--hostname",
    default=default_hostname,
    show_default="this machine's FQDN, else localhost",
    help="This server's public name (greeting, Received:, certificate).",
)
@click.option(
    "--domain",
    "domains",
    multiple=True,
    show_default=", ".join(DEFAULT_DOMAINS),
    help="Local domain (repeatable).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.pass_context
def init(ctx: click.Context, hostname: str, domains: tuple[str, ...], force: bool) -> None:
    """Write a commented configuration file (with the defaults an empty file means)."""
    path: Path = ctx.obj
    if path.exists() and not force:
        raise CliError(f"{path} already exists; use --force to overwrite it")
    try:
        text = render_default_config(hostname, domains or DEFAULT_DOMAINS)
    except ValueError as error:
        raise CliError(str(error)) from None
    try:
        # 0600: it may come to hold the [relay] password.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(fd, 0o600)  # an existing file (--force) keeps its mode otherwise
            handle.write(text)
    except OSError as error:
        raise CliError(f"{path}: cannot write it: {error.strerror}") from None
    click.echo(f"wrote {path}")


@cli.command()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def serve(ctx: click.Context, verbose: bool) -> None:
    """Run the mail server until SIGTERM; SIGHUP reloads the config. Started as root with
    [server] user set, it becomes that user once its ports are open."""
    import asyncio

    from postroom.app import serve as run_server
    from postroom.cli.privileges import PrivilegeError, drop_privileges, planned
    from postroom.net.listener import ListenError
    from postroom.net.tls import TlsSetupError

    config = load(ctx)
    try:
        become = planned(config.server.user, config.path)
    except PrivilegeError as error:
        raise CliError(str(error)) from None
    logsetup.configure(verbose, config.log.format)
    # As Postfix's master: whatever the server creates is its own. What it creates in data_dir
    # has its mode set explicitly as well (storage/private.py), for the CLI's sake.
    os.umask(0o077)
    runner: Callable[..., None] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    try:
        with serve_lock(config):
            if become is None:
                runner(run_server(config))
            else:
                runner(run_server(config, lambda: drop_privileges(become, config.data_dir)))
    except (TlsSetupError, PrivilegeError) as error:
        raise CliError(str(error)) from None
    except ListenError as error:
        raise CliError(listen_problem(error, config)) from None
    except StorageFailure as failure:
        raise CliError(storage_problem(failure, config)) from None
    except OSError as error:
        raise CliError(f"cannot start: {error}") from None


def listen_problem(error: ListenError, config: Config) -> str:
    """One line for a listening socket that could not be opened, with the key to change."""
    where = f"{error.address} (service {error.service})"
    fix = f"change [listen] {error.service} in {config.path}"
    if error.errno == errno.EADDRINUSE:  # not a postroom on this data_dir: serve_lock said so
        return (
            f"cannot listen on {where}: address already in use by another program (a mail "
            f"server, or a postroom with another data_dir); stop it or {fix}"
        )
    if error.errno == errno.EACCES:
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need root or "
            f"CAP_NET_BIND_SERVICE); {fix}"
        )
    return f"cannot listen on {where}: {error.strerror}; {fix}"


def register(group: click.Group) -> None:
    from postroom.cli import (
        accounts,
        acme,
        dkim,
        dmarc,
        dns_records,
        doctor,
        limits,
        mailbox,
        queue,
        send,
        setup,
        sieve,
        spam,
        storage,
        trace,
    )

    group.add_command(accounts.user)
    group.add_command(accounts.alias)
    group.add_command(mailbox.mailbox)
    group.add_command(queue.queue)
    group.add_command(send.send)
    group.add_command(dkim.dkim)
    group.add_command(dns_records.dns)
    group.add_command(doctor.doctor)
    group.add_command(dmarc.dmarc)
    group.add_command(spam.spam)
    group.add_command(limits.limits)
    group.add_command(sieve.sieve)
    group.add_command(setup.quickstart)
    group.add_command(setup.service)
    group.add_command(acme.acme)
    group.add_command(trace.trace)
    group.add_command(storage.storage)


register(cli)


def main() -> None:
    cli(prog_name="postroom")
