"""Rate limits against abuse: login guessing (SMTP AUTH, IMAP, POP3; ManageSieve later),
authenticated users' sending, and recipient guessing on the MX; plus the write-behind that
keeps their state in the store (storage/api.py `AbuseState`).

Everything is decided from memory in O(1) — a dict lookup or two per login, MAIL or RCPT —
and what must outlive a restart (blocks, sending counts) is written behind, in one store write
(durable=False) a second after a change: bookkeeping never waits for the disk, and a clean
shutdown flushes it (`WriteBehind.flush`). Clocks are injected (`clock`, Unix seconds) so
tests step time instead of sleeping.

Several nodes on one PostgreSQL store (`shared`) see each other's state as Stalwart's cluster
does with its shared in-memory store, without a round trip on every decision: a block is
written at once and then announced (the "blocks" signal, storage/postgresql/notify.py), and
every node reads the blocks again when it hears of one, so a client blocked on one node is
refused by all within about a second. Sending counts are added to the store's count as deltas
(atomic per account, write-behind) and read back before each authenticated MAIL, so a user's
messages through all nodes count against one limit; what the others accepted in their last
FLUSH_DELAY (not yet written) is the bound on how far it may be passed. Failure counters stay
per node (a guesser spread over N nodes gets at most N × the failures before a block, which
then holds on every node).

Login guessing (as Dovecot's auth penalty and fail2ban): failures are counted per (account,
client address), per client address and per account over the window `[limits] auth_block`.
From the third failure of a kind on, the answer to each further failure is delayed (0.25 s,
doubling, at most 5 s); `auth_failures` failures for one account from one address block that
pair, three times as many from one address (any accounts) block the address, for `auth_block`:
logins are then refused with a temporary failure before any password is checked. Failures for
one account from everywhere only slow the failures down (the softer rule): a correct login
from elsewhere is never refused because someone guesses that account's password. IPv6
clients are counted by /64 (one host has them all).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from postroom.proto.smtp import replies
from postroom.proto.smtp.replies import Reply
from postroom.storage.api import Signal, Store, Tx
from postroom.storage.records import Block, SendingCount, StorageFailure

log = logging.getLogger("postroom.limits")

Clock = Callable[[], float]
Job = Callable[[Tx], None]

FLUSH_DELAY = 1.0  # seconds between a change and its write
MAX_KEYS = 100_000  # counters kept in memory per kind; the least recently touched go first
SLOW_FROM = 3  # failures (of one kind) before answers to failures are delayed
FIRST_DELAY = 0.25  # seconds, doubling with each failure
MAX_DELAY = 5.0
ADDRESS_FACTOR = 3  # failures from one address, any accounts, block at this × auth_failures
ACCOUNT_FACTOR = 5  # failures for one account, from anywhere, count this much less for delays
SENDING_WINDOW = 3600.0  # the hour of messages_per_hour / recipients_per_hour
GUESSES_BEFORE_TARPIT = 3  # unknown recipients in a session before its replies slow down
TARPIT_FIRST = 1.0  # seconds, doubling with each further unknown recipient
TARPIT_MAX = 8.0
GUESSING_SESSIONS = 5  # sessions from one network that guessed, within the window, block it
GUESSING_WINDOW = 3600.0
GUESSING_BLOCK = 3600.0


def client_network(address: str, v4_prefix: int = 24, v6_prefix: int = 64) -> str:
    """The network a client address is counted in: IPv4 /24 and IPv6 /64 by default
    (an IPv4-mapped IPv6 address counts as IPv4); the text itself when it is no address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = v4_prefix if isinstance(ip, ipaddress.IPv4Address) else v6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def login_client(address: str) -> str:
    """What login failures are counted by: an IPv4 address itself, an IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return client_network(address)
    return str(ip.ipv4_mapped) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


@dataclass(frozen=True, slots=True)
class Pending:
    """What a source has to write: `job` (in the store's transaction), `done(ok)` (on the
    event loop once the write committed, or failed), `announce` (told to the other nodes
    sharing the store once it committed)."""

    job: Job
    done: Callable[[bool], None] | None = None
    announce: Signal | None = None


class WriteBehind:
    """Collects what the defences must keep and writes it in one store write, FLUSH_DELAY
    after the first change (sources give their pending work when asked: coalesced). With a
    `shared` store, `changed(soon=True)` writes at once (a block the other nodes must hear)."""

    def __init__(self, store: Store, delay: float = FLUSH_DELAY, *, shared: bool = False) -> None:
        self.store = store
        self.delay = delay
        self.shared = shared
        self.sources: list[Callable[[], Pending | None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False  # changed while a write was under way: another one follows
        self._soon = False

    def changed(self, soon: bool = False) -> None:
        soon = soon and self.shared
        if self._task is not None:
            self._again = True
            self._soon = self._soon or soon
            return
        if self._timer is not None:
            if not soon:
                return
            self._timer.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous test): `flush` writes
        self._timer = loop.call_later(0.0 if soon else self.delay, self._start)

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.flush()
        finally:
            self._task = None
            if self._again:
                soon, self._again, self._soon = self._soon, False, False
                self.changed(soon)

    async def flush(self) -> None:
        """Write what is pending now (shutdown calls it; failures are logged, not raised)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = [p for p in (source() for source in self.sources) if p is not None]
        if not pending:
            return

        def write(tx: Tx) -> None:
            for p in pending:
                p.job(tx)

        try:
            await self.store.write(write, durable=False)
        except StorageFailure as failure:
            log.warning("saving the abuse defences' state failed: %s", failure)
            ok = False
        else:
            ok = True
        for p in pending:
            if p.done is not None:
                p.done(ok)
        if ok:
            for what in sorted({p.announce for p in pending if p.announce is not None}):
                self.store.signals.announce(what)

    async def close(self) -> None:
        if self._task is not None:
            await self._task
        await self.flush()


