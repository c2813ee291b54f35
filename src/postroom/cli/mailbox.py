"""`postroom mailbox status|export`: look into and export a user's mailbox."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

from postroom.cli.common import CliError, load, open_store
from postroom.services.export import write_maildir, write_mbox
from postroom.storage.api import Tx
from postroom.storage.records import StoredMessage, StoreError

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
    with open_store(config) as store:
        tx = store.reader()
        result = tx.mailboxes.status(_mailbox_id(tx, address, name))
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
    unreadable: list[int] = []
    with open_store(config) as store:
        tx = store.reader()
        messages = tx.messages.stored(_mailbox_id(tx, address, name))
        items = _contents(tx, messages, unreadable)
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
    if unreadable:
        uids = " ".join(str(uid) for uid in unreadable)
        raise CliError(
            f"{len(unreadable)} of {len(messages)} messages could not be read and were left"
            f" out (UIDs {uids}); the rest was exported"
        )


def _mailbox_id(tx: Tx, address: str, name: str) -> int:
    user = tx.accounts.get_user(address)
    if user is None:
        raise CliError(f"no user {address}")
    info = tx.mailboxes.find(user.id, name)
    if info is None:
        raise CliError(f"{address} has no mailbox {name}")
    return info.id


def _contents(
    tx: Tx, messages: list[StoredMessage], unreadable: list[int]
) -> Iterator[tuple[StoredMessage, bytes]]:
    """Each message with its content; one that cannot be read (a damaged store) is reported
    on stderr, noted in `unreadable` and skipped, so the others are still exported."""
    for message in messages:
        try:
            content = tx.blobs.read(message.blob_id)
        except StoreError as error:
            click.echo(f"postroom: warning: UID {message.uid}: {error}", err=True)
            unreadable.append(message.uid)
            continue
        yield message, message.prefix + content


def _with_progress(
    items: Iterator[tuple[StoredMessage, bytes]], total: int
) -> Iterator[tuple[StoredMessage, bytes]]:
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("exporting", total=total)
        for item in items:
            yield item
            progress.advance(task)
