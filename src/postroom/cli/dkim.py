"""`postroom dkim list|rotate|promote`: the DKIM keys of the local domains.

A local domain's first keys are made by whichever command needs them first (these, `dns
records`, the server), active at once. `list` prints a table on a terminal and one
tab-separated line per key into a pipe (DOMAIN SELECTOR ALGORITHM CREATED STATE), JSON with
`--json`; the private keys are never printed. `rotate` announces a new pair and prints the
records to publish; `promote` activates announced keys whose records DNS shows (the server
does it on its own as well).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
import time
from collections.abc import Iterable, Sequence

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from postroom.cli.common import CliError, load, open_store
from postroom.config import Config
from postroom.dns.lookup import ResolverLookup
from postroom.services import dkim_keys
from postroom.services.dkim_keys import KeyChange
from postroom.services.dns_records import dkim_line
from postroom.storage.api import DirectStore
from postroom.storage.records import DkimKey


def local_domain(config: Config, text: str) -> str:
    """The domain named on the command line, as the config spells its domains; a one-line
    error naming the fix when it is not one of them."""
    name = text.strip().lower().removesuffix(".")
    if name and not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise CliError(f"{text!r} is not a valid domain name") from None
    if name not in config.domains:
        raise CliError(
            f"{text} is not a local domain; add it to 'domains' in {config.path} "
            f"(local: {', '.join(config.domains)})"
        )
    return name


def ensure_local_keys(store: DirectStore, domains: Iterable[str], now: float) -> list[DkimKey]:
    """Make the missing keys of `domains`: generated before the transaction that inserts them,
    so the store (a running server's writer too) never waits for RSA."""
    created: list[DkimKey] = []
    for domain in domains:
        missing = dkim_keys.missing_algorithms(store.reader(), domain)
        if missing:
            pairs = dkim_keys.generate_pairs(missing)
            with store.transaction() as tx:
                created += dkim_keys.ensure_keys(tx, domain, now, pairs)
    if created:
        store.signals.mark("dkim")
    return created


def _day(moment: float) -> str:
    """ISO 8601 date, UTC (the date in a selector is UTC too)."""
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%d")


def _as_json(key: DkimKey) -> dict[str, object]:
    """Stable keys; times are Unix seconds, as in `queue list --json`. No private key."""
    return {
        "domain": key.domain,
        "selector": key.selector,
        "algorithm": key.algorithm,
        "created": int(key.created),
        "state": key.state,
        "state_changed": int(key.state_changed),
        "record": dkim_keys.key_record(key),
    }


def _print_table(keys: Sequence[DkimKey]) -> None:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("domain", "selector", "algorithm", "created", "state"):
        table.add_column(column, overflow="fold")
    for key in keys:
        cells = (key.domain, key.selector, key.algorithm, _day(key.created), key.state)
        table.add_row(*(Text(cell) for cell in cells))
    Console().print(table)


def describe(change: KeyChange) -> str:
    key = change.key
    what = {
        "created": "created, active: signs from now on",
        "announced": "announced: publish its record; it signs once the record is seen in DNS",
        "activated": "its record is in DNS: active, signs from now on",
        "retired": "retired: signs no more; keep its record published for a week",
        "dropped": "dropped (announced, never signed)",
        "deleted": "deleted (retired a week ago)",
    }[change.action]
    return f"{key.domain}: {key.selector} ({key.algorithm}) {what}"


@click.group()
def dkim() -> None:
    """DKIM keys of the local domains (list, rotate, promote)."""


@dkim.command("list")
@click.argument("domain", required=False)
@click.option("--json", "as_json", is_flag=True, help="A JSON array, one object per key.")
@click.pass_context
def dkim_list(ctx: click.Context, domain: str | None, as_json: bool) -> None:
    """List DKIM keys: domain, selector, algorithm, created (UTC date), state.

    State: active (signs), announced (published, signs once seen in DNS), retired (signs no
    more, published for a week). A local domain without keys gets its first ones now.
    On a terminal: a table. Otherwise one tab-separated line per key.
    """
    config = load(ctx)
    domains = [local_domain(config, domain)] if domain else list(config.domains)
    with open_store(config) as store:
        ensure_local_keys(store, domains, time.time())
        keys = store.reader().dkim_keys.keys(domains[0] if domain else None)
    if as_json:
        click.echo(json.dumps([_as_json(key) for key in keys], indent=2))
    elif not sys.stdout.isatty():
        for key in keys:
            fields = (key.domain, key.selector, key.algorithm, _day(key.created), key.state)
            click.echo("\t".join(fields))
    elif keys:
        _print_table(keys)


@dkim.command("rotate")
@click.argument("domain")
@click.option(
    "--now",
    "now_active",
    is_flag=True,
    help="Sign with the new keys at once (receivers that cannot find them yet fail DKIM).",
)
@click.pass_context
def dkim_rotate(ctx: click.Context, domain: str, now_active: bool) -> None:
    """Make a new key pair (ed25519 and RSA) for DOMAIN and print its records.

    The new pair is announced: the current keys keep signing until its records are seen in
    DNS (the server checks, or `postroom dkim promote`), then they retire and stay published
    for a week. With --now the new pair signs at once and the current one retires now.
    """
    config = load(ctx)
    name = local_domain(config, domain)
    now = time.time()
    with open_store(config) as store:
        created = ensure_local_keys(store, [name], now)
        pairs = dkim_keys.generate_pairs()
        with store.transaction() as tx:
            changes = dkim_keys.rotate(tx, name, now, now_active=now_active, pairs=pairs)
        store.signals.mark("dkim")  # every running node reads its signing keys again
    for key in created:
        click.echo(describe(KeyChange("created", key)) + " (first keys)")
    for change in changes:
        click.echo(describe(change))
    new = [c.key for c in changes if c.action in ("created", "announced")]
    click.echo("Publish (`postroom dns records` prints every record the domain needs):")
    for key in new:
        click.echo(dkim_line(key))


@dkim.command("promote")
@click.pass_context
def dkim_promote(ctx: click.Context) -> None:
    """Activate announced keys whose records DNS shows; delete keys retired a week ago.

    The server does this on its own from time to time; this does it now, asking the
    [dns] nameservers (or the system's resolver).
    """
    config = load(ctx)
    now = time.time()
    lookup = ResolverLookup(config.dns.nameservers)
    with open_store(config) as store:
        work = dkim_keys.promotion_work(store.reader(), now)
        sighting = asyncio.run(dkim_keys.seen_in_dns(lookup, work.announced))
        changes: list[KeyChange] = []
        if sighting.seen or work.expired:
            with store.transaction() as tx:
                changes = dkim_keys.apply_promotions(tx, sighting.seen, now)
            if changes:
                store.signals.mark("dkim")
    for change in changes:
        click.echo(describe(change))
    seen = {(k.domain, k.selector) for k in sighting.seen}
    unanswered = {(k.domain, k.selector) for k in sighting.unanswered}
    for key in work.announced:
        where = f"{key.domain}: {key.selector} ({key.algorithm}) announced"
        name = dkim_keys.record_name(key)
        if (key.domain, key.selector) in unanswered:
            click.echo(f"{where}, DNS did not answer for {name}: try again later")
        elif (key.domain, key.selector) not in seen:
            click.echo(f"{where}, its record is not in DNS yet at {name}")
    if not changes and not work.announced:
        click.echo("nothing to do: no announced keys, no retired key past its week")
