"""Configuration: load a TOML file into frozen, validated dataclasses.

Every problem is reported as one :class:`ConfigError` whose message is a single line
naming the file, the dotted key, what is wrong and how to fix it. The checks of single
values live in :mod:`postroom.config_checks`.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from postroom import config_checks as checks
from postroom.config_checks import Endpoint, IPNetwork
from postroom.config_log import LogConfig, read_log
from postroom.config_server import ServerConfig, read_server
from postroom.config_web import AcmeConfig, WebConfig, read_acme, read_web
from postroom.durations import format_duration

__all__ = [
    "DEFAULT_DOMAINS",
    "DEFAULT_LISTEN",
    "Config",
    "ConfigError",
    "Endpoint",
    "LimitsConfig",
    "ListenConfig",
    "MilterConfig",
    "QueueConfig",
    "TlsConfig",
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
class QueueConfig:
    """Queue durability tuning (group commit) and the retry schedule for deferred mail."""

    group_commit_ms: float = 0.0
    group_commit_max: int = 256
    retry: tuple[float, ...] = (900.0, 1800.0, 3600.0, 7200.0, 14400.0)  # last one repeats
    warn_after: float = 4 * 3600.0  # delay notice once after this
    give_up_after: float = 5 * 86400.0  # then the mail is returned
    keep_history: float = 30 * 86400.0  # delivery history kept this long after arrival


@dataclass(frozen=True)
class DnsConfig:
    """Where MX/A/AAAA lookups go: "host:port" servers, or the system resolver when empty."""

    nameservers: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthConfig:
    """Password logins (SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3 USER/AUTH)."""

    # Without TLS too: only behind a TLS-terminating proxy, or for tests and measurements.
    plaintext: bool = False
    # Seconds a verified password is remembered (argon2 skipped for it); 0 turns that off.
    cache_ttl: float = 3600.0


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


VERIFY_ACTIONS = ("reject", "junk", "mark")


@dataclass(frozen=True)
class VerifyConfig:
    """Checks of mail arriving on `smtp` from clients that did not log in (SPF, DKIM, DMARC,
    ARC) and what their failures cost: refused (550 5.7.26), filed in Junk, or only marked in
    the Authentication-Results header. A temporary DNS failure always answers 451."""

    enabled: bool = True
    dmarc_reject: str = "reject"  # DMARC fail where the domain publishes p=reject
    dmarc_quarantine: str = "junk"  # DMARC fail where it publishes p=quarantine
    own_domains: str = "reject"  # From: one of our domains, and DMARC does not pass
    spf_fail: str = "junk"  # SPF fail where the From domain publishes no DMARC record
    trusted_networks: tuple[IPNetwork, ...] = ()  # clients not checked (loopback is not)
    arc_trusted: tuple[str, ...] = ()  # ARC sealers whose passing chain overrides DMARC fail
    max_signatures: int = 8  # DKIM signatures checked per message; more are ignored


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
class DkimConfig:
    """Outbound DKIM signing of mail whose From: is in one of our domains."""

    sign: bool = True


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


@dataclass(frozen=True)
class JunkConfig:
    """The built-in junk filter: each user's Bayesian classifier, trained by moving mail into
    and out of Junk, scores mail from `smtp` clients that did not log in on the RFC 5235 scale
    (1 certainly ham ... 10 certainly spam; only once the user trained 200 of each)."""

    enabled: bool = True
    junk_above: int = 5  # a higher score files the copy into the user's Junk (0: never)
    refuse_above: int = 0  # a higher score for every recipient refuses at DATA (0: never)


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

_DEFAULT_DATA_DIR = "./postroom-data"
DEFAULT_DOMAINS: tuple[str, ...] = ("localhost",)
_MIN_LINE_LENGTH = 512

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
)
_RELAY_KEYS = ("host", "tls", "username", "password", "ca_file")
_RELAY_TLS = ("starttls", "implicit", "opportunistic")
_LISTEN_KEYS = tuple(f.name for f in fields(ListenConfig))
_TLS_KEYS = ("cert", "key")
_LIMITS_KEYS = tuple(f.name for f in fields(LimitsConfig))
_QUEUE_KEYS = tuple(f.name for f in fields(QueueConfig))
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
_DNS_KEYS = tuple(f.name for f in fields(DnsConfig))
_AUTH_KEYS = tuple(f.name for f in fields(AuthConfig))
_DELIVERY_KEYS = tuple(f.name for f in fields(DeliveryConfig))
_VERIFY_KEYS = tuple(f.name for f in fields(VerifyConfig))
_DKIM_KEYS = tuple(f.name for f in fields(DkimConfig))
_JUNK_KEYS = tuple(f.name for f in fields(JunkConfig))
_ANTISPAM_KEYS = tuple(f.name for f in fields(AntispamConfig))
_MILTER_KEYS = (
    "address",
    "on_error",
    "services",
    "connect_timeout",
    "command_timeout",
    "content_timeout",
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
            listen=self.listen(doc),
            tls=self.tls(doc),
            limits=self.limits(doc),
            queue=self.queue(doc),
            dns=self.dns(doc),
            delivery=self.delivery(doc),
            relay=self.relay(doc),
            auth=self.auth(doc),
            verify=self.verify(doc),
            dkim=self.dkim(doc),
            junk=self.junk(doc),
            antispam=self.antispam(doc),
            milters=self.milters(doc),
            web=read_web(self, doc),
            acme=read_acme(self, doc),
            server=read_server(self, doc),
            log=read_log(self, doc),
        )

    def listen(self, doc: Mapping[str, Any]) -> ListenConfig:
        raw = self.table(doc, "listen", _LISTEN_KEYS) if "listen" in doc else DEFAULT_LISTEN
        endpoints: dict[str, Endpoint] = {}
        used: dict[tuple[str, int], str] = {}
        for name in _LISTEN_KEYS:  # fixed order so duplicate reports are stable
            if name not in raw:
                continue
            key = f"listen.{name}"
            example = DEFAULT_LISTEN.get(name, f"127.0.0.1:{_EXAMPLE_PORTS[name]}")
            endpoint = self.check(key, checks.endpoint, raw[name], example)
            if endpoint.port != 0:
                slot = (endpoint.host.lower(), endpoint.port)
                if slot in used:
                    raise self.error(
                        key,
                        f"{endpoint} is already used by listen.{used[slot]}",
                        "give each service its own port",
                    )
                used[slot] = name
            endpoints[name] = endpoint
        return ListenConfig(**endpoints)

    def tls(self, doc: Mapping[str, Any]) -> TlsConfig:
        raw = self.table(doc, "tls", _TLS_KEYS)
        paths: dict[str, Path] = {}
        for name in _TLS_KEYS:
            if name in raw:
                example = f'"tls/{name}.pem"'
                text = self.check(f"tls.{name}", checks.path_string, raw[name], example)
                paths[name] = self.resolve(text)
        if len(paths) == 1:
            present = next(iter(paths))
            missing = "key" if present == "cert" else "cert"
            raise self.error(
                f"tls.{missing}",
                f"missing while tls.{present} is set",
                "set both tls.cert and tls.key, or neither to use a generated self-signed "
                "certificate",
            )
        return TlsConfig(cert=paths.get("cert"), key=paths.get("key"))

    def limits(self, doc: Mapping[str, Any]) -> LimitsConfig:
        raw = self.table(doc, "limits", _LIMITS_KEYS)
        defaults = LimitsConfig()
        values: dict[str, Any] = {}
        for name in _LIMITS_KEYS:
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
            values[name] = self.check(f"limits.{name}", convert)
        return LimitsConfig(**values)

    def queue(self, doc: Mapping[str, Any]) -> QueueConfig:
        raw = self.table(doc, "queue", _QUEUE_KEYS)
        defaults = QueueConfig()
        values: dict[str, Any] = {}
        if "group_commit_ms" in raw:
            values["group_commit_ms"] = self.check(
                "queue.group_commit_ms",
                checks.milliseconds,
                raw["group_commit_ms"],
                defaults.group_commit_ms,
            )
        if "group_commit_max" in raw:
            values["group_commit_max"] = self.check(
                "queue.group_commit_max",
                checks.positive_int,
                raw["group_commit_max"],
                defaults.group_commit_max,
            )
        if "retry" in raw:
            values["retry"] = self.check(
                "queue.retry", checks.durations, raw["retry"], defaults.retry
            )
        for name in ("warn_after", "give_up_after", "keep_history"):
            if name in raw:
                values[name] = self.check(
                    f"queue.{name}", checks.timeout, raw[name], getattr(defaults, name)
                )
        return QueueConfig(**values)

    def auth(self, doc: Mapping[str, Any]) -> AuthConfig:
        raw = self.table(doc, "auth", _AUTH_KEYS)
        defaults = AuthConfig()
        values: dict[str, Any] = {}
        if "plaintext" in raw:
            values["plaintext"] = self.check(
                "auth.plaintext", checks.boolean, raw["plaintext"], False
            )
        if "cache_ttl" in raw:
            values["cache_ttl"] = self.check(
                "auth.cache_ttl", checks.duration_or_off, raw["cache_ttl"], defaults.cache_ttl
            )
        return AuthConfig(**values)

    def verify(self, doc: Mapping[str, Any]) -> VerifyConfig:
        raw = self.table(doc, "verify", _VERIFY_KEYS)
        defaults = VerifyConfig()
        values: dict[str, Any] = {}
        if "enabled" in raw:
            values["enabled"] = self.check("verify.enabled", checks.boolean, raw["enabled"], True)
        for name in ("dmarc_reject", "dmarc_quarantine", "own_domains", "spf_fail"):
            if name in raw:
                values[name] = self.check(
                    f"verify.{name}", checks.choice, raw[name], VERIFY_ACTIONS
                )
        if "trusted_networks" in raw:
            values["trusted_networks"] = self.check(
                "verify.trusted_networks", checks.networks, raw["trusted_networks"]
            )
        if "arc_trusted" in raw:
            values["arc_trusted"] = self.check(
                "verify.arc_trusted", checks.domains, raw["arc_trusted"], True
            )
        if "max_signatures" in raw:
            values["max_signatures"] = self.check(
                "verify.max_signatures",
                checks.positive_int,
                raw["max_signatures"],
                defaults.max_signatures,
            )
        return VerifyConfig(**values)

    def junk(self, doc: Mapping[str, Any]) -> JunkConfig:
        raw = self.table(doc, "junk", _JUNK_KEYS)
        values: dict[str, Any] = {}
        if "enabled" in raw:
            values["enabled"] = self.check("junk.enabled", checks.boolean, raw["enabled"], True)
        for key in ("junk_above", "refuse_above"):
            if key not in raw:
                continue
            default = getattr(JunkConfig(), key)
            score = self.check(f"junk.{key}", checks.positive_int, raw[key], default, 0)
            if score > 10:
                raise self.error(
                    f"junk.{key}",
                    f"must be a spam score (RFC 5235: 1 to 10), got {score}",
                    f"write a number from 0 (never) to 10, such as {default or 9}",
                )
            values[key] = score
        return JunkConfig(**values)

    def dkim(self, doc: Mapping[str, Any]) -> DkimConfig:
        raw = self.table(doc, "dkim", _DKIM_KEYS)
        if "sign" not in raw:
            return DkimConfig()
        return DkimConfig(self.check("dkim.sign", checks.boolean, raw["sign"], True))

    def antispam(self, doc: Mapping[str, Any]) -> AntispamConfig:
        raw = self.table(doc, "antispam", _ANTISPAM_KEYS)
        values: dict[str, Any] = {}
        for name in ("dnsbl", "dnswl"):
            if name in raw:
                values[name] = self.check(f"antispam.{name}", checks.domains, raw[name], True)
        for name, most in (("greylist", MAX_GREYLIST), ("greet_delay", MAX_GREET_DELAY)):
            if name in raw:
                seconds = self.check(f"antispam.{name}", checks.duration_or_off, raw[name], 0.0)
                if seconds > most:
                    raise self.error(
                        f"antispam.{name}",
                        f"is too long, got {checks.show(raw[name])}",
                        f'write at most "{format_duration(most)}", or 0 for off',
                    )
                values[name] = seconds
        return AntispamConfig(**values)

    def milters(self, doc: Mapping[str, Any]) -> tuple[MilterConfig, ...]:
        raw = doc.get("milter", [])
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            raise self.error(
                "milter",
                f"must be an array of tables, got {checks.show(raw)}",
                'write each milter as its own [[milter]] section with address = "inet:..."',
            )
        return tuple(self.milter(table, f"milter[{n}]") for n, table in enumerate(raw))

    def milter(self, raw: Mapping[str, Any], key: str) -> MilterConfig:
        self.unknown_keys(raw, _MILTER_KEYS, prefix=f"{key}.", section="in [[milter]]")
        if "address" not in raw:
            raise self.error(
                f"{key}.address",
                "missing",
                'set it, e.g. address = "inet:127.0.0.1:11332" or "unix:/run/milter.sock"',
            )
        values: dict[str, Any] = {"address": raw["address"]}
        values.update(self.check(f"{key}.address", _milter_address, raw["address"]))
        if values.get("path") is not None:
            values["path"] = self.resolve(str(values["path"]))
        if "on_error" in raw:
            values["on_error"] = self.check(
                f"{key}.on_error", checks.choice, raw["on_error"], MILTER_ON_ERROR
            )
        if "services" in raw:
            values["services"] = self.check(f"{key}.services", _milter_services, raw["services"])
        defaults = MilterConfig("")
        for name in ("connect_timeout", "command_timeout", "content_timeout"):
            if name in raw:
                values[name] = self.check(
                    f"{key}.{name}", checks.timeout, raw[name], getattr(defaults, name)
                )
        return MilterConfig(**values)

    def dns(self, doc: Mapping[str, Any]) -> DnsConfig:
        raw = self.table(doc, "dns", _DNS_KEYS)
        if "nameservers" not in raw:
            return DnsConfig()
        return DnsConfig(self.check("dns.nameservers", checks.nameservers, raw["nameservers"]))

    def relay(self, doc: Mapping[str, Any]) -> RelayConfig:
        raw = self.table(doc, "relay", _RELAY_KEYS)
        values: dict[str, Any] = {}
        if "host" in raw:
            values["host"] = self.check(
                "relay.host", checks.endpoint, raw["host"], "smtp.provider.example:587"
            )
        if "tls" in raw:
            values["tls"] = self.check("relay.tls", checks.choice, raw["tls"], _RELAY_TLS)
        for name in ("username", "password"):
            if name in raw:
                values[name] = self.check(f"relay.{name}", checks.text, raw[name])
        if "ca_file" in raw:
            text = self.check(
                "relay.ca_file", checks.path_string, raw["ca_file"], '"tls/relay-ca.pem"'
            )
            values["ca_file"] = self.resolve(text)
        if values.get("password") and not values.get("username"):
            raise self.error(
                "relay.username",
                "missing while relay.password is set",
                "set both, or neither for a relay that needs no login",
            )
        routes = self.table(doc, "routes", tuple(doc.get("routes", {}) or ()))
        values["routes"] = tuple(
            (
                self.check(f"routes.{name}", checks.domain, name, "example.org"),
                self.check(f"routes.{name}", checks.endpoint, target, "mx.internal.example:25"),
            )
            for name, target in routes.items()
        )
        return RelayConfig(**values)

    def delivery(self, doc: Mapping[str, Any]) -> DeliveryConfig:
        raw = self.table(doc, "delivery", _DELIVERY_KEYS)
        defaults = DeliveryConfig()
        values: dict[str, Any] = {}
        if "port" in raw:
            values["port"] = self.check("delivery.port", checks.port, raw["port"], defaults.port)
        if "concurrency" in raw:
            values["concurrency"] = self.check(
                "delivery.concurrency",
                checks.positive_int,
                raw["concurrency"],
                defaults.concurrency,
            )
        return DeliveryConfig(**values)


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
