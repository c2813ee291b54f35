"""`postroom queue list`: what is waiting in the queue, per recipient."""

from __future__ import annotations

import time

import click
from rich.console import Console
from rich.table import Table

from postroom.cli.main import database, load


def _age(arrival: float) -> str:
    seconds = max(0, int(time.time() - arrival))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@click.group()
def queue() -> None:
    """Inspect the mail queue."""


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
