"""Greylisting (as postgrey does it): mail from an unknown (client network, sender, recipient)
triplet is answered `451 4.7.1` until `[antispam] greylist` has passed since the triplet was
first seen; a retry after that passes, and the client network (/24, /64) is then remembered
for 35 days, so its mail is not delayed again. A triplet not retried within two days starts
over. Real MTAs retry (RFC 5321 §4.5.4.1); much spamware does not.

State lives in memory (at most MAX_TRIPLETS triplets, the oldest dropped first) and is written
behind to the store (services/limits.py `WriteBehind`), loaded again at start: a restart
forgets nothing that was a second old. Deciding costs a dict lookup or two.

Several nodes sharing a PostgreSQL store read through on a miss, as postgrey and Stalwart's
SQL-backed greylisting look the triplet up in the database: when memory would greylist (a
network not passed, a triplet unknown or still too young), the store is asked for the triplet
and the network first (`lookup`, then `adopt`), so a retry reaching another node than the
first attempt passes once the delay is over, and a network that passed on one node passes on
all. A triplet seen on a node less than FLUSH_DELAY (a second) before the retry reaches
another may be greylisted once more there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from postroom.proto.smtp import replies
from postroom.proto.smtp.replies import Reply
from postroom.services.limits import Clock, Pending, WriteBehind, client_network
from postroom.storage.api import Tx

log = logging.getLogger("postroom.antispam")

KEEP_NETWORK = 35 * 86400.0  # a network that passed is remembered this long after its last mail
RETRY_WINDOW = 2 * 86400.0  # a triplet not retried within this starts over
MAX_TRIPLETS = 100_000
TOUCH_EVERY = 3600.0  # a passed network's last-seen time is written at most this often


def greylisted(seconds: float) -> Reply:
    return replies.reply(451, "4.7.1", f"Greylisted, try again in {max(1, round(seconds))} seconds")


def triplet_key(network: str, sender: str, recipient: str) -> str:
    return f"{network}|{sender.lower()}|{recipient.lower()}"


class Greylist:
    def __init__(self, delay: float, keeper: WriteBehind, clock: Clock) -> None:
        self.delay = delay
        self.keeper = keeper
        self.clock = clock
        self._triplets: dict[str, float] = {}  # key → first seen, oldest first
        self._networks: dict[str, float] = {}  # network → last seen
        self._new_triplets: dict[str, float] = {}
        self._new_networks: dict[str, float] = {}
        self._forget: set[str] = set()
        self._pruned = 0.0
        keeper.sources.append(self._pending)

    def load(
        self, triplets: Iterable[tuple[str, float]], networks: Iterable[tuple[str, float]]
    ) -> None:
        now = self.clock()
        self._triplets = {
            k: t for k, t in sorted(triplets, key=lambda kt: kt[1]) if now - t < RETRY_WINDOW
        }
        self._networks = {n: t for n, t in networks if now - t < KEEP_NETWORK}
        self._pruned = now

    def lookup(self, client: str, sender: str, recipient: str) -> tuple[str, str] | None:
        """(triplet key, network) to ask a shared store about before `check`, when memory
        alone would greylist; None when memory lets the mail pass."""
        now = self.clock()
        network = client_network(client)
        seen = self._networks.get(network)
        if seen is not None and now - seen < KEEP_NETWORK:
            return None
        key = triplet_key(network, sender, recipient)
        first = self._triplets.get(key)
        if first is not None and self.delay <= now - first < RETRY_WINDOW:
            return None
        return key, network

    def adopt(self, key: str, network: str, first: float | None, passed: float | None) -> None:
        """What the store holds of a triplet (first seen) and its network (last passed),
        recorded by any node: the earlier first sighting and the later pass win."""
        now = self.clock()
        if passed is not None and now - passed < KEEP_NETWORK:
            local = self._networks.get(network)
            if local is None or local < passed:
                self._networks[network] = passed
        if first is not None and now - first < RETRY_WINDOW:
            local = self._triplets.get(key)
            if local is None or now - local >= RETRY_WINDOW or first < local:
                self._triplets.pop(key, None)
                self._triplets[key] = first
                self._new_triplets.pop(key, None)  # the store has the earlier one
                while len(self._triplets) > MAX_TRIPLETS:
                    oldest = next(iter(self._triplets))
                    del self._triplets[oldest]
                    self._new_triplets.pop(oldest, None)

    def check(self, client: str, sender: str, recipient: str) -> Reply | None:
        """None when the mail may pass; else the 451 to answer."""
        now = self.clock()
        network = client_network(client)
        seen = self._networks.get(network)
        if seen is not None and now - seen < KEEP_NETWORK:
            if now - seen >= TOUCH_EVERY:
                self._pass(network, now)
            return None
        key = triplet_key(network, sender, recipient)
        first = self._triplets.get(key)
        if first is None or now - first >= RETRY_WINDOW:
            self._triplets.pop(key, None)
            self._triplets[key] = now
            self._new_triplets[key] = now
            while len(self._triplets) > MAX_TRIPLETS:
                oldest = next(iter(self._triplets))
                del self._triplets[oldest]
                self._new_triplets.pop(oldest, None)
            self._changed(now)
            log.info("greylisted client=%s from=<%s> to=<%s> new", client, sender, recipient)
            return greylisted(self.delay)
        waited = now - first
        if waited < self.delay:
            log.info("greylisted client=%s from=<%s> to=<%s> early", client, sender, recipient)
            return greylisted(self.delay - waited)
        # The retry came in time: the network is remembered, the triplet is no longer needed.
        del self._triplets[key]
        self._new_triplets.pop(key, None)
        self._forget.add(key)
        self._pass(network, now)
        log.info(
            "greylisting passed client=%s network=%s after=%ds", client, network, round(waited)
        )
        return None

    def _pass(self, network: str, now: float) -> None:
        self._networks[network] = now
        self._new_networks[network] = now
        self._changed(now)

    def _changed(self, now: float) -> None:
        if now - self._pruned >= TOUCH_EVERY:
            self._pruned = now
            self._triplets = {k: t for k, t in self._triplets.items() if now - t < RETRY_WINDOW}
            self._networks = {n: t for n, t in self._networks.items() if now - t < KEEP_NETWORK}
        self.keeper.changed()

    def _pending(self) -> Pending | None:
        if not (self._new_triplets or self._new_networks or self._forget):
            return None
        triplets = list(self._new_triplets.items())
        networks = list(self._new_networks.items())
        forget = sorted(self._forget)
        self._new_triplets, self._new_networks, self._forget = {}, {}, set()
        now = self.clock()

        def job(tx: Tx) -> None:
            tx.abuse.save_greylist(triplets, networks, forget)
            tx.abuse.prune_greylist(now - RETRY_WINDOW, now - KEEP_NETWORK)

        return Pending(job)
