"""`postroom queue list|show|retry|hold|release|delete`: inspect and steer the mail queue."""

from __future__ import annotations

import time

import click
from rich.console import Console
from rich.table import Table

from postroom.cli.common import CliError, database, load
from postroom.services.cleanup import header_block
from postroom.storage import queue_control
from postroom.storage.database import QUEUE_STAMP, touch_stamp, unlink_quietly


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
    with database(config) as db:
        entries = db.queue_summary()
    if not entries:
        click.echo("queue is empty")
        return
    table = Table("ID", "age", "size", "sender", "recipients", "next attempt", "last reply")
    for entry in entries:
        recipients = entry["recipients"]
        assert isinstance(recipients, list)
        lines = [f"{r['address']} ({r['state']})" for r in recipients]
        next_attempt = min(float(r["next_attempt"]) for r in recipients)
        table.add_row(
            str(entry["id"]),
            _age(float(str(entry["arrival"]))),
            str(entry["size"]),
            f"<{entry['sender']}>",
            "\n".join(lines),
            time.strftime("%H:%M:%S", time.localtime(next_attempt)),
            "\n".join(str(r["last_reply"]) for r in recipients),
        )
    Console(width=200).print(table)


@queue.command("show")
@click.argument("message_id")
@click.pass_context
def queue_show(ctx: click.Context, message_id: str) -> None:
    """Show one entry: envelope, headers and each recipient's attempts."""
    config = load(ctx)
    with database(config) as db:
        message = queue_control.require_message(db, message_id)
        content = message.prefix + db.read_blob(message.blob_id, config.data_dir / "blobs")
        history = queue_control.attempts(db, message.id)
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
        for attempt in history:
            if attempt.recipient == rcpt.address:
                click.echo(f"    {_clock(attempt.when)} {attempt.reply}")
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
    with database(config) as db, db.transaction():
        count = queue_control.retry(db, message_id)
    touch_stamp(config.data_dir, QUEUE_STAMP)
    click.echo(f"{count} recipient(s) due now")


@queue.command("hold")
@click.argument("message_id")
@click.pass_context
def queue_hold(ctx: click.Context, message_id: str) -> None:
    """Keep a message in the queue without delivery attempts."""
    config = load(ctx)
    with database(config) as db, db.transaction():
        count = queue_control.hold(db, message_id)
    click.echo(f"held {message_id.upper()} ({count} recipient(s))")


@queue.command("release")
@click.argument("message_id")
@click.pass_context
def queue_release(ctx: click.Context, message_id: str) -> None:
    """Release a held message: its recipients are due at once."""
    config = load(ctx)
    with database(config) as db, db.transaction():
        count = queue_control.release(db, message_id)
    touch_stamp(config.data_dir, QUEUE_STAMP)
    click.echo(f"released {message_id.upper()} ({count} recipient(s))")


@queue.command("delete")
@click.argument("message_id")
@click.pass_context
def queue_delete(ctx: click.Context, message_id: str) -> None:
    """Remove a message from the queue (no report is sent)."""
    config = load(ctx)
    with database(config) as db:
        with db.transaction():
            path = queue_control.delete(db, message_id)
        if path:
            unlink_quietly(config.data_dir / "blobs" / path)
    click.echo(f"deleted {message_id.upper()}")
