"""Retry timing for deferred recipients: when to try again, when to warn, when to give up.

RFC 5321 §4.5.4.1 asks for a retry interval of at least 30 minutes and a give-up time of at least
4-5 days; the defaults follow the seeds (retries for days, a warning after 4 hours, return after 5
days) with a first retry after 15 minutes, as Postfix and Exim do for a quick second chance.
Intervals are jittered so that mail deferred together does not retry in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_RETRY = (15 * 60.0, 30 * 60.0, 3600.0, 2 * 3600.0, 4 * 3600.0)
DEFAULT_WARN_AFTER = 4 * 3600.0
DEFAULT_GIVE_UP_AFTER = 5 * 86400.0
JITTER = 0.1  # each interval is stretched or shrunk by up to 10%


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Seconds between attempts (the last one repeats), and the warn / give-up ages."""

    intervals: tuple[float, ...] = DEFAULT_RETRY
    warn_after: float = DEFAULT_WARN_AFTER
    give_up_after: float = DEFAULT_GIVE_UP_AFTER

    def __post_init__(self) -> None:
        if not self.intervals or any(i <= 0 for i in self.intervals):
            raise ValueError("retry intervals must be a non-empty list of positive durations")
        if self.give_up_after <= 0 or self.warn_after < 0:
            raise ValueError("give_up_after must be positive and warn_after not negative")

    def interval(self, attempts: int, rng: random.Random) -> float:
        """The wait after the `attempts`-th failed attempt (1 = after the first failure)."""
        base = self.intervals[min(max(attempts, 1), len(self.intervals)) - 1]
        return base * rng.uniform(1.0 - JITTER, 1.0 + JITTER)

    def next_attempt(self, arrival: float, now: float, attempts: int, rng: random.Random) -> float:
        """When to try again; never later than the give-up time, so the last try happens."""
        return min(now + self.interval(attempts, rng), self.expires(arrival))

    def expires(self, arrival: float) -> float:
        return arrival + self.give_up_after

    def expired(self, arrival: float, now: float) -> bool:
        return now >= self.expires(arrival)

    def warning_due(self, arrival: float, now: float, already_warned: bool) -> bool:
        """A delay notice (RFC 3464 Action: delayed) goes out once, after `warn_after`."""
        return (
            not already_warned
            and self.warn_after < self.give_up_after
            and now >= arrival + self.warn_after
        )
