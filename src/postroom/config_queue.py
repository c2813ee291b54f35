"""Configuration of the queue: the `[queue]` table.

Group commit tuning (how long and how many messages one durable write may gather), the retry
schedule of deferred mail, when a delay notice goes out, when mail is returned, and how long
delivery history is kept. Read by :mod:`postroom.config`, which owns the file and the error
type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from postroom import config_checks as checks
from postroom.config_common import Reader


@dataclass(frozen=True)
class QueueConfig:
    """Queue durability tuning (group commit) and the retry schedule for deferred mail."""

    group_commit_ms: float = 0.0
    group_commit_max: int = 256
    retry: tuple[float, ...] = (900.0, 1800.0, 3600.0, 7200.0, 14400.0)  # last one repeats
    warn_after: float = 4 * 3600.0  # delay notice once after this
    give_up_after: float = 5 * 86400.0  # then the mail is returned
    keep_history: float = 30 * 86400.0  # delivery history kept this long after arrival


QUEUE_KEYS = tuple(f.name for f in fields(QueueConfig))


def read_queue(reader: Reader, doc: Mapping[str, Any]) -> QueueConfig:
    raw = reader.table(doc, "queue", QUEUE_KEYS)
    defaults = QueueConfig()
    values: dict[str, Any] = {}
    if "group_commit_ms" in raw:
        values["group_commit_ms"] = reader.check(
            "queue.group_commit_ms",
            checks.milliseconds,
            raw["group_commit_ms"],
            defaults.group_commit_ms,
        )
    if "group_commit_max" in raw:
        values["group_commit_max"] = reader.check(
            "queue.group_commit_max",
            checks.positive_int,
            raw["group_commit_max"],
            defaults.group_commit_max,
        )
    if "retry" in raw:
        values["retry"] = reader.check(
            "queue.retry", checks.durations, raw["retry"], defaults.retry
        )
    for name in ("warn_after", "give_up_after", "keep_history"):
        if name in raw:
            values[name] = reader.check(
                f"queue.{name}", checks.timeout, raw[name], getattr(defaults, name)
            )
    return QueueConfig(**values)
