"""`postroom doctor`'s checks of this machine and its listeners: the TLS certificate served
(as a listener with implicit TLS presents it, else from the files of the pair served), each
listener reachable on the host's addresses, the open-relay self-test on port 25, free disk
space under data_dir, the queue's health, and the HTTPS fetch of an MTA-STS policy.

Every network probe is bounded (`PROBE_TIMEOUT` per connection, `RELAY_LIMIT` for the SMTP
conversation, `FETCH_TIMEOUT` for the policy), every reply read is bounded in length, and the
SMTP conversation never sends a message: it stops after RCPT.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import http.client
import shutil
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from postroom.config import Config, Endpoint
from postroom.dns.lookup import DnsLookup
from postroom.mailauth.mta_sts import MAX_POLICY, POLICY_PATH
from postroom.services.doctor_report import Check, Status
from postroom.storage.records import QueueEntry

PROBE_TIMEOUT = 5.0  # seconds to connect to a listener, or for a block list to answer
RELAY_LIMIT = 20.0  # seconds for the whole open-relay conversation
FETCH_TIMEOUT = 10.0  # seconds for the MTA-STS policy: connection, TLS, request, body
EXPIRY_WARN = datetime.timedelta(days=14)
DISK_WARN_FRACTION = 0.10
DISK_WARN_BYTES = 1 << 30
DISK_FAIL_FRACTION = 0.02
OLD_DEFERRED = 86400.0  # a recipient deferred this long after arrival is worth a look
MAX_LINE = 4096  # octets of one SMTP reply line read
MAX_REPLY_LINES = 64
# RFC 2606 names: addresses outside every domain this server could be responsible for.
RELAY_FROM = "postroom-doctor@example.com"
RELAY_TO = "postroom-doctor@example.net"
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}
PRESENTING = ("submissions", "imaps", "pop3s", "https")  # listeners with implicit TLS


# --- the certificate ---------------------------------------------------------------------------


def certificate_paths(config: Config) -> tuple[Path, Path]:
    """The pair every TLS listener serves without ACME: [tls] cert/key, or the generated one."""
    if config.tls.cert is not None and config.tls.key is not None:
        return config.tls.cert, config.tls.key
    directory = config.data_dir / "tls"
    return directory / "cert.pem", directory / "key.pem"


@dataclass(frozen=True)
class CertificateSource:
    """The certificate the server serves: its files, whether they are the ACME pair, the
    names it must carry (the first is the host name), and a listener with implicit TLS that
    presents it (None: the files only)."""

    cert_path: Path
    key_path: Path
    acme: bool
    names: tuple[str, ...]
    listener: tuple[str, Endpoint] | None = None

    @classmethod
    def of(
        cls, config: Config, acme_pair: tuple[Path, Path] | None, acme_names: Sequence[str]
    ) -> CertificateSource:
        """From the config and the ACME pair in use (`net.certificates.acme_pair_in_use`),
        asking the first listener with implicit TLS (its first address)."""
        listener = next(
            (
                (name, endpoints[0])
                for name, endpoints in config.listen.enabled().items()
                if name in PRESENTING
            ),
            None,
        )
        if acme_pair is not None:
            return cls(*acme_pair, True, tuple(acme_names), listener)
        return cls(*certificate_paths(config), False, (config.hostname,), listener)


async def presented_leaf(endpoint: Endpoint, server_name: str, timeout: float) -> bytes:
    """The leaf certificate (DER) a TLS listener presents for `server_name`, unverified:
    the checks judge it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    host = WILDCARDS.get(endpoint.host, endpoint.host)
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(host, endpoint.port, ssl=context, server_hostname=server_name),
        timeout,
    )
    try:
        tls = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout)
    if not der:
        raise ssl.SSLError("no certificate presented")
    return bytes(der)


