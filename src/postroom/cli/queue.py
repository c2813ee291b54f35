"""`postroom queue list|show|retry|hold|release|delete`: inspect and steer the mail queue."""

from __future__ import annotations

import time

import click
from rich.console import Console
from rich.table import Table

from postroom.cli.common import CliError, load, open_store
from postroom.services.cleanup import header_block
from postroom.storage.records import MessageTrace


def _age(arrival: float) -> str:
    seconds = max(0, int(time.time() - arrival))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _clock(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


@click.group()
def queue() -> None:
    """Inspect and steer the mail queue."""


@queue.command("list")
@click.pass_context
def queue_list(ctx: click.Context) -> None:
    """List queued messages with each recipient's state."""
    config = load(ctx)
    with open_store(config) as store:
        entries = store.reader().queue.entries()
    if not entries:
        click.echo("queue is empty")
        return
    table = Table("ID", "age", "size", "sender", "recipients", "next attempt", "last reply")
    for entry in entries:
        recipients = entry.recipients
        lines = [f"{r.address} ({r.state})" for r in recipients]
        next_attempt = min(r.next_attempt for r in recipients)
        table.add_row(
            entry.id,
            _age(entry.arrival),
            str(entry.size),
            f"<{entry.sender}>",
            "\n".join(lines),
            time.strftime("%H:%M:%S", time.localtime(next_attempt)),
            "\n".join(r.last_reply for r in recipients),
        )
    Console(width=200).print(table)


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
            f" next={_clock(rcpt.next_attempt)} last={rcpt.last_reply or '-'}"
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
    click.echo(
        f"client: {trace.client_addr} helo={trace.client_helo} protocol={trace.protocol}"
    )
    if trace.auth_user:
        click.echo(f"authenticated: {trace.auth_user}")
    click.echo("history:")
    for event in trace.events:
        relay = f" relay={event.relay}" if event.relay else ""
        click.echo(
            f"  {_clock(event.time)} <{event.recipient}> {event.event}{relay} {event.reply}"
        )
