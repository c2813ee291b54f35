"""One-line usage errors for every `postroom` subcommand.

click answers an unknown option, a missing argument or a bad value with a usage block and exit
status 2; postroom answers every error with one line on stderr and exit status 1. The top-level
group parses the whole command line (its own options, then each subcommand's inside its
`invoke`), so converting there covers every subcommand. `--help` is untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import click
from click.exceptions import NoArgsIsHelpError

from postroom.cli.common import CliError


def usage_line(error: click.UsageError) -> str:
    """`queue show: missing argument 'MESSAGE_ID' (see 'postroom queue show --help')`."""
    ctx = error.ctx
    if isinstance(error, NoArgsIsHelpError) and isinstance(error.ctx.command, click.Group):
        commands = error.ctx.command.list_commands(error.ctx)
        message = f"missing command, one of: {', '.join(commands)}"
    else:
        message = " ".join(error.format_message().split()).rstrip(".")
        if message[:1].isupper() and message[1:2].islower():
            message = message[0].lower() + message[1:]
    if ctx is None:
        return message
    path = ctx.command_path
    where = path.partition(" ")[2]
    return f"{where + ': ' if where else ''}{message} (see '{path} --help')"


@contextlib.contextmanager
def one_line_usage() -> Iterator[None]:
    try:
        yield
    except click.UsageError as error:
        raise CliError(usage_line(error)) from None


class OneLineUsageGroup(click.Group):
    """A click group whose usage errors, and its subcommands', are one `CliError` line."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with one_line_usage():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_usage():
            return super().invoke(ctx)
