"""The metrics' own histograms and label bounds: buckets count values up to and including their
bound, cumulatively as Prometheus reads them (checked with prometheus-client's parser); label
values outside the fixed lists become "other"; each server has its own registry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from postroom.services.metrics import Histogram, Metrics
from postroom.storage.api import Store
from postroom.storage.backend import server_store


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("x_seconds", "a test", ("kind",), (0.1, 1, 10))
    registry.register(histogram)
    fast = histogram.labels("fast")
    for value in (0.05, 0.1, 0.5, 1.0, 20.0):
        fast.observe(value)
    histogram.labels("idle")
    got = samples(generate_latest(registry).decode())

    def bucket(kind: str, le: str) -> float:
        return got[("x_seconds_bucket", frozenset({("kind", kind), ("le", le)}))]

    assert [bucket("fast", le) for le in ("0.1", "1.0", "10.0", "+Inf")] == [2, 4, 4, 5]
    assert got[("x_seconds_count", frozenset({("kind", "fast")}))] == 5
    assert got[("x_seconds_sum", frozenset({("kind", "fast")}))] == pytest.approx(21.65)
    assert bucket("idle", "+Inf") == 0
    assert histogram.labels("fast") is fast
    with pytest.raises(ValueError, match="takes labels"):
        histogram.labels("a", "b")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = server_store(tmp_path / "data")
    opened.open()
    try:
        yield opened
    finally:
        opened.close()


def test_label_values_are_bounded_and_registries_apart(store: Store) -> None:
    one, two = Metrics(store), Metrics(store)
    one.auth_results([("spf", "pass"), ("spf", "made-up"), ("dkim", "fail"), ("x-other", "pass")])
    imap = one.sessions("imap")
    assert {"FETCH", "SELECT", "other"} <= set(imap.commands)
    assert "IDLE" not in imap.commands
    imap.sessions.inc()
    imap.sessions.inc()
    imap.sessions.dec()
    one.smtp("smtp").message(250)
    one.smtp("smtp").message(451)
    one.smtp("smtp").message(554)
    got = samples(asyncio.run(one.exposition()).decode())
    auth = {
        (dict(labels)["method"], dict(labels)["result"]): value
        for (name, labels), value in got.items()
        if name == "postroom_auth_results_total" and value
    }
    assert auth == {("spf", "pass"): 1, ("spf", "other"): 1, ("dkim", "fail"): 1}
    messages = {
        dict(labels)["result"]: value
        for (name, labels), value in got.items()
        if name == "postroom_smtp_messages_total"
    }
    assert messages == {"accepted": 1, "tempfailed": 1, "rejected": 1}
    assert got[("postroom_imap_sessions", frozenset())] == 1
    assert got[("postroom_pop3_sessions", frozenset())] == 0
    # The other server's registry saw none of it.
    other = samples(asyncio.run(two.exposition()).decode())
    assert not any(
        value for (name, _), value in other.items() if name == "postroom_auth_results_total"
    )
