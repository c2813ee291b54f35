"""Configuration of outbound mail: the `[dns]`, `[delivery]`, `[relay]`, `[routes]` and
`[dkim]` tables.

`[dns]`: the nameservers asked for MX/A/AAAA and mail authentication (the system resolver
when none). `[delivery]`: the remote SMTP port and parallel sessions. `[relay]`: a smarthost
for all remote mail; `[routes]`: a next hop per domain. `[dkim]`: whether our mail is signed.
Read by :mod:`postroom.config`, which owns the file and the error type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from postroom import config_checks as checks
from postroom.config_checks import Endpoint
from postroom.config_common import Reader


@dataclass(frozen=True)
class DnsConfig:
    """Where MX/A/AAAA lookups go: "host:port" servers, or the system resolver when empty."""

    nameservers: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeliveryConfig:
    """Outbound SMTP: the remote port (25; tests and labs change it) and parallel sessions."""

    port: int = 25
    concurrency: int = 10


@dataclass(frozen=True)
class RelayConfig:
    """A smarthost for all remote mail ([relay]) and per-domain next hops ([routes])."""

    host: Endpoint | None = None
    tls: str = "starttls"  # starttls | implicit | opportunistic
    username: str = ""
    password: str = ""
    ca_file: Path | None = None  # CA bundle to verify the relay (default: system CAs)
    routes: tuple[tuple[str, Endpoint], ...] = ()


@dataclass(frozen=True)
class DkimConfig:
    """Outbound DKIM signing of mail whose From: is in one of our domains."""

    sign: bool = True


DNS_KEYS = tuple(f.name for f in fields(DnsConfig))
DELIVERY_KEYS = tuple(f.name for f in fields(DeliveryConfig))
RELAY_KEYS = ("host", "tls", "username", "password", "ca_file")
_RELAY_TLS = ("starttls", "implicit", "opportunistic")
DKIM_KEYS = tuple(f.name for f in fields(DkimConfig))


def read_dns(reader: Reader, doc: Mapping[str, Any]) -> DnsConfig:
    raw = reader.table(doc, "dns", DNS_KEYS)
    if "nameservers" not in raw:
        return DnsConfig()
    return DnsConfig(reader.check("dns.nameservers", checks.nameservers, raw["nameservers"]))


def read_delivery(reader: Reader, doc: Mapping[str, Any]) -> DeliveryConfig:
    raw = reader.table(doc, "delivery", DELIVERY_KEYS)
    defaults = DeliveryConfig()
    values: dict[str, Any] = {}
    if "port" in raw:
        values["port"] = reader.check("delivery.port", checks.port, raw["port"], defaults.port)
    if "concurrency" in raw:
        values["concurrency"] = reader.check(
            "delivery.concurrency",
            checks.positive_int,
            raw["concurrency"],
            defaults.concurrency,
        )
    return DeliveryConfig(**values)


def read_relay(reader: Reader, doc: Mapping[str, Any]) -> RelayConfig:
    raw = reader.table(doc, "relay", RELAY_KEYS)
    values: dict[str, Any] = {}
    if "host" in raw:
        values["host"] = reader.check(
            "relay.host", checks.endpoint, raw["host"], "smtp.provider.example:587"
        )
    if "tls" in raw:
        values["tls"] = reader.check("relay.tls", checks.choice, raw["tls"], _RELAY_TLS)
    for name in ("username", "password"):
        if name in raw:
            values[name] = reader.check(f"relay.{name}", checks.text, raw[name])
    if "ca_file" in raw:
        text = reader.check(
            "relay.ca_file", checks.path_string, raw["ca_file"], '"tls/relay-ca.pem"'
        )
        values["ca_file"] = reader.resolve(text)
    if values.get("password") and not values.get("username"):
        raise reader.error(
            "relay.username",
            "missing while relay.password is set",
            "set both, or neither for a relay that needs no login",
        )
    routes = reader.table(doc, "routes", tuple(doc.get("routes", {}) or ()))
    values["routes"] = tuple(
        (
            reader.check(f"routes.{name}", checks.domain, name, "example.org"),
            reader.check(f"routes.{name}", checks.endpoint, target, "mx.internal.example:25"),
        )
        for name, target in routes.items()
    )
    return RelayConfig(**values)


def read_dkim(reader: Reader, doc: Mapping[str, Any]) -> DkimConfig:
    raw = reader.table(doc, "dkim", DKIM_KEYS)
    if "sign" not in raw:
        return DkimConfig()
    return DkimConfig(reader.check("dkim.sign", checks.boolean, raw["sign"], True))
