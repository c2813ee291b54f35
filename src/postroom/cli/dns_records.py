"""`postroom dns records DOMAIN`: the DNS records a local domain needs, as master-file lines.

The output is zone-file text for an operator to copy into their DNS (or `$INCLUDE`): the MX,
SPF, DKIM (making the domain's first keys if it has none), DMARC, TLS-RPT, MTA-STS (its id from
the policy the server serves with the certificate it has: net/tls_trust.py) and RFC 6186 SRV
records, with comments for what the machine cannot know. See services/dns_records.py.
"""

from __future__ import annotations

import time

import click

from postroom.cli.common import CliError, load, open_store
from postroom.cli.dkim import ensure_local_keys, local_domain
from postroom.config import Config
from postroom.net.certificates import tls_context
from postroom.net.tls import TlsSetupError
from postroom.net.tls_trust import client_context, served_policy
from postroom.services import dkim_keys
from postroom.services.dns_records import zone_lines
from postroom.storage.api import DirectStore


@click.group()
def dns() -> None:
    """What to publish in DNS for the local domains."""


@dns.command("records")
@click.argument("domain")
@click.pass_context
def dns_records(ctx: click.Context, domain: str) -> None:
    """Print the DNS records DOMAIN needs, in RFC 1035 master-file syntax (absolute names):
    MX, SPF, DKIM, DMARC, TLS-RPT, MTA-STS, SRV for mail clients, the web names, and as
    comments the A/AAAA/PTR records of the host name that only its owner knows."""
    config = load(ctx)
    name = local_domain(config, domain)
    with open_store(config) as store:
        lines = records(config, store, name, time.time())
    for line in lines:
        click.echo(line)


def records(config: Config, store: DirectStore, domain: str, now: float) -> list[str]:
    """The master-file lines of a local domain (its first DKIM keys made when missing)."""
    ensure_local_keys(store, [domain], now)
    keys = dkim_keys.published_keys(store.reader(), domain, now)
    ports = {service: ends[0].port for service, ends in config.listen.enabled().items()}
    relay = config.relay.host.host if config.relay.host is not None else None
    policy = None
    if ports.get("https"):
        try:
            served = tls_context(config)  # the certificate `serve` presents
        except TlsSetupError as error:
            raise CliError(str(error)) from None
        client = client_context(config.acme.ca_file)
        policy, _ = served_policy(served, config.hostname, domain, client)
    return list(zone_lines(domain, config.hostname, ports, keys, relay=relay, mta_sts=policy))
