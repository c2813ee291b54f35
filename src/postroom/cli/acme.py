"""`postroom acme status` and `postroom acme renew [--force]`: the ACME certificate.

`renew` runs the order in this process (net/certificates.py `renew`, the server's own code)
while the running server answers the CA's http-01 requests from data_dir/acme/challenges;
the server notices the new files within seconds and serves them on every TLS listener.
"""

from __future__ import annotations

import datetime

import click

from postroom.cli.common import CliError, load
from postroom.config import Config
from postroom.net.acme import TLS_ALPN_01, AcmeError
from postroom.net.certificates import (
    CHECK_EVERY,
    AcmeBusy,
    AcmeFiles,
    AcmeSettings,
    check_http_answers,
    renew,
    renewal_reason,
)


def _when(moment: datetime.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


@click.group()
def acme() -> None:
    """The certificate from the ACME CA ([acme] in the config)."""


@acme.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show the names wanted, the installed certificate, the next renewal and the last error."""
    config = load(ctx)
    files = AcmeFiles(config.data_dir)
    settings = AcmeSettings.of(config)
    now = datetime.datetime.now(datetime.UTC)
    if not config.acme.enabled:
        click.echo(f"acme: off (set [acme] enabled = true in {config.path})")
    else:
        click.echo(f"acme: on, directory {config.acme.directory}")
    click.echo(f"names wanted: {', '.join(settings.names)}")
    info = files.installed()
    if info is None:
        click.echo("certificate: none (the server serves [tls] cert or its self-signed one)")
    else:
        click.echo(f"certificate: {files.cert_path}")
        click.echo(f"  names: {', '.join(info.names)}")
        click.echo(f"  issuer: {info.issuer}")
        click.echo(f"  serial: {info.serial:x}")
        click.echo(f"  not after: {_when(info.not_after)}")
    account = files.account()
    if account is not None:
        contact = ", ".join(account.contact) or "none"
        click.echo(f"account: {account.url} (contact {contact})")
    state = files.state()
    reason = renewal_reason(info, settings.names, now)
    if reason is None and info is not None:
        click.echo(f"next renewal: {_when(info.renew_at)}")
    elif state.next_attempt is not None and state.next_attempt > now.timestamp():
        when = datetime.datetime.fromtimestamp(state.next_attempt, datetime.UTC)
        click.echo(f"next renewal: {_when(when)} (after the last failure; {reason})")
    else:
        click.echo(f"next renewal: now ({reason})")
    if state.last_error and state.last_attempt is not None:
        at = datetime.datetime.fromtimestamp(state.last_attempt, datetime.UTC)
        click.echo(f"last error: {state.last_error} ({_when(at)}, {state.failures} in a row)")
    else:
        click.echo("last error: none")


@acme.command("renew")
@click.option(
    "--force", is_flag=True, help="Order a certificate even when the one installed is good."
)
@click.pass_context
def renew_command(ctx: click.Context, force: bool) -> None:
    """Order a certificate now when one is due (or always, with --force). The running server
    answers the CA's http-01 requests and serves the new certificate within seconds."""
    config = load(ctx)
    if not config.acme.enabled:
        raise CliError(f"ACME is off; set [acme] enabled = true in {config.path}")
    if config.acme.challenge == TLS_ALPN_01:
        raise CliError(
            f"[acme] challenge in {config.path} is tls-alpn-01, which only postroom serve "
            'answers (it renews when due); set challenge = "http-01" to order from here'
        )
    files = AcmeFiles(config.data_dir)
    settings = AcmeSettings.of(config)
    try:
        # First, outside the backoff's count: a server that is not running is no failed order.
        check_http_answers(settings, files.challenges)
        info = renew(settings, files, force=force)
    except (AcmeError, AcmeBusy) as error:
        raise CliError(f"{error} (the certificate in use is kept)") from None
    except OSError as error:
        raise CliError(_file_problem(error, config)) from None
    if info is None:
        current = files.installed()
        assert current is not None
        click.echo(
            f"the certificate is good until {_when(current.not_after)}; renewal is due "
            f"{_when(current.renew_at)} (--force orders one now)"
        )
        return
    click.echo(
        f"installed a certificate for {', '.join(info.names)}: serial {info.serial:x}, "
        f"issuer {info.issuer}, not after {_when(info.not_after)}; a running server serves "
        f"it within {CHECK_EVERY:g} seconds"
    )


def _file_problem(error: OSError, config: Config) -> str:
    return (
        f"{error.filename}: {error.strerror} (data_dir is set in {config.path}; run the "
        "command as the user postroom serve runs as)"
    )
