"""Configuration of the server's log: the `[log]` table.

Read by :mod:`postroom.config` (which owns the file and the error type); `logsetup` makes the
log lines in the format chosen here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from postroom import config_checks as checks
from postroom.config_common import Reader

FORMATS = ("text", "json")


@dataclass(frozen=True)
class LogConfig:
    """How `postroom serve` writes its log on stderr."""

    format: str = "text"  # one of FORMATS: "json" writes one JSON object per line


LOG_KEYS = tuple(f.name for f in fields(LogConfig))


def read_log(reader: Reader, doc: Mapping[str, Any]) -> LogConfig:
    raw = reader.table(doc, "log", LOG_KEYS)
    values: dict[str, Any] = {}
    if "format" in raw:
        values["format"] = reader.check("log.format", checks.choice, raw["format"], FORMATS)
    return LogConfig(**values)
