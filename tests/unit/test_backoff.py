"""Retry timing: intervals with jitter, the repeating last interval, warn and give-up ages."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.queue.backoff import JITTER, RetryPolicy

HOUR = 3600.0


def test_defaults_follow_the_seeds() -> None:
    policy = RetryPolicy()
    assert policy.intervals == (900.0, 1800.0, HOUR, 2 * HOUR, 4 * HOUR)
    assert policy.warn_after == 4 * HOUR
    assert policy.give_up_after == 5 * 24 * HOUR


@pytest.mark.parametrize(
    ("attempts", "base"), [(1, 900.0), (2, 1800.0), (3, HOUR), (5, 4 * HOUR), (40, 4 * HOUR)]
)
def test_interval_uses_schedule_and_repeats_the_last(attempts: int, base: float) -> None:
    rng = random.Random(7)
    for _ in range(50):
        wait = RetryPolicy().interval(attempts, rng)
        assert base * (1 - JITTER) <= wait <= base * (1 + JITTER)


def test_jitter_spreads_retries() -> None:
    rng = random.Random(1)
    waits = {round(RetryPolicy().interval(1, rng), 3) for _ in range(20)}
    assert len(waits) > 10


def test_next_attempt_is_capped_at_expiry() -> None:
    policy = RetryPolicy(intervals=(10.0,), give_up_after=25.0)
    rng = random.Random(3)
    assert policy.next_attempt(arrival=0.0, now=20.0, attempts=3, rng=rng) == 25.0
    assert policy.next_attempt(arrival=0.0, now=0.0, attempts=1, rng=rng) < 25.0


def test_expiry_and_single_warning() -> None:
    policy = RetryPolicy(warn_after=4 * HOUR, give_up_after=5 * 24 * HOUR)
    assert not policy.warning_due(0.0, 4 * HOUR - 1, already_warned=False)
    assert policy.warning_due(0.0, 4 * HOUR, already_warned=False)
    assert not policy.warning_due(0.0, 5 * HOUR, already_warned=True)
    assert not policy.expired(0.0, 5 * 24 * HOUR - 1)
    assert policy.expired(0.0, 5 * 24 * HOUR)


def test_no_warning_when_giving_up_first() -> None:
    policy = RetryPolicy(warn_after=10.0, give_up_after=5.0)
    assert not policy.warning_due(0.0, 100.0, already_warned=False)


@pytest.mark.parametrize(
    "kwargs",
    [{"intervals": ()}, {"intervals": (0.0,)}, {"give_up_after": 0.0}, {"warn_after": -1.0}],
)
def test_invalid_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@given(
    st.lists(st.floats(1.0, 1e6), min_size=1, max_size=6),
    st.integers(0, 100),
    st.floats(0.0, 1e7),
)
def test_next_attempt_is_after_now_unless_expired(
    intervals: list[float], attempts: int, now: float
) -> None:
    policy = RetryPolicy(intervals=tuple(intervals), give_up_after=1e7)
    when = policy.next_attempt(0.0, now, attempts, random.Random(attempts))
    assert when <= policy.expires(0.0)
    if not policy.expired(0.0, now):
        assert when > now or when == policy.expires(0.0)