class Counter:
    """Events per key within a sliding window, at most `cap` remembered per key, MAX_KEYS
    keys (least recently touched dropped first)."""

    def __init__(self, window: float, cap: int) -> None:
        self.window = window
        self.cap = max(cap, 1)
        self._events: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def add(self, key: str, now: float) -> int:
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = collections.deque(maxlen=self.cap)
            while len(self._events) > MAX_KEYS:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        events.append(now)
        return self._trim(events, now)

    def count(self, key: str, now: float) -> int:
        events = self._events.get(key)
        return 0 if events is None else self._trim(events, now)

    def _trim(self, events: collections.deque[float], now: float) -> int:
        while events and events[0] <= now - self.window:
            events.popleft()
        return len(events)

    def forget(self, key: str) -> None:
        self._events.pop(key, None)

    def clear(self) -> None:
        self._events.clear()


class Blocks:
    """Blocks in force, by (kind, client, account), kept in the store (write-behind)."""

    def __init__(self, keeper: WriteBehind, clock: Clock) -> None:
        self.keeper = keeper
        self.clock = clock
        self._blocks: dict[tuple[str, str, str], Block] = {}
        self._new: list[Block] = []
        keeper.sources.append(self._pending)

    def load(self, blocks: Iterable[Block]) -> None:
        self._blocks = {(b.kind, b.client, b.account): b for b in blocks}
        self._new = []

    def merge(self, blocks: Iterable[Block]) -> None:
        """The blocks the store holds (made by any node), and ours not yet written."""
        self._blocks = {(b.kind, b.client, b.account): b for b in blocks}
        for block in self._new:
            self._blocks[(block.kind, block.client, block.account)] = block

    @property
    def any(self) -> bool:
        return bool(self._blocks)

    def get(self, kind: str, client: str, account: str = "") -> Block | None:
        block = self._blocks.get((kind, client, account))
        if block is None:
            return None
        if block.until <= self.clock():
            del self._blocks[(kind, client, account)]
            return None
        return block

    def add(self, block: Block) -> None:
        self._blocks[(block.kind, block.client, block.account)] = block
        self._new.append(block)
        self.keeper.changed(soon=True)

    def _pending(self) -> Pending | None:
        new, self._new = self._new, []
        if not new:
            return None
        now = self.clock()

        def job(tx: Tx) -> None:
            tx.abuse.prune_blocks(now)
            for block in new:
                tx.abuse.add_block(block)

        def done(ok: bool) -> None:
            if not ok:  # kept to be written with the next change (and heard by the others)
                self._new = new + self._new

        return Pending(job, done, announce="blocks")


def _delay(failures: int) -> float:
    if failures < SLOW_FROM:
        return 0.0
    return float(min(MAX_DELAY, FIRST_DELAY * 2.0 ** min(failures - SLOW_FROM, 16)))


