"""Who may make the queue run for a node with ETRN (RFC 1985), and how often.

ETRN may come from anyone, and each one that is acted on is a store write (the node's waiting
mail made due now) and a look at the queue. So, as Postfix leaves ETRN to its flush service
rather than to each request:
- server-wide, a node made due is not made due again for COALESCE seconds: an ETRN for it in
  that time is answered 250 from memory (its mail is already due, or on its way);
- per client address, at most PER_CLIENT ETRNs per WINDOW seconds reach the store; more are
  refused with 458 (RFC 1985 §5: "Unable to queue messages for node"), a temporary answer.
Memory stays bounded: past MAX_ENTRIES nodes or clients, the stale ones are dropped.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable

COALESCE = 10.0  # seconds during which a node made due is not made due again
PER_CLIENT = 10  # ETRNs that reach the store, per client address and WINDOW
WINDOW = 60.0
MAX_ENTRIES = 10_000


class Verdict(enum.Enum):
    START = "start"  # make the node's mail due now (a store write)
    STARTED = "started"  # it was, moments ago: answer from memory
    REFUSED = "refused"  # this client asked too often: 458


class EtrnGate:
    """The decision for each ETRN; the clock is injected (monotonic seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started: dict[str, float] = {}  # node → when it was last made due
        self._clients: dict[str, collections.deque[float]] = {}  # client → its STARTs

    def decide(self, node: str, client: str) -> Verdict:
        now = self._clock()
        key = node.lower()
        started = self._started.get(key)
        if started is not None and now - started < COALESCE:
            return Verdict.STARTED
        times = self._clients.get(client)
        if times is None:
            if len(self._clients) >= MAX_ENTRIES:
                self._prune_clients(now)
            times = self._clients[client] = collections.deque()
        while times and now - times[0] >= WINDOW:
            times.popleft()
        if len(times) >= PER_CLIENT:
            return Verdict.REFUSED
        times.append(now)
        if len(self._started) >= MAX_ENTRIES:
            self._prune_nodes(now)
        self._started[key] = now
        return Verdict.START

    def forget(self, node: str) -> None:
        """The node could not be made due (the store failed): the next ETRN tries again."""
        self._started.pop(node.lower(), None)

    def _prune_nodes(self, now: float) -> None:
        fresh = {k: t for k, t in self._started.items() if now - t < COALESCE}
        self._started = fresh if len(fresh) < MAX_ENTRIES else {}

    def _prune_clients(self, now: float) -> None:
        fresh = {c: t for c, t in self._clients.items() if t and now - t[-1] < WINDOW}
        self._clients = fresh if len(fresh) < MAX_ENTRIES else {}
