"""REAL mail-authentication peers for tests: opendkim and opendmarc as milters of a private
Postfix, an SMTP capture, and the DNS plumbing they need to ask the test's nsd.

Each milter runs in the foreground (`Background no`, so the PID we hold is the filter's) on a
free 127.0.0.1 port, from a config file of its own in a temp directory (never /etc, no /run
paths), as the package's unprivileged user (`UserID opendkim` / `opendmarc`, `nobody` when
those do not exist) when the tests run as root. Neither filter can log anywhere but syslog
(`Syslog no` here: the machine has no /dev/log); their stdout/stderr (start-up errors) go to a
file, and their verdicts are visible in the Authentication-Results fields they add and in
Postfix's log (`milter-reject: ...`). Every process is stopped by its PID (SIGTERM, then
SIGKILL) when its context exits.

DNS:
* opendkim is built with libunbound here; `Nameservers 127.0.0.1@PORT` sends its key queries
  straight to the test's nsd (no DNSSEC: no TrustAnchorFile, the key is "unprotected").
* opendmarc 1.4 has no nameserver option: its DMARC lookups (libopendmarc) and its own SPF
  check (`SPFSelfValidate`, libspf2) both go through the C library's resolver, which reads
  /etc/resolv.conf and only ever uses port 53. So `ResolvConfDns` runs a second nsd serving
  the same zone files on port 53 of a free loopback address (127.53.x.y), and opendmarc runs in
  a mount namespace of its own (`mounts.private_mounts`) where a private resolv.conf naming that
  address is bind-mounted over /etc/resolv.conf. `opendkim-testmsg` (which also uses the system
  resolver) is run the same way. Needs root, as Postfix does.

`Postfix` wiring: `postfix_with_milters(...)` returns a `postfix_instance.Postfix` whose smtpd
calls the given milters in order (`smtpd_milters`, `milter_default_action = tempfail`), relaying
everything not local to `relay_to` (`relayhost = [127.0.0.1]:PORT`) or delivering its
`mailboxes` to Maildirs. `Capture` is an aiosmtpd server keeping every message byte for byte.

Use from a test (the `milters` fixture stops everything at teardown)::

    milters = milters_module.milters            # share the fixture, like dns_server
    def test_x(dns_server, milters):
        dns = dns_server({"sender.example": ZONE})
        signer = milters.signer("sender.example", "sel", pair.private, pair.algorithm)
        capture = milters.capture()
        postfix = milters.postfix([signer], relay_to=capture.address)  # or a postroom
        send_to(postfix.ports["smtp"], ...)
        data = capture.wait(1)[0].data
        resolver = milters.resolver(dns)
        assert dkimverify_cli(data, resolver).returncode == 0
        assert opendkim_testmsg(data, resolver).returncode == 0
        # inbound checks in front of a Postfix that delivers to Maildirs:
        postfix = milters.postfix([milters.verifier(dns), milters.dmarc(resolver)],
                                  mailboxes=["user@local.test"])
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from .conftest import STRICT, free_ports, require_program, wait_until
from .dns_server import DnsServer
from .mounts import private_mounts
from .postfix_instance import SERVER_NAME, Postfix

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
PUBLIC_SUFFIX_LIST = Path("/usr/share/publicsuffix/public_suffix_list.dat")
# RFC 5737 TEST-NET-1: a peer list that matches no client of these tests.
NO_HOST = "192.0.2.1"

Algorithm = Literal["rsa", "ed25519"]
SIGNATURE_ALGORITHM: dict[Algorithm, str] = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}


def _skip_or_fail(reason: str) -> None:
    if STRICT:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def milter_user(preferred: str) -> str | None:
    """The unprivileged user a milter drops to when the tests run as root (None otherwise)."""
    if os.geteuid() != 0:
        return None
    for name in (preferred, "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    return None


def _own(path: Path, user: str | None, mode: int) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process we started (by PID), SIGKILL if it lingers; always reap it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def opendkim_private_key(algorithm: Algorithm, private: bytes) -> bytes:
    """The key file opendkim reads, from a key in dkimpy's form (postroom.mailauth.keys):
    rsa PEM as is; an ed25519 seed (base64 of 32 octets, RFC 8463 §3) as PKCS#8 PEM, the only
    ed25519 form opendkim 2.11 loads."""
    if algorithm == "rsa":
        return private
    seed = base64.b64decode(private, validate=True)
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# --- DNS on port 53 for the resolv.conf users ----------------------------------------------------


def _free_loopback_53() -> str:
    """A 127.53.x.y address whose port 53 is free for both UDP and TCP."""
    rng = random.Random()
    for _ in range(100):
        address = f"127.53.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        ):
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((address, 53))
                udp.bind((address, 53))
            except OSError:
                continue
            return address
    raise AssertionError("no loopback address with port 53 free")


@dataclass
class ResolvConfDns:
    """An nsd answering on `address`:53 with `dns`'s zone files, and a resolv.conf naming it."""

    address: str
    resolv_conf: Path
    directory: Path
    proc: subprocess.Popen[bytes]

    def prefix(self) -> tuple[str, ...]:
        """Runs what follows in a mount namespace whose /etc/resolv.conf is ours."""
        return private_mounts('mount --bind "$1" /etc/resolv.conf', str(self.resolv_conf))


