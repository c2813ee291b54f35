"""Configuration: load a TOML file into frozen, validated dataclasses.

Every problem is reported as one :class:`ConfigError` whose message is a single line
naming the file, the dotted key, what is wrong and how to fix it. The checks of single
values live in :mod:`postroom.config_checks`; each table is read by its own ``config_*.py``
module (:mod:`postroom.config_listen`, ``config_limits``, ``config_queue``,
``config_outbound``, ``config_verify``, ``config_antispam``, ``config_milter``, ``config_web``,
``config_server``, ``config_log``, ``config_storage``) through the reader defined here.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from postroom import config_checks as checks
from postroom.config_antispam import AntispamConfig, JunkConfig, read_antispam, read_junk
from postroom.config_checks import Endpoint
from postroom.config_limits import AuthConfig, LimitsConfig, read_auth, read_limits
from postroom.config_listen import (
    ListenConfig,
    ProxyConfig,
    TlsConfig,
    read_listen,
    read_proxy,
    read_tls,
)
from postroom.config_log import LogConfig, read_log
from postroom.config_milter import MilterConfig, read_milters
from postroom.config_outbound import (
    DeliveryConfig,
    DkimConfig,
    DnsConfig,
    RelayConfig,
    read_delivery,
    read_dkim,
    read_dns,
    read_relay,
)
from postroom.config_queue import QueueConfig, read_queue
from postroom.config_server import ServerConfig, read_server
from postroom.config_storage import StorageConfig, read_storage
from postroom.config_verify import VerifyConfig, read_verify
from postroom.config_web import AcmeConfig, WebConfig, read_acme, read_web

__all__ = [
    "DEFAULT_DOMAINS",
    "Config",
    "ConfigError",
    "Endpoint",
    "default_config",
    "default_hostname",
    "load_config",
]


# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """A configuration problem; ``str(error)`` is one line: ``path: key: problem; fix``.

    *key* is the dotted key (``limits.message_size``) or, for problems with the file
    as a whole, a position such as ``line 3, column 9``; it is omitted when ``None``.
    """

    def __init__(self, path: str | os.PathLike[str], key: str | None, problem: str, fix: str):
        super().__init__(path, key, problem, fix)
        self.path = str(path)
        self.key = key
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        where = self.path if self.key is None else f"{self.path}: {self.key}"
        return _one_line(f"{where}: {self.problem}; {self.fix}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class Config:
    """The whole server configuration."""

    path: Path  # the file it came from (absolute)
    hostname: str
    data_dir: Path  # absolute
    domains: tuple[str, ...]
    listen: ListenConfig
    tls: TlsConfig
    limits: LimitsConfig
    queue: QueueConfig
    dns: DnsConfig = DnsConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    relay: RelayConfig = RelayConfig()
    auth: AuthConfig = AuthConfig()
    verify: VerifyConfig = VerifyConfig()
    dkim: DkimConfig = DkimConfig()
    junk: JunkConfig = JunkConfig()
    antispam: AntispamConfig = AntispamConfig()
    milters: tuple[MilterConfig, ...] = ()
    web: WebConfig = WebConfig()
    acme: AcmeConfig = AcmeConfig()
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()
    proxy: ProxyConfig = ProxyConfig()  # [listen] proxy_protocol, proxy_trusted
    storage: StorageConfig = StorageConfig()


_DEFAULT_DATA_DIR = "./postroom-data"
DEFAULT_DOMAINS: tuple[str, ...] = ("localhost",)

_TOP_KEYS = (
    "hostname",
    "data_dir",
    "domains",
    "listen",
    "tls",
    "limits",
    "queue",
    "dns",
    "delivery",
    "relay",
    "routes",
    "auth",
    "verify",
    "dkim",
    "junk",
    "antispam",
    "milter",
    "web",
    "acme",
    "server",
    "log",
    "storage",
)


# --------------------------------------------------------------------------- loading

_T = TypeVar("_T")


class _Reader:
    """Validates one parsed TOML document, turning checks.Invalid into ConfigError."""

    def __init__(self, shown_path: str, config_path: Path):
        self.shown = shown_path
        self.path = config_path
        self.base = config_path.parent

    def error(self, key: str | None, problem: str, fix: str) -> ConfigError:
        return ConfigError(self.shown, key, problem, fix)

    def check(self, key: str, convert: Callable[..., _T], *args: Any) -> _T:
        try:
            return convert(*args)
        except checks.Invalid as exc:
            raise self.error(key, exc.problem, exc.fix) from None

    def table(self, doc: Mapping[str, Any], name: str, known: Sequence[str]) -> dict[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            raise self.error(
                name,
                f"must be a table, got {checks.show(value)}",
                f"write it as a [{name}] section",
            )
        self.unknown_keys(value, known, prefix=f"{name}.", section=f"in [{name}]")
        return value

    def unknown_keys(
        self, table: Mapping[str, Any], known: Sequence[str], prefix: str, section: str
    ) -> None:
        for key in table:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) or [
                name for name in known if key and (key.startswith(name) or name.startswith(key))
            ]
            if close:
                fix = f"did you mean {prefix}{close[0]}?"
            else:
                fix = f"remove it or use one of the keys allowed {section}: {', '.join(known)}"
            shown_key = key or '""'
            raise self.error(f"{prefix}{shown_key}", "unknown key", fix)

    def resolve(self, text: str) -> Path:
        path = Path(text).expanduser()
        return Path(os.path.normpath(self.base / path))

    def build(self, doc: Mapping[str, Any]) -> Config:
        self.unknown_keys(doc, _TOP_KEYS, prefix="", section="at the top level")

        if "hostname" in doc:
            hostname = self.check("hostname", checks.hostname, doc["hostname"])
        else:
            hostname = default_hostname()
        data_dir = self.resolve(
            self.check(
                "data_dir",
                checks.path_string,
                doc.get("data_dir", _DEFAULT_DATA_DIR),
                '"/var/lib/postroom"',
            )
        )
        domains = DEFAULT_DOMAINS
        if "domains" in doc:
            domains = self.check("domains", checks.domains, doc["domains"])

        return Config(
            path=self.path,
            hostname=hostname,
            data_dir=data_dir,
            domains=domains,
            listen=read_listen(self, doc),
            tls=read_tls(self, doc),
            limits=read_limits(self, doc),
            queue=read_queue(self, doc),
            dns=read_dns(self, doc),
            delivery=read_delivery(self, doc),
            relay=read_relay(self, doc),
            auth=read_auth(self, doc),
            verify=read_verify(self, doc),
            dkim=read_dkim(self, doc),
            junk=read_junk(self, doc),
            antispam=read_antispam(self, doc),
            milters=read_milters(self, doc),
            web=read_web(self, doc),
            acme=read_acme(self, doc),
            server=read_server(self, doc),
            log=read_log(self, doc),
            proxy=read_proxy(self, doc),
            storage=read_storage(self, doc),
        )


_TOML_POSITION = re.compile(r"\s*\(at (line \d+, column \d+|end of document)\)\s*$")


@functools.cache
def default_hostname() -> str:
    """The machine's FQDN (what Postfix's myhostname defaults to), else localhost."""
    try:
        name = socket.getfqdn()
    except OSError:
        return "localhost"
    try:
        return checks.hostname(name)
    except checks.Invalid:
        return "localhost"


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def load_config(path: Path) -> Config:
    """Read, parse and validate the TOML configuration file at *path*.

    Raises :class:`ConfigError` (a one-line message) for any problem.
    """
    shown = os.fspath(path)
    try:
        with open(_absolute(path), "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            shown, None, "file not found", "create it with `postroom init` or pass the right path"
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            shown, None, "is a directory, not a file", "pass the path of the TOML file itself"
        ) from None
    except PermissionError:
        raise ConfigError(
            shown, None, "permission denied", "make the file readable by the postroom user"
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            shown, None, f"cannot read file: {reason}", "check the path and the disk"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            shown,
            f"byte {exc.start}",
            "file is not valid UTF-8",
            "save the file as UTF-8 text",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        where = match.group(1) if match else None
        detail = message[: match.start()] if match else message
        detail = detail[:1].lower() + detail[1:]
        raise ConfigError(
            shown,
            where,
            f"TOML syntax error: {detail}",
            'check that line: strings need double quotes (hostname = "mx.example.com"), '
            "sections are written [name], and each key appears once",
        ) from None
    return _Reader(shown, _absolute(path)).build(doc)


def default_config(path: Path) -> Config:
    """The configuration :func:`load_config` would return for an empty file at *path*."""
    return _Reader(os.fspath(path), _absolute(path)).build({})
