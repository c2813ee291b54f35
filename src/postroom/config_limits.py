"""Configuration of what one client session may do: the `[limits]` and `[auth]` tables.

`[limits]`: message size, recipients, line length, timeouts, connections and the sending
and login-failure counts. `[auth]`: password logins (plaintext allowed or not, how long a
verified password is remembered). Read by :mod:`postroom.config`, which owns the file and the
error type.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from postroom import config_checks as checks
from postroom.config_common import Reader


@dataclass(frozen=True)
class LimitsConfig:
    """Per-message and per-session resource limits."""

    message_size: int = 52428800
    recipients: int = 1000  # per transaction
    line_length: int = 4096  # max command line incl. CRLF (RFC 5321 §4.5.3.1.4 minimum is 512)
    command_timeout: float = 300.0  # seconds, RFC 5321 §4.5.3.2.7 (5 minutes)
    data_timeout: float = 600.0  # seconds, between data blocks (RFC 5321 §4.5.3.2.6 is 3 min)
    connections_per_ip: int = 50  # Postfix: smtpd_client_connection_count_limit = 50
    connections: int = 1000  # total concurrent SMTP sessions
    errors_per_session: int = 20  # after this many error replies the session is closed with 421
    received_headers: int = 50  # more Received: headers than this → mail loop 554 5.4.6
    pop3_timeout: float = 600.0  # seconds, RFC 1939 §3: autologout after at least 10 minutes
    imap_timeout: float = 1800.0  # seconds, RFC 3501 §5.4: autologout after at least 30 minutes
    managesieve_timeout: float = 600.0  # seconds of silence before a ManageSieve session ends
    imap_sessions_per_user: int = 100  # logged-in IMAP sessions of one user at once
    # Failed logins from one address for one account (three times as many for any account)
    # within auth_block before logins from there are refused for auth_block (services/limits.py).
    auth_failures: int = 10
    auth_block: float = 900.0  # seconds
    messages_per_hour: int = 500  # per authenticated user (451 4.7.0 past it)
    recipients_per_hour: int = 2000  # per authenticated user


@dataclass(frozen=True)
class AuthConfig:
    """Password logins (SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3 USER/AUTH)."""

    # Without TLS too: only behind a TLS-terminating proxy, or for tests and measurements.
    plaintext: bool = False
    # Seconds a verified password is remembered (argon2 skipped for it); 0 turns that off.
    cache_ttl: float = 3600.0


_MIN_LINE_LENGTH = 512
LIMITS_KEYS = tuple(f.name for f in fields(LimitsConfig))
_LIMITS_DURATIONS = frozenset(
    {
        "command_timeout",
        "data_timeout",
        "pop3_timeout",
        "imap_timeout",
        "managesieve_timeout",
        "auth_block",
    }
)
AUTH_KEYS = tuple(f.name for f in fields(AuthConfig))


def read_limits(reader: Reader, doc: Mapping[str, Any]) -> LimitsConfig:
    raw = reader.table(doc, "limits", LIMITS_KEYS)
    defaults = LimitsConfig()
    values: dict[str, Any] = {}
    for name in LIMITS_KEYS:
        if name not in raw:
            continue
        default = getattr(defaults, name)
        value = raw[name]
        convert: Callable[[], Any]
        if name in _LIMITS_DURATIONS:
            convert = functools.partial(checks.timeout, value, default)
        elif name == "message_size":
            convert = functools.partial(checks.size, value, default)
        elif name == "line_length":
            convert = functools.partial(checks.positive_int, value, default, _MIN_LINE_LENGTH)
        else:
            convert = functools.partial(checks.positive_int, value, default)
        values[name] = reader.check(f"limits.{name}", convert)
    return LimitsConfig(**values)


def read_auth(reader: Reader, doc: Mapping[str, Any]) -> AuthConfig:
    raw = reader.table(doc, "auth", AUTH_KEYS)
    defaults = AuthConfig()
    values: dict[str, Any] = {}
    if "plaintext" in raw:
        values["plaintext"] = reader.check(
            "auth.plaintext", checks.boolean, raw["plaintext"], False
        )
    if "cache_ttl" in raw:
        values["cache_ttl"] = reader.check(
            "auth.cache_ttl", checks.duration_or_off, raw["cache_ttl"], defaults.cache_ttl
        )
    return AuthConfig(**values)
