"""Fixtures that run the REAL `postroom serve` as a subprocess on free loopback ports.

Every test gets its own server (config, data_dir, log file under tmp_path) with the users
alice@example.test and bob@example.test. Nothing waits a fixed time: every wait polls a
condition against a deadline. Every process started here is stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .wire import HOST

STRICT = os.environ.get("POSTROOM_TEST_STRICT") == "1"
HOSTNAME = "mx.example.test"
DOMAIN = "example.test"
ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORDS = {ALICE: "alice-secret", BOB: "bob-secret"}
SERVICES = ("smtp", "submission", "submissions")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 45.0  # the server's own grace period is 30 s


def postroom_executable() -> str:
    candidate = Path(sys.executable).with_name("postroom")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("postroom")
    if found is None:
        pytest.fail("the postroom console script is not installed (run `make install`)")
    return found


def require_program(name: str) -> str:
    """Path of a system program; skip (or, with POSTROOM_TEST_STRICT=1, fail) when missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        if STRICT:
            pytest.fail(f"{name} not installed (POSTROOM_TEST_STRICT=1)", pytrace=False)
        pytest.skip(f"{name} not installed")
    return path


READY_LINE = "postroom ready hostname="  # app.serve logs it once every listener is open


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Distinct free TCP ports on `host` (bound at the same time, then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_ports_on(count: int, hosts: tuple[str, ...]) -> list[int]:
    """Distinct TCP ports free on every one of `hosts` at once (the same number on each)."""
    if len(hosts) == 1:
        return free_ports(count, hosts[0])
    for _ in range(20):
        candidates = free_ports(count, hosts[0])
        held: list[socket.socket] = []
        try:
            for host in hosts[1:]:
                for port in candidates:
                    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
                    held.append(sock)
                    sock.bind((host, port))
            return candidates
        except OSError:
            continue  # taken on another host: pick again
        finally:
            for sock in held:
                sock.close()
    raise AssertionError(f"no {count} ports free on all of {hosts}")


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


Factory = Callable[..., "Postroom"]
_STATUS = re.compile(r"messages=(\d+)\s+unseen=(\d+)\s+size=(\d+)")


class Postroom:
    """One postroom server instance: its config, data_dir, process and CLI."""

    def __init__(
        self,
        root: Path,
        *,
        limits: dict[str, object] | None = None,
        services: tuple[str, ...] = SERVICES,
        template: Path | None = None,
        host: str = HOST,
        tls: dict[str, str] | None = None,
        extra: str = "",
        also: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.extra = extra  # more TOML tables, e.g. [dns]/[delivery]/[queue] for outbound tests
        self.host = host
        # Every service listens on each of these, at the same port ([listen] keys as lists).
        self.hosts = (host, *also)
        self.tls = dict(tls or {})
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "postroom.toml"
        self.data_dir = root / "data"
        self.log_path = root / "serve.log"
        self.hostname = HOSTNAME
        self.domain = DOMAIN
        self.passwords = dict(PASSWORDS)
        self.ports = dict(zip(services, free_ports_on(len(services), self.hosts), strict=True))
        self.limits = dict(limits or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_codes: list[int] = []
        # The umask of every process started for this server (-1: the test's own).
        self.umask = -1
        # Put before `postroom ... serve` (e.g. `unshare --mount ...` to give it a mount of its
        # own); whatever it runs must end by exec'ing the command, so the PID is the server's.
        self.launcher: tuple[str, ...] = ()
        self._log_start = 0
        if template is not None:
            shutil.copytree(template, self.data_dir)
        self.write_config()

    # --- configuration -------------------------------------------------------------------------

    def write_config(self) -> None:
        lines = [
            f"hostname = {toml_value(self.hostname)}",
            f"data_dir = {toml_value(str(self.data_dir))}",
            f"domains = {toml_value([self.domain])}",
            "",
            "[listen]",
            *(
                f"{name} = {toml_value(self.listen_value(port))}"
                for name, port in self.ports.items()
            ),
            "",
            "[limits]",
            *(f"{key} = {toml_value(value)}" for key, value in self.limits.items()),
            "",
            "[tls]",
            *(f"{key} = {toml_value(value)}" for key, value in self.tls.items()),
            "",
            self.extra,
        ]
        if "[dns]" not in self.extra:
            # Tests never ask a real resolver: remote mail is looked up on a loopback port where
            # nothing answers, so it is deferred (4.4.3) and stays in the queue.
            lines += ["[dns]", 'nameservers = ["127.0.0.1:9"]', ""]
        if "[verify]" not in self.extra:
            # Nor are arriving messages checked (SPF, DKIM, DMARC need DNS): the tests of those
            # checks turn them on, with a DNS server that holds their records.
            lines += ["[verify]", "enabled = false", ""]
        self.config_path.write_text("\n".join(lines), encoding="utf-8")

    def endpoint(self, port: int, host: str | None = None) -> str:
        host = self.host if host is None else host
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def listen_value(self, port: int) -> str | list[str]:
        if len(self.hosts) == 1:
            return self.endpoint(port)
        return [self.endpoint(port, host) for host in self.hosts]

    @property
    def smtp_port(self) -> int:
        return self.ports["smtp"]

    @property
    def submission_port(self) -> int:
        return self.ports["submission"]

    @property
    def submissions_port(self) -> int:
        return self.ports["submissions"]

    # --- CLI -----------------------------------------------------------------------------------

    def run_cli(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run `postroom --config CFG ARGS...`; with check, fail the test on a non-zero exit."""
        result = subprocess.run(
            [postroom_executable(), "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
            umask=self.umask,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"postroom {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def add_user(self, address: str, password: str) -> None:
        self.run_cli("user", "add", address, "--password", password)
        self.passwords[address] = password

    def mailbox_status(self, address: str) -> dict[str, int]:
        out = self.run_cli("mailbox", "status", address).stdout
        match = _STATUS.search(out)
        assert match, f"unexpected `mailbox status` output: {out!r}"
        return {"messages": int(match[1]), "unseen": int(match[2]), "size": int(match[3])}

    def wait_for_messages(self, address: str, count: int, timeout: float = 30.0) -> dict[str, int]:
        """Poll `mailbox status` until the INBOX holds at least `count` messages."""
        deadline = time.monotonic() + timeout
        status = self.mailbox_status(address)
        while status["messages"] < count:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{address}: {status['messages']} of {count} messages after {timeout:g}s\n"
                    f"server log tail:\n{self.log_tail()}"
                )
            self.check_alive()
            time.sleep(0.1)
            status = self.mailbox_status(address)
        return status

    def export(self, address: str) -> list[bytes]:
        """The INBOX as a list of messages, from `mailbox export` (mbox, mboxrd unquoted)."""
        return self.export_mailbox(address, "INBOX")

    def export_mailbox(self, address: str, mailbox: str) -> list[bytes]:
        """One mailbox as a list of messages (mbox, mboxrd unquoted)."""
        raw = subprocess.run(
            [
                postroom_executable(),
                *("--config", str(self.config_path)),
                *("mailbox", "export", address, "--format", "mbox", "--mailbox", mailbox),
            ],
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert raw.returncode == 0, raw.stderr.decode(errors="replace")
        return parse_mboxrd(raw.stdout)

    def export_maildir(self, address: str, directory: Path | None = None) -> list[bytes]:
        """The INBOX exported as a Maildir; returns the cur/ files' contents in UID order."""
        directory = directory or self.root / f"maildir-{address}-{time.monotonic_ns()}"
        self.run_cli(
            "mailbox", "export", address, "--format", "maildir", "--output", str(directory)
        )
        files = sorted((directory / "cur").iterdir(), key=_maildir_order)
        return [path.read_bytes() for path in files]

    def queue_list(self) -> str:
        return self.run_cli("queue", "list").stdout

    # --- process -------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start `postroom serve` and wait until every port accepts connections.

        A free port can be taken by someone else between our probe and the server's bind; then
        (and only then) new ports are picked and the start is retried.
        """
        assert self.proc is None or self.proc.poll() is not None, "already running"
        for attempt in range(3):
            self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [
                        *self.launcher,
                        *(postroom_executable(), "--config", str(self.config_path), "serve"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    umask=self.umask,
                )
            try:
                self.wait_ready(timeout)
                return
            except AssertionError:
                lost_race = "address already in use" in self.log(current=True)
                if not lost_race or attempt == 2 or self.proc.poll() is None:
                    raise
                ports = free_ports_on(len(self.ports), self.hosts)
                self.ports = dict(zip(self.ports, ports, strict=True))
                self.write_config()

    def wait_ready(self, timeout: float) -> None:
        """Poll until every configured port accepts a TCP connection and this run of the
        server has logged that it is ready: a port that accepts may be another program's (a
        suite running beside this one took it between our probe and the server's bind, or a
        connection to an unused ephemeral port met itself), and then the server, still
        starting, would only report the address in use later."""
        deadline = time.monotonic() + timeout
        pending = {(name, host): port for name, port in self.ports.items() for host in self.hosts}
        while True:
            self.check_alive()
            for (name, host), port in list(pending.items()):
                with contextlib.suppress(OSError):
                    socket.create_connection((host, port), timeout=1.0).close()
                    del pending[name, host]
            if not pending and READY_LINE in self.log(current=True):
                return
            if time.monotonic() >= deadline:
                waiting = sorted(pending) or "its ready line"
                raise AssertionError(
                    f"postroom did not open {waiting} within {timeout:g}s\n{self.log()}"
                )
            time.sleep(0.05)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"postroom serve exited with {self.proc.returncode}\n{self.log_tail()}"
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        self.exit_codes.append(code)
        return code

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; SIGKILL when it does not exit in time.

        Returns the exit status, or None when the server was not running (never started, or
        already gone: killed by the test, or stopped and checked by it).
        """
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(
                f"postroom did not stop within {timeout:g}s of SIGTERM\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """kill -9, and reap."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.start()

    # --- log -----------------------------------------------------------------------------------

    def log(self, *, current: bool = False) -> str:
        if not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()
        if current:
            data = data[self._log_start :]
        return data.decode("utf-8", "replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        regex = re.compile(pattern)
        return wait_until(
            lambda: regex.search(self.log(current=True)), timeout, f"log line /{pattern}/"
        )

    # --- clients -------------------------------------------------------------------------------

    def tls_context(self) -> ssl.SSLContext:
        """A client context that verifies the server's generated self-signed certificate."""
        cert = self.data_dir / "tls" / "cert.pem"
        return ssl.create_default_context(cafile=str(cert))

    def smtp(self, **kwargs: Any) -> smtplib.SMTP:
        client = smtplib.SMTP(
            self.host, self.smtp_port, local_hostname="client.example.net", **kwargs
        )
        return client

    def submission(self, login: str | None = ALICE) -> smtplib.SMTP:
        client = smtplib.SMTP(self.host, self.submission_port, local_hostname="client.example.net")
        client.starttls(context=self.tls_context())
        client.ehlo()
        if login is not None:
            client.login(login, self.passwords[login])
        return client

    def submissions(self, login: str | None = ALICE) -> smtplib.SMTP_SSL:
        client = smtplib.SMTP_SSL(
            self.host,
            self.submissions_port,
            local_hostname="client.example.net",
            context=self.tls_context(),
        )
        if login is not None:
            client.login(login, self.passwords[login])
        return client


def _maildir_order(path: Path) -> tuple[int, str]:
    match = re.search(r"\.U(\d+)\.", path.name)
    return (int(match[1]) if match else 0, path.name)


_FROM_LINE = re.compile(rb"^From [^\n]*\n", re.MULTILINE)
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


def parse_mboxrd(data: bytes) -> list[bytes]:
    """Split an mboxrd file into messages and undo the ">From " quoting."""
    if not data:
        return []
    assert data.startswith(b"From "), f"mbox does not start with a From_ line: {data[:80]!r}"
    starts = [m.start() for m in _FROM_LINE.finditer(data)]
    messages = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(data)
        entry = data[start:end]
        body = entry.split(b"\n", 1)[1]
        # Each entry ends with the blank line that separates it from the next From_ line.
        assert body.endswith(b"\n\n") or body == b"\n", (
            f"mbox entry not blank-line terminated: {entry[-80:]!r}"
        )
        body = body[:-1]
        messages.append(_QUOTED_FROM.sub(rb"\1", body))
    return messages


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def user_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir with alice and bob, made once through the real CLI and copied per test."""
    root = tmp_path_factory.mktemp("template")
    server = Postroom(root)
    for address, password in PASSWORDS.items():
        server.run_cli("user", "add", address, "--password", password)
    return server.data_dir


@pytest.fixture
def postroom_factory(tmp_path: Path, user_template: Path) -> Iterator[Callable[..., Postroom]]:
    """Make (and by default start) servers; all are stopped at teardown."""
    servers: list[Postroom] = []

    def make(
        *,
        limits: dict[str, object] | None = None,
        start: bool = True,
        services: tuple[str, ...] = SERVICES,
        name: str | None = None,
        host: str = HOST,
        tls: dict[str, str] | None = None,
        extra: str = "",
        also: tuple[str, ...] = (),
    ) -> Postroom:
        root = tmp_path / (name or f"server{len(servers)}")
        server = Postroom(
            root,
            limits=limits,
            services=services,
            template=user_template,
            host=host,
            tls=tls,
            extra=extra,
            also=also,
        )
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    problems = []
    for server in servers:
        try:
            code = server.stop()
            if code not in (None, 0):
                problems.append(f"{server.root.name}: exit status {code} after SIGTERM")
        except AssertionError as error:
            problems.append(str(error))
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(timeout=10)
        crash = _CRASH.search(server.log())
        if crash:
            log = server.log()
            start = max(0, crash.start() - 200)
            problems.append(
                f"{server.root.name}: server log shows a crash:\n{log[start : start + 3000]}"
            )
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


_CRASH = re.compile(
    r"Traceback \(most recent call last\)|session crashed|group commit of .* failed"
)


@pytest.fixture
def postroom(postroom_factory: Callable[..., Postroom]) -> Postroom:
    """A running server with the default limits."""
    return postroom_factory()
