"""`postroom doctor [DOMAIN] [--json]`: what breaks deliverability, and how to fix each.

The checks are services/doctor.py's (DNS through `[dns] nameservers`, the certificate, the
listeners, the open-relay self-test, disk and queue); this prints them, one line each with
its fix on the next, or as a JSON array. Exit status 0 when none failed (warnings allowed),
1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import time

import click

from postroom.cli.common import load, open_store
from postroom.cli.dkim import local_domain
from postroom.dns.lookup import CachingLookup, ResolverLookup
from postroom.net.certificates import acme_pair_in_use, wanted_names
from postroom.services.doctor import Doctor, read_facts
from postroom.services.doctor_local import CertificateSource, HttpsPolicyFetch
from postroom.services.doctor_report import STATUSES, Check

DNS_TIMEOUT = 5.0  # seconds for one DNS question
LABELS = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skip": "skip"}


def _lines(check: Check) -> list[str]:
    lines = [f"{LABELS[check.status]:<5} {check.name}: {check.detail}"]
    if check.fix and check.status != "ok":
        lines.append(f"{'':<5} fix: {check.fix}")
    return lines


def summary(checks: list[Check]) -> str:
    counts = {status: sum(c.status == status for c in checks) for status in STATUSES}
    return (
        f"{counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed, "
        f"{counts['skip']} skipped"
    )


@click.command()
@click.argument("domain", required=False)
@click.option("--json", "as_json", is_flag=True, help="A JSON array, one object per check.")
@click.pass_context
def doctor(ctx: click.Context, domain: str | None, as_json: bool) -> None:
    """Check what breaks deliverability of DOMAIN (default: every local domain) and say how
    to fix each: MX, A/AAAA and PTR of the host name, SPF, DKIM, DMARC, TLS-RPT, MTA-STS,
    the certificate, the listeners, DNS block lists, the open-relay self-test, disk space and
    the queue. DNS is asked through [dns] nameservers. Exit status 0 when nothing failed
    (warnings allowed), 1 otherwise."""
    config = load(ctx)
    domains = [local_domain(config, domain)] if domain else list(config.domains)
    now = time.time()
    with open_store(config) as store:
        facts = read_facts(store.reader(), domains, now)
    lookup = CachingLookup(ResolverLookup(config.dns.nameservers, timeout=DNS_TIMEOUT))
    served = CertificateSource.of(
        config, acme_pair_in_use(config), wanted_names(config.hostname, config.domains)
    )
    checker = Doctor(
        config, lookup, facts, domains, HttpsPolicyFetch(lookup), now=now, certificate=served
    )
    checks = asyncio.run(checker.run())
    if as_json:
        click.echo(json.dumps([check.as_json() for check in checks], indent=2))
    else:
        for check in checks:
            for line in _lines(check):
                click.echo(line)
        click.echo(summary(checks))
    if any(check.status == "fail" for check in checks):
        ctx.exit(1)
