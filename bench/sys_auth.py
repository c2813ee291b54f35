"""Mail-authentication benchmark (issue 13 §6): inbound verification, and signing on submission.

Inbound (``verify``): one message of about 5 KiB from ``bench@sender.example`` to
``user@bench.test``, DKIM-signed beforehand by ``sender.example`` (dkimpy, relaxed/relaxed;
one file signed rsa-sha256 with a 2048-bit key, one ed25519-sha256), sent N times by the
common load generator, ``smtp-source -s 20 -m N -F FILE``, from 127.0.0.1.  A private nsd
serves ``sender.example``: the two DKIM keys, SPF ``v=spf1 ip4:127.0.0.0/8 -all`` and DMARC
``v=DMARC1; p=reject``, so every message passes SPF, DKIM and DMARC (aligned both ways).

* Postfix: the private instance of sys_postfix.py (virtual(8) to a Maildir) with
  ``smtpd_milters`` = opendkim (verifying, ``Nameservers 127.0.0.1@NSDPORT``, stock settings
  otherwise) then opendmarc (``SPFSelfValidate``, trusting opendkim's Authentication-Results,
  ``RejectFailures``), ``milter_default_action = tempfail``.  opendmarc has no nameserver
  option: it and its SPF library (libspf2) use the C resolver, which reads /etc/resolv.conf and
  only knows port 53; so the same nsd also answers on port 53 of a free 127.53.x.y address and
  opendmarc runs in a mount namespace of its own (``unshare --mount``) with a resolv.conf naming
  that address bind-mounted over /etc/resolv.conf.  Both milters run as their package's user.
* postroom: ``[verify] enabled = true`` and ``[dns] nameservers = ["127.0.0.1:NSDPORT"]``,
  delivering to its mailbox.  Until postroom knows the ``[verify]`` table (its config loader
  refuses unknown tables) the row says "not available" and the run goes on.

Each system first takes WARMUP messages (untimed, waited for), then N; the rate is N / time
from smtp-source start until the N messages are delivered (Maildir files / ``mailbox
status``, as in the receive scenario).  Afterwards every delivered message is read to count
``dkim=pass`` and ``dmarc=pass`` in its Authentication-Results: a system that did not verify
shows it in the ``verified`` column.

Signing (``signing``): postroom's submission listener (AUTH PLAIN without TLS, ``[auth]
plaintext = true``) takes N messages from ``user@bench.test`` over SUBMIT_SESSIONS parallel
smtplib sessions (one login each) for ``user@relay.example``, relayed by ``[routes]`` to
``smtp-sink -c -M N``; rate = N / time until the sink has them all, once with ``[dkim] sign =
false`` and once with ``true``.  Until postroom knows ``[dkim] sign``, the unsigned row runs
without the switch (postroom does not sign yet) and the signed row is "not available".
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import os
import pwd
import random
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sys_postfix
import sys_postroom
import sys_relay
from common import (
    HOST,
    BenchError,
    Load,
    check_smtp_source,
    find_tool,
    free_port,
    rate,
    stop_process,
    tail,
    wait_port,
)

SENDER_DOMAIN = "sender.example"
SENDER = f"bench@{SENDER_DOMAIN}"
MESSAGES = 600
WARMUP = 60
SUBMIT_SESSIONS = 20
ALGORITHMS = ("rsa", "ed25519")
SIGNATURE_ALGORITHM = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}
SELECTORS = {"rsa": "rsa2048", "ed25519": "ed"}
TARGET_VS_POSTFIX = 1.5
POSTFIX_AUTHSERV_ID = "mx.postfix-bench.test"
PUBLIC_SUFFIX_LIST = Path("/usr/share/publicsuffix/public_suffix_list.dat")
NO_HOST = "192.0.2.1"  # RFC 5737: matches no client, so mail from loopback is checked
POLL = 0.02
# The switches postroom is given; a table it does not know makes its config loader refuse.
VERIFY_CONFIG = "\n[verify]\nenabled = true\n"
SIGN_CONFIG = "\n[dkim]\nsign = {value}\n"


# --- keys, zone, message -------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    algorithm: str
    selector: str
    private: bytes  # as dkimpy takes it: rsa PEM, ed25519 base64 seed
    pem: bytes  # as opendkim takes it (PKCS#8 PEM): unused by the verify bench, kept for signing
    public: str  # the p= value


def make_key(algorithm: str) -> Key:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    pkcs8 = serialization.PrivateFormat.PKCS8
    if algorithm == "rsa":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = rsa_key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())
        der = rsa_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return Key("rsa", SELECTORS["rsa"], pem, pem, base64.b64encode(der).decode())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    seed = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    pem = ed_key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())
    return Key(
        "ed25519", SELECTORS["ed25519"], base64.b64encode(seed), pem, base64.b64encode(raw).decode()
    )


def txt(text: str) -> str:
    """A TXT record's data: character-strings of at most 255 octets (RFC 1035 §3.3)."""
    return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))


