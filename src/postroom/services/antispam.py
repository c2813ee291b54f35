"""The abuse defences of the SMTP, IMAP and POP3 paths, in one place the sessions ask:
DNS block/allow lists and greylisting (`[antispam]`), the greeting delay, login throttling,
sending limits and recipient guessing (`[limits]`; services/limits.py, services/greylist.py).

`Defences` is the server-wide state (built once by app.py, loaded from the store at start,
flushed at shutdown); `ClientScreen` is what one SMTP session asks of it. With the defaults
(lists empty, greylisting off) a session costs one dict lookup at connect and nothing per
message on port 25; authenticated sessions one dict update per MAIL and RCPT (sending
limits). DNS lists are asked once per session, started at connect and in parallel, on `smtp`
only, and only waited for at the first RCPT that needs them (postmaster@ is always
reachable, RFC 5321 §4.5.1). Authenticated sessions skip lists and greylisting; so do
`[verify] trusted_networks`.

With several nodes on one PostgreSQL store (`shared`), blocks are read again when another node
announces one (asked at each login and port-25 connection: a stat), sending counts are read
through before each authenticated MAIL, greylisting reads through when memory would greylist
(services/limits.py, services/greylist.py). On SQLite nothing of this is asked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time

from postroom.config import Config
from postroom.dns.lookup import DnsLookup
from postroom.proto.smtp import replies
from postroom.proto.smtp.replies import Reply
from postroom.services import dnsbl
from postroom.services.greylist import Greylist
from postroom.services.limits import (
    Blocks,
    Clock,
    GuessingTracker,
    LoginThrottle,
    SendingLimits,
    WriteBehind,
    guessing_refusal,
)
from postroom.storage.api import Store, Tx
from postroom.storage.records import Block, SendingCount, StorageFailure

log = logging.getLogger("postroom.antispam")

DNS_TIMEOUT = 5.0  # seconds a session waits (in all) for the lists' answers


def listed_refusal(client: str, zone: str) -> Reply:
    return replies.reply(554, "5.7.1", f"Service unavailable; client [{client}] listed at {zone}")


PREGREET_REFUSAL = replies.reply(554, "5.5.1", "Protocol error: talking before the greeting")


class Defences:
    """Server-wide state of the defences (one per server)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        lookup: DnsLookup | None,
        *,
        clock: Clock = time.time,
        dns_timeout: float = DNS_TIMEOUT,
    ) -> None:
        self.config = config
        self.store = store
        self.lookup = lookup
        self.clock = clock
        self.dns_timeout = dns_timeout
        antispam = config.antispam
        self.dnsbl = antispam.dnsbl if lookup is not None else ()
        self.dnswl = antispam.dnswl if lookup is not None else ()
        self.greet_delay = antispam.greet_delay
        self.local_domains = frozenset(d.lower() for d in config.domains)
        self.trusted = config.verify.trusted_networks
        # Several nodes on one store (PostgreSQL): state is read through and announced.
        self.shared = config.storage.backend == "postgresql"
        self.keeper = WriteBehind(store, shared=self.shared)
        self.blocks = Blocks(self.keeper, clock)
        limits = config.limits
        self.logins = LoginThrottle(limits.auth_failures, limits.auth_block, self.blocks, clock)
        self.sending = SendingLimits(
            limits.messages_per_hour, limits.recipients_per_hour, self.keeper, clock
        )
        self.guessing = GuessingTracker(self.blocks, clock)
        self.greylist = (
            Greylist(antispam.greylist, self.keeper, clock) if antispam.greylist else None
        )
        self._limits_stamp = 0
        self._blocks_stamp = 0

    def reconfigure(self, config: Config) -> None:
        """A reloaded config (SIGHUP): the lists, the delays and the limits change at once;
        blocks, counts and greylisting data stay. Greylisting on or off needs a restart."""
        self.config = config
        antispam = config.antispam
        self.dnsbl = antispam.dnsbl if self.lookup is not None else ()
        self.dnswl = antispam.dnswl if self.lookup is not None else ()
        self.greet_delay = antispam.greet_delay
        self.trusted = config.verify.trusted_networks
        limits = config.limits
        if (limits.auth_failures, limits.auth_block) != (self.logins.failures, self.logins.block):
            self.logins = LoginThrottle(
                limits.auth_failures, limits.auth_block, self.blocks, self.clock
            )
        self.sending.messages = limits.messages_per_hour
        self.sending.recipients = limits.recipients_per_hour
        if self.greylist is not None and antispam.greylist:
            self.greylist.delay = antispam.greylist
        elif (self.greylist is not None) != bool(antispam.greylist):
            log.warning("reload: greylisting on or off takes effect after a restart")

    async def load(self) -> None:
        """Read what the store kept (blocks, sending counts, greylisting) at start."""
        now = self.clock()
        greylisting = self.greylist is not None

        def read(
            tx: Tx,
        ) -> tuple[
            list[Block], list[SendingCount], list[tuple[str, float]], list[tuple[str, float]]
        ]:
            return (
                tx.abuse.blocks(now),
                tx.abuse.sending_counts(),
                tx.abuse.greylist_triplets() if greylisting else [],
                tx.abuse.greylist_networks() if greylisting else [],
            )

        self._limits_stamp = self.store.signals.version("limits")
        self._blocks_stamp = self.store.signals.version("blocks")
        blocks, counts, triplets, networks = await self.store.read(read)
        self.blocks.load(blocks)
        self.sending.load(counts)
        if self.greylist is not None:
            self.greylist.load(triplets, networks)

    async def reload_if_cleared(self) -> bool:
        """After `postroom limits clear` (the "limits" stamp changed): blocks and counts are
        read again. Asked only where a block or a limit would refuse (one stat)."""
        stamp = self.store.signals.version("limits")
        if stamp == self._limits_stamp:
            return False
        await self.keeper.flush()
        now = self.clock()

        def read(tx: Tx) -> tuple[list[Block], list[SendingCount]]:
            return tx.abuse.blocks(now), tx.abuse.sending_counts()

        blocks, counts = await self.store.read(read)
        self._limits_stamp = stamp
        self.blocks.load(blocks)
        self.sending.load(counts)
        log.info("limits reloaded after a change from the command line")
        return True

    async def blocks_heard(self) -> None:
        """Shared store: when another node announced a block, read the blocks again (the
        store's, with ours not yet written)."""
        if not self.shared:
            return
        stamp = self.store.signals.version("blocks")
        if stamp == self._blocks_stamp:
            return
        self._blocks_stamp = stamp
        now = self.clock()
        try:
            blocks = await self.store.read(lambda tx: tx.abuse.blocks(now))
        except StorageFailure as failure:
            log.warning("reading the blocks other nodes made failed: %s", failure)
            self._blocks_stamp = 0  # asked again next time
            return
        self.blocks.merge(blocks)

    async def close(self) -> None:
        await self.keeper.close()

    def screen(self, client: str, service: str) -> ClientScreen:
        return ClientScreen(self, client, service)

    def trusted_client(self, client: str) -> bool:
        if not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    # --- sending limits (authenticated sessions) -----------------------------------------

    async def _sending_read(self, identity: str) -> None:
        """Shared store: the count every node added to, before a MAIL is counted."""
        if not self.shared:
            return
        account = identity.lower()
        try:
            stored = await self.store.read(lambda tx: tx.abuse.sending_count(account))
        except StorageFailure as failure:
            log.warning("reading the sending count of %s failed: %s", account, failure)
            return  # what this node knows decides
        self.sending.adopt(account, stored)

    async def message(self, identity: str) -> Reply | None:
        await self._sending_read(identity)
        refusal = self.sending.message(identity)
        if refusal is not None and await self.reload_if_cleared():
            refusal = self.sending.message(identity)
        return refusal

    async def recipient(self, identity: str) -> Reply | None:
        refusal = self.sending.recipient(identity)
        if refusal is not None and await self.reload_if_cleared():
            refusal = self.sending.recipient(identity)
        return refusal

    # --- logins ----------------------------------------------------------------------------

    async def login_blocked(self, client: str, account: str) -> Block | None:
        await self.blocks_heard()
        block = self.logins.blocked(client, account)
        if block is not None and await self.reload_if_cleared():
            block = self.logins.blocked(client, account)
        return block


