"""`postroom trace ID|MESSAGE-ID|ADDRESS [--json]`: what happened to a message, as a timeline.

Prints, for each message the query names (newest first, at most 50): how it was received (the
client, HELO, protocol, TLS, the user who logged in, the inbound checks and their verdict), the
envelope, then one line per event in time order: local deliveries (the mailbox), every remote
attempt (MX host and address, TLS, the reply, the next attempt) and the reports sent. Times are
RFC 3339 in local time, as `queue show` prints them. `--json` prints a list of the traces
(`services.trace.MessageTrace.to_json`); a query that names nothing is a one-line error.
"""

from __future__ import annotations

import datetime
import json

import click

from postroom.cli.common import CliError, load, open_store
from postroom.services.trace import MessageTrace, RecipientTrace, Step, find


def _clock(moment: float) -> str:
    when = datetime.datetime.fromtimestamp(moment).astimezone()
    return when.isoformat(timespec="seconds")


@click.command("trace")
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Print the traces as JSON.")
@click.pass_context
def trace(ctx: click.Context, query: str, as_json: bool) -> None:
    """Show what happened to a message: QUERY is a queue ID, a Message-ID or an address
    (sender or recipient; the newest 50 messages)."""
    config = load(ctx)
    with open_store(config) as store:
        traces = find(store.reader(), query)
    if not traces:
        raise CliError(f"no message found for {query!r} (queue ID, Message-ID or address)")
    if as_json:
        click.echo(json.dumps([t.to_json() for t in traces], indent=2, ensure_ascii=False))
        return
    for index, found in enumerate(traces):
        if index:
            click.echo("")
        _print(found)


def _print(trace: MessageTrace) -> None:
    received = trace.received
    state = "in the queue" if trace.queued else "left the queue"
    message_id = f" {trace.message_id}" if trace.message_id else ""
    click.echo(f"message {trace.queue_id}{message_id} ({state})")
    click.echo(
        f"  received {_clock(trace.arrival)} from {received.client_helo}"
        f" [{received.client_addr}] via {received.protocol}"
    )
    click.echo(f"  tls: {received.tls or 'none'}")
    click.echo(f"  login: {received.auth_user or 'none'}")
    if received.checks or received.verdict:
        click.echo(f"  checks: {received.checks or '-'}; verdict: {received.verdict or '-'}")
    click.echo(f"  from: <{trace.sender}>  size: {trace.size}")
    for rcpt in trace.recipients:
        click.echo(f"  to: {_recipient(rcpt)}")
    lines = [
        (step.time, f"<{rcpt.address}> {_step(step)}")
        for rcpt in trace.recipients
        for step in rcpt.steps
    ]
    lines += [(r.time, f"{r.kind} report to <{r.to}> sent as {r.queue_id}") for r in trace.reports]
    for moment, text in sorted(lines, key=lambda line: line[0]):
        click.echo(f"  {_clock(moment)} {text}")


def _recipient(rcpt: RecipientTrace) -> str:
    where = {True: " local", False: " remote", None: ""}[rcpt.local]
    given = f" (for <{rcpt.original}>)" if rcpt.original != rcpt.address else ""
    upcoming = "" if rcpt.next_attempt is None else f", next attempt {_clock(rcpt.next_attempt)}"
    return f"<{rcpt.address}>{given}{where}: {rcpt.state}{upcoming}"


def _step(step: Step) -> str:
    parts = [step.event]
    if step.mx:
        parts.append(f"mx={step.mx}" + (f" [{step.ip}]" if step.ip else ""))
        parts.append(f"tls={step.tls or 'none'}")
    parts.append(step.reply or "-")
    if step.next_attempt is not None:
        parts.append(f"(next attempt {_clock(step.next_attempt)})")
    return " ".join(parts)