def sender_zone(keys: Sequence[Key]) -> str:
    lines = [
        "$TTL 3600",
        f"@ IN SOA ns.{SENDER_DOMAIN}. hostmaster.{SENDER_DOMAIN}. 1 3600 600 86400 3600",
        f"@ IN NS ns.{SENDER_DOMAIN}.",
        "ns IN A 127.0.0.1",
        '@ IN TXT "v=spf1 ip4:127.0.0.0/8 -all"',
        '_dmarc IN TXT "v=DMARC1; p=reject"',
    ]
    for key in keys:
        record = f"v=DKIM1; k={key.algorithm}; p={key.public}"
        lines.append(f"{key.selector}._domainkey IN TXT {txt(record)}")
    return "\n".join(lines) + "\n"


def signed_message(key: Key, recipient: str, size: int = 5120) -> bytes:
    """A message of about `size` bytes from SENDER, signed by sender.example with `key`."""
    import dkim

    head = (
        f"From: Bench <{SENDER}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: postroom auth bench ({SIGNATURE_ALGORITHM[key.algorithm]})\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: <auth-bench.{key.algorithm}@{SENDER_DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    data = head + body
    signature = dkim.sign(
        data,
        key.selector.encode(),
        SENDER_DOMAIN.encode(),
        key.private,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=SIGNATURE_ALGORITHM[key.algorithm].encode(),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return bytes(signature) + data


# --- DNS ---------------------------------------------------------------------------------------


def free_loopback_53() -> str:
    """A 127.53.x.y address whose port 53 is free for both UDP and TCP (needs root)."""
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
    raise BenchError("no loopback address with port 53 free")


class Nsd:
    """nsd serving sender.example on 127.0.0.1:PORT and on ADDRESS:53; a context manager."""

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.tmp = Path(tempfile.mkdtemp(prefix="postroom-bench-nsd-"))
        self.tmp.chmod(0o755)  # the private resolv.conf is read by opendmarc's user
        self.port = 0
        self.address = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.resolv_conf = self.tmp / "resolv.conf"

    @property
    def nameserver(self) -> str:
        return f"{HOST}:{self.port}"

    def __enter__(self) -> Nsd:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        nsd = find_tool("nsd")
        (self.tmp / "sender.example.zone").write_text(self.zone)
        check = subprocess.run(
            [find_tool("nsd-checkzone"), SENDER_DOMAIN, str(self.tmp / "sender.example.zone")],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise BenchError(f"nsd-checkzone: {check.stdout}{check.stderr}")
        self.port = free_port()
        self.address = free_loopback_53()
        config = self.tmp / "nsd.conf"
        config.write_text(
            "server:\n"
            f'    ip-address: "{HOST}@{self.port}"\n'
            f'    ip-address: "{self.address}@53"\n'
            "    do-ip4: yes\n    do-ip6: no\n    server-count: 1\n    verbosity: 1\n"
            '    username: ""\n    chroot: ""\n    database: ""\n'
            f'    zonesdir: "{self.tmp}"\n'
            f'    pidfile: "{self.tmp / "nsd.pid"}"\n'
            f'    logfile: "{self.tmp / "nsd.log"}"\n'
            f'    xfrdfile: "{self.tmp / "xfrd.state"}"\n'
            f'    xfrdir: "{self.tmp}"\n'
            f'    zonelistfile: "{self.tmp / "zone.list"}"\n'
            "remote-control:\n    control-enable: no\n"
            f'zone:\n    name: "{SENDER_DOMAIN}"\n    zonefile: "sender.example.zone"\n'
        )
        self.resolv_conf.write_text(f"nameserver {self.address}\noptions timeout:2 attempts:2\n")
        self.resolv_conf.chmod(0o644)
        with open(self.tmp / "nsd.out", "wb") as out:
            self.proc = subprocess.Popen(
                [nsd, "-d", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while not (self._answers(HOST, self.port) and self._answers(self.address, 53)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                logs = f"{tail(self.tmp / 'nsd.out')}\n{tail(self.tmp / 'nsd.log')}"
                raise BenchError(f"nsd did not answer\n{logs}")
            time.sleep(0.05)

    @staticmethod
    def _answers(host: str, port: int) -> bool:
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode

        query = dns.message.make_query(f"_dmarc.{SENDER_DOMAIN}", "TXT")
        try:
            response = dns.query.udp(query, host, port=port, timeout=0.5)
        except (OSError, dns.exception.DNSException):
            return False
        return response.rcode() == dns.rcode.NOERROR and bool(response.answer)

    def __exit__(self, *exc: object) -> None:
        try:
            stop_process(self.proc)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --- milters -----------------------------------------------------------------------------------


def _user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return pwd.getpwnam("nobody")


class Milters:
    """opendkim (verify) and opendmarc on free loopback ports, as their users; a context manager."""

    def __init__(self, nsd: Nsd) -> None:
        self.nsd = nsd
        self.tmp = Path(tempfile.mkdtemp(prefix="postroom-bench-milters-"))
        self.tmp.chmod(0o755)
        self.dkim_port = free_port()
        self.dmarc_port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def smtpd_milters(self) -> str:
        return f"inet:{HOST}:{self.dkim_port}, inet:{HOST}:{self.dmarc_port}"

    def __enter__(self) -> Milters:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        opendkim, opendmarc = find_tool("opendkim"), find_tool("opendmarc")
        if os.geteuid() != 0:
            raise BenchError("the auth benchmark must run as root (Postfix, port 53, unshare)")
        dkim_user, dmarc_user = _user("opendkim").pw_name, _user("opendmarc").pw_name
        no_hosts = self.tmp / "no-hosts"
        no_hosts.write_text(f"{NO_HOST}\n")
        no_hosts.chmod(0o644)
        dkim_conf = self.tmp / "opendkim.conf"
        dkim_conf.write_text(
            "# opendkim verifying for the auth benchmark (bench/sys_auth.py).\n"
            f"Socket inet:{self.dkim_port}@[{HOST}]\n"
            "Background no\nSyslog no\nMode v\n"
            f"UserID {dkim_user}\n"
            f"AuthservID {POSTFIX_AUTHSERV_ID}\n"
            f"InternalHosts refile:{no_hosts}\n"
            f"Nameservers {HOST}@{self.nsd.port}\n"
        )
        dmarc_conf = self.tmp / "opendmarc.conf"
        dmarc_conf.write_text(
            "# opendmarc for the auth benchmark (bench/sys_auth.py).\n"
            f"Socket inet:{self.dmarc_port}@[{HOST}]\n"
            "Background false\nSyslog false\n"
            f"UserID {dmarc_user}\n"
            f"AuthservID {POSTFIX_AUTHSERV_ID}\n"
            f"TrustedAuthservIDs {POSTFIX_AUTHSERV_ID}\n"
            f"IgnoreHosts {no_hosts}\n"
            "RejectFailures true\nSPFSelfValidate true\nSPFIgnoreResults true\n"
            + (f"PublicSuffixList {PUBLIC_SUFFIX_LIST}\n" if PUBLIC_SUFFIX_LIST.exists() else "")
        )
        unshare = find_tool("unshare")
        # A mount namespace of its own where /etc/resolv.conf names our nsd (port 53).
        in_namespace = [
            unshare, "--mount", "--propagation", "private",
            "sh", "-ec", 'mount --bind "$1" /etc/resolv.conf; shift; exec "$@"',
            "sh", str(self.nsd.resolv_conf),
        ]  # fmt: skip
        commands = {
            "opendkim": ([opendkim, "-x", str(dkim_conf)], self.dkim_port),
            "opendmarc": ([*in_namespace, opendmarc, "-c", str(dmarc_conf)], self.dmarc_port),
        }
        for name, (command, port) in commands.items():
            log = self.tmp / f"{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.procs.append(proc)
            wait_port(port, timeout=20, proc=proc, log=log)

    def __exit__(self, *exc: object) -> None:
        try:
            stop_all(self.procs)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def stop_all(procs: Sequence[subprocess.Popen[bytes] | None]) -> None:
    """TERM every process group at once (libmilter takes ~4 s to wind down), then reap each."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        stop_process(proc)


# --- load --------------------------------------------------------------------------------------


def start_source(
    count: int, sessions: int, message: Path, recipient: str, port: int, log: Path
) -> subprocess.Popen[bytes]:
    """``smtp-source -F``: the pre-formatted (signed) message, dot-stuffed and CRLF'd by it."""
    command = [
        find_tool("smtp-source"),
        "-s", str(sessions), "-m", str(count), "-F", str(message),
        "-f", SENDER, "-t", recipient, f"{HOST}:{port}",
    ]  # fmt: skip
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def write_message(directory: Path, key: Key, recipient: str) -> Path:
    # smtp-source appends CRLF to each line it reads: give it LF line ends.
    path = directory / f"signed-{key.algorithm}.eml"
    path.write_bytes(signed_message(key, recipient).replace(b"\r\n", b"\n"))
    return path


def verdicts(messages: Sequence[bytes]) -> dict[str, int]:
    """How many messages carry dkim=pass and dmarc=pass in an Authentication-Results field."""
    counts = {"checked": len(messages), "dkim_pass": 0, "dmarc_pass": 0}
    for data in messages:
        head = data.split(b"\n\n", 1)[0].replace(b"\r\n", b"\n")
        fields = b"\n".join(
            block
            for block in head.replace(b"\n ", b" ").replace(b"\n\t", b" ").split(b"\n")
            if block.lower().startswith(b"authentication-results:")
        ).lower()
        counts["dkim_pass"] += b"dkim=pass" in fields
        counts["dmarc_pass"] += b"dmarc=pass" in fields
    return counts


# --- Postfix with milters ----------------------------------------------------------------------


def postfix_verify(
    nsd: Nsd, messages: dict[str, Path], load: Load, count: int, timeout: float
) -> dict[str, Any]:
    """Each algorithm's rate through Postfix + opendkim + opendmarc into the Maildir."""
    extra = (
        "# Auth benchmark: opendkim then opendmarc on every smtpd message.\n"
        f"myhostname = {POSTFIX_AUTHSERV_ID}\n"
        "milter_default_action = tempfail\n"
    )
    results: dict[str, Any] = {}
    with (
        Milters(nsd) as milters,
        sys_postfix.PrivatePostfix(
            load, extra + f"smtpd_milters = {milters.smtpd_milters}\n"
        ) as pf,
    ):
        delivered = 0

        def count_new() -> int:
            try:
                return len(os.listdir(pf.new_dir))
            except FileNotFoundError:
                return 0

        def check_alive() -> None:
            for proc in milters.procs:
                if proc.poll() is not None:
                    raise BenchError(f"a milter exited ({proc.args})\n{tail(pf.tmp / 'maillog')}")

        for algorithm, message in messages.items():
            for phase, n in (("warmup", WARMUP), ("timed", count)):
                delivered += n
                measured = run_load(
                    message, load, n, pf.port, pf.tmp, delivered, count_new, check_alive,
                    timeout, pf.tmp / "maillog",
                )  # fmt: skip
                if phase == "timed":
                    results[algorithm] = measured
        files = sorted(pf.new_dir.iterdir(), key=lambda p: p.stat().st_mtime_ns)
        checked = by_algorithm([p.read_bytes() for p in files], count)
        for algorithm in messages:
            results[algorithm]["verified"] = checked[algorithm]
    return results


def run_load(
    message: Path,
    load: Load,
    n: int,
    port: int,
    tmp: Path,
    target: int,
    count: Callable[[], int],
    check_alive: Callable[[], None],
    timeout: float,
    server_log: Path,
    poll_after_source: bool = False,
) -> dict[str, Any]:
    """smtp-source N copies of `message`; time until `count()` reaches `target`.

    With `poll_after_source` (postroom: `mailbox status` is a command of its own, as in the
    receive scenario) the count is only asked once smtp-source is done, then back to back."""
    log = tmp / "smtp-source.log"
    start = time.monotonic()
    source = start_source(n, load.sessions, message, load.recipient, port, log)
    accepted_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if accepted_at is None and source.poll() is not None:
                accepted_at = now
                check_smtp_source(source, log)
            if (accepted_at is not None or not poll_after_source) and count() >= target:
                done = time.monotonic()
                break
            check_alive()
            if now - start > timeout:
                raise BenchError(
                    f"not all {n} messages delivered after {timeout:.0f}s\n{tail(server_log)}"
                )
            if not (poll_after_source and accepted_at is not None):
                time.sleep(POLL)
    finally:
        stop_process(source)
    if accepted_at is None:  # everything delivered before we saw smtp-source exit
        source.wait()
        check_smtp_source(source, log)
        accepted_at = done
    elapsed = done - start
    return {
        "messages": n,
        "seconds": round(elapsed, 3),
        "msg_per_s": round(rate(n, elapsed), 1),
        "accept_msg_per_s": round(rate(n, accepted_at - start), 1),
    }


def by_algorithm(messages: Sequence[bytes], count: int) -> dict[str, dict[str, int]]:
    """`verdicts` of the last `count` messages of each algorithm (told apart by Subject)."""
    out = {}
    for algorithm in ALGORITHMS:
        subject = f"({SIGNATURE_ALGORITHM[algorithm]})".encode()
        mine = [m for m in messages if subject in m.split(b"\n\n", 1)[0]]
        out[algorithm] = verdicts(mine[-count:])
    return out


# --- postroom ------------------------------------------------------------------------------------


def postroom_refuses(extra_config: str) -> str | None:
    """Why postroom's config loader refuses `extra_config` (appended to the bench config), or
    None when it loads: `user list` reads the whole config and does nothing else."""
    tmp = Path(tempfile.mkdtemp(prefix="postroom-bench-probe-"))
    try:
        config = tmp / "postroom.toml"
        config.write_text(
            sys_postroom.CONFIG.format(data=tmp / "data", host=HOST, port=free_port())
            + extra_config
        )
        res = subprocess.run(
            [str(sys_postroom.POSTROOM), "--config", str(config), "user", "list"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if res.returncode == 0:
            return None
        lines = (res.stderr or res.stdout).strip().splitlines()
        if not lines:
            return f"exit status {res.returncode}"
        # "postroom: error: PATH: verify: unknown key; remove it ...": the key and the problem.
        return lines[-1].split(f"{config}: ", 1)[-1].split(";", 1)[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def postroom_verify(
    nsd: Nsd, messages: dict[str, Path], load: Load, count: int, timeout: float
) -> dict[str, Any]:
    extra = VERIFY_CONFIG + f'\n[dns]\nnameservers = ["{nsd.nameserver}"]\n'
    refused = postroom_refuses(extra)
    if refused:
        return {
            name: {"not_available": f"postroom refuses [verify]: {refused}"} for name in messages
        }
    results: dict[str, Any] = {}
    with sys_postroom.Postroom(load, extra) as pr:
        delivered = 0
        for algorithm, message in messages.items():
            for phase, n in (("warmup", WARMUP), ("timed", count)):
                delivered += n
                measured = run_load(
                    message, load, n, pr.port, pr.tmp, delivered, pr.message_count,
                    pr._check_alive, timeout, pr.log, poll_after_source=True,
                )  # fmt: skip
                if phase == "timed":
                    results[algorithm] = measured
        checked = by_algorithm(export_mbox(pr), count)
        for algorithm in messages:
            results[algorithm]["verified"] = checked[algorithm]
    return results


def export_mbox(pr: sys_postroom.Postroom) -> list[bytes]:
    """Every message in the bench mailbox (mbox export; the From_ lines split them)."""
    out = subprocess.run(
        [str(sys_postroom.POSTROOM), "--config", str(pr.config), "mailbox", "export",
         pr.load.recipient, "--format", "mbox"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise BenchError(f"mailbox export failed: {out.stderr.decode(errors='replace')}")
    parts = out.stdout.split(b"\n\nFrom ")
    return [part.split(b"\n", 1)[1] if b"\n" in part else b"" for part in parts]


# --- signing on the submission path --------------------------------------------------------------


def submit_messages(port: int, n: int, sessions: int, recipient: str) -> None:
    """N small messages from the bench user over `sessions` parallel authenticated sessions."""
    errors: list[str] = []
    share = [n // sessions + (1 if i < n % sessions else 0) for i in range(sessions)]

    def worker(index: int, count: int) -> None:
        try:
            with smtplib.SMTP(HOST, port, timeout=120) as client:
                client.login(Load().recipient, sys_postroom.PASSWORD)
                for j in range(count):
                    body = (
                        f"From: <{Load().recipient}>\r\nTo: <{recipient}>\r\n"
                        f"Subject: signing bench {index}.{j}\r\n"
                        f"Date: {email.utils.formatdate()}\r\n"
                        f"Message-ID: <sign.{index}.{j}@bench.test>\r\n\r\n"
                        + "A line of body text to sign, hash and relay.\r\n"
                        * 100
                    )
                    client.sendmail(Load().recipient, [recipient], body.encode())
        except (OSError, smtplib.SMTPException) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [
        threading.Thread(target=worker, args=(i, c), daemon=True) for i, c in enumerate(share) if c
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    if errors:
        raise BenchError(f"submission failed: {errors[:3]}")


def postroom_submission(sign: bool | None, count: int, timeout: float) -> dict[str, Any]:
    """postroom relaying `count` submitted messages into smtp-sink, `[dkim] sign` = `sign`
    (None: no switch written)."""
    load = Load(messages=count)
    relay_to = sys_relay.relay_address(load)
    submission = free_port()
    switch = "" if sign is None else SIGN_CONFIG.format(value="true" if sign else "false")
    with sys_relay.Sink(WARMUP + count) as sink:
        extra = (
            f'submission = "{HOST}:{submission}"\n'
            f'\n[routes]\n"{sys_relay.RELAY_DOMAIN}" = "{HOST}:{sink.port}"\n'
            "\n[auth]\nplaintext = true\n"
            # The default per-user sending limits (500 messages, 2000 recipients an hour) would
            # refuse the run: one user submits every message, as a mailing script would, and
            # Postfix's submission counts nothing by default.
            + "\n[limits]\nmessages_per_hour = 1000000\nrecipients_per_hour = 1000000\n"
            + switch
        )
        with sys_postroom.Postroom(load, extra) as pr:
            wait_port(submission, timeout=30, proc=pr.proc, log=pr.log)
            submit_messages(submission, WARMUP, SUBMIT_SESSIONS, relay_to)
            deadline = time.monotonic() + timeout
            while sink.received() < WARMUP:
                pr._check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"warm-up not relayed\n{tail(pr.log)}")
                time.sleep(POLL)
            start = time.monotonic()
            submit_messages(submission, count, SUBMIT_SESSIONS, relay_to)
            accepted = time.monotonic()
            while not sink.finished():
                pr._check_alive()
                if time.monotonic() - start > timeout:
                    raise BenchError(f"sink has {sink.received()}/{WARMUP + count}\n{tail(pr.log)}")
                time.sleep(POLL)
            done = time.monotonic()
    return {
        "messages": count,
        "seconds": round(done - start, 3),
        "msg_per_s": round(rate(count, done - start), 1),
        "accept_msg_per_s": round(rate(count, accepted - start), 1),
        "sign": sign,
    }


def signing(count: int, timeout: float) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    refused = postroom_refuses(SIGN_CONFIG.format(value="false"))
    if refused is None:
        rows["without"] = postroom_submission(False, count, timeout)
        rows["with"] = postroom_submission(True, count, timeout)
    else:
        rows["without"] = postroom_submission(None, count, timeout)
        rows["without"]["note"] = "no [dkim] sign switch yet: postroom as it is (it does not sign)"
        rows["with"] = {"not_available": f"postroom refuses [dkim] sign: {refused}"}
    ours, signed = rows["without"].get("msg_per_s"), rows["with"].get("msg_per_s")
    if ours and signed:
        rows["cost_percent"] = round(100.0 * (1 - float(signed) / float(ours)), 1)
    return rows


def fully(row: dict[str, Any]) -> bool:
    """Whether every message of a measured row was verified (dkim=pass and dmarc=pass)."""
    v = row.get("verified", {})
    return bool(v) and v["dkim_pass"] == v["dmarc_pass"] == v["checked"] == row["messages"]


# --- the scenario ------------------------------------------------------------------------------


def run(names: Sequence[str], count: int = MESSAGES, timeout: float = 600.0) -> dict[str, Any]:
    """The whole auth scenario for the systems in `names` (postfix, postroom)."""
    load = Load(messages=count)
    out: dict[str, Any] = {"messages": count, "warmup": WARMUP, "verify": {}, "errors": {}}
    keys = [make_key(algorithm) for algorithm in ALGORITHMS]
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="postroom-bench-auth-"))
        tmp.chmod(0o755)
        stack.callback(shutil.rmtree, tmp, True)
        messages = {key.algorithm: write_message(tmp, key, load.recipient) for key in keys}
        try:
            nsd = stack.enter_context(Nsd(sender_zone(keys)))
        except BenchError as exc:
            out["errors"]["nsd"] = str(exc)
            return out
        runners = {"postfix": postfix_verify, "postroom": postroom_verify}
        for name in names:
            if name not in runners:
                continue
            print(
                f"== auth {name}: {WARMUP} + {count} signed messages per algorithm ...", flush=True
            )
            started = time.monotonic()
            try:
                out["verify"][name] = runners[name](nsd, messages, load, count, timeout)
            except BenchError as exc:
                out["errors"][name] = str(exc)
            except Exception as exc:  # a bench bug must not hide the other system's numbers
                out["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(f"   done in {time.monotonic() - started:.1f} s", flush=True)
    out["ratios"] = {}
    out["unverified"] = {}
    for algorithm in ALGORITHMS:
        rows = {name: out["verify"].get(name, {}).get(algorithm, {}) for name in runners}
        # A rate only counts if every timed message came out with dkim=pass and dmarc=pass.
        short = [name for name, row in rows.items() if row.get("msg_per_s") and not fully(row)]
        if short:
            out["unverified"][algorithm] = short
        ours, theirs = (rows[name].get("msg_per_s") for name in ("postroom", "postfix"))
        valid = ours and theirs and not short
        out["ratios"][algorithm] = round(float(ours) / float(theirs), 2) if valid else None
    if "postroom" in names:
        print(f"== auth signing: postroom submission, {WARMUP} + {count} messages ...", flush=True)
        try:
            out["signing"] = signing(count, timeout)
        except BenchError as exc:
            out["errors"]["signing"] = str(exc)
    return out


def print_table(auth: dict[str, Any]) -> None:
    verify = auth.get("verify", {})
    print(
        f"\nauth: {auth['messages']} DKIM-signed messages from {SENDER_DOMAIN} (SPF, DKIM, DMARC "
        "pass), verified and delivered locally"
    )
    print(
        f"{'system':<10} {'algorithm':<15} {'msg/s':>8} {'seconds':>8}  verified (dkim/dmarc pass)"
    )
    print("-" * 72)
    for name in ("postfix", "postroom"):
        if name in auth.get("errors", {}):
            print(f"{name:<10} FAILED: {auth['errors'][name].splitlines()[0]}")
            continue
        for algorithm in ALGORITHMS:
            row = verify.get(name, {}).get(algorithm)
            if row is None:
                continue
            label = SIGNATURE_ALGORITHM[algorithm]
            if "not_available" in row:
                print(f"{name:<10} {label:<15} {'n/a':>8}  not available: {row['not_available']}")
                continue
            v = row.get("verified", {})
            print(
                f"{name:<10} {label:<15} {row['msg_per_s']:>8.1f} {row['seconds']:>8.2f}  "
                f"{v.get('dkim_pass', '-')}/{v.get('dmarc_pass', '-')} of {v.get('checked', '-')}"
            )
    for algorithm, r in auth.get("ratios", {}).items():
        verdict = "n/a" if r is None else ("OK" if r >= TARGET_VS_POSTFIX else "MISSED")
        if algorithm in auth.get("unverified", {}):
            short = ", ".join(auth["unverified"][algorithm])
            verdict = f"n/a: not every message verified by {short}"
        shown = "-" if r is None else f"{r:.2f}"
        print(
            f"auth {SIGNATURE_ALGORITHM[algorithm]} postroom/postfix = {shown} "
            f"(target >= {TARGET_VS_POSTFIX}): {verdict}"
        )
    sign = auth.get("signing")
    if sign:
        print("\nsigning cost on the submission path (postroom, relayed into smtp-sink)")
        for label, key in (("[dkim] sign = false", "without"), ("[dkim] sign = true", "with")):
            row = sign.get(key, {})
            if "not_available" in row:
                print(f"  {label:<22} not available: {row['not_available']}")
            elif row:
                note = f"  ({row['note']})" if row.get("note") else ""
                print(f"  {label:<22} {row['msg_per_s']:>8.1f} msg/s{note}")
        if "cost_percent" in sign:
            print(f"  signing costs {sign['cost_percent']}% of the submission rate")
    for name, error in auth.get("errors", {}).items():
        if name not in ("postfix", "postroom"):
            print(f"auth {name}: FAILED ({error.splitlines()[0] if error else ''})")
