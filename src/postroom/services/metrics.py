"""The server's metrics, for Prometheus: counters, gauges and histograms in one registry per
`MailServer` (never the library's global one, so several servers in one process keep theirs
apart), and their text exposition for `/metrics` (web/metrics.py).

Every label takes values from a fixed list, so the number of series is bounded whatever
clients send: command names outside the lists below count as "other", authentication results
outside RFC 8601's as "other". The sessions hold children bound to their labels once, so the
cost on the hot path is a counter increment or a histogram observation.

The counters, gauges and histograms are this module's (`Counter`, `Gauge`, `Histogram`:
prometheus-client collectors rendered at scrape time by the library's exposition): a series is
a number, or a list of bucket counts and a sum, changed without locks because each is changed
from one thread only (the event loop; the commit sizes from the store's writer alone). The
library's own metrics take a lock per change, five times the cost: with them the server spent
4.4% more instructions per received message (bench/callgrind_receive.py), with these 1.2%.

The queue gauge is read at scrape time: the exposition asks the store (on its reader thread,
never in the event loop) for the entries by state and the collector reports what it read.
"""

from __future__ import annotations

import bisect
import logging
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from postroom.storage.api import Store, Tx
from postroom.storage.records import StorageFailure

log = logging.getLogger("postroom.metrics")

S = TypeVar("S")

OTHER = "other"
SMTP_RESULTS = ("accepted", "rejected", "tempfailed")  # 250, 5xx, 4xx to the end of data
DELIVERY_RESULTS = ("delivered", "deferred", "failed")
AUTH_METHODS = ("spf", "dkim", "dmarc", "arc")
# RFC 8601 §2.7: the results of SPF (RFC 7208 §2.6), DKIM, DMARC and ARC (RFC 8617 §4.4).
AUTH_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy")
QUEUE_STATES = ("queued", "deferred", "held")
# fmt: off
IMAP_COMMANDS = (
    "CAPABILITY", "NOOP", "LOGOUT", "ID", "STARTTLS", "LOGIN", "AUTHENTICATE", "ENABLE",
    "NAMESPACE", "SELECT", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST",
    "LSUB", "STATUS", "APPEND", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "FETCH", "STORE",
    "COPY", "MOVE", "SEARCH", "SORT", "THREAD",
)
# fmt: on
# The commands whose answer takes work of the server (the others are answered by the protocol
# engines at once): SMTP's and POP3's decisions, and every IMAP command but IDLE, whose
# duration is the client's.
COMMANDS: Mapping[str, tuple[str, ...]] = {
    "smtp": ("MAIL", "RCPT", "DATA", "AUTH", "STARTTLS", "ETRN"),
    "imap": IMAP_COMMANDS,
    "pop3": ("PASS", "AUTH", "RETR", "QUIT", "STLS"),
}
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Count:
    """One counter or gauge series: a number."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class Series:
    """One histogram series: how many observations fell in each bucket, and their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # A bucket counts the values up to and including its bound.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


class _Family(Collector, Generic[S]):
    """A metric with fixed label names; `labels` makes a series once and keeps it."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], S] = {}

    @abstractmethod
    def _new(self) -> S:
        """A new series of this kind."""

    def labels(self, *values: str) -> S:
        """The series of these label values (bind it once and keep it)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = self._new()
        return series

    def _items(self) -> list[tuple[list[str], S]]:
        return [(list(values), series) for values, series in list(self._series.items())]


class Counter(_Family[Count]):
    """A counter (exposed as NAME_total)."""

    def _new(self) -> Count:
        return Count()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, count in self._items():
            family.add_metric(values, count.value)
        yield family


class Gauge(_Family[Count]):
    """A gauge: a number that goes up and down."""

    def _new(self) -> Count:
        return Count()

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, count in self._items():
            family.add_metric(values, count.value)
        yield family


class Histogram(_Family[Series]):
    """A histogram with fixed bucket bounds."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], bounds: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(float(bound) for bound in bounds)
        self._les = [repr(bound) for bound in self.bounds]  # "0.0005", "1.0", as Go writes them

    def _new(self) -> Series:
        return Series(self.bounds)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in self._items():
            counts = series.counts[:]  # one copy, so the buckets agree with each other
            running = 0
            buckets: list[tuple[str, float]] = []
            for le, count in zip(self._les, counts, strict=False):
                running += count
                buckets.append((le, running))
            buckets.append(("+Inf", running + counts[-1]))
            family.add_metric(values, buckets, series.total)
        yield family


@dataclass(frozen=True, slots=True)
class SmtpMetrics:
    """One SMTP listener's children, bound once."""

    connections: Count
    messages: Mapping[str, Count]  # by SMTP_RESULTS
    commands: Mapping[str, Series]  # by COMMANDS["smtp"]

    def message(self, code: int) -> None:
        """A message's content arrived whole and got this reply code."""
        result = "accepted" if code < 300 else "tempfailed" if code < 500 else "rejected"
        self.messages[result].inc()


