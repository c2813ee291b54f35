"""`postroom queue list|show|retry|hold|release|delete`: inspect and steer the mail queue.

`queue list` prints a table on a terminal, one tab-separated line per recipient into a pipe
(for grep, awk and cut), and JSON with `--json`. `list` and `show` print a recipient's next
attempt the same way: RFC 3339 local time, `-` when none is scheduled (delivered, failed, held),
and the lease of a recipient being delivered: the node delivering it and when its lease ends
(issue 16 §2; `NODE@TIME` in the tab-separated lines, `-` when none).
"""

from __future__ import annotations

import datetime
import json
import sys
import time

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from postroom.cli.common import CliError, load, open_store
from postroom.model.queue import Recipient
from postroom.services.cleanup import header_block
from postroom.services.queue_view import entry_json, lease_of, next_attempt
from postroom.storage.records import MessageTrace, QueuedRecipientView, QueueEntry


def _age(arrival: float) -> str:
    seconds = max(0, int(time.time() - arrival))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _clock(moment: float) -> str:
    """RFC 3339 in local time with its offset: one word, sortable, unambiguous."""
    when = datetime.datetime.fromtimestamp(moment).astimezone()
    return when.isoformat(timespec="seconds")


def _next_text(rcpt: Recipient | QueuedRecipientView) -> str:
    moment = next_attempt(rcpt)
    return "-" if moment is None else _clock(moment)


def _lease_text(rcpt: Recipient | QueuedRecipientView) -> str:
    lease = lease_of(rcpt)
    return "-" if lease is None else f"{lease.node}@{_clock(lease.until)}"


def _sender(address: str) -> str:
    return address or "<>"


def _print_lines(entries: list[QueueEntry]) -> None:
    """ID ARRIVAL SIZE SENDER RECIPIENT STATE ATTEMPTS NEXT-ATTEMPT LAST-REPLY LEASE,
    tab-separated."""
    for entry in entries:
        head = [entry.id, _clock(entry.arrival), str(entry.size), _sender(entry.sender)]
        for rcpt in entry.recipients:
            reply = " ".join(rcpt.last_reply.split()) or "-"
            fields = [rcpt.address, rcpt.state, str(rcpt.attempts), _next_text(rcpt), reply]
            fields.append(_lease_text(rcpt))
            click.echo("\t".join(head + fields))