class LoginThrottle:
    """Slows down and then blocks password guessing (see the module's docstring)."""

    def __init__(self, failures: int, block: float, blocks: Blocks, clock: Clock) -> None:
        self.failures = failures
        self.block = block
        self.blocks = blocks
        self.clock = clock
        self.pairs = Counter(block, failures)
        self.addresses = Counter(block, failures * ADDRESS_FACTOR)
        self.accounts = Counter(block, failures * ACCOUNT_FACTOR)

    def blocked(self, client: str, account: str) -> Block | None:
        """The block that refuses this login now, if any (asked before checking a password)."""
        if not self.blocks.any:
            return None
        who = login_client(client)
        return self.blocks.get("login", who) or (
            self.blocks.get("login", who, account.lower()) if account else None
        )

    def failed(self, client: str, account: str) -> float:
        """Count a failed login; the seconds to wait before answering it."""
        now = self.clock()
        who = login_client(client)
        account = account.lower()
        from_address = self.addresses.add(who, now)
        worst = math.ceil(from_address / ADDRESS_FACTOR)
        if from_address >= self.failures * ADDRESS_FACTOR:
            self._block(who, "", f"{from_address} failed logins", now)
            self.addresses.forget(who)
        if account:
            pair = self.pairs.add(f"{account}|{who}", now)
            everywhere = self.accounts.add(account, now)
            worst = max(worst, pair, math.ceil(everywhere / ACCOUNT_FACTOR))
            if pair >= self.failures:
                self._block(who, account, f"{pair} failed logins", now)
                self.pairs.forget(f"{account}|{who}")
        return _delay(worst)

    def succeeded(self, client: str, account: str) -> None:
        """A correct password: that account's failures from that address are forgiven (not
        the address's, or a guesser could reset them with an account of its own)."""
        self.pairs.forget(f"{account.lower()}|{login_client(client)}")

    def _block(self, client: str, account: str, reason: str, now: float) -> None:
        until = now + self.block
        self.blocks.add(Block("login", client, account, until, reason))
        log.warning(
            "login blocked client=%s user=<%s> for=%ds reason=%s",
            client,
            account or "*",
            round(self.block),
            reason.replace(" ", "-"),
        )


def sending_refusal(what: str, limit: int) -> Reply:
    return replies.reply(
        451, "4.7.0", f"Sending limit reached ({limit} {what} an hour); try again later"
    )


@dataclass
class _Sent:
    window_start: float
    messages: int = 0
    recipients: int = 0
    warned: bool = field(default=False, compare=False)