class ClientScreen:
    """What one SMTP session asks of the defences."""

    __slots__ = ("_lists", "client", "defences", "rcpt_checks", "service", "unknown")

    def __init__(self, defences: Defences, client: str, service: str) -> None:
        self.defences = defences
        self.client = client
        self.service = service
        self.unknown = 0  # unknown recipients so far in this session
        self._lists: asyncio.Future[list[dnsbl.Listing]] | None = None
        mx = service == "smtp"
        zones = (*defences.dnsbl, *defences.dnswl) if mx else ()
        if zones and defences.trusted_client(client):
            zones = ()
        # Whether RCPT asks anything here: lists configured or greylisting on, on the MX.
        self.rcpt_checks = bool(zones) or (mx and defences.greylist is not None)
        if zones and defences.lookup is not None:
            # Started now, in parallel: the answers are usually in before the first RCPT.
            self._lists = asyncio.ensure_future(
                dnsbl.check(defences.lookup, client, zones, defences.dns_timeout)
            )

    async def connect_refusal(self) -> Reply | None:
        """At connect, on the MX: a network blocked for recipient guessing gets 421."""
        if self.service != "smtp":
            return None
        defences = self.defences
        await defences.blocks_heard()
        block = defences.guessing.blocked(self.client)
        if block is not None and await defences.reload_if_cleared():
            block = defences.guessing.blocked(self.client)
        if block is None:
            return None
        log.info("refused client=%s result=421 4.7.0 blocked (%s)", self.client, block.reason)
        return guessing_refusal(defences.config.hostname)

    async def _listings(self) -> list[dnsbl.Listing]:
        if self._lists is None:
            return []
        try:
            return await self._lists
        except Exception:
            log.exception("dns list lookup failed client=%s", self.client)
            return []

    def _postmaster(self, address: str) -> bool:
        local, _, domain = address.rpartition("@")
        if not local:
            return domain.lower() == "postmaster"
        return local.lower() == "postmaster" and domain.lower() in self.defences.local_domains

    async def listed(self, address: str, identity: str | None) -> Reply | None:
        """Before a RCPT is looked at: the 554 for a client a DNSBL lists (not for
        postmaster@ of our domains, RFC 5321 §4.5.1; not for authenticated sessions)."""
        if self._lists is None or identity is not None or self._postmaster(address):
            return None
        blocked = set(self.defences.dnsbl)
        listings = await self._listings()
        if any(x.listed for x in listings if x.zone not in blocked):
            return None  # a DNSWL vouches for it
        for listing in listings:
            if listing.listed and listing.zone in blocked:
                log.info(
                    "dnsbl client=%s zone=%s codes=%s to=<%s> result=554 5.7.1",
                    self.client,
                    listing.zone,
                    ",".join(listing.codes),
                    address,
                )
                return listed_refusal(self.client, listing.zone)
        return None

    async def greylisted(self, sender: str, address: str, identity: str | None) -> Reply | None:
        """After a local RCPT was found: the 451 while its triplet is greylisted."""
        greylist = self.defences.greylist
        if greylist is None or identity is not None or self.service != "smtp":
            return None
        if self._postmaster(address) or self.defences.trusted_client(self.client):
            return None
        whitelisted = set(self.defences.dnswl)
        if whitelisted and any(x.listed for x in await self._listings() if x.zone in whitelisted):
            return None
        if self.defences.shared:
            ask = greylist.lookup(self.client, sender, address)
            if ask is not None:  # another node may have seen the triplet or passed the network
                key, network = ask
                try:
                    first, passed = await self.defences.store.read(
                        lambda tx: tx.abuse.greylist_lookup(key, network)
                    )
                except StorageFailure as failure:
                    log.warning("reading greylisting state failed: %s", failure)
                else:
                    greylist.adopt(key, network, first, passed)
        return greylist.check(self.client, sender, address)

    async def unknown_recipient(self, identity: str | None) -> None:
        """A RCPT got 550 5.1.1: after a few in a session, the answer waits (tarpit)."""
        if identity is not None:
            return
        self.unknown += 1
        delay = self.defences.guessing.unknown(self.client, self.unknown)
        if delay > 0:
            log.info(
                "tarpit client=%s unknown_recipients=%d delay=%gs", self.client, self.unknown, delay
            )
            await asyncio.sleep(delay)

    def close(self) -> None:
        if self._lists is not None and not self._lists.done():
            self._lists.cancel()