def names_match(pattern: str, host: str) -> bool:
    """RFC 6125 §6.4.3: a DNS-ID matches the name exactly, or "*.rest" one label left of rest."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(dot and label) and rest == pattern[2:]
    return pattern == host


def _fix_source(config: Config, source: CertificateSource) -> str:
    if source.acme:
        return (
            "`postroom acme status` says why the last order failed; "
            "`postroom acme renew --force` orders one now"
        )
    if config.tls.cert is not None:
        return f"renew {source.cert_path} ([tls] cert in {config.path})"
    return f"(re)start postroom serve (it makes {source.cert_path}), or set [tls] cert and key"


async def certificate(
    config: Config, now: float, source: CertificateSource | None = None
) -> list[Check]:
    """The certificate the server presents (read from `source.listener` when it answers, else
    from the files): for the names, not expired nor near it, not self-signed, its key."""
    source = source or CertificateSource.of(config, None, ())
    host = config.hostname
    fix_source = _fix_source(config, source)
    presented, where, unread = None, "", ""
    if source.listener is not None:
        service, endpoint = source.listener
        where = f"{service} at {_where(WILDCARDS.get(endpoint.host, endpoint.host), endpoint.port)}"
        try:
            der = await presented_leaf(endpoint, host, PROBE_TIMEOUT)
            presented = x509.load_der_x509_certificate(der)
        except (OSError, ssl.SSLError, TimeoutError, ValueError) as error:
            unread = f"; {where} did not present it ({error or type(error).__name__})"
    chain, trouble = _read_chain(source, config)
    if presented is not None:
        what = f"the certificate {where} presents"
        checks = _judge(presented, what, source, config, now, fix_source)
        if not chain or chain[0] != presented:
            return [*checks, _stale(presented, chain, source, config)]
    elif trouble:
        return [Check("certificate", host, "fail", trouble + unread, fix_source)]
    else:
        problem = _key_problem(chain[0], source.key_path)
        if problem:
            fix = f"point [tls] key at the key of {source.cert_path}"
            return [Check("certificate", host, "fail", f"{source.key_path}: {problem}", fix)]
        checks = _judge(chain[0], str(source.cert_path), source, config, now, fix_source)
    first = checks[0]
    if first.status == "ok":
        origin = "ACME" if source.acme else str(source.cert_path)
        unread = f" ({origin}, {len(chain)} in the chain){unread}"
    checks[0] = dataclasses.replace(first, detail=first.detail + unread)
    return checks


def _read_chain(source: CertificateSource, config: Config) -> tuple[list[x509.Certificate], str]:
    """The chain in the certificate file, or why there is none."""
    try:
        return x509.load_pem_x509_certificates(source.cert_path.read_bytes()), ""
    except FileNotFoundError:
        made = not source.acme and config.tls.cert is None
        when = " (postroom serve makes it when it first starts)" if made else ""
        return [], f"{source.cert_path} does not exist{when}"
    except (OSError, ValueError) as error:
        return [], f"{source.cert_path}: cannot read it ({error})"


def _judge(
    cert: x509.Certificate,
    what: str,
    source: CertificateSource,
    config: Config,
    now: float,
    fix_source: str,
) -> list[Check]:
    host = config.hostname
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    when = datetime.datetime.fromtimestamp(now, datetime.UTC)
    expires = cert.not_valid_after_utc
    if not any(names_match(name, host) for name in names):
        shown = ", ".join(names) or "no DNS names"
        return [
            Check(
                "certificate",
                host,
                "fail",
                f"{what} names {shown}, not {host}: verifying clients refuse it",
                f"get a certificate for {host}; {fix_source}",
            )
        ]
    if expires <= when:
        return [
            Check("certificate", host, "fail", f"{what} expired on {expires:%Y-%m-%d}", fix_source)
        ]
    if cert.not_valid_before_utc > when:
        return [
            Check(
                "certificate",
                host,
                "fail",
                f"{what} is valid only from {cert.not_valid_before_utc:%Y-%m-%d}",
                "check the clock of this machine",
            )
        ]
    detail = f"{what} is valid for {host} until {expires:%Y-%m-%d}"
    if expires - when < EXPIRY_WARN:
        return [
            Check(
                "certificate",
                host,
                "warn",
                f"{detail}: it expires in {(expires - when).days} days",
                fix_source,
            )
        ]
    missing = [n for n in source.names if not any(names_match(p, n) for p in names)]
    if missing:
        return [
            Check(
                "certificate",
                host,
                "warn",
                f"{detail}, but not for {', '.join(missing)}",
                fix_source,
            )
        ]
    if _self_signed(cert):
        if config.acme.enabled:
            fix = "ACME has no certificate yet: `postroom acme status` says why"
        else:
            fix = (
                f"set [tls] cert and key in {config.path} to a certificate from a public CA, "
                "or [acme] enabled = true"
            )
        return [
            Check(
                "certificate",
                host,
                "warn",
                f"{detail}, self-signed: mail clients must be given it, and senders "
                "that require a valid certificate (MTA-STS, DANE) will not deliver",
                fix,
            )
        ]
    return [Check("certificate", host, "ok", detail)]


def _stale(
    presented: x509.Certificate,
    chain: Sequence[x509.Certificate],
    source: CertificateSource,
    config: Config,
) -> Check:
    """The server presents another certificate than its files hold."""
    held = f"serial {chain[0].serial_number:x}" if chain else "nothing readable"
    detail = (
        f"the server presents serial {presented.serial_number:x}, {source.cert_path} holds {held}"
    )
    if source.acme:
        fix = "the server loads a new ACME pair within seconds; if it does not, restart it"
    else:
        fix = f"reload the server (SIGHUP, `systemctl reload postroom`) to serve {source.cert_path}"
    return Check("certificate", f"{config.hostname} files", "warn", detail, fix)


def _key_problem(cert: x509.Certificate, key_path: Path) -> str:
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        return "does not exist"
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as error:
        return f"cannot read it ({error})"
    if key.public_key() != cert.public_key():
        return "the key does not belong to the certificate"
    return ""


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


# --- listeners ---------------------------------------------------------------------------------


async def _connects(host: str, port: int, timeout: float) -> str:
    """Why a TCP connection to host:port did not open within `timeout` ("" when it did)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as error:
        return error.strerror or str(error)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ""


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def port(
    service: str,
    endpoints: Sequence[Endpoint],
    addresses: Sequence[str],
    timeout: float,
    config: Config,
) -> list[Check]:
    """The listener answers on every address of the host name (from here: a firewall in
    front of the machine is not seen). Each address is tried on the port of the listening
    address that takes it (itself, or 0.0.0.0 / [::] of its family), else the first one's."""
    if not addresses:
        return [Check("port", service, "skip", "no address of the host name is known")]
    first = endpoints[0]
    taken = {a: _taking(endpoints, a) for a in addresses}
    ports = {a: (e or first).port for a, e in taken.items()}
    failures = await asyncio.gather(*(_connects(a, ports[a], timeout) for a in addresses))
    bad = [(a, why) for a, why in zip(addresses, failures, strict=True) if why]
    places = ", ".join(_where(a, ports[a]) for a in addresses)
    if bad:
        said = "; ".join(f"{_where(a, ports[a])}: {why}" for a, why in bad)
        missing = [a for a, _ in bad if taken[a] is None]
        if not missing:
            fix = f"start postroom serve, and open TCP port {ports[bad[0][0]]} in the firewall"
        else:
            wildcard = "[::]" if ":" in missing[0] else "0.0.0.0"
            shown = ", ".join(f'"{e}"' for e in endpoints)
            fix = (
                f"[listen] {service} is {shown} in {config.path}: listen on "
                f"{wildcard}:{first.port} too (or the public address), e.g. {service} = "
                f'["0.0.0.0:{first.port}", "[::]:{first.port}"]'
            )
        return [Check("port", service, "fail", f"not reachable at {said}", fix)]
    if service == "smtp" and first.port != 25:
        # RFC 5321 §4.5.4.2 / §3.9: other servers deliver to port 25 of the MX host.
        return [
            Check(
                "port",
                service,
                "warn",
                f"reachable at {places}, but other mail servers connect to port 25 only",
                f'set [listen] smtp = ["0.0.0.0:25", "[::]:25"] in {config.path}, or forward '
                f"port 25 to {first.port}",
            )
        ]
    return [Check("port", service, "ok", f"reachable at {places}")]


