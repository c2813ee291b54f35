"""Configuration of the listeners: the `[listen]` and `[tls]` tables.

`[listen]`: the address each service listens on (a service left out is not started; no table
at all means the development addresses of :data:`DEFAULT_LISTEN`), each IP and port used once.
`[tls]`: the certificate chain and key the TLS listeners present, or neither for a generated
one. Read by :mod:`postroom.config`, which owns the file and the error type.
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
class ListenConfig:
    """Where each service listens; ``None`` means the service is not started."""

    smtp: Endpoint | None = None
    submission: Endpoint | None = None
    submissions: Endpoint | None = None
    imap: Endpoint | None = None
    imaps: Endpoint | None = None
    pop3: Endpoint | None = None
    pop3s: Endpoint | None = None
    managesieve: Endpoint | None = None  # RFC 5804 (4190 in production)
    http: Endpoint | None = None  # web admin, ACME http-01, autoconfig, metrics (80)
    https: Endpoint | None = None  # the same over TLS (443)

    def enabled(self) -> dict[str, Endpoint]:
        """The services to start, by name, in declaration order."""
        result: dict[str, Endpoint] = {}
        for f in fields(self):
            endpoint = getattr(self, f.name)
            if endpoint is not None:
                result[f.name] = endpoint
        return result


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
    raw = reader.table(doc, "listen", LISTEN_KEYS) if "listen" in doc else DEFAULT_LISTEN
    endpoints: dict[str, Endpoint] = {}
    used: dict[tuple[str, int], str] = {}
    for name in LISTEN_KEYS:  # fixed order so duplicate reports are stable
        if name not in raw:
            continue
        key = f"listen.{name}"
        example = DEFAULT_LISTEN.get(name, f"127.0.0.1:{_EXAMPLE_PORTS[name]}")
        endpoint = reader.check(key, checks.endpoint, raw[name], example)
        if endpoint.port != 0:
            slot = (endpoint.host.lower(), endpoint.port)
            if slot in used:
                raise reader.error(
                    key,
                    f"{endpoint} is already used by listen.{used[slot]}",
                    "give each service its own port",
                )
            used[slot] = name
        endpoints[name] = endpoint
    return ListenConfig(**endpoints)


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
