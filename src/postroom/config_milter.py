"""Configuration of the Sendmail-protocol filters: the `[[milter]]` array of tables.

Each entry names where the milter listens (`inet:HOST:PORT`, `inet:[IPv6]:PORT`,
`inet:PORT@HOST` or `unix:PATH`, as Postfix's smtpd_milters takes them), which SMTP services
call it, what happens when it fails, and its timeouts. Read by :mod:`postroom.config`, which
owns the file and the error type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postroom import config_checks as checks
from postroom.config_common import Reader

MILTER_ON_ERROR = ("tempfail", "accept")
MILTER_SERVICES = ("smtp", "submission", "submissions")


@dataclass(frozen=True)
class MilterConfig:
    """One `[[milter]]`: a Sendmail-protocol filter called during SMTP receive, in the order
    configured. Reached at `inet:HOST:PORT` (host and port set) or `unix:PATH` (path set)."""

    address: str  # as written, for logs
    host: str = ""
    port: int = 0
    path: Path | None = None
    on_error: str = "tempfail"  # unreachable or broken milter: 451 4.7.1, or "accept" (skip it)
    services: tuple[str, ...] = ("smtp",)
    connect_timeout: float = 30.0  # Postfix milter_connect_timeout
    command_timeout: float = 30.0  # Postfix milter_command_timeout
    content_timeout: float = 300.0  # Postfix milter_content_timeout (message content, EOM)


MILTER_KEYS = (
    "address",
    "on_error",
    "services",
    "connect_timeout",
    "command_timeout",
    "content_timeout",
)


def read_milters(reader: Reader, doc: Mapping[str, Any]) -> tuple[MilterConfig, ...]:
    raw = doc.get("milter", [])
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise reader.error(
            "milter",
            f"must be an array of tables, got {checks.show(raw)}",
            'write each milter as its own [[milter]] section with address = "inet:..."',
        )
    return tuple(_read_milter(reader, table, f"milter[{n}]") for n, table in enumerate(raw))


def _read_milter(reader: Reader, raw: Mapping[str, Any], key: str) -> MilterConfig:
    reader.unknown_keys(raw, MILTER_KEYS, prefix=f"{key}.", section="in [[milter]]")
    if "address" not in raw:
        raise reader.error(
            f"{key}.address",
            "missing",
            'set it, e.g. address = "inet:127.0.0.1:11332" or "unix:/run/milter.sock"',
        )
    values: dict[str, Any] = {"address": raw["address"]}
    values.update(reader.check(f"{key}.address", _milter_address, raw["address"]))
    if values.get("path") is not None:
        values["path"] = reader.resolve(str(values["path"]))
    if "on_error" in raw:
        values["on_error"] = reader.check(
            f"{key}.on_error", checks.choice, raw["on_error"], MILTER_ON_ERROR
        )
    if "services" in raw:
        values["services"] = reader.check(f"{key}.services", _milter_services, raw["services"])
    defaults = MilterConfig("")
    for name in ("connect_timeout", "command_timeout", "content_timeout"):
        if name in raw:
            values[name] = reader.check(
                f"{key}.{name}", checks.timeout, raw[name], getattr(defaults, name)
            )
    return MilterConfig(**values)


def _milter_address(value: object) -> dict[str, Any]:
    """`inet:HOST:PORT`, `inet:[IPv6]:PORT`, `inet:PORT@HOST` (Sendmail's order) or
    `unix:PATH` (also `local:PATH`), as Postfix's smtpd_milters takes them."""
    fix = 'write "inet:127.0.0.1:11332", "inet:[::1]:11332" or "unix:/run/milter.sock"'
    if not isinstance(value, str):
        raise checks.Invalid(f"must be a string, got {checks.show(value)}", fix)
    kind, sep, rest = value.partition(":")
    if not sep or not rest:
        raise checks.Invalid(f"{checks.show(value)} has no inet: or unix: prefix", fix)
    kind = kind.lower()
    if kind in ("unix", "local"):
        return {"path": rest}
    if kind not in ("inet", "inet6"):
        raise checks.Invalid(f"unknown socket type {kind!r} in {checks.show(value)}", fix)
    if "@" in rest:
        port_text, _, host = rest.partition("@")
    elif rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise checks.Invalid(f"{checks.show(value)}: unclosed [ or no :PORT", fix)
        port_text = tail[1:]
    else:
        host, _, port_text = rest.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise checks.Invalid(f"{checks.show(value)} needs a host and a port 1-65535", fix)
    return {"host": host, "port": int(port_text)}


def _milter_services(value: object) -> tuple[str, ...]:
    fix = 'write e.g. ["smtp"] or ["smtp", "submission", "submissions"]'
    if not isinstance(value, list) or not value:
        raise checks.Invalid(f"must be a non-empty list, got {checks.show(value)}", fix)
    for item in value:
        if item not in MILTER_SERVICES:
            raise checks.Invalid(
                f"unknown service {checks.show(item)}; one of {', '.join(MILTER_SERVICES)}", fix
            )
    return tuple(dict.fromkeys(value))
