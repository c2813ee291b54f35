"""EtrnGate: a node made due is not made due again for a while (server-wide), a client gets
few ETRNs that reach the store per minute, and its memory stays bounded."""

from __future__ import annotations

from postroom.services import etrn
from postroom.services.etrn import EtrnGate, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_node_started_is_answered_from_memory_for_a_while() -> None:
    clock = Clock()
    gate = EtrnGate(clock)
    assert gate.decide("Example.NET", "192.0.2.1") is Verdict.START
    assert gate.decide("example.net", "192.0.2.1") is Verdict.STARTED
    assert gate.decide("example.net", "198.51.100.9") is Verdict.STARTED  # server-wide
    clock.now += etrn.COALESCE
    assert gate.decide("example.net", "198.51.100.9") is Verdict.START


def test_a_client_gets_a_few_per_window() -> None:
    clock = Clock()
    gate = EtrnGate(clock)
    for index in range(etrn.PER_CLIENT):
        assert gate.decide(f"n{index}.example", "192.0.2.1") is Verdict.START
    assert gate.decide("more.example", "192.0.2.1") is Verdict.REFUSED
    assert gate.decide("n0.example", "192.0.2.1") is Verdict.STARTED  # no cost, no refusal
    assert gate.decide("more.example", "192.0.2.2") is Verdict.START  # another client
    clock.now += etrn.WINDOW
    assert gate.decide("again.example", "192.0.2.1") is Verdict.START


def test_a_node_that_could_not_be_started_is_tried_again() -> None:
    gate = EtrnGate(Clock())
    assert gate.decide("example.net", "192.0.2.1") is Verdict.START
    gate.forget("EXAMPLE.net")
    assert gate.decide("example.net", "192.0.2.1") is Verdict.START


def test_memory_stays_bounded() -> None:
    clock = Clock()
    gate = EtrnGate(clock)
    for index in range(3 * etrn.MAX_ENTRIES):
        clock.now += 0.001
        gate.decide(f"n{index}.example", f"10.0.{index // 256 % 256}.{index % 256}")
        gate.decide("n0.example", f"10.1.{index // 256 % 256}.{index % 256}")
    assert len(gate._started) <= etrn.MAX_ENTRIES
    assert len(gate._clients) <= etrn.MAX_ENTRIES
