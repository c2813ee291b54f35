"""Batch sizes seen by a group-commit writer (for benchmarks and notes): `Store.stats`."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass
class CommitStats:
    batches: int = 0
    jobs: int = 0
    largest: int = 0
    histogram: collections.Counter[int] = field(default_factory=collections.Counter)

    def record(self, size: int) -> None:
        self.batches += 1
        self.jobs += size
        self.largest = max(self.largest, size)
        self.histogram[size] += 1

    def summary(self) -> str:
        mean = self.jobs / self.batches if self.batches else 0.0
        return f"batches={self.batches} jobs={self.jobs} mean={mean:.1f} max={self.largest}"