def _taking(endpoints: Sequence[Endpoint], address: str) -> Endpoint | None:
    """The listening address that takes connections to `address`: the same address, or the
    wildcard of its family (an IPv6 wildcard takes IPv6 only); None when none does."""
    wildcard = "::" if ":" in address else "0.0.0.0"
    for endpoint in endpoints:
        if endpoint.host in (address, wildcard):
            return endpoint
    return None


# --- the open-relay self-test ------------------------------------------------------------------


class _Broken(Exception):
    """The conversation could not go on (closed, not SMTP, too long)."""


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    """One SMTP reply, all its lines (RFC 5321 §4.2.1: "NNN-" continues, "NNN " ends)."""
    texts: list[str] = []
    for _ in range(MAX_REPLY_LINES):
        try:
            raw = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            raise _Broken(f"a reply line longer than {MAX_LINE} octets") from None
        if not raw:
            raise _Broken("the connection was closed")
        line = raw.decode("latin-1").rstrip("\r\n")
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
            raise _Broken(f"not an SMTP reply: {line[:80]!r}")
        texts.append(line[4:])
        if line[3:4] != "-":
            return int(line[:3]), " ".join(texts).strip()
    raise _Broken(f"a reply of more than {MAX_REPLY_LINES} lines")


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str
) -> tuple[int, str]:
    writer.write(line.encode("ascii") + b"\r\n")
    await writer.drain()
    return await _reply(reader)


