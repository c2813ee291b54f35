"""`postroom dns records DOMAIN`: the DNS records a local domain needs, as master-file lines.

The output is zone-file text for an operator to copy into their DNS (or `$INCLUDE`): the MX,
SPF, DKIM (making the domain's first keys if it has none), DMARC, TLS-RPT and RFC 6186 SRV
records, with comments for what the machine cannot know. See services/dns_records.py.
"""

from __future__ import annotations

import time

import click

from postroom.cli.common import load, open_store
from postroom.cli.dkim import ensure_local_keys, local_domain
from postroom.config import Config
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
    MX, SPF, DKIM, DMARC, TLS-RPT, SRV for mail clients, and as comments the A/AAAA/PTR
    records of the host name that only its owner knows."""
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
    ports = {service: endpoint.port for service, endpoint in config.listen.enabled().items()}
    relay = config.relay.host.host if config.relay.host is not None else None
    return list(zone_lines(domain, config.hostname, ports, keys, relay=relay))
