"""Configuration of the defences against unwanted mail: the `[antispam]` and `[junk]` tables.

`[antispam]`: DNS block and allow lists, greylisting and a wait before the greeting
(services/antispam.py). `[junk]`: the built-in junk filter, its thresholds on the RFC 5235
scale. Read by :mod:`postroom.config`, which owns the file and the error type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from postroom import config_checks as checks
from postroom.config_common import Reader
from postroom.durations import format_duration


@dataclass(frozen=True)
class AntispamConfig:
    """Checks of SMTP clients before their mail (services/antispam.py): DNS block and allow
    lists, greylisting, a wait before the greeting. All off by default."""

    dnsbl: tuple[str, ...] = ()  # DNSBL zones (RFC 5782); a listed client: 554 5.7.1 at RCPT
    dnswl: tuple[str, ...] = ()  # DNSWL zones; a listed client is not greylisted
    greylist: float = 0.0  # seconds an unknown (network, sender, recipient) waits; 0: off
    greet_delay: float = 0.0  # seconds before the 220; a client talking earlier is refused


MAX_GREET_DELAY = 60.0
MAX_GREYLIST = 86400.0


@dataclass(frozen=True)
class JunkConfig:
    """The built-in junk filter: each user's Bayesian classifier, trained by moving mail into
    and out of Junk, scores mail from `smtp` clients that did not log in on the RFC 5235 scale
    (1 certainly ham ... 10 certainly spam; only once the user trained 200 of each)."""

    enabled: bool = True
    junk_above: int = 5  # a higher score files the copy into the user's Junk (0: never)
    refuse_above: int = 0  # a higher score for every recipient refuses at DATA (0: never)


ANTISPAM_KEYS = tuple(f.name for f in fields(AntispamConfig))
JUNK_KEYS = tuple(f.name for f in fields(JunkConfig))


def read_antispam(reader: Reader, doc: Mapping[str, Any]) -> AntispamConfig:
    raw = reader.table(doc, "antispam", ANTISPAM_KEYS)
    values: dict[str, Any] = {}
    for name in ("dnsbl", "dnswl"):
        if name in raw:
            values[name] = reader.check(f"antispam.{name}", checks.domains, raw[name], True)
    for name, most in (("greylist", MAX_GREYLIST), ("greet_delay", MAX_GREET_DELAY)):
        if name in raw:
            seconds = reader.check(f"antispam.{name}", checks.duration_or_off, raw[name], 0.0)
            if seconds > most:
                raise reader.error(
                    f"antispam.{name}",
                    f"is too long, got {checks.show(raw[name])}",
                    f'write at most "{format_duration(most)}", or 0 for off',
                )
            values[name] = seconds
    return AntispamConfig(**values)


def read_junk(reader: Reader, doc: Mapping[str, Any]) -> JunkConfig:
    raw = reader.table(doc, "junk", JUNK_KEYS)
    values: dict[str, Any] = {}
    if "enabled" in raw:
        values["enabled"] = reader.check("junk.enabled", checks.boolean, raw["enabled"], True)
    for key in ("junk_above", "refuse_above"):
        if key not in raw:
            continue
        default = getattr(JunkConfig(), key)
        score = reader.check(f"junk.{key}", checks.positive_int, raw[key], default, 0)
        if score > 10:
            raise reader.error(
                f"junk.{key}",
                f"must be a spam score (RFC 5235: 1 to 10), got {score}",
                f"write a number from 0 (never) to 10, such as {default or 9}",
            )
        values[key] = score
    return JunkConfig(**values)
