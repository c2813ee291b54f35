"""One IMAP session: the state table, authentication and the mailbox-level commands.

The driver (net/imap_session.py) frames and parses the client's input and hands each `Request`
to `ImapSession.run`; handlers write responses through the `ImapIO` the driver provides and
reach the store through the context. Which command is legal in which state is one table
(`ALLOWED`, RFC 3501 §3 and §6); the message-level commands live in messages.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from postroom.proto import sasl
from postroom.proto.imap import grammar_commands as cmd
from postroom.proto.imap import mutf7
from postroom.proto.imap.encode import astring, flag_list, sequence_set
from postroom.proto.imap.listing import Listed, list_entries, lsub_entries
from postroom.proto.imap.selected import MessageColumns, OwnChange, SelectedMailbox
from postroom.proto.sasl.exchange import Finished, SaslExchange, Unavailable
from postroom.proto.sasl.saslprep import prepare_login
from postroom.services.authn import Authenticator
from postroom.services.imap import limits
from postroom.services.imap.search_texts import SearchTexts
from postroom.services.imap.snapshots import MailboxSnapshots, Snapshot, load_messages
from postroom.services.junk_filter import JunkFilter
from postroom.services.mailbox_events import MailboxEvents, MailboxWatch
from postroom.storage.api import FlagMode, Store, Tx
from postroom.storage.buffer import ContentBuffer
from postroom.storage.records import MailboxInfo, StatusCounts

log = logging.getLogger("postroom.imap")

State = Literal["notauth", "auth", "selected", "logout"]
DELIMITER = "/"
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")

BASE_CAPABILITIES = (
    "IMAP4rev1",
    "SASL-IR",
    "LITERAL+",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UNSELECT",
    "CHILDREN",
    "UIDPLUS",
    "MOVE",
    "SPECIAL-USE",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "MULTIAPPEND",
    "SORT",
    "SORT=DISPLAY",
    "ESORT",
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
)


class Woken(enum.Enum):
    """What `ImapIO.idle_line` gives when it ends without a line."""

    WOKEN = "woken"


WOKEN = Woken.WOKEN


class ImapIO(Protocol):
    """What the driver offers a session."""

    peer: str
    listener: str  # "imap" or "imaps" (for the log)

    @property
    def secure(self) -> bool:
        """Whether passwords may be sent: the connection is under TLS."""

    async def write(self, data: bytes) -> None: ...

    async def read_line(self) -> bytes | None:
        """One raw line (an AUTHENTICATE answer); None when the client left."""

    async def idle_line(self, poll: float) -> bytes | Woken | None:
        """IDLE's DONE line, or WOKEN once `wake` was called or `poll` seconds passed first;
        None when the client left."""

    def wake(self) -> None:
        """End a pending `idle_line` early with WOKEN (news for the session)."""

    async def start_tls(self) -> bool:
        """Upgrade the connection; False when the handshake failed (the session is over)."""


@dataclass
class ImapContext:
    store: Store
    events: MailboxEvents
    authenticator: Authenticator
    hostname: str
    tls_available: bool
    idle_poll: float = 30.0  # seconds between looks at the mailbox during IDLE without news
    max_append: int = 64 * 1024 * 1024
    max_sessions_per_user: int = 100
    plaintext_auth: bool = False  # [auth] plaintext: logins without TLS too
    junk: JunkFilter | None = None  # trained by COPY/MOVE into and MOVE out of Junk
    sessions: dict[int, int] = field(default_factory=dict)  # user id → open sessions
    snapshots: MailboxSnapshots = field(default_factory=MailboxSnapshots)
    search_texts: SearchTexts = field(default_factory=SearchTexts)  # for HEADER searches
    # Answered flag changes of every session not in the store yet: sessions holding one back
    # (defer_write), and commits under way. Any session's read waits for them (settle_pending).
    deferring: set[ImapSession] = field(default_factory=set)
    uncommitted: set[asyncio.Future[None]] = field(default_factory=set)


# How an AUTHENTICATE that did not succeed is answered: (text, RFC 5530 code, status).
_AUTHENTICATE_ENDINGS: dict[str, tuple[str, str | None, str]] = {
    "failed": ("Authentication failed.", "AUTHENTICATIONFAILED", "NO"),
    "malformed": ("Invalid base64 or SASL data in the response", None, "BAD"),
    "cancelled": ("Authentication aborted", None, "BAD"),  # RFC 3501 §6.2.2: the client sent "*"
    "unavailable": ("Authentication temporarily unavailable", "UNAVAILABLE", "NO"),
}

DEFERRED_WRITE_DELAY = 0.02  # seconds an answered flag change may wait to join the next ones


@dataclass
class FlagBatch:
    """Flags changed by this session's STOREs (or \\Seen by its FETCHes), answered and not
    written yet: later changes of the same kind (`mode`, `flags`) join `change`."""

    selected: SelectedMailbox
    change: OwnChange
    mode: FlagMode
    flags: tuple[str, ...]


class Refusal(Exception):
    """A command refused with NO (or BAD) and an optional response code."""

    def __init__(self, text: str, code: str | None = None, status: str = "NO") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status


@dataclass
class Enabled:
    condstore: bool = False
    qresync: bool = False


class ImapSession:
    def __init__(self, ctx: ImapContext, io: ImapIO, *, tls_active: bool) -> None:
        self.ctx = ctx
        self.io = io
        self.tls_active = tls_active
        self.state: State = "notauth"
        self.user_id: int | None = None
        self.username = ""
        self.selected: SelectedMailbox | None = None
        self.enabled = Enabled()
        self._watch: MailboxWatch | None = None
        self._out = bytearray()
        # Contents of literals the driver streamed to buffers for the command being run.
        self.streamed: list[ContentBuffer] = []
        # Flag changes answered by STOREs and FETCHes, written together a little later
        # (defer_write).
        self.flag_batch: FlagBatch | None = None
        self._deferred: Callable[[], None] | None = None
        self._deferred_timer: asyncio.TimerHandle | None = None

    @property
    def secure(self) -> bool:
        """Whether passwords may be sent now: under TLS, or anywhere with [auth] plaintext."""
        return self.ctx.plaintext_auth or self.io.secure

    def note_write(self, committed: asyncio.Future[None]) -> None:
        """A flag change already answered; `committed` is done once it is."""
        peer = self.io.peer
        uncommitted = self.ctx.uncommitted

        def check(future: asyncio.Future[None]) -> None:
            uncommitted.discard(future)
            if not future.cancelled() and future.exception() is not None:
                # Too late to tell the client: like a crash, this undid flag changes (not mail).
                log.error("flag change lost: its commit failed client=%s", peer)

        committed.add_done_callback(check)
        uncommitted.add(committed)

    def defer_write(self, batch: FlagBatch, send: Callable[[], None]) -> None:
        """`send` writes `batch`, which later FETCHes may still add to; it runs within
        DEFERRED_WRITE_DELAY, or sooner through `flush_deferred`."""
        self.flush_deferred()
        self.flag_batch, self._deferred = batch, send
        self.ctx.deferring.add(self)
        loop = asyncio.get_running_loop()
        self._deferred_timer = loop.call_later(DEFERRED_WRITE_DELAY, self.flush_deferred)

    def flush_deferred(self) -> None:
        """Send the deferred write now (before any other write or read, and on close)."""
        send, self._deferred, self.flag_batch = self._deferred, None, None
        self.ctx.deferring.discard(self)
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        if send is not None:
            send()

    async def settle_pending(self) -> None:
        """Before reading the store: wait until every flag change answered so far, by any
        session, is committed, so that what one client was told another reads back."""
        for session in list(self.ctx.deferring):
            session.flush_deferred()
        for pending in list(self.ctx.uncommitted):
            with contextlib.suppress(Exception):  # reported by note_write's check
                await pending

    # --- output ----------------------------------------------------------------------------

    def send(self, data: bytes | memoryview) -> None:
        self._out += data

    async def flush(self) -> None:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            await self.io.write(data)

    async def send_now(self, data: bytes | memoryview) -> None:
        self.send(data)
        if len(self._out) > 256 * 1024:
            await self.flush()

    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        coded = f"[{code}] " if code else ""
        self.send(f"{tag} {status} {coded}{text}\r\n".encode())

    def greeting(self) -> bytes:
        caps = " ".join(self.capabilities())
        return f"* OK [CAPABILITY {caps}] postroom ready.\r\n".encode()

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPABILITIES)
        if self.state == "notauth":
            if self.ctx.tls_available and not self.tls_active:
                caps.append("STARTTLS")
            if self.secure:
                caps += ["AUTH=PLAIN", "AUTH=SCRAM-SHA-256"]
            else:
                caps.append("LOGINDISABLED")  # RFC 3501 §6.2.3
        return caps

    # --- dispatch --------------------------------------------------------------------------

    def close(self) -> None:
        self.flush_deferred()  # answered changes are written even when the client has left
        self._unwatch()
        if self.user_id is not None:
            count = self.ctx.sessions.get(self.user_id, 1) - 1
            if count:
                self.ctx.sessions[self.user_id] = count
            else:
                self.ctx.sessions.pop(self.user_id, None)

    # --- mailbox news ----------------------------------------------------------------------

    async def announce(self, *, allow_expunge: bool, force: bool = False) -> None:
        """Tell the client what changed in the selected mailbox (RFC 3501 §7.4.1, §5.2)."""
        selected = self.selected
        if selected is None:
            return
        if force or (self._watch is not None and self._watch.changed):
            if self._watch is not None:
                self._watch.changed = False
            if force or self.ctx.events.newer_than(selected.mailbox_id, selected.known_modseq):
                await self.refresh()
        for line in selected.untagged(
            allow_expunge=allow_expunge,
            condstore=self.enabled.condstore,
            qresync=self.enabled.qresync,
        ):
            self.send(line)

    async def refresh(self) -> None:
        selected = self.selected
        assert selected is not None
        since = selected.known_modseq
        mailbox_id = selected.mailbox_id

        news = await self.ctx.store.read(lambda tx: tx.messages.news(mailbox_id, since))
        if news is None:
            # The mailbox was deleted or renamed away under us: everything is gone.
            selected.take_changes([], list(selected.uids), selected.known_modseq)
            return
        recent_from = None
        if not selected.read_only and any(s.uid > selected.max_uid for s in news.changed):
            recent_from = await self.ctx.store.write(
                lambda tx: tx.mailboxes.claim_recent(mailbox_id), durable=False
            )
        selected.take_changes(news.changed, news.vanished, news.highestmodseq, recent_from)

    def _watch_mailbox(self, mailbox_id: int) -> None:
        self._unwatch()
        self._watch = self.ctx.events.watch(mailbox_id)

    def _unwatch(self) -> None:
        if self._watch is not None:
            self.ctx.events.unwatch(self._watch)
        self._watch = None

    # --- any state -------------------------------------------------------------------------

    async def capability(self, tag: str, command: cmd.Command) -> None:
        self.send(b"* CAPABILITY " + " ".join(self.capabilities()).encode() + b"\r\n")
        self.tagged(tag, "OK", "Capability completed.")

    async def noop(self, tag: str, command: cmd.Command) -> None:
        await self.announce(allow_expunge=True, force=True)
        self.tagged(tag, "OK", "NOOP completed.")

    async def logout(self, tag: str, command: cmd.Command) -> None:
        self.send(b"* BYE Logging out\r\n")
        self.tagged(tag, "OK", "Logout completed.")
        self.state = "logout"

    async def id(self, tag: str, command: cmd.Command) -> None:
        # RFC 2971 §3.1: the server's own identification.
        self.send(b'* ID ("name" "postroom" "vendor" "postroom")\r\n')
        self.tagged(tag, "OK", "ID completed.")

    # --- not authenticated -----------------------------------------------------------------

    async def starttls(self, tag: str, command: cmd.Command) -> None:
        if self.tls_active or not self.ctx.tls_available:
            raise Refusal("TLS is not available here" if not self.tls_active else "TLS is on")
        self.tagged(tag, "OK", "Begin TLS negotiation now.")
        await self.flush()
        if not await self.io.start_tls():
            self.state = "logout"
            return
        # RFC 3501 §6.2.1: the client must ask for the capabilities again.
        self.tls_active = True

    async def login(self, tag: str, command: cmd.Command) -> None:
        assert isinstance(command, cmd.Login)
        if not self.secure:
            # RFC 3501 §6.2.3 with LOGINDISABLED: plaintext passwords need TLS first.
            raise Refusal("Plaintext authentication disallowed without TLS", "PRIVACYREQUIRED")
        prepared = prepare_login(command.username, command.password)
        if prepared is None:
            raise Refusal("Authentication failed.", "AUTHENTICATIONFAILED")
        username, password = prepared
        check = sasl.CheckPassword(username, "", password)
        verdict = await self.ctx.authenticator.answer(check, self.io.peer)
        if isinstance(verdict, Unavailable):
            raise Refusal("Authentication temporarily unavailable", "UNAVAILABLE")  # RFC 5530
        if verdict is not True:
            await self.ctx.authenticator.failed(self.io.listener, self.io.peer, username, "LOGIN")
            raise Refusal("Authentication failed.", "AUTHENTICATIONFAILED")
        await self._logged_in(tag, username)

    async def authenticate(self, tag: str, command: cmd.Command) -> None:
        assert isinstance(command, cmd.Authenticate)
        if not self.secure:
            raise Refusal("Authentication needs TLS first", "PRIVACYREQUIRED")
        mechanism = sasl.new_mechanism(command.mechanism)
        if mechanism is None:
            raise Refusal("Unsupported authentication mechanism", "CANNOT")
        exchange = SaslExchange(mechanism)
        step = exchange.start(command.initial_response)
        while not isinstance(step, Finished):
            if isinstance(step, sasl.Challenge):
                await self.send_now(b"+ " + base64.b64encode(step.data) + b"\r\n")
                await self.flush()
                line = await self.io.read_line()
                if line is None:
                    self.state = "logout"
                    return
                step = exchange.client_line(line.decode("ascii", "replace"))
            else:
                step = exchange.answered(await self.ctx.authenticator.answer(step, self.io.peer))
        if step.result == "success":
            await self._logged_in(tag, step.authcid)
            return
        if step.result == "failed":
            await self.ctx.authenticator.failed(
                self.io.listener, self.io.peer, step.authcid, step.mechanism
            )
        refusal, code, status = _AUTHENTICATE_ENDINGS[step.result]
        raise Refusal(refusal, code, status=status)

    async def _logged_in(self, tag: str, username: str) -> None:
        user = await self.ctx.store.read(lambda tx: tx.accounts.get_user(username))
        if user is None:
            raise Refusal("Authentication failed.", "AUTHENTICATIONFAILED")
        if self.ctx.sessions.get(user.id, 0) >= self.ctx.max_sessions_per_user:
            log.info("too many sessions client=%s user=%s", self.io.peer, user.address)
            raise Refusal("Too many sessions for this user", "LIMIT")  # RFC 5530
        self.user_id = user.id
        self.username = user.address
        self.ctx.sessions[user.id] = self.ctx.sessions.get(user.id, 0) + 1
        self.state = "auth"
        log.info("login client=%s user=%s", self.io.peer, user.address)
        caps = " ".join(self.capabilities())
        self.tagged(tag, "OK", "Logged in", f"CAPABILITY {caps}")

    # --- authenticated ---------------------------------------------------------------------

    @property
    def uid(self) -> int:
        assert self.user_id is not None
        return self.user_id

    def decode_name(self, wire: str) -> str:
        """A mailbox name as stored: Unicode, from modified UTF-7 (RFC 3501 §5.1.3)."""
        if wire == "INBOX":
            return wire
        try:
            name = mutf7.decode(wire)
        except mutf7.MUTF7Error:
            raise Refusal("Invalid mailbox name", "CANNOT", "NO") from None
        if name.upper() == "INBOX":
            return "INBOX"
        if not name or name.startswith(DELIMITER) or DELIMITER * 2 in name:
            raise Refusal("Invalid mailbox name", "CANNOT")
        return name.rstrip(DELIMITER)

    def enable_condstore(self) -> None:
        """RFC 7162 §3.1: CONDSTORE turned on by a command that uses it; with a mailbox open,
        the client learns its HIGHESTMODSEQ at once."""
        if self.enabled.condstore:
            return
        self.enabled.condstore = True
        if self.selected is not None:
            self.send(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % self.selected.known_modseq)

    async def enable(self, tag: str, command: cmd.Command) -> None:
        assert isinstance(command, cmd.Enable)
        done: list[str] = []
        for name in command.capabilities:
            if name == "CONDSTORE" and not self.enabled.condstore:
                self.enabled.condstore = True
                done.append(name)
            elif name == "QRESYNC" and not self.enabled.qresync:
                # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE.
                self.enabled.qresync = self.enabled.condstore = True
                done.append(name)
        # RFC 5161 §3.1: list only what this command newly enabled.
        self.send(b"* ENABLED" + b"".join(b" " + n.encode() for n in done) + b"\r\n")
        self.tagged(tag, "OK", "Enabled.")

    async def namespace(self, tag: str, command: cmd.Command) -> None:
        # RFC 2342 §5: one personal namespace, no others.
        self.send(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
        self.tagged(tag, "OK", "Namespace completed.")

    async def select(self, tag: str, command: cmd.Command) -> None:
        assert isinstance(command, cmd.Select)
        name = self.decode_name(command.mailbox)
        if self.selected is not None:
            self._unwatch()
            self.selected = None
            self.state = "auth"
            if self.enabled.condstore or command.qresync is not None:
                self.send(b"* OK [CLOSED] Previous mailbox closed.\r\n")  # RFC 7162 §3.2.11
        if command.condstore:
            self.enabled.condstore = True  # RFC 7162 §3.1.8
        if command.qresync is not None and not self.enabled.qresync:
            raise Refusal("QRESYNC must be enabled first", status="BAD")  # RFC 7162 §3.2.5
        user_id = self.uid
        readonly = command.readonly
        snapshots = self.ctx.snapshots

        def open_mailbox(tx: Tx) -> tuple[MailboxInfo, MessageColumns, int]:
            info = tx.mailboxes.require(user_id, name)
            # EXAMINE shows what is \Recent without taking it from the next SELECT.
            recent_from = info.recent_uid if readonly else tx.mailboxes.claim_recent(info.id)
            return info, load_messages(tx, snapshots, info), recent_from

        if readonly:
            info, messages, recent_from = await self.ctx.store.read(open_mailbox)
        else:
            info, messages, recent_from = await self.ctx.store.write(open_mailbox, durable=False)
        snapshots.keep(info.id, Snapshot(info.uidvalidity, info.highestmodseq, messages))
        selected = SelectedMailbox(
            info.id,
            info.uidvalidity,
            messages,
            highestmodseq=info.highestmodseq,
            recent_from=recent_from,
            read_only=readonly,
        )
        self.selected = selected
        self._watch_mailbox(info.id)
        self.state = "selected"
        keywords = sorted(selected.keywords)
        flags = flag_list([*SYSTEM_FLAGS, *keywords])
        self.send(b"* FLAGS " + flags + b"\r\n")
        # RFC 3501 §7.1: \* when new keywords may be created (limits.MAX_KEYWORDS).
        new = ["\\*"] if limits.may_create_keywords(selected.keywords) else []
        permanent = b"()" if readonly else flag_list([*SYSTEM_FLAGS, *keywords, *new])
        self.send(b"* OK [PERMANENTFLAGS " + permanent + b"] Flags permitted.\r\n")
        self.send(b"* %d EXISTS\r\n* %d RECENT\r\n" % (selected.exists, len(selected.recent)))
        first_unseen = next(
            (i + 1 for i, uid in enumerate(selected.uids) if "\\Seen" not in selected.flags[uid]),
            None,
        )
        if first_unseen is not None:
            self.send(b"* OK [UNSEEN %d] First unseen.\r\n" % first_unseen)
        self.send(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % info.uidvalidity)
        self.send(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % info.uidnext)
        self.send(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % info.highestmodseq)
        if command.qresync is not None and command.qresync.uidvalidity == info.uidvalidity:
            await self._resync(command.qresync)
        mode = "READ-ONLY" if readonly else "READ-WRITE"
        self.tagged(tag, "OK", "Select completed.", mode)

    async def _resync(self, qresync: cmd.QResync) -> None:
        """RFC 7162 §3.2.5.1: what vanished and what changed since the client's MODSEQ."""
        selected = self.selected
        assert selected is not None
        since = qresync.modseq
        mailbox_id = selected.mailbox_id
        vanished = await self.ctx.store.read(
            lambda tx: tx.messages.vanished_since(mailbox_id, since)
        )
        if qresync.known_uids is not None:
            known = qresync.known_uids
            vanished = [u for u in vanished if known.contains(u, selected.max_uid)]
        if vanished:
            self.send(b"* VANISHED (EARLIER) " + sequence_set(vanished).encode() + b"\r\n")
        for uid in selected.uids:
            if selected.modseqs.get(uid, 0) > since:
                seq = selected.seq_of(uid)
                self.send(
                    b"* %d FETCH (UID %d FLAGS " % (seq or 0, uid)
                    + flag_list(selected.flags_of(uid))
                    + b" MODSEQ (%d))\r\n" % selected.modseqs[uid]
                )

    async def create(self, tag: str, command: cmd.Command) -> None:
        assert isinstance(command, cmd.Create)
        name = self.decode_name(command.mailbox)
        if name == "INBOX":
            raise Refusal("Mailbox already exists", "ALREADYEXISTS")
        use = " ".join(command.special_use)
        user_id = self.uid
        limits.check_mailbox_name(name)

        def create(tx: Tx) -> None:
            limits.check_mailbox_count(len(tx.mailboxes.of_user(user_id)))
            tx.mailboxes.create(user_id, name, use)

        await self.ctx.store.write(create)
        self.tagged(tag, "OK", "Create completed.")

    async def delete(self, tag: str, command: cmd.Command) -> None:
        assert isinstance(command, cmd.Delete)
        name = self.decode_name(command.mailbox)
        user_id = self.uid
        await self.ctx.store.write(lambda tx: tx.mailboxes.delete(user_id, name))
        self.tagged(tag, "OK", "Delete completed.")

    async def rename(self, tag: str, command: cmd.Command) -> None:
        assert isinstance(command, cmd.Rename)
        old = self.decode_name(command.mailbox)
        new = self.decode_name(command.new_name)
        user_id = self.uid
        limits.check_mailbox_name(new)

        def rename(tx: Tx) -> None:
            if old == "INBOX":  # renaming INBOX makes a new mailbox (RFC 3501 §6.3.5)
                limits.check_mailbox_count(len(tx.mailboxes.of_user(user_id)))
            tx.mailboxes.rename(user_id, old, new)

        await self.ctx.store.write(rename)
        self.tagged(tag, "OK", "Rename completed.")

    async def subscribe(self, tag: str, command: cmd.Command) -> None:
        assert isinstance(command, cmd.Subscribe | cmd.Unsubscribe)
        name = self.decode_name(command.mailbox)
        on = isinstance(command, cmd.Subscribe)
        user_id = self.uid

        def change(tx: Tx) -> None:
            if on:
                # RFC 3501 §6.3.6 lets a server refuse a name that does not exist; Dovecot does.
                tx.mailboxes.require(user_id, name)
            tx.mailboxes.subscribe(user_id, name, on=on)

        await self.ctx.store.write(change)
        self.tagged(tag, "OK", ("Subscribe" if on else "Unsubscribe") + " completed.")

    async def list(self, tag: str, command: cmd.Command) -> None:
        assert isinstance(command, cmd.List | cmd.Lsub)
        user_id = self.uid
        if isinstance(command, cmd.List) and command.patterns == ("",) and not command.extended:
            # RFC 3501 §6.3.8: an empty pattern asks for the delimiter and the root.
            self.send(b'* LIST (\\Noselect) "/" ""\r\n')
            self.tagged(tag, "OK", "List completed.")
            return

        def gather(tx: Tx) -> tuple[list[MailboxInfo], list[str]]:
            return tx.mailboxes.of_user(user_id), tx.mailboxes.subscriptions(user_id)

        boxes, subscribed = await self.ctx.store.read(gather)
        existing = {b.name: b.special_use for b in boxes}
        if isinstance(command, cmd.Lsub):
            pattern = command.reference + mutf7_decode_pattern(command.pattern)
            for entry in lsub_entries(existing, set(subscribed), [pattern]):
                self.send(_list_line("LSUB", entry))
            self.tagged(tag, "OK", "Lsub completed.")
            return
        patterns = [command.reference + mutf7_decode_pattern(p) for p in command.patterns]
        entries = list_entries(
            existing,
            set(subscribed),
            patterns,
            selection=frozenset(command.selection),
            returns=frozenset(command.returns),
        )
        for entry in entries:
            self.send(_list_line("LIST", entry))
            if command.status is not None and entry.name in existing:
                # RFC 5819 §2: the STATUS of each listed mailbox follows its LIST line.
                await self._status_line(entry.name, command.status)
        self.tagged(tag, "OK", "List completed.")

    async def status(self, tag: str, command: cmd.Command) -> None:
        assert isinstance(command, cmd.Status)
        name = self.decode_name(command.mailbox)
        await self._status_line(name, command.items)
        self.tagged(tag, "OK", "Status completed.")

    async def _status_line(self, name: str, items: tuple[str, ...]) -> None:
        user_id = self.uid

        def counts(tx: Tx) -> tuple[MailboxInfo, StatusCounts]:
            info = tx.mailboxes.require(user_id, name)
            return info, tx.mailboxes.status_counts(info)

        info, numbers = await self.ctx.store.read(counts)
        values = {
            "MESSAGES": numbers.messages,
            "RECENT": numbers.recent,
            "UIDNEXT": info.uidnext,
            "UIDVALIDITY": info.uidvalidity,
            "UNSEEN": numbers.unseen,
            "HIGHESTMODSEQ": info.highestmodseq,
            "SIZE": numbers.size,
        }
        body = " ".join(f"{item} {values[item]}" for item in items)
        self.send(b"* STATUS " + mailbox(name) + f" ({body})\r\n".encode())

    async def idle(self, tag: str, command: cmd.Command) -> None:
        """RFC 2177: news is pushed until the client says DONE. No task or timer of its own
        while it waits: the mailbox watch wakes the read (`ImapIO.wake`), and so does the
        poll interval, which looks again in case news was missed."""
        await self.send_now(b"+ idling\r\n")
        await self.flush()
        watch = self._watch
        if watch is not None:
            watch.wake = self.io.wake
        try:
            while True:
                await self.announce(allow_expunge=True)
                await self.flush()
                if watch is not None and watch.changed:
                    continue  # news arrived while we wrote: tell it before waiting
                line = await self.io.idle_line(self.ctx.idle_poll)
                if line is not WOKEN:
                    break
                if self.selected is not None and not (watch is not None and watch.changed):
                    await self.announce(allow_expunge=True, force=True)  # the poll interval
        finally:
            if watch is not None:
                watch.wake = None
        if line is None:
            self.state = "logout"
            return
        if line.strip().upper() != b"DONE":
            raise Refusal("Expected DONE", status="BAD")
        await self.announce(allow_expunge=True)
        self.tagged(tag, "OK", "Idle completed.")

    # --- selected --------------------------------------------------------------------------

    async def check(self, tag: str, command: cmd.Command) -> None:
        await self.announce(allow_expunge=True, force=True)
        self.tagged(tag, "OK", "Check completed.")

    async def close_mailbox(self, tag: str, command: cmd.Command) -> None:
        selected = self.selected
        assert selected is not None
        if isinstance(command, cmd.Close) and not selected.read_only:
            # RFC 3501 §6.4.2: expunge silently, no untagged EXPUNGE responses.
            mailbox_id = selected.mailbox_id

            def purge(tx: Tx) -> None:
                tx.messages.expunge(mailbox_id, tx.messages.deleted_uids(mailbox_id))

            await self.ctx.store.write(purge)
        self._unwatch()
        self.selected = None
        self.state = "auth"
        done = "Close" if isinstance(command, cmd.Close) else "Unselect"
        self.tagged(tag, "OK", f"{done} completed.")


def mailbox(name: str) -> bytes:
    """A mailbox name on the wire: modified UTF-7 (RFC 3501 §5.1.3)."""
    return b"INBOX" if name == "INBOX" else astring(mutf7.encode(name))


def mutf7_decode_pattern(pattern: str) -> str:
    try:
        return mutf7.decode(pattern)
    except mutf7.MUTF7Error:
        return pattern


def _list_line(response: str, entry: Listed) -> bytes:
    line = f"* {response} (".encode() + " ".join(entry.attributes).encode() + b') "/" '
    line += mailbox(entry.name)
    if entry.childinfo:
        line += b' (CHILDINFO ("SUBSCRIBED"))'
    return line + b"\r\n"