class SendingLimits:
    """`[limits] messages_per_hour` and `recipients_per_hour` per authenticated user: counted
    as Postfix's anvil counts them (a message at MAIL, a recipient at each accepted RCPT) in a
    window of an hour that starts with the first message after the previous one ended.

    What is counted here is added to the store's count (`_unsynced`, written behind as deltas)
    and the count that comes back, the sum of every node's, is what is believed."""

    def __init__(self, messages: int, recipients: int, keeper: WriteBehind, clock: Clock) -> None:
        self.messages = messages
        self.recipients = recipients
        self.keeper = keeper
        self.clock = clock
        self._sent: dict[str, _Sent] = {}
        self._unsynced: dict[str, tuple[int, int]] = {}  # account → (messages, recipients)
        keeper.sources.append(self._pending)

    def load(self, counts: Iterable[SendingCount]) -> None:
        self._sent = {c.account: _Sent(c.window_start, c.messages, c.recipients) for c in counts}
        self._unsynced.clear()

    def adopt(self, account: str, stored: SendingCount | None) -> None:
        """The store's count of `account` (read before a MAIL: other nodes' messages count
        too), with what this node counted and has not written yet."""
        account = account.lower()
        now = self.clock()
        mine = self._unsynced.get(account, (0, 0))
        local = self._sent.get(account)
        if stored is not None and now - stored.window_start < SENDING_WINDOW:
            warned = local is not None and local.warned
            self._sent[account] = _Sent(
                stored.window_start, stored.messages + mine[0], stored.recipients + mine[1], warned
            )
        elif local is not None and now - local.window_start < SENDING_WINDOW:
            # None kept (cleared, or not written yet): only what is still to be written.
            self._sent[account] = _Sent(local.window_start, mine[0], mine[1], local.warned)
        else:
            self._sent.pop(account, None)
            self._unsynced.pop(account, None)

    def _current(self, account: str, now: float) -> _Sent:
        sent = self._sent.get(account)
        if sent is None or now - sent.window_start >= SENDING_WINDOW:
            sent = self._sent[account] = _Sent(now)
            self._unsynced.pop(account, None)  # the past window's counts matter no more
        return sent

    def message(self, account: str) -> Reply | None:
        """At MAIL: None (counted) while under the limit, else the 451 to answer."""
        account = account.lower()
        sent = self._current(account, self.clock())
        if sent.messages >= self.messages:
            self._warn(account, sent, "messages", self.messages)
            return sending_refusal("messages", self.messages)
        sent.messages += 1
        self._changed(account, 1, 0)
        return None

    def recipient(self, account: str) -> Reply | None:
        """At RCPT: None (counted) while under the limit, else the 451 to answer."""
        account = account.lower()
        sent = self._current(account, self.clock())
        if sent.recipients >= self.recipients:
            self._warn(account, sent, "recipients", self.recipients)
            return sending_refusal("recipients", self.recipients)
        sent.recipients += 1
        self._changed(account, 0, 1)
        return None

    def counts(self) -> list[SendingCount]:
        now = self.clock()
        return [
            SendingCount(account, s.window_start, s.messages, s.recipients)
            for account, s in sorted(self._sent.items())
            if now - s.window_start < SENDING_WINDOW
        ]

    def _warn(self, account: str, sent: _Sent, what: str, limit: int) -> None:
        if not sent.warned:
            sent.warned = True
            log.warning(
                "sending limit reached user=%s %s=%d/h until=%d",
                account,
                what,
                limit,
                round(sent.window_start + SENDING_WINDOW),
            )

    def _changed(self, account: str, messages: int, recipients: int) -> None:
        before = self._unsynced.get(account, (0, 0))
        self._unsynced[account] = (before[0] + messages, before[1] + recipients)
        self.keeper.changed()

    def _pending(self) -> Pending | None:
        if not self._unsynced:
            return None
        deltas = [
            SendingCount(a, s.window_start, m, r)
            for a, (m, r) in sorted(self._unsynced.items())
            if (s := self._sent.get(a)) is not None
        ]
        self._unsynced = {}
        current_after = self.clock() - SENDING_WINDOW
        after: list[SendingCount] = []

        def job(tx: Tx) -> None:
            after.extend(tx.abuse.add_sending_counts(deltas, current_after))

        def done(ok: bool) -> None:
            if not ok:  # kept to be written with the next change
                for d in deltas:
                    if (s := self._sent.get(d.account)) is None or s.window_start != d.window_start:
                        continue
                    m, r = self._unsynced.get(d.account, (0, 0))
                    self._unsynced[d.account] = (m + d.messages, r + d.recipients)
                return
            for count in after:
                self.adopt(count.account, count)

        return Pending(job, done)


class GuessingTracker:
    """Recipient guessing on the MX: a session's replies slow down after GUESSES_BEFORE_TARPIT
    unknown recipients; GUESSING_SESSIONS such sessions from one network (/24, /64) within
    GUESSING_WINDOW block it (421 at connect) for GUESSING_BLOCK."""

    def __init__(self, blocks: Blocks, clock: Clock) -> None:
        self.blocks = blocks
        self.clock = clock
        self.sessions = Counter(GUESSING_WINDOW, GUESSING_SESSIONS)

    def blocked(self, client: str) -> Block | None:
        if not self.blocks.any:
            return None  # the usual case: no network parsed per connection
        return self.blocks.get("guessing", client_network(client))

    def unknown(self, client: str, unknown_so_far: int) -> float:
        """The session's `unknown_so_far`-th unknown recipient: the seconds to wait before
        the 550 (0 for the first few); counts the session as guessing when it becomes one."""
        if unknown_so_far == GUESSES_BEFORE_TARPIT:
            network = client_network(client)
            now = self.clock()
            if self.sessions.add(network, now) >= GUESSING_SESSIONS:
                self.sessions.forget(network)
                self.blocks.add(
                    Block(
                        "guessing",
                        network,
                        "",
                        now + GUESSING_BLOCK,
                        f"{GUESSING_SESSIONS} sessions guessing recipients",
                    )
                )
                log.warning(
                    "recipient guessing: network blocked client=%s network=%s for=%ds",
                    client,
                    network,
                    round(GUESSING_BLOCK),
                )
        if unknown_so_far <= GUESSES_BEFORE_TARPIT:
            return 0.0
        steps = min(unknown_so_far - GUESSES_BEFORE_TARPIT - 1, 8)
        return float(min(TARPIT_MAX, TARPIT_FIRST * 2.0**steps))


def guessing_refusal(hostname: str) -> Reply:
    return replies.reply(
        421, "4.7.0", f"{hostname} Too many unknown recipients from your network; try later"
    )
