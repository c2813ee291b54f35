"""`postroom spam train|status|score`: a user's built-in junk filter from the command line.

`spam train ADDRESS --spam|--ham PATH...` counts messages as spam or ham for the user, as
moving them into or out of Junk over IMAP does: each PATH is a message file, a Maildir (its
`cur/` and `new/`), or a directory of message files. Training a message again changes nothing;
training it the other way moves its counts. `spam status ADDRESS` prints what the user trained;
`spam score ADDRESS FILE` the RFC 5235 score the filter gives FILE now (0: too little training).
The server picks up the CLI's training within a minute (services/junk_filter.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click

from postroom.cli.common import CliError, load, open_store, user_id_of
from postroom.junk.bayes import MIN_TRAINED
from postroom.junk.tokens import message_tokens
from postroom.services.junk_filter import copy_auth, score_of, train_message

MAX_MESSAGE = 64 * 2**20  # bytes: a file larger than this is no message to learn from


def message_files(path: Path) -> Iterator[Path]:
    """The message files PATH names: itself, a Maildir's cur/ and new/, or a directory's files
    (sorted, hidden ones skipped)."""
    if path.is_file():
        yield path
        return
    if not path.is_dir():
        raise CliError(f"{path}: no such file or directory")
    folders = [path / "cur", path / "new"] if (path / "cur").is_dir() else [path]
    for folder in folders:
        if folder.is_dir():
            for entry in sorted(folder.iterdir()):
                if entry.is_file() and not entry.name.startswith("."):
                    yield entry


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_MESSAGE:
            raise CliError(f"{path}: larger than {MAX_MESSAGE // 2**20} MiB, not a message")
        return path.read_bytes()
    except OSError as error:
        raise CliError(f"{path}: {error.strerror}") from None


@click.group()
def spam() -> None:
    """The built-in junk filter of each user."""


@spam.command("train")
@click.argument("address")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--spam", "as_spam", flag_value=True, default=None, help="The messages are spam.")
@click.option("--ham", "as_spam", flag_value=False, help="The messages are not spam.")
@click.pass_context
def spam_train(
    ctx: click.Context, address: str, paths: tuple[Path, ...], as_spam: bool | None
) -> None:
    """Train ADDRESS's junk filter with the messages in PATHS (files, Maildirs, directories)."""
    if as_spam is None:
        raise CliError("say what the messages are: --spam or --ham")
    config = load(ctx)
    files = [file for path in paths for file in message_files(path)]
    learned = 0
    with open_store(config) as store, store.transaction() as tx:
        user_id = user_id_of(tx, address)
        for file in files:
            learned += train_message(
                tx, user_id, _read(file), spam=as_spam, hostname=config.hostname
            )
        ham, spam_total = tx.junk.totals(user_id)
    kind = "spam" if as_spam else "ham"
    click.echo(
        f"{address}: {learned} of {len(files)} messages learned as {kind}"
        f" (trained: {ham} ham, {spam_total} spam)"
    )


@spam.command("status")
@click.argument("address")
@click.option("--json", "as_json", is_flag=True, help="A JSON object.")
@click.pass_context
def spam_status(ctx: click.Context, address: str, as_json: bool) -> None:
    """How many ham and spam messages ADDRESS trained, and whether the filter judges yet."""
    config = load(ctx)
    with open_store(config) as store:
        tx = store.reader()
        ham, spam_total = tx.junk.totals(user_id_of(tx, address))
    judging = ham >= MIN_TRAINED and spam_total >= MIN_TRAINED
    if as_json:
        click.echo(
            json.dumps({"address": address, "ham": ham, "spam": spam_total, "judging": judging})
        )
        return
    state = "judging" if judging else f"not judging yet (needs {MIN_TRAINED} of each)"
    click.echo(f"{address}: trained {ham} ham, {spam_total} spam; {state}")


@spam.command("score")
@click.argument("address")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def spam_score(ctx: click.Context, address: str, file: Path) -> None:
    """The spam score (RFC 5235: 1 ham ... 10 spam; 0 not judged) ADDRESS's filter gives FILE."""
    config = load(ctx)
    message = _read(file)
    with open_store(config) as store:
        tx = store.reader()
        tokens = message_tokens(message, copy_auth(message, config.hostname))
        click.echo(str(score_of(tx, user_id_of(tx, address), lambda: tokens)))