async def open_relay(
    config: Config, addresses: Sequence[str], timeout: float, limit: float = RELAY_LIMIT
) -> list[Check]:
    """Connect to our own port-25 listener as a stranger would, ask it to relay from one
    outside address to another, and expect a refusal; never send a message. `timeout` bounds
    the connection, `limit` the conversation."""
    endpoints = config.listen.smtp
    if not endpoints:
        return [Check("open-relay", "", "skip", "no [listen] smtp: nothing receives mail here")]
    targets = [(a, (_taking(endpoints, a) or endpoints[0]).port) for a in addresses]
    targets += [(WILDCARDS.get(e.host, e.host), e.port) for e in endpoints]
    where, connection = "", None
    for host, port in dict.fromkeys(targets):
        where = _where(host, port)
        with contextlib.suppress(OSError, TimeoutError):
            connection = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=MAX_LINE), timeout
            )
            break
    if connection is None:
        return [
            Check(
                "open-relay",
                "",
                "warn",
                f"cannot connect to {where}: the test could not run",
                "start postroom serve and run it again",
            )
        ]
    reader, writer = connection
    try:
        async with asyncio.timeout(limit):
            return [await _relay_conversation(reader, writer, where, config.hostname)]
    except TimeoutError:
        return [
            Check(
                "open-relay",
                "",
                "warn",
                f"{where} did not answer within {limit:g} s",
                "run it again",
            )
        ]
    except (_Broken, OSError) as error:
        return [Check("open-relay", "", "warn", f"{where}: {error}", "run it again")]
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _relay_conversation(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str, helo: str
) -> Check:
    code, text = await _reply(reader)
    if code != 220:
        return Check(
            "open-relay",
            "",
            "warn",
            f"{where} greets with {code} {text}: the test could not run",
            "run it again",
        )
    code, text = await _command(reader, writer, f"EHLO {helo}")
    if code != 250:
        code, text = await _command(reader, writer, f"HELO {helo}")
    code, text = await _command(reader, writer, f"MAIL FROM:<{RELAY_FROM}>")
    if code >= 400:
        verdict = f"MAIL FROM:<{RELAY_FROM}> refused at {where}: {code} {text}"
        await _quit(reader, writer)
        return Check("open-relay", "", "ok", verdict)
    code, text = await _command(reader, writer, f"RCPT TO:<{RELAY_TO}>")
    with contextlib.suppress(_Broken, OSError):
        await _command(reader, writer, "RSET")
    await _quit(reader, writer)
    said = f"RCPT TO:<{RELAY_TO}> from <{RELAY_FROM}> without login at {where}: {code} {text}"
    if 200 <= code < 300:
        return Check(
            "open-relay",
            "",
            "fail",
            f"{said}: an open relay, spammers will use it and every list will block it",
            f"find what answers on {where}: postroom relays only for clients that logged in",
        )
    when = "for now" if code < 500 else "as it must be"
    return Check("open-relay", "", "ok", f"refused {when}: {said}")


async def _quit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(_Broken, OSError):
        await _command(reader, writer, "QUIT")