@dataclass(frozen=True, slots=True)
class SessionMetrics:
    """What an IMAP or POP3 listener counts: its open sessions and its commands' latency."""

    sessions: Count
    commands: Mapping[str, Series]  # by COMMANDS[protocol], and OTHER


class _QueueCollector(Collector):
    """`postroom_queue_messages{state}` from the last read of the store."""

    def __init__(self) -> None:
        self.counts: Mapping[str, int] | None = None  # None: not read, or the read failed

    def collect(self) -> Iterator[Metric]:
        counts = self.counts
        if counts is None:
            return
        family = GaugeMetricFamily(
            "postroom_queue_messages",
            "Queue entries by state (held, else deferred, else queued)",
            labels=["state"],
        )
        for state in QUEUE_STATES:
            family.add_metric([state], counts.get(state, 0))
        yield family


def _queue_counts(tx: Tx) -> dict[str, int]:
    return tx.queue.state_counts()


class Metrics:
    """Every metric of one server, in its own registry."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.registry = CollectorRegistry()
        self._smtp_connections = Counter(
            "postroom_smtp_connections", "SMTP connections accepted, by listener", ["service"]
        )
        self._smtp_messages = Counter(
            "postroom_smtp_messages",
            "Messages whose content arrived, by listener and answer",
            ["service", "result"],
        )
        delivery = Counter(
            "postroom_delivery_attempts",
            "Remote delivery attempts, by outcome per recipient",
            ["result"],
        )
        self.delivery_attempts = {result: delivery.labels(result) for result in DELIVERY_RESULTS}
        auth = Counter(
            "postroom_auth_results",
            "Results of the inbound checks (SPF, each DKIM signature, DMARC, ARC)",
            ["method", "result"],
        )
        self._auth = {
            (method, result): auth.labels(method, result)
            for method in AUTH_METHODS
            for result in (*AUTH_RESULTS, OTHER)
        }
        imap = Gauge("postroom_imap_sessions", "IMAP sessions open", ())
        pop3 = Gauge("postroom_pop3_sessions", "POP3 sessions open", ())
        self._sessions = {"imap": imap.labels(), "pop3": pop3.labels()}
        batches = Histogram(
            "postroom_commit_batch_size", "Jobs per group commit of the store", (), BATCH_BUCKETS
        )
        self.commit_batch = batches.labels()  # observed on the store's writer thread only
        self._commands = Histogram(
            "postroom_command_seconds",
            "Time the server took to answer a command (its own work, not the client's)",
            ("protocol", "command"),
            LATENCY_BUCKETS,
        )
        self._queue = _QueueCollector()
        for collector in (
            self._smtp_connections,
            self._smtp_messages,
            delivery,
            auth,
            imap,
            pop3,
            batches,
            self._commands,
            self._queue,
        ):
            self.registry.register(collector)

    def smtp(self, service: str) -> SmtpMetrics:
        """The children one SMTP listener uses."""
        return SmtpMetrics(
            self._smtp_connections.labels(service),
            {result: self._smtp_messages.labels(service, result) for result in SMTP_RESULTS},
            self.commands("smtp"),
        )

    def sessions(self, protocol: str) -> SessionMetrics:
        """The children an IMAP or POP3 listener uses."""
        return SessionMetrics(self._sessions[protocol], self.commands(protocol))

    def commands(self, protocol: str) -> dict[str, Series]:
        """Latency children by command name for one protocol, "other" included."""
        return {
            name: self._commands.labels(protocol, name) for name in (*COMMANDS[protocol], OTHER)
        }

    def auth_results(self, results: Iterable[tuple[str, str]]) -> None:
        """Count one message's check results: (method, result) pairs."""
        for method, result in results:
            child = self._auth.get((method, result)) or self._auth.get((method, OTHER))
            if child is not None:
                child.inc()

    async def exposition(self) -> bytes:
        """Every metric in the Prometheus text format, the queue read from the store now."""
        try:
            self._queue.counts = await self.store.read(_queue_counts)
        except StorageFailure as failure:
            log.warning("metrics: reading the queue failed: %s", failure)
            self._queue.counts = None
        return generate_latest(self.registry)
