"""The ACME certificate's life: its files under data_dir/acme, when to renew, the backoff after
a failure, the http-01 answers, and the swap into the running server's TLS context.

- `data_dir/acme/` (0700): `account.key` (the account's P-256 key, made once), `account.json`
  (the account's URL at which directory, and the contact it was given), `cert.pem` (the
  chain, leaf first) and `key.pem` (a new P-256 key per certificate), `state.json` (the last
  failure and the next attempt, so the backoff survives a restart), `challenges/TOKEN` (the
  key authorizations of an order in progress), `order.lock` (one order at a time, server or
  CLI). Every file 0600, written to a sibling and renamed over the old one.
- `renew` runs one order (blocking: the CLI calls it, the server runs it on a worker thread)
  and records its outcome; `CertificateManager.run` is the server's loop: it renews what is
  due and swaps in a certificate the CLI installed, found by the files' modification time.
- `update_contact`: when `[acme] email` is not the contact `account.json` says the account
  was given (or nothing says), the server asks the CA for the account (RFC 8555 §7.3.1) and
  updates its contact (§7.3.2), at its start and after a reload that changed `[acme]`; the
  account stays the same, no order is made.
- `served_pair`/`tls_context`: the pair `serve` presents (the ACME one when usable, else
  `[tls]`, else the self-signed one), for the server and for `dns records`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from postroom.config import Config
from postroom.net import tls
from postroom.net.acme import (
    TLS_ALPN_01,
    TOKEN,
    Account,
    AcmeClient,
    AcmeError,
    ChallengeBoard,
    contact_of,
)
from postroom.net.alpn import AlpnChallenges
from postroom.storage import private

log = logging.getLogger("postroom.acme")

# RFC 8555 leaves the renewal time to the client; 30 days before expiry is what Let's
# Encrypt recommends for its 90-day certificates (certbot renews then too).
RENEW_BEFORE = datetime.timedelta(days=30)
FIRST_BACKOFF = datetime.timedelta(hours=1)  # after a failed order; doubles on each failure
MOST_BACKOFF = datetime.timedelta(hours=24)
CHECK_EVERY = 5.0  # seconds between the server's looks at the certificate file
CONTACT_RETRY = 3600.0  # seconds before a failed contact update is tried again
PROBE_TIMEOUT = 10.0
PROBE_TOKEN = "postroom-self-check"


class AcmeBusy(Exception):
    """Another order (the server's or another CLI's) holds the lock."""


@dataclass(frozen=True)
class CertificateInfo:
    """What `acme status` shows of an installed certificate."""

    names: tuple[str, ...]
    issuer: str
    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime

    @property
    def renew_at(self) -> datetime.datetime:
        return self.not_after - RENEW_BEFORE


@dataclass(frozen=True)
class AccountRecord:
    """What account.json says: the account's URL at `directory` and the contact it was
    given (the one `[acme] email` asked for; the CA's answer may differ, and is logged)."""

    directory: str
    url: str
    contact: tuple[str, ...]


@dataclass(frozen=True)
class RenewalState:
    """The last order's outcome, kept in state.json: UTC times as POSIX seconds."""

    failures: int = 0
    last_error: str = ""
    last_attempt: float | None = None
    next_attempt: float | None = None  # after a failure: not before this


def wanted_names(hostname: str, domains: Sequence[str]) -> list[str]:
    """The certificate's names: the host name, then each local domain's MTA-STS policy host
    (RFC 8461 §3.3 needs a valid certificate for it), autoconfig host (Thunderbird) and
    autodiscover host (Outlook, which verifies it)."""
    names = [hostname.lower()]
    for domain in domains:
        domain = domain.lower()
        names += [f"mta-sts.{domain}", f"autoconfig.{domain}", f"autodiscover.{domain}"]
    return list(dict.fromkeys(names))


def backoff(failures: int) -> datetime.timedelta:
    """The wait after `failures` failed orders in a row: 1 h, 2 h, 4 h, … at most 24 h."""
    doublings = min(max(failures - 1, 0), 10)
    return min(FIRST_BACKOFF * (1 << doublings), MOST_BACKOFF)


def renewal_reason(
    info: CertificateInfo | None, names: Sequence[str], now: datetime.datetime
) -> str | None:
    """Why a certificate must be ordered now (None: the installed one is good)."""
    if info is None:
        return "no certificate yet"
    missing = [name for name in names if name not in info.names]
    if missing:
        return f"it does not name {', '.join(missing)}"
    if now >= info.renew_at:
        return f"it expires on {info.not_after:%Y-%m-%d %H:%M} UTC"
    return None


class ChallengeFiles:
    """The http-01 key authorizations (RFC 8555 §8.3), in memory for the orders of this
    process and in `directory` for the HTTP listener of another (the server answers what
    `postroom acme renew` publishes)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.directory = data_dir / "acme" / "challenges"
        self._memory: dict[str, str] = {}

    def publish(self, token: str, key_authorization: str) -> None:
        self._memory[token] = key_authorization
        private.make_data_dir(self.data_dir)
        private.make_dirs(self.data_dir, "acme", "challenges")
        _write_atomically(self.directory / token, key_authorization.encode("ascii"))

    def withdraw(self, token: str) -> None:
        self._memory.pop(token, None)
        (self.directory / token).unlink(missing_ok=True)

    def cached(self, token: str) -> str | None:
        """The answer from memory (no disk access: for the event loop)."""
        return self._memory.get(token)

    def answer(self, token: str) -> str | None:
        """The key authorization for `token`, or None (an unknown or malformed token)."""
        if not TOKEN.fullmatch(token):
            return None
        known = self._memory.get(token)
        if known is not None:
            return known
        try:
            return (self.directory / token).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            return None


class AcmeFiles:
    """The files of data_dir/acme."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / "acme"
        self.account_key_path = self.directory / "account.key"
        self.account_path = self.directory / "account.json"
        self.cert_path = self.directory / "cert.pem"
        self.key_path = self.directory / "key.pem"
        self.state_path = self.directory / "state.json"
        self.challenges = ChallengeFiles(data_dir)
        self._data_dir = data_dir

    def make_directory(self) -> None:
        private.make_data_dir(self._data_dir)
        private.make_dirs(self._data_dir, "acme")

    def account_key(self) -> ec.EllipticCurvePrivateKey:
        """The account's key, made on first use (RFC 8555 §7.3: the key is the account)."""
        self.make_directory()
        try:
            key = serialization.load_pem_private_key(
                self.account_key_path.read_bytes(), password=None
            )
        except FileNotFoundError:
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_atomically(self.account_key_path, pem)
            return key
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as error:
            raise AcmeError(
                f"{self.account_key_path}: cannot read the ACME account key ({error}); "
                "remove it to register a new account"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise AcmeError(
                f"{self.account_key_path} is not a P-256 key; remove it to register a new account"
            )
        return key

    def current(self) -> CertificateInfo | None:
        """The installed certificate, or None when there is none (or it cannot be read)."""
        try:
            leaf = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        except (OSError, ValueError):
            return None
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = tuple(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = ()
        return CertificateInfo(
            names=names,
            issuer=leaf.issuer.rfc4514_string(),
            serial=leaf.serial_number,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
        )

    def stamp(self) -> tuple[int, int]:
        """The pair's modification times (ns; 0 when missing): a change means a new pair."""
        stamps = []
        for path in (self.cert_path, self.key_path):
            try:
                stamps.append(os.stat(path).st_mtime_ns)
            except FileNotFoundError:
                stamps.append(0)
        return stamps[0], stamps[1]

    def installed(self) -> CertificateInfo | None:
        """The installed certificate when its pair loads (a crash between the key and the
        chain leaves one that does not: it is ordered again)."""
        return self.current() if self.usable_pair() else None

    def usable_pair(self) -> tuple[Path, Path] | None:
        """The installed pair when it loads into a TLS context (the key fits, it has not
        expired), else None."""
        info = self.current()
        if info is None or info.not_after <= datetime.datetime.now(datetime.UTC):
            return None
        try:
            tls.server_context(self.cert_path, self.key_path)
        except tls.TlsSetupError:
            return None
        return self.cert_path, self.key_path

    def install(self, chain: bytes, key: bytes) -> None:
        """Put a new pair in place: the key first, then the chain (a reader that comes in
        between finds a pair that does not load and tries again on its next look)."""
        self.make_directory()
        _write_atomically(self.key_path, key)
        _write_atomically(self.cert_path, chain)

    def state(self) -> RenewalState:
        try:
            raw = json.loads(self.state_path.read_text(encoding="utf-8"))
            return RenewalState(
                failures=int(raw.get("failures", 0)),
                last_error=str(raw.get("last_error", "")),
                last_attempt=_number(raw.get("last_attempt")),
                next_attempt=_number(raw.get("next_attempt")),
            )
        except (OSError, ValueError, TypeError, AttributeError):
            return RenewalState()

    def account(self) -> AccountRecord | None:
        """account.json, or None when missing or unreadable (the CA is asked again)."""
        try:
            raw = json.loads(self.account_path.read_text(encoding="utf-8"))
            return AccountRecord(
                str(raw["directory"]), str(raw["url"]), tuple(map(str, raw["contact"]))
            )
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def save_account(self, record: AccountRecord) -> None:
        self.make_directory()
        data = {"directory": record.directory, "url": record.url, "contact": record.contact}
        _write_atomically(self.account_path, json.dumps(data).encode("utf-8"))

    def save_state(self, state: RenewalState) -> None:
        self.make_directory()
        _write_atomically(self.state_path, json.dumps(asdict(state)).encode("utf-8"))

    @contextlib.contextmanager
    def order_lock(self) -> Iterator[None]:
        """One order at a time for this data_dir; AcmeBusy when another holds it."""
        self.make_directory()
        fd = private.open_file(self.directory / "order.lock", os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AcmeBusy("another certificate order for this data_dir is running") from None
            yield
        finally:
            os.close(fd)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _write_atomically(path: Path, data: bytes) -> None:
    """A sibling 0600 file renamed over `path`: a reader sees the old file or the new one."""
    temporary = path.with_name(path.name + ".new")
    temporary.unlink(missing_ok=True)
    fd = private.open_file(temporary)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@dataclass(frozen=True)
class AcmeSettings:
    """What an order needs from the configuration."""

    directory: str
    email: str
    ca_file: Path | None
    names: tuple[str, ...]
    http_probe: tuple[str, int] | None  # where this server's [listen] http answers
    challenge: str = "http-01"  # [acme] challenge
    https: bool = False  # [listen] https is on (tls-alpn-01 is answered there)

    @classmethod
    def of(cls, config: Config) -> AcmeSettings:
        http = config.listen.first("http")
        probe = None
        if http is not None:
            host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(http.host, http.host)
            probe = (host, http.port)
        acme = config.acme
        names = tuple(wanted_names(config.hostname, config.domains))
        https = config.listen.first("https") is not None
        return cls(acme.directory, acme.email, acme.ca_file, names, probe, acme.challenge, https)


def check_http_answers(settings: AcmeSettings, board: ChallengeFiles) -> None:
    """Before an order: this server's HTTP listener answers a challenge published here, so a
    CA's http-01 request can succeed (it also needs port 80 reachable from the Internet)."""
    if settings.http_probe is None:
        raise AcmeError("http-01 needs the HTTP listener: set [listen] http (port 80)")
    host, port = settings.http_probe
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    secret = os.urandom(16).hex()
    board.publish(PROBE_TOKEN, secret)
    url = f"http://{where}/.well-known/acme-challenge/{PROBE_TOKEN}"
    request = urllib.request.Request(url, headers={"Host": settings.names[0]})
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with direct.open(request, timeout=PROBE_TIMEOUT) as response:
            body = response.read(1000)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise AcmeError(
            f"the HTTP listener at {where} does not answer http-01 challenges ({reason}); "
            "is postroom serve running with [listen] http?"
        ) from None
    finally:
        board.withdraw(PROBE_TOKEN)
    if body.decode("ascii", "replace") != secret:
        raise AcmeError(f"the HTTP listener at {where} is not this postroom's (wrong answer)")


def _board(settings: AcmeSettings, files: AcmeFiles, alpn: AlpnChallenges | None) -> ChallengeBoard:
    """Where the order's answers go: the http-01 files (checked through the HTTP listener),
    or the running server's tls-alpn-01 contexts."""
    if settings.challenge != TLS_ALPN_01:
        check_http_answers(settings, files.challenges)
        return files.challenges
    if not settings.https:
        raise AcmeError("tls-alpn-01 needs the HTTPS listener: set [listen] https (port 443)")
    if alpn is None:
        raise AcmeError(
            "tls-alpn-01 is answered by postroom serve's own orders only; let the server "
            'renew (it does when due), or set [acme] challenge = "http-01" to order from here'
        )
    return alpn


def renew(
    settings: AcmeSettings,
    files: AcmeFiles,
    *,
    force: bool = False,
    alpn: AlpnChallenges | None = None,
) -> CertificateInfo | None:
    """Order and install a certificate when one is due (always with `force`); None when the
    installed one is good. A failure is recorded (backoff) and raised as AcmeError, for the
    caller to report (the server logs it, the CLI prints it). `alpn`: the running server's
    tls-alpn-01 answers (without it only http-01 can be answered)."""
    with files.order_lock():
        now = time.time()
        reason = renewal_reason(files.installed(), settings.names, _utc(now))
        if reason is None and not force:
            return None
        log.info(
            "acme: ordering a certificate for %s from %s (%s)",
            ",".join(settings.names),
            settings.directory,
            reason or "forced",
        )
        try:
            board = _board(settings, files, alpn)
            client = AcmeClient(
                settings.directory,
                files.account_key(),
                email=settings.email,
                ca_file=settings.ca_file,
            )
            issued = client.issue(settings.names, board, challenge=settings.challenge)
            files.install(issued.chain, issued.key)
            if client.account is not None:
                _remember(settings, files, client.account)
        except (AcmeError, OSError) as error:
            failure = error
            if isinstance(error, OSError):  # data_dir/acme cannot be written
                failure = AcmeError(f"{error.filename}: {error.strerror}")
            failures = files.state().failures + 1
            wait = backoff(failures)
            files.save_state(RenewalState(failures, str(failure), now, now + wait.total_seconds()))
            raise failure from None
        files.save_state(RenewalState(last_attempt=now))
        info = files.current()
        assert info is not None
        log.info(
            "acme: certificate installed serial=%x not_after=%s issuer=%s",
            info.serial,
            f"{info.not_after:%Y-%m-%dT%H:%M:%SZ}",
            info.issuer,
        )
        return info


def contact_due(settings: AcmeSettings, files: AcmeFiles) -> bool:
    """Whether the account (there is one: its key exists) may not have `[acme] email`'s
    contact at `[acme] directory`: account.json says another, or nothing."""
    if not files.account_key_path.exists():
        return False  # the first order makes the account, with the contact
    record = files.account()
    return (
        record is None
        or record.directory != settings.directory
        or record.contact != contact_of(settings.email)
    )


def update_contact(settings: AcmeSettings, files: AcmeFiles) -> Account | None:
    """Give the existing account `[acme] email`'s contact (RFC 8555 §7.3.2) and remember it;
    None when the CA has no account for the key (the next order makes it). Blocking."""
    with files.order_lock():
        client = AcmeClient(
            settings.directory, files.account_key(), email=settings.email, ca_file=settings.ca_file
        )
        account = client.sync_account()
        if account is not None:
            _remember(settings, files, account)
        return account


def _remember(settings: AcmeSettings, files: AcmeFiles, account: Account) -> None:
    wanted = contact_of(settings.email)
    files.save_account(AccountRecord(settings.directory, account.url, wanted))
    if account.contact != wanted:
        log.warning(
            "acme: the CA answered the account %s with contact %s, not %s as asked",
            account.url,
            _contacts(account.contact),
            _contacts(wanted),
        )


def _contacts(contact: Sequence[str]) -> str:
    return ",".join(contact) or "none"


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


def _duration(delta: datetime.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g}h"


class CertificateManager:
    """The running server's side: renews what is due in a worker thread, and loads a new
    pair (its own, or one `postroom acme renew` installed) into every listener's context."""

    def __init__(
        self,
        settings: AcmeSettings,
        files: AcmeFiles,
        contexts: Sequence[ssl.SSLContext],
        alpn: AlpnChallenges | None = None,
    ) -> None:
        self.settings = settings
        self.files = files
        self.contexts = tuple(contexts)
        self.alpn = alpn  # the tls-alpn-01 answers the HTTPS listener gives
        self._loaded = (0, 0)
        self._refused = (0, 0)  # a pair that did not load: said once, not every look
        self._contact_after = 0.0  # monotonic time before which no contact update is tried
        self._wake = asyncio.Event()  # set by `reconfigure`: look now, not in CHECK_EVERY

    def reconfigure(self, settings: AcmeSettings) -> None:
        """A reload changed [acme] (not `enabled`): orders from now on use it, and the
        account's contact is looked at again at once."""
        self.settings = settings
        self._contact_after = 0.0
        self._wake.set()

    def loaded_initially(self, pair_loaded: bool) -> None:
        """Tell the manager whether the contexts were built from the ACME pair."""
        self._loaded = self.files.stamp() if pair_loaded else (0, 0)

    def reload_if_changed(self) -> bool:
        """Load the pair into every context when its files changed since the last load."""
        stamp = self.files.stamp()
        if stamp in (self._loaded, self._refused) or 0 in stamp:
            return False
        try:
            for context in self.contexts:
                tls.reload_certificate(context, self.files.cert_path, self.files.key_path)
        except tls.TlsSetupError as error:
            self._refused = stamp
            log.warning(
                "acme: the certificate files do not load, keeping the one in use: %s", error
            )
            return False
        self._loaded = stamp
        info = self.files.current()
        serial = f"{info.serial:x}" if info else "?"
        log.info("acme: serving the new certificate serial=%s on every TLS listener", serial)
        return True

    def _due(self) -> bool:
        now = datetime.datetime.now(datetime.UTC)
        if renewal_reason(self.files.installed(), self.settings.names, now) is None:
            return False
        state = self.files.state()
        return state.next_attempt is None or now.timestamp() >= state.next_attempt

    async def _renew(self) -> None:
        try:
            await asyncio.to_thread(renew, self.settings, self.files, alpn=self.alpn)
        except AcmeBusy:
            return  # `postroom acme renew` is ordering; its pair is loaded when it lands
        except (AcmeError, OSError) as error:
            failures = self.files.state().failures
            log.warning(
                "acme: certificate order failed (%d in a row): %s; next attempt in %s",
                failures,
                error,
                _duration(backoff(failures)),
            )
            return
        self.reload_if_changed()

    async def _update_contact(self) -> None:
        if time.monotonic() < self._contact_after:
            return
        settings = self.settings
        if not await asyncio.to_thread(contact_due, settings, self.files):
            return
        try:
            account = await asyncio.to_thread(update_contact, settings, self.files)
        except AcmeBusy:
            return  # an order is running: looked at again in CHECK_EVERY
        except (AcmeError, OSError) as error:
            self._contact_after = time.monotonic() + CONTACT_RETRY
            log.warning(
                "acme: cannot update the account's contact: %s; next attempt in %s",
                error,
                _duration(datetime.timedelta(seconds=CONTACT_RETRY)),
            )
            return
        # Done or not: asked again in CONTACT_RETRY at the soonest (once done, not due).
        self._contact_after = time.monotonic() + CONTACT_RETRY
        if account is None:
            log.info("acme: no account at %s for this key yet", settings.directory)
        else:
            log.info("acme: account %s has contact %s", account.url, _contacts(account.contact))

    async def run(self) -> None:
        """Forever: swap in a changed pair; order one when due and the backoff allows."""
        state = self.files.state()
        if state.next_attempt is not None and state.failures:
            log.info(
                "acme: last order failed (%s); next attempt at %s",
                state.last_error,
                f"{_utc(state.next_attempt):%Y-%m-%dT%H:%M:%SZ}",
            )
        while True:
            self.reload_if_changed()
            if await asyncio.to_thread(self._due):
                await self._renew()
            await self._update_contact()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CHECK_EVERY)
            self._wake.clear()


def certificate_files(config: Config) -> tuple[Path, Path]:
    """[tls] cert and key, else the self-signed pair in data_dir (made when missing)."""
    if config.tls.cert is not None and config.tls.key is not None:
        return config.tls.cert, config.tls.key
    return tls.ensure_self_signed(config.data_dir / "tls", config.hostname)


def acme_pair_in_use(
    config: Config, acme_files: AcmeFiles | None = None
) -> tuple[Path, Path] | None:
    """The ACME pair when [acme] is on and it is usable: then `serve` presents it."""
    if not config.acme.enabled:
        return None
    return (acme_files or AcmeFiles(config.data_dir)).usable_pair()


def served_pair(config: Config, acme_files: AcmeFiles | None = None) -> tuple[Path, Path]:
    """The pair `serve` presents: the ACME one when [acme] is on and it is usable, else [tls]
    cert and key, else the self-signed pair."""
    return acme_pair_in_use(config, acme_files) or certificate_files(config)


def tls_context(config: Config) -> ssl.SSLContext:
    return tls.server_context(*served_pair(config))