# --- disk and queue ----------------------------------------------------------------------------


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(octets: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if octets < 1024:
            return f"{octets:.0f} {unit}" if unit == "B" else f"{octets:.1f} {unit}"
        octets /= 1024
    return f"{octets:.1f} TiB"


async def disk(data_dir: Path) -> list[Check]:
    where = _existing(data_dir)
    try:
        usage = shutil.disk_usage(where)
    except OSError as error:
        return [
            Check(
                "disk",
                str(data_dir),
                "fail",
                f"{where}: {error.strerror}",
                "check that data_dir exists and can be read",
            )
        ]
    share = usage.free / usage.total if usage.total else 0.0
    detail = f"{_size(usage.free)} free of {_size(usage.total)} ({share:.0%}) at {where}"
    fix = f"free space on the file system of {where}, or move data_dir to a larger one"
    if share < DISK_FAIL_FRACTION:
        # A full disk refuses mail (452 4.3.1) and IMAP changes.
        return [
            Check("disk", str(data_dir), "fail", f"{detail}: mail is refused when it fills", fix)
        ]
    if share < DISK_WARN_FRACTION or usage.free < DISK_WARN_BYTES:
        return [Check("disk", str(data_dir), "warn", f"{detail}: running low", fix)]
    return [Check("disk", str(data_dir), "ok", detail)]


async def queue(entries: Sequence[QueueEntry], now: float) -> list[Check]:
    """Mail that has waited over a day, and mail held by hand."""
    recipients = sum(len(e.recipients) for e in entries)
    old = [
        (entry, rcpt)
        for entry in entries
        for rcpt in entry.recipients
        if rcpt.state == "deferred" and now - entry.arrival > OLD_DEFERRED
    ]
    held = [e for e in entries if e.held or any(r.state == "held" for r in e.recipients)]
    detail = f"{len(entries)} messages queued for {recipients} recipients"
    notes: list[str] = []
    if old:
        entry, rcpt = min(old, key=lambda pair: pair[0].arrival)
        days = (now - entry.arrival) / 86400
        reply = " ".join(rcpt.last_reply.split())[:200] or "no reply recorded"
        notes.append(
            f"{len(old)} recipients deferred for over a day (oldest {entry.id} to "
            f"{rcpt.address}, {days:.1f} days: {reply})"
        )
    if held:
        notes.append(f"{len(held)} held ({', '.join(e.id for e in held[:5])})")
    if not notes:
        return [Check("queue", "", "ok", detail)]
    status: Status = "warn"
    return [
        Check(
            "queue",
            "",
            status,
            f"{detail}; {'; '.join(notes)}",
            "see why: postroom queue show ID; then queue retry ID, queue release ID or "
            "queue delete ID",
        )
    ]


# --- the MTA-STS policy over HTTPS -------------------------------------------------------------


class PolicyFetchError(Exception):
    """The policy could not be fetched; the text says why."""


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to `name` (TLS server name and Host) at an address we resolved ourselves."""

    def __init__(
        self, name: str, address: str, port: int, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(name, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def _get(name: str, address: str, port: int, context: ssl.SSLContext, timeout: float) -> bytes:
    connection = _PinnedHTTPS(name, address, port, context, timeout)
    try:
        connection.request("GET", POLICY_PATH, headers={"User-Agent": "postroom-doctor"})
        response = connection.getresponse()
        if response.status != 200:
            note = ""
            if 300 <= response.status < 400:
                note = " (RFC 8461 §3.3: senders do not follow redirects)"
            raise PolicyFetchError(f"HTTP {response.status} {response.reason}{note}")
        media = (response.getheader("Content-Type") or "").partition(";")[0].strip().lower()
        if media != "text/plain":
            # RFC 8461 §3.2: the policy is served as text/plain.
            raise PolicyFetchError(f"Content-Type {media or 'missing'}, text/plain expected")
        body = response.read(MAX_POLICY + 1)
        if len(body) > MAX_POLICY:
            raise PolicyFetchError(f"the policy is larger than {MAX_POLICY} octets")
        return body
    except ssl.SSLCertVerificationError as error:
        raise PolicyFetchError(f"certificate not accepted: {error.verify_message}") from None
    except (OSError, http.client.HTTPException) as error:
        raise PolicyFetchError(str(error) or type(error).__name__) from None
    finally:
        connection.close()


@dataclass
class HttpsPolicyFetch:
    """GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461 §3.3), the name resolved
    through `lookup`, the certificate verified (system CAs, or `cafile`). `port` is 443 for
    the world; tests give their own server's."""

    lookup: DnsLookup
    port: int = 443
    cafile: str | None = None
    timeout: float = FETCH_TIMEOUT

    async def __call__(self, domain: str) -> bytes:
        name = f"mta-sts.{domain}"
        v4, v6 = await asyncio.gather(self.lookup.query(name, "A"), self.lookup.query(name, "AAAA"))
        addresses = [*v4.records, *v6.records]
        if not addresses:
            raise PolicyFetchError(f"{name} has no A or AAAA record")
        context = ssl.create_default_context(cafile=self.cafile)
        problems: list[str] = []
        for address in addresses[:4]:
            try:
                return await asyncio.wait_for(
                    asyncio.to_thread(_get, name, address, self.port, context, self.timeout),
                    self.timeout + 1,
                )
            except TimeoutError:
                problems.append(f"{address}: no answer within {self.timeout:g} s")
            except PolicyFetchError as error:
                problems.append(f"{_where(address, self.port)}: {error}")
        raise PolicyFetchError("; ".join(problems))