def _print_table(entries: list[QueueEntry]) -> None:
    """A table as wide as the terminal; cells fold rather than push it wider. Cells are Text,
    never rich markup: a remote reply's "[192.0.2.1]" must print as it is."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("ID", min_width=17, ratio=1, overflow="fold")
    table.add_column("recipient", ratio=2, overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("next attempt", ratio=2, max_width=25, overflow="fold")
    table.add_column("last reply", ratio=3, overflow="fold")
    for entry in entries:
        sender, age = _sender(entry.sender), _age(entry.arrival)
        head = f"{entry.id}\n{age} {entry.size} B\n{sender}"
        for index, rcpt in enumerate(entry.recipients):
            lease = lease_of(rcpt)
            state = rcpt.state if lease is None else f"{rcpt.state}\nby {lease.node}"
            cells = (rcpt.address, state, _next_text(rcpt), rcpt.last_reply or "-")
            table.add_row(Text(head if index == 0 else ""), *(Text(cell) for cell in cells))
        table.add_section()
    Console().print(table)


@click.group()
def queue() -> None:
    """Inspect and steer the mail queue."""


@queue.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, one object per message.")
@click.pass_context
def queue_list(ctx: click.Context, as_json: bool) -> None:
    """List queued messages with each recipient's state, attempts, next attempt and last reply.

    On a terminal: a table. Otherwise one tab-separated line per recipient: ID, arrival,
    size, sender (<> when null), recipient, state, attempts, next attempt (- when none),
    last reply (- when none), lease (NODE@TIME: the node delivering it now and when its lease
    ends; - when none). Nothing at all when the queue is empty.
    """
    config = load(ctx)
    with open_store(config) as store:
        entries = store.reader().queue.entries()
    if as_json:
        click.echo(json.dumps([entry_json(entry) for entry in entries], indent=2))
    elif not sys.stdout.isatty():
        _print_lines(entries)
    elif entries:
        _print_table(entries)
    else:
        click.echo("queue is empty")


@queue.command("show")
@click.argument("message_id")
@click.pass_context
def queue_show(ctx: click.Context, message_id: str) -> None:
    """Show one entry: envelope, headers and each recipient's attempts (for a message that
    left the queue, its delivery history)."""
    config = load(ctx)
    with open_store(config) as store:
        tx = store.reader()
        message = tx.queue.load(message_id.upper())
        trace = tx.history.trace(message_id)
        if message is None:
            if trace is None:
                raise CliError(f"no queued message {message_id} (and no history of it)")
            _show_trace(trace)
            return
        content = message.prefix + tx.blobs.read(message.blob_id)
    events = trace.events if trace is not None else ()
    env = message.envelope
    click.echo(f"id: {message.id}")
    click.echo(f"arrival: {_clock(env.arrival)}")
    click.echo(f"sender: <{env.sender}>")
    click.echo(f"size: {message.size}")
    click.echo(f"client: {env.client_addr} helo={env.client_helo} protocol={env.protocol}")
    if env.auth_user:
        click.echo(f"authenticated: {env.auth_user}")
    if env.auth:
        click.echo(f"checks: {env.auth}" + (" (to Junk)" if env.junk else ""))
    if env.params_json() != "{}":
        click.echo(f"parameters: {env.params_json()}")
    click.echo("recipients:")
    for rcpt in message.recipients:
        extra = f" (for <{rcpt.original}>)" if rcpt.original != rcpt.address else ""
        if rcpt.notify:
            extra += f" notify={','.join(rcpt.notify)}"
        if rcpt.orcpt:
            extra += f" orcpt={rcpt.orcpt}"
        click.echo(
            f"  <{rcpt.address}>{extra} state={rcpt.state} attempts={rcpt.attempts}"
            f" next={_next_text(rcpt)} last={rcpt.last_reply or '-'}"
            + ("" if lease_of(rcpt) is None else f" lease={_lease_text(rcpt)}")
        )
        for event in events:
            if event.recipient == rcpt.address:
                relay = f" relay={event.relay}" if event.relay else ""
                click.echo(f"    {_clock(event.time)} {event.event}{relay} {event.reply}")
    click.echo("headers:")
    click.echo(header_block(content).decode("utf-8", "replace").rstrip("\r\n"))


@queue.command("retry")
@click.argument("message_id", required=False)
@click.option("--all", "everything", is_flag=True, help="Every waiting message.")
@click.pass_context
def queue_retry(ctx: click.Context, message_id: str | None, everything: bool) -> None:
    """Make a message (or --all) due for delivery now."""
    if bool(message_id) == everything:
        raise CliError("give a message ID or --all")
    config = load(ctx)
    with open_store(config) as store:
        with store.transaction() as tx:
            count = tx.queue.retry(message_id, time.time())
        store.signals.mark("queue")
    click.echo(f"{count} recipient(s) due now")


@queue.command("hold")
@click.argument("message_id")
@click.pass_context
def queue_hold(ctx: click.Context, message_id: str) -> None:
    """Keep a message in the queue without delivery attempts."""
    config = load(ctx)
    with open_store(config) as store, store.transaction() as tx:
        count = tx.queue.hold(message_id)
    click.echo(f"held {message_id.upper()} ({count} recipient(s))")


@queue.command("release")
@click.argument("message_id")
@click.pass_context
def queue_release(ctx: click.Context, message_id: str) -> None:
    """Release a held message: its recipients are due at once."""
    config = load(ctx)
    with open_store(config) as store:
        with store.transaction() as tx:
            count = tx.queue.release(message_id, time.time())
        store.signals.mark("queue")
    click.echo(f"released {message_id.upper()} ({count} recipient(s))")


@queue.command("delete")
@click.argument("message_id")
@click.pass_context
def queue_delete(ctx: click.Context, message_id: str) -> None:
    """Remove a message from the queue (no report is sent)."""
    config = load(ctx)
    with open_store(config) as store, store.transaction() as tx:
        tx.queue.delete(message_id)
    click.echo(f"deleted {message_id.upper()}")


def _show_trace(trace: MessageTrace) -> None:
    """A message no longer queued: how it arrived and what happened to each recipient."""
    click.echo(f"id: {trace.message_id} (no longer queued)")
    click.echo(f"arrival: {_clock(trace.arrival)}")
    click.echo(f"sender: <{trace.sender}>")
    click.echo(f"size: {trace.size}")
    click.echo(f"client: {trace.client_addr} helo={trace.client_helo} protocol={trace.protocol}")
    if trace.auth_user:
        click.echo(f"authenticated: {trace.auth_user}")
    if trace.auth:
        click.echo(f"checks: {trace.auth}")
    click.echo("history:")
    for event in trace.events:
        relay = f" relay={event.relay}" if event.relay else ""
        click.echo(f"  {_clock(event.time)} <{event.recipient}> {event.event}{relay} {event.reply}")
