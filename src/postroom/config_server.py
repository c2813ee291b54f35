"""Configuration of the server process itself: the `[server]` table.

`user`: the account `postroom serve` becomes once its listening sockets are open, when it is
started as root (cli/privileges.py). Read by :mod:`postroom.config`, which owns the file and
the error type; kept apart so the table's dataclass sits beside its validation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from postroom import config_checks as checks
from postroom.config_common import Reader

# What useradd accepts by default (shadow's is_valid_user_name, without the trailing $).
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}\Z")


@dataclass(frozen=True)
class ServerConfig:
    """How the server process runs."""

    user: str | None = None  # started as root: drop to this user after binding (None: stay)


SERVER_KEYS = tuple(f.name for f in fields(ServerConfig))


def read_server(reader: Reader, doc: Mapping[str, Any]) -> ServerConfig:
    raw = reader.table(doc, "server", SERVER_KEYS)
    values: dict[str, Any] = {}
    if "user" in raw:
        values["user"] = reader.check("server.user", user_name, raw["user"])
    return ServerConfig(**values)


def user_name(value: object) -> str:
    fix = 'write a system user name such as "postroom", or remove the key to stay as started'
    if not isinstance(value, str) or not _USER_NAME.match(value):
        raise checks.Invalid(f"must be a user name, got {checks.show(value)}", fix)
    if value == "root":
        raise checks.Invalid("must not be root (that is no change)", fix)
    return value