@contextlib.contextmanager
def resolv_conf_dns(dns: DnsServer) -> Iterator[ResolvConfDns]:
    """Serve `dns`'s zones (the same files) on port 53 of a free loopback address."""
    if os.geteuid() != 0:
        _skip_or_fail(
            "opendmarc/opendkim-testmsg: DNS on port 53 and a private resolv.conf need root"
        )
    nsd = require_program("nsd")
    directory = Path(tempfile.mkdtemp(prefix="postroom-dns53-"))
    directory.chmod(0o755)  # the private resolv.conf is read by the milter's user
    proc: subprocess.Popen[bytes] | None = None
    try:
        for attempt in range(3):
            address = _free_loopback_53()
            zones = "".join(
                f'zone:\n    name: "{zone.rstrip(".")}"\n'
                f'    zonefile: "{dns.directory / "zones" / (zone.rstrip(".") + ".zone")}"\n'
                for zone in dns.zones
            )
            config = directory / "nsd.conf"
            config.write_text(
                "server:\n"
                f'    ip-address: "{address}@53"\n'
                "    do-ip4: yes\n    do-ip6: no\n    server-count: 1\n    verbosity: 1\n"
                '    username: ""\n    chroot: ""\n    database: ""\n'
                f'    pidfile: "{directory / "nsd.pid"}"\n'
                f'    logfile: "{directory / "nsd.log"}"\n'
                f'    xfrdfile: "{directory / "xfrd.state"}"\n'
                f'    xfrdir: "{directory}"\n'
                f'    zonelistfile: "{directory / "zone.list"}"\n'
                "remote-control:\n    control-enable: no\n" + zones
            )
            with (directory / "nsd.out").open("ab") as out:
                proc = subprocess.Popen(
                    [nsd, "-d", "-c", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            resolv = directory / "resolv.conf"
            # One server, short timeouts: a missing answer shows as a temporary error quickly.
            resolv.write_text(f"nameserver {address}\noptions timeout:2 attempts:2\n")
            resolv.chmod(0o644)
            server = ResolvConfDns(address, resolv, directory, proc)
            try:
                _wait_dns(proc, address, dns.zones, directory)
            except AssertionError as error:
                _stop(proc)
                if "already in use" in str(error) and attempt < 2:
                    continue
                raise
            yield server
            return
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_dns(
    proc: subprocess.Popen[bytes], address: str, zones: Sequence[str], directory: Path
) -> None:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    def answers(zone: str) -> bool:
        query = dns.message.make_query(zone, dns.rdatatype.SOA)
        try:
            response = dns.query.udp(query, address, port=53, timeout=0.5)
        except (OSError, dns.exception.DNSException):
            return False
        return response.rcode() == dns.rcode.NOERROR and bool(response.answer)

    def ready() -> bool:
        if proc.poll() is not None:
            out = (directory / "nsd.out").read_text(errors="replace")
            log = (
                (directory / "nsd.log").read_text(errors="replace")
                if (directory / "nsd.log").exists()
                else ""
            )
            raise AssertionError(f"nsd on {address}:53 exited with {proc.returncode}\n{out}{log}")
        return all(answers(zone) for zone in zones)

    wait_until(ready, START_TIMEOUT, f"nsd on {address}:53")


# --- milters -------------------------------------------------------------------------------------


@dataclass
class Milter:
    """A running milter: where Postfix reaches it, its files and its process."""

    name: str
    port: int
    directory: Path
    proc: subprocess.Popen[bytes]
    config: Path

    @property
    def spec(self) -> str:
        """The form `smtpd_milters` takes."""
        return f"inet:{HOST}:{self.port}"

    def output(self) -> str:
        path = self.directory / "output.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}\n{self.output()}")


@contextlib.contextmanager
def _run_milter(
    name: str,
    directory: Path,
    config_text: Callable[[int], str],
    command: Callable[[Path], Sequence[str]],
) -> Iterator[Milter]:
    """Write the config for a free port, start the filter, wait until it listens; retry only
    when another process took the port between our probe and the filter's bind."""
    for attempt in range(3):
        port = free_ports(1, HOST)[0]
        config = directory / f"{name}.conf"
        config.write_text(config_text(port))
        config.chmod(0o644)
        with (directory / "output.log").open("ab") as out:
            proc = subprocess.Popen(
                list(command(config)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        milter = Milter(name, port, directory, proc, config)
        try:

            def ready(milter: Milter = milter) -> bool:
                milter.check_alive()
                return _listening(HOST, milter.port)

            wait_until(ready, START_TIMEOUT, f"{name} to listen on {HOST}:{port}")
        except AssertionError:
            _stop(proc)
            if "in use" in milter.output() and attempt < 2:
                continue
            raise
        try:
            yield milter
        finally:
            _stop(proc)
        return


def _milter_dir(prefix: str, user: str | None) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=f"postroom-{prefix}-"))
    _own(directory, user, 0o755)
    return directory


@contextlib.contextmanager
def opendkim_signer(
    domain: str, selector: str, private: bytes, algorithm: Algorithm = "rsa"
) -> Iterator[Milter]:
    """opendkim signing mail From `domain` with one key (c=relaxed/relaxed) for clients on
    loopback (InternalHosts 127.0.0.0/8); `private` in dkimpy's form (mailauth.keys)."""
    program = require_program("opendkim")
    user = milter_user("opendkim")
    directory = _milter_dir("opendkim-sign", user)
    try:
        key = directory / f"{selector}.private"
        key.write_bytes(opendkim_private_key(algorithm, private))
        _own(key, user, 0o600)
        internal = directory / "internal-hosts"
        internal.write_text("127.0.0.0/8\n")

        def config(port: int) -> str:
            return _opendkim_common(port, user) + (
                "Mode s\n"
                f"Domain {domain}\n"
                f"Selector {selector}\n"
                f"KeyFile {key}\n"
                f"SignatureAlgorithm {SIGNATURE_ALGORITHM[algorithm]}\n"
                "Canonicalization relaxed/relaxed\n"
                f"InternalHosts refile:{internal}\n"
                # Over-sign against added copies (RFC 6376 §8.15).
                "OversignHeaders From,Subject,To,Date\n"
            )

        with _run_milter(
            "opendkim-sign", directory, config, lambda c: [program, "-x", str(c)]
        ) as m:
            yield m
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def opendkim_verifier(
    nameserver: str, authserv_id: str = SERVER_NAME, on_bad_signature: str = "accept"
) -> Iterator[Milter]:
    """opendkim verifying every signature against `nameserver` ("host:port", the test's nsd),
    adding `Authentication-Results: <authserv_id>; dkim=...`; `on_bad_signature` is opendkim's
    On-BadSignature (accept, reject, tempfail, ...)."""
    program = require_program("opendkim")
    user = milter_user("opendkim")
    directory = _milter_dir("opendkim-verify", user)
    host, _, port_text = nameserver.rpartition(":")
    try:
        peers = directory / "internal-hosts"
        peers.write_text(f"{NO_HOST}\n")  # nothing is internal: mail from loopback is verified

        def config(port: int) -> str:
            return _opendkim_common(port, user) + (
                "Mode v\n"
                f"AuthservID {authserv_id}\n"
                f"InternalHosts refile:{peers}\n"
                f"Nameservers {host}@{port_text}\n"
                "DNSTimeout 5\n"
                "AlwaysAddARHeader yes\n"
                f"On-BadSignature {on_bad_signature}\n"
            )

        with _run_milter(
            "opendkim-verify", directory, config, lambda c: [program, "-x", str(c)]
        ) as m:
            yield m
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _opendkim_common(port: int, user: str | None) -> str:
    return (
        "# Written by tests/integration/milters.py.\n"
        f"Socket inet:{port}@[{HOST}]\n"
        "Background no\n"
        "Syslog no\n"
        "UMask 022\n"
        # Keys live under /tmp, which opendkim counts as unsafe (others can write to it).
        "RequireSafeKeys no\n"
        "SoftwareHeader no\n" + (f"UserID {user}\n" if user else "")
    )


@contextlib.contextmanager
def opendmarc(
    resolver: ResolvConfDns,
    authserv_id: str = SERVER_NAME,
    trusted_authserv_ids: Sequence[str] = (SERVER_NAME,),
    reject: bool = True,
) -> Iterator[Milter]:
    """opendmarc evaluating DMARC (and SPF itself, libspf2) through `resolver`'s resolv.conf,
    trusting DKIM results in Authentication-Results from `trusted_authserv_ids` (opendkim's);
    with `reject`, a failure under p=reject is refused (RejectFailures)."""
    program = require_program("opendmarc")
    user = milter_user("opendmarc")
    directory = _milter_dir("opendmarc", user)
    try:
        ignore = directory / "ignore-hosts"
        ignore.write_text(f"{NO_HOST}\n")  # the default ignores 127.0.0.1: check loopback too

        def config(port: int) -> str:
            lines = [
                "# Written by tests/integration/milters.py.",
                f"Socket inet:{port}@[{HOST}]",
                "Background false",
                "Syslog false",
                "UMask 022",
                f"AuthservID {authserv_id}",
                f"TrustedAuthservIDs {','.join(trusted_authserv_ids)}",
                f"IgnoreHosts {ignore}",
                f"RejectFailures {'true' if reject else 'false'}",
                "SPFSelfValidate true",
                "SPFIgnoreResults true",
                "SoftwareHeader false",
                "FailureReports false",
            ]
            if PUBLIC_SUFFIX_LIST.exists():
                lines.append(f"PublicSuffixList {PUBLIC_SUFFIX_LIST}")
            if user:
                lines.append(f"UserID {user}")
            return "\n".join(lines) + "\n"

        def command(config: Path) -> list[str]:
            return [*resolver.prefix(), program, "-c", str(config)]

        with _run_milter("opendmarc", directory, config, command) as m:
            yield m
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- Postfix wired to milters ------------------------------------------------------------------


def postfix_with_milters(
    milters: Sequence[Milter],
    *,
    relay_to: tuple[str, int] | None = None,
    mailboxes: Sequence[str] = (),
    default_action: str = "tempfail",
    main: Mapping[str, str] | None = None,
) -> Postfix:
    """A private Postfix (not started: use it as a context manager) whose smtpd calls
    `milters` in order; mail for other domains than `mailboxes`' goes to `relay_to`."""
    settings = {
        "smtpd_milters": ", ".join(m.spec for m in milters),
        "milter_default_action": default_action,
        "milter_connect_timeout": "10s",
        "milter_content_timeout": "60s",
    }
    if relay_to is not None:
        settings["relayhost"] = f"[{relay_to[0]}]:{relay_to[1]}"
        # One delivery attempt's worth of patience: a test waits on the capture, not a retry.
        settings["smtp_connect_timeout"] = "10s"
    settings.update(main or {})
    return Postfix(listeners={"smtp": {}}, main=settings, mailboxes=mailboxes)


# --- an SMTP capture -----------------------------------------------------------------------------


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # as received, CRLF line ends, dot-unstuffed


@dataclass
class _Handler:
    messages: list[Captured] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self.lock:
            self.messages.append(
                Captured(envelope.mail_from or "", list(envelope.rcpt_tos), bytes(content))
            )
        return "250 2.0.0 captured"


class Capture:
    """An aiosmtpd server on a free loopback port keeping every message it is given."""

    def __init__(self) -> None:
        self.handler = _Handler()
        self.port = free_ports(1, HOST)[0]
        self.controller = Controller(
            self.handler,
            hostname=HOST,
            port=self.port,
            decode_data=False,
            data_size_limit=64 * 2**20,
        )

    def __enter__(self) -> Capture:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    def messages(self) -> list[Captured]:
        with self.handler.lock:
            return list(self.handler.messages)

    def wait(
        self, count: int, timeout: float = 30.0, log: Callable[[], str] = str
    ) -> list[Captured]:
        def enough() -> list[Captured] | None:
            got = self.messages()
            return got if len(got) >= count else None

        try:
            result: list[Captured] = wait_until(enough, timeout, f"{count} captured messages")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{log()}") from None
        return result


# --- independent verifiers -----------------------------------------------------------------------


def opendkim_testmsg(message: bytes, resolver: ResolvConfDns) -> subprocess.CompletedProcess[str]:
    """`opendkim-testmsg` verifying `message` (libopendkim, asking `resolver`); exit 0 = pass."""
    program = require_program("opendkim-testmsg")
    return subprocess.run(
        [*resolver.prefix(), program],
        input=message.replace(b"\r\n", b"\n").decode("latin-1"),
        capture_output=True,
        # latin-1 both ways: the program gets the message's octets as they are (the locale's
        # UTF-8 would encode an 8-bit body twice and break every signature over it).
        encoding="latin-1",
        timeout=60,
        check=False,
    )


def dkimverify_cli(
    message: bytes, resolver: ResolvConfDns, index: int = 0
) -> subprocess.CompletedProcess[str]:
    """dkimpy's `dkimverify` (its dnspython reads our resolv.conf); exit 0 = signature ok."""
    import sys

    program = Path(sys.executable).with_name("dkimverify")
    if not program.exists():
        pytest.fail(f"{program} missing: dkimpy's console script (make install)")
    return subprocess.run(
        [*resolver.prefix(), str(program), "--index", str(index)],
        input=message.decode("latin-1"),
        capture_output=True,
        encoding="latin-1",  # the message's octets as they are (see opendkim_testmsg)
        timeout=60,
        check=False,
    )


def dkimpy_dnsfunc(nameserver: str) -> Callable[..., bytes]:
    """A dkimpy `dnsfunc` asking `nameserver` through postroom.dns.lookup.ResolverLookup."""
    import asyncio

    from postroom.dns.lookup import ResolverLookup

    lookup = ResolverLookup((nameserver,), timeout=5)

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes:
        text = name.decode() if isinstance(name, bytes) else name
        answer = asyncio.run(lookup.query(text.rstrip("."), "TXT"))
        return answer.records[0].encode() if answer.records else b""

    return dnsfunc


# --- pytest fixture ---------------------------------------------------------------------------


class Peers:
    """Factory behind the `milters` fixture: everything started is stopped at teardown."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self.started: list[Milter] = []

    def _milter(self, context: contextlib.AbstractContextManager[Milter]) -> Milter:
        milter = self._stack.enter_context(context)
        self.started.append(milter)
        return milter

    def signer(
        self, domain: str, selector: str, private: bytes, algorithm: Algorithm = "rsa"
    ) -> Milter:
        """opendkim signing for `domain` (see `opendkim_signer`)."""
        return self._milter(opendkim_signer(domain, selector, private, algorithm))

    def verifier(
        self, dns: DnsServer, authserv_id: str = SERVER_NAME, on_bad_signature: str = "accept"
    ) -> Milter:
        """opendkim verifying against `dns` (see `opendkim_verifier`)."""
        return self._milter(opendkim_verifier(dns.nameserver, authserv_id, on_bad_signature))

    def resolver(self, dns: DnsServer) -> ResolvConfDns:
        """`dns`'s zones on port 53 with a resolv.conf naming them (see `resolv_conf_dns`)."""
        return self._stack.enter_context(resolv_conf_dns(dns))

    def dmarc(
        self,
        resolver: ResolvConfDns,
        authserv_id: str = SERVER_NAME,
        trusted_authserv_ids: Sequence[str] = (SERVER_NAME,),
        reject: bool = True,
    ) -> Milter:
        """opendmarc asking `resolver` (see `opendmarc`)."""
        return self._milter(opendmarc(resolver, authserv_id, trusted_authserv_ids, reject))

    def postfix(
        self,
        milters: Sequence[Milter],
        *,
        relay_to: tuple[str, int] | None = None,
        mailboxes: Sequence[str] = (),
        default_action: str = "tempfail",
        main: Mapping[str, str] | None = None,
    ) -> Postfix:
        """A started Postfix calling `milters` (see `postfix_with_milters`)."""
        return self._stack.enter_context(
            postfix_with_milters(
                milters,
                relay_to=relay_to,
                mailboxes=mailboxes,
                default_action=default_action,
                main=main,
            )
        )

    def capture(self) -> Capture:
        """A started `Capture`."""
        return self._stack.enter_context(Capture())

    def terminate_milters(self) -> None:
        """SIGTERM every running milter at once: libmilter takes ~4 s to wind down, so the
        contexts that wait for them afterwards then wait in parallel, not one after another."""
        for milter in self.started:
            if milter.proc.poll() is None:
                milter.proc.send_signal(signal.SIGTERM)


@pytest.fixture
def milters() -> Iterator[Peers]:
    """`milters.signer(...)`, `.verifier(dns)`, `.resolver(dns)`, `.dmarc(resolver)`,
    `.postfix([m, ...], relay_to=..., mailboxes=...)`, `.capture()`; all stopped at teardown
    (Postfix and the capture first, then the milters, then the port-53 nsd)."""
    with contextlib.ExitStack() as stack:
        peers = Peers(stack)
        try:
            yield peers
        finally:
            peers.terminate_milters()


__all__ = [
    "Capture",
    "Captured",
    "Milter",
    "Peers",
    "ResolvConfDns",
    "dkimpy_dnsfunc",
    "dkimverify_cli",
    "milters",
    "opendkim_private_key",
    "opendkim_signer",
    "opendkim_testmsg",
    "opendkim_verifier",
    "opendmarc",
    "postfix_with_milters",
    "resolv_conf_dns",
]
