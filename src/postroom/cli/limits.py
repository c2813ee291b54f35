"""`postroom limits show|clear`: the abuse defences' blocks and the sending counts.

`show` prints one tab-separated line per block (`block KIND CLIENT ACCOUNT UNTIL REASON`,
`*` for any client or account, UNTIL RFC 3339 local time) and per user's count of the current
hour (`sent ACCOUNT MESSAGES/LIMIT RECIPIENTS/LIMIT WINDOW-END`), `--json` an object
`{blocks: [...], sending: [...]}` with times in Unix seconds. What a running server changed in
the last second may not be there yet (it writes behind). `clear` removes the blocks of an
address, network or account and that account's count, and tells a running server.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import time

import click

from postroom.cli.common import CliError, load, open_store
from postroom.services.limits import SENDING_WINDOW, client_network, login_client
from postroom.storage.records import Block, SendingCount, normalize_address


def _when(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment).astimezone().isoformat(timespec="seconds")


def _subject(text: str) -> tuple[str | None, list[str]]:
    """An account (with "@"), or the client keys of an address or network; a one-line error
    for anything else."""
    text = text.strip()
    if "@" in text:
        return normalize_address(text), []
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise CliError(
            f"{text!r} is neither an address (user@domain) nor an IP address or network"
        ) from None
    if network.num_addresses == 1:
        address = str(network.network_address)
        return None, sorted({address, login_client(address), client_network(address)})
    return None, [str(network)]


def _matches(block: Block, account: str | None, clients: list[str]) -> bool:
    return (account is not None and block.account == account) or block.client in clients


@click.group()
def limits() -> None:
    """Blocks (login and recipient guessing) and sending counts (show, clear)."""


@limits.command("show")
@click.argument("address", required=False)
@click.option("--json", "as_json", is_flag=True, help="A JSON object: blocks and sending.")
@click.pass_context
def limits_show(ctx: click.Context, address: str | None, as_json: bool) -> None:
    """Blocks in force and this hour's sending counts (of ADDRESS only: a user, an IP
    address or a network)."""
    config = load(ctx)
    now = time.time()
    with open_store(config) as store:
        reader = store.reader()
        blocks = reader.abuse.blocks(now)
        counts = [c for c in reader.abuse.sending_counts() if now - c.window_start < SENDING_WINDOW]
    if address is not None:
        account, clients = _subject(address)
        blocks = [b for b in blocks if _matches(b, account, clients)]
        counts = [c for c in counts if c.account == account]
    per_hour = (config.limits.messages_per_hour, config.limits.recipients_per_hour)
    if as_json:
        click.echo(json.dumps(_as_json(blocks, counts, per_hour), indent=2))
        return
    for b in blocks:
        fields = (b.kind, b.client or "*", b.account or "*", _when(b.until), b.reason)
        click.echo("block\t" + "\t".join(fields))
    for c in counts:
        click.echo(
            f"sent\t{c.account}\t{c.messages}/{per_hour[0]}\t{c.recipients}/{per_hour[1]}"
            f"\t{_when(c.window_start + SENDING_WINDOW)}"
        )


def _as_json(
    blocks: list[Block], counts: list[SendingCount], per_hour: tuple[int, int]
) -> dict[str, object]:
    return {
        "blocks": [
            {
                "kind": b.kind,
                "client": b.client or None,
                "account": b.account or None,
                "until": int(b.until),
                "reason": b.reason,
            }
            for b in blocks
        ],
        "sending": [
            {
                "account": c.account,
                "messages": c.messages,
                "messages_limit": per_hour[0],
                "recipients": c.recipients,
                "recipients_limit": per_hour[1],
                "window_end": int(c.window_start + SENDING_WINDOW),
            }
            for c in counts
        ],
    }


@limits.command("clear")
@click.argument("address", required=False)
@click.option("--all", "everything", is_flag=True, help="Every block and every count.")
@click.pass_context
def limits_clear(ctx: click.Context, address: str | None, everything: bool) -> None:
    """Lift the blocks of ADDRESS (a user, an IP address or a network) and forget the user's
    sending count; a running server follows at its next check."""
    if (address is None) == (not everything):
        raise CliError("limits clear: give an ADDRESS or --all (not both)")
    config = load(ctx)
    with open_store(config) as store:
        with store.transaction() as tx:
            if everything:
                blocks = tx.abuse.clear_blocks()
                counts = tx.abuse.clear_sending_counts()
            else:
                assert address is not None
                account, clients = _subject(address)
                blocks = counts = 0
                if account is not None:
                    blocks += tx.abuse.clear_blocks(account=account)
                    counts += tx.abuse.clear_sending_counts(account)
                for client in clients:
                    blocks += tx.abuse.clear_blocks(client=client)
        store.signals.mark("limits")
    click.echo(
        f"cleared {blocks} block{'s' * (blocks != 1)}, {counts} sending count{'s' * (counts != 1)}"
    )
