"""Configuration of the listeners: the `[listen]` and `[tls]` tables.

`[listen]`: the address each service listens on, or a list of them (`["0.0.0.0:25", "[::]:25"]`
for IPv4 and IPv6); a service left out is not started, and no table at all means the
development addresses of :data:`DEFAULT_LISTEN`. Each IP and port is used once, a wildcard
address counting for every address of its family.
`[listen] proxy_protocol` names the listeners behind a load balancer, which take a PROXY
header (HAProxy's versions 1 and 2) before anything else, and `[listen] proxy_trusted` the
addresses and networks allowed to send it; both empty by default.
`[tls]`: the certificate chain and key the TLS listeners present, or neither for a generated
one. Read by :mod:`postroom.config`, which owns the file and the error type.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from postroom import config_checks as checks
from postroom.config_checks import Endpoint, IPNetwork
from postroom.config_common import Reader


@dataclass(frozen=True)
class ListenConfig:
    """Where each service listens: one address or more (IPv4 and IPv6), none when it is not
    started."""

    smtp: tuple[Endpoint, ...] = ()
    submission: tuple[Endpoint, ...] = ()
    submissions: tuple[Endpoint, ...] = ()
    imap: tuple[Endpoint, ...] = ()
    imaps: tuple[Endpoint, ...] = ()
    pop3: tuple[Endpoint, ...] = ()
    pop3s: tuple[Endpoint, ...] = ()
    managesieve: tuple[Endpoint, ...] = ()  # RFC 5804 (4190 in production)
    http: tuple[Endpoint, ...] = ()  # web admin, ACME http-01, autoconfig, metrics (80)
    https: tuple[Endpoint, ...] = ()  # the same over TLS (443)

    def enabled(self) -> dict[str, tuple[Endpoint, ...]]:
        """The services to start, by name, in declaration order, with their addresses."""
        result: dict[str, tuple[Endpoint, ...]] = {}
        for f in fields(self):
            endpoints = getattr(self, f.name)
            if endpoints:
                result[f.name] = endpoints
        return result

    def first(self, name: str) -> Endpoint | None:
        """The service's first address, whose port clients are told (autoconfig, SRV records,
        redirects); None when the service is not started."""
        endpoints: tuple[Endpoint, ...] = getattr(self, name)
        return endpoints[0] if endpoints else None


@dataclass(frozen=True)
class TlsConfig:
    """Certificate chain and private key (absolute paths), or neither for a generated one."""

    cert: Path | None = None
    key: Path | None = None


DEFAULT_LISTEN: dict[str, str] = {
    "smtp": "127.0.0.1:2525",
    "submission": "127.0.0.1:2587",
    "submissions": "127.0.0.1:2465",
    "imap": "127.0.0.1:1143",
    "imaps": "127.0.0.1:1993",
    "pop3": "127.0.0.1:1110",
    "pop3s": "127.0.0.1:1995",
    "managesieve": "127.0.0.1:14190",
    "http": "127.0.0.1:8080",
    "https": "127.0.0.1:8443",
}

LISTEN_KEYS = tuple(f.name for f in fields(ListenConfig))
PROXY_KEYS = ("proxy_protocol", "proxy_trusted")  # in [listen], read by read_proxy
TLS_KEYS = ("cert", "key")

_EXAMPLE_PORTS = {
    "smtp": 2525,
    "submission": 2587,
    "submissions": 2465,
    "imap": 1143,
    "imaps": 1993,
    "pop3": 1110,
    "pop3s": 1995,
    "managesieve": 14190,
    "http": 8080,
    "https": 8443,
}


def read_listen(reader: Reader, doc: Mapping[str, Any]) -> ListenConfig:
    raw = (
        reader.table(doc, "listen", (*LISTEN_KEYS, *PROXY_KEYS))
        if "listen" in doc
        else DEFAULT_LISTEN
    )
    services: dict[str, tuple[Endpoint, ...]] = {}
    used: list[tuple[Endpoint, str]] = []
    for name in LISTEN_KEYS:  # fixed order so duplicate reports are stable
        if name not in raw:
            continue
        key = f"listen.{name}"
        port = _EXAMPLE_PORTS[name]
        example = DEFAULT_LISTEN.get(name, f"127.0.0.1:{port}")
        endpoints = reader.check(key, _endpoints, raw[name], example, port)
        for endpoint in endpoints:
            for other, other_name in used:
                if _clash(endpoint, other):
                    same = _slot(endpoint) == _slot(other)
                    problem = (
                        f"{endpoint} is already used by listen.{other_name}"
                        if same
                        else f"{endpoint} overlaps {other} of listen.{other_name} (a wildcard "
                        "address takes its port on every address of its family)"
                    )
                    raise reader.error(key, problem, "give each service its own port")
            used.append((endpoint, name))
        services[name] = endpoints
    return ListenConfig(**services)


def _endpoints(value: object, example: str, port: int) -> tuple[Endpoint, ...]:
    """One "host:port" string, or a list of them (IPv4 and IPv6 in brackets)."""
    fix = f'write it like "{example}", or ["0.0.0.0:{port}", "[::]:{port}"] for IPv4 and IPv6'
    if isinstance(value, str):
        return (checks.endpoint(value, example),)
    if not isinstance(value, list) or not value:
        raise checks.Invalid(
            f'must be a "host:port" string or a list of them, got {checks.show(value)}', fix
        )
    endpoints = []
    for index, item in enumerate(value):
        try:
            endpoints.append(checks.endpoint(item, example))
        except checks.Invalid as exc:
            raise checks.Invalid(f"entry {index + 1}: {exc.problem}", exc.fix) from None
    return tuple(endpoints)


def _slot(endpoint: Endpoint) -> tuple[str, int]:
    """The address and port an endpoint binds, IP addresses in one spelling ("::0" is "::")."""
    try:
        return ipaddress.ip_address(endpoint.host).compressed, endpoint.port
    except ValueError:
        return endpoint.host.lower(), endpoint.port


def _clash(a: Endpoint, b: Endpoint) -> bool:
    """Whether binding both fails: the same address and port, or a wildcard address (0.0.0.0,
    [::], which takes IPv6 only) and another of its family on the same port. Port 0 (a free
    port picked at start) never clashes."""
    if a.port == 0 or a.port != b.port:
        return False
    if _slot(a) == _slot(b):
        return True
    try:
        ip_a, ip_b = ipaddress.ip_address(a.host), ipaddress.ip_address(b.host)
    except ValueError:
        return False
    return ip_a.version == ip_b.version and (ip_a.is_unspecified or ip_b.is_unspecified)


@dataclass(frozen=True)
class ProxyConfig:
    """The listeners that take a PROXY header, and who may send one."""

    protocol: tuple[str, ...] = ()
    trusted: tuple[IPNetwork, ...] = ()


def read_proxy(reader: Reader, doc: Mapping[str, Any]) -> ProxyConfig:
    raw = doc.get("listen")
    if not isinstance(raw, dict):  # no [listen]: the default listeners, no PROXY protocol
        return ProxyConfig()
    started = [name for name in LISTEN_KEYS if name in raw]
    protocol: tuple[str, ...] = ()
    if "proxy_protocol" in raw:
        protocol = reader.check("listen.proxy_protocol", _listeners, raw["proxy_protocol"], started)
    trusted: tuple[IPNetwork, ...] = ()
    if "proxy_trusted" in raw:
        trusted = reader.check("listen.proxy_trusted", checks.networks, raw["proxy_trusted"])
    if protocol and not trusted:
        raise reader.error(
            "listen.proxy_trusted",
            f"missing or empty while listen.proxy_protocol names {', '.join(protocol)}",
            'list the load balancer\'s addresses or networks, e.g. ["127.0.0.66", "10.0.0.0/8"]',
        )
    return ProxyConfig(protocol=protocol, trusted=trusted)


def _listeners(value: object, started: list[str]) -> tuple[str, ...]:
    """An array of names of started mail listeners, each once."""
    fix = 'write an array of [listen] keys such as ["smtp", "imaps"]'
    if not isinstance(value, list):
        raise checks.Invalid(f"must be an array of listener names, got {checks.show(value)}", fix)
    names: list[str] = []
    for index, item in enumerate(value):
        where = f"entry {index + 1}"
        if not isinstance(item, str) or item not in LISTEN_KEYS:
            raise checks.Invalid(
                f"{where}: {checks.show(item)} is not a listener",
                f"use one of {', '.join(LISTEN_KEYS)}",
            )
        if item not in started:
            raise checks.Invalid(
                f"{where}: listen.{item} is not set, so there is no {item} listener",
                f'set listen.{item} or remove "{item}" from the list',
            )
        if item not in names:
            names.append(item)
    return tuple(names)


def read_tls(reader: Reader, doc: Mapping[str, Any]) -> TlsConfig:
    raw = reader.table(doc, "tls", TLS_KEYS)
    paths: dict[str, Path] = {}
    for name in TLS_KEYS:
        if name in raw:
            example = f'"tls/{name}.pem"'
            text = reader.check(f"tls.{name}", checks.path_string, raw[name], example)
            paths[name] = reader.resolve(text)
    if len(paths) == 1:
        present = next(iter(paths))
        missing = "key" if present == "cert" else "cert"
        raise reader.error(
            f"tls.{missing}",
            f"missing while tls.{present} is set",
            "set both tls.cert and tls.key, or neither to use a generated self-signed certificate",
        )
    return TlsConfig(cert=paths.get("cert"), key=paths.get("key"))
