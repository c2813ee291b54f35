"""Configuration of the HTTP surface: the `[web]` and `[acme]` tables.

Read by :mod:`postroom.config` (which owns the file, the error type and the other tables);
kept apart so each table's dataclass sits beside its validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from postroom import config_checks as checks
from postroom.config_checks import IPNetwork
from postroom.config_common import Reader

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
CHALLENGES = ("http-01", "tls-alpn-01")  # RFC 8555 §8.3, RFC 8737
MAX_BODY_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class WebConfig:
    """The HTTP(S) listeners' application: who may read /metrics, how big a request may be."""

    metrics_allow: tuple[IPNetwork, ...] = ()  # besides loopback, which is always allowed
    max_body: int = 1024 * 1024  # bytes of a request body; larger: 413


@dataclass(frozen=True)
class AcmeConfig:
    """Certificates from an ACME CA (RFC 8555) for the hostname and the domains' web names."""

    enabled: bool = False
    directory: str = LETS_ENCRYPT
    email: str = ""  # the account's contact (mailto:), optional
    ca_file: Path | None = None  # PEM bundle trusted for the directory (a private CA)
    challenge: str = "http-01"  # or "tls-alpn-01": answered on [listen] https (port 443)


WEB_KEYS = tuple(f.name for f in fields(WebConfig))
ACME_KEYS = tuple(f.name for f in fields(AcmeConfig))


def read_web(reader: Reader, doc: Mapping[str, Any]) -> WebConfig:
    raw = reader.table(doc, "web", WEB_KEYS)
    values: dict[str, Any] = {}
    if "metrics_allow" in raw:
        values["metrics_allow"] = reader.check(
            "web.metrics_allow", checks.networks, raw["metrics_allow"]
        )
    if "max_body" in raw:
        size = reader.check("web.max_body", checks.size, raw["max_body"], WebConfig.max_body)
        values["max_body"] = reader.check(
            "web.max_body", _at_most, size, MAX_BODY_LIMIT, str(MAX_BODY_LIMIT)
        )
    return WebConfig(**values)


def read_acme(reader: Reader, doc: Mapping[str, Any]) -> AcmeConfig:
    raw = reader.table(doc, "acme", ACME_KEYS)
    values: dict[str, Any] = {}
    if "enabled" in raw:
        values["enabled"] = reader.check("acme.enabled", checks.boolean, raw["enabled"], True)
    if "directory" in raw:
        values["directory"] = reader.check("acme.directory", _https_url, raw["directory"])
    if "email" in raw:
        values["email"] = reader.check("acme.email", _email, raw["email"])
    if "ca_file" in raw:
        text = reader.check(
            "acme.ca_file", checks.path_string, raw["ca_file"], '"/etc/postroom/acme-ca.pem"'
        )
        values["ca_file"] = reader.resolve(text)
    if "challenge" in raw:
        values["challenge"] = reader.check("acme.challenge", _challenge, raw["challenge"])
    return AcmeConfig(**values)


def _at_most(value: int, most: int, example: str) -> int:
    if value > most:
        raise checks.Invalid(f"is too large, got {value} bytes", f"write at most {example}")
    return value


def _https_url(value: object) -> str:
    fix = f'write the CA\'s directory URL, such as "{LETS_ENCRYPT}"'
    if not isinstance(value, str) or not value.startswith("https://") or len(value) > 2000:
        raise checks.Invalid(f"must be an https:// URL, got {checks.show(value)}", fix)
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise checks.Invalid(f"{checks.show(value)} contains spaces or control characters", fix)
    return value


def _challenge(value: object) -> str:
    if value not in CHALLENGES:
        raise checks.Invalid(
            f"must be one of {', '.join(CHALLENGES)}, got {checks.show(value)}",
            'write "http-01" (port 80) or "tls-alpn-01" (port 443)',
        )
    return str(value)


def _email(value: object) -> str:
    fix = 'write an address such as "postmaster@example.com", or remove the key'
    if not isinstance(value, str) or value.count("@") != 1 or len(value) > 254:
        raise checks.Invalid(f"must be one email address, got {checks.show(value)}", fix)
    local, _, domain = value.partition("@")
    if not local or not checks.is_hostname(domain) or any(c.isspace() for c in value):
        raise checks.Invalid(f"{checks.show(value)} is not an email address", fix)
    return value
