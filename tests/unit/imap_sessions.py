"""IMAP sessions driven command by command over a real store, for unit tests: a fake wire that
keeps what is written, Alice with two messages in her INBOX, and one command line run."""

from __future__ import annotations

from postroom.proto.imap.grammar import parse_command
from postroom.proto.imap.reader import CommandLine, CommandReader, NeedContinuation
from postroom.services import accounts
from postroom.services.authn import Authenticator
from postroom.services.imap import commands
from postroom.services.imap.session import ImapContext, ImapSession, Woken
from postroom.services.mailbox_events import MailboxEvents
from postroom.storage.api import Store, Tx

ALICE = "alice@example.test"


class Wire:
    """The connection as a session sees it: everything written is kept."""

    peer = "127.0.0.1"
    listener = "imap"
    secure = True

    def __init__(self) -> None:
        self.out = b""

    async def write(self, data: bytes) -> None:
        self.out += data

    async def read_line(self) -> bytes | None:
        return None

    async def idle_line(self, poll: float) -> bytes | Woken | None:
        return None

    def wake(self) -> None:
        pass

    async def start_tls(self) -> bool:
        return False


def setup_alice(tx: Tx) -> None:
    password_hash, scram = accounts.hash_password("pw")
    user = tx.accounts.add_user(ALICE, password_hash, scram)
    inbox = tx.mailboxes.require(user, "INBOX").id
    blob = tx.blobs.add(b"Subject: s\r\n\r\nbody\r\n")
    for _ in range(2):
        tx.messages.append(inbox, blob, size=20, internal_date=1_700_000_000.0)


async def run_line(session: ImapSession, line: str) -> None:
    reader = CommandReader(max_line=65536)
    reader.feed(line.encode() + b"\r\n")
    event = reader.next_event()
    while isinstance(event, NeedContinuation):  # a literal (small: kept in the line)
        reader.accept_literal()
        event = reader.next_event()
    assert isinstance(event, CommandLine)
    request = parse_command(event)
    assert request.tag is not None
    await commands.run(session, request.tag, request.command)


async def alice_in_inbox(
    store: Store, wire: Wire, events: MailboxEvents | None = None
) -> ImapSession:
    """Alice's two messages stored, and a session of hers with INBOX selected."""
    await store.write(setup_alice)
    events = events or MailboxEvents()
    ctx = ImapContext(store, events, Authenticator(store), "mx", True)
    session = ImapSession(ctx, wire, tls_active=True)
    await run_line(session, f"a LOGIN {ALICE} pw")
    await run_line(session, "b SELECT INBOX")
    return session
