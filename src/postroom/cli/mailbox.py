"""`postroom mailbox status|export`: look into and export a user's mailbox."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

from postroom.cli.common import CliError, database, load
from postroom.services.export import write_maildir, write_mbox
from postroom.storage.database import Database, StoredMessage

PROGRESS_THRESHOLD = 200  # messages; smaller exports finish before a bar would be useful


@click.group()
def mailbox() -> None:
    """Inspect and export mailboxes."""


@mailbox.command("status")
@click.argument("address")
@click.option("--mailbox", "name", default="INBOX", show_default=True)
@click.pass_context
def status(ctx: click.Context, address: str, name: str) -> None:
    """Print messages=N unseen=N size=N for a mailbox."""
    config = load(ctx)
    with database(config) as db:
        result = db.mailbox_status(address, name)
    click.echo(
        f"{address.lower()} {name} messages={result.messages} unseen={result.unseen} "
        f"size={result.size}"
    )


@mailbox.command("export")
@click.argument("address")
@click.option("--mailbox", "name", default="INBOX", show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["mbox", "maildir"]), default="mbox", show_default=True
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="File (mbox) or directory (maildir); mbox goes to stdout when omitted.",
)
@click.pass_context
def export(ctx: click.Context, address: str, name: str, fmt: str, output: Path | None) -> None:
    """Export a mailbox as mbox (mboxrd quoting) or Maildir."""
    config = load(ctx)
    if fmt == "maildir" and output is None:
        raise CliError("--format maildir needs --output DIRECTORY")
    with database(config) as db:
        messages = db.mailbox_messages(address, name)
        items = _contents(db, config.data_dir / "blobs", messages)
        if len(messages) >= PROGRESS_THRESHOLD and sys.stderr.isatty():
            items = _with_progress(items, len(messages))
        if fmt == "maildir":
            assert output is not None
            count = write_maildir(output, items)
        elif output is None:
            count = write_mbox(sys.stdout.buffer, items)
            sys.stdout.buffer.flush()
        else:
            with output.open("wb") as handle:
                count = write_mbox(handle, items)
    if output is not None:
        click.echo(f"exported {count} messages to {output}", err=True)


def _contents(
    db: Database, blob_dir: Path, messages: list[StoredMessage]
) -> Iterator[tuple[StoredMessage, bytes]]:
    for message in messages:
        yield message, message.prefix + db.read_blob(message.blob_id, blob_dir)


def _with_progress(
    items: Iterator[tuple[StoredMessage, bytes]], total: int
) -> Iterator[tuple[StoredMessage, bytes]]:
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("exporting", total=total)
        for item in items:
            yield item
            progress.advance(task)
