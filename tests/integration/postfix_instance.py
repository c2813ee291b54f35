"""A private, throw-away Postfix instance (`postfix -c DIR`) for interoperability tests.

Everything lives under one temporary directory: config_directory, queue_directory,
data_directory, the log (`maillog_file`, no syslog) and the virtual(8) Maildirs. Each named
listener is one smtpd on its own free 127.0.0.1 port, with its own `-o name=value` overrides
(e.g. `smtpd_discard_ehlo_keywords=8bitmime` on one port only). Mail for the `mailboxes`
addresses is delivered by virtual(8) to `<base>/<domain>/<user>/` Maildirs owned by a static uid;
other addresses in their domains are refused at RCPT (550 5.1.1). With `tls=True` its smtpd
offers STARTTLS with a certificate for `mx.postfix.test` from a throw-away trustme CA. The
stock instance (/etc/postfix, /var/spool/postfix) is never read as configuration, started or
stopped. As in bench/sys_postfix.py, Postfix's master must run as root and its daemons drop to
the `postfix` user, so the directory is world-traversable and not under pytest's root-only
tmp_path.

`Postfix` is a context manager: entering starts the instance and waits for every port,
leaving stops it (`postfix stop`, then `postfix abort`, then SIGKILL of the master pid it
started) and removes the directory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import pytest
import trustme

from .conftest import STRICT, free_ports, require_program, wait_until

HOST = "127.0.0.1"
SERVER_NAME = "mx.postfix.test"
MAILBOX_UID = 65534  # any uid >= virtual_minimum_uid; need not exist in /etc/passwd
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

MAIN_CF = """\
# Private test instance written by tests/integration/postfix_instance.py.
compatibility_level = 3.6
config_directory = {conf}
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-postroom-test
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = {server_name}
mydomain = postfix.test
myorigin = $myhostname
mydestination = localhost
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
smtpd_peername_lookup = no
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
biff = no
readme_directory = no
html_directory = no
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = texthash:{conf}/mailboxes
virtual_minimum_uid = 100
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{uid}
"""

# Debian's stock master.cf without chroot; the smtpd lines are added per listener.
MASTER_CF = """\
pickup     unix n - n 60   1 pickup
cleanup    unix n - n -    0 cleanup
qmgr       unix n - n 300  1 qmgr
tlsmgr     unix - - n 1000? 1 tlsmgr
rewrite    unix - - n -    - trivial-rewrite
bounce     unix - - n -    0 bounce
defer      unix - - n -    0 bounce
trace      unix - - n -    0 bounce
verify     unix - - n -    1 verify
flush      unix n - n 1000? 0 flush
proxymap   unix - - n -    - proxymap
proxywrite unix - - n -    1 proxymap
smtp       unix - - n -    - smtp
relay      unix - - n -    - smtp
showq      unix n - n -    - showq
error      unix - - n -    - error
retry      unix - - n -    - error
discard    unix - - n -    - discard
local      unix - n n -    - local
virtual    unix - n n -    - virtual
lmtp       unix - - n -    - lmtp
anvil      unix - - n -    1 anvil
scache     unix - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


def require_postfix() -> str:
    """The postfix program; skip (fail under POSTROOM_TEST_STRICT=1) when it cannot run here."""
    program = require_program("postfix")
    if os.geteuid() != 0:
        reason = "postfix: a private instance's master must be started as root"
        if STRICT:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return program


class Postfix:
    """One private Postfix instance: its directory, listener ports, Maildirs and log."""

    def __init__(
        self,
        *,
        listeners: Mapping[str, Mapping[str, str]],
        main: Mapping[str, str] | None = None,
        tables: Mapping[str, Mapping[str, str]] | None = None,
        mailboxes: Sequence[str] = (),
        tls: bool = False,
    ) -> None:
        """`listeners`: name → smtpd `-o` overrides; `tables`: name → texthash entries;
        `mailboxes`: the addresses with a Maildir; `tls`: smtpd offers STARTTLS.

        A `main` value may name a table as `{name}`; it becomes `texthash:<its path>`.
        """
        self.program = require_postfix()
        self.root = Path(tempfile.mkdtemp(prefix="postroom-postfix-"))
        self.root.chmod(0o755)  # the daemons run as the postfix user and must traverse it
        self.conf = self.root / "conf"
        self.queue = self.root / "queue"
        self.mail = self.root / "mail"
        self.log_path = self.root / "maillog"
        self.ports = dict(zip(listeners, free_ports(len(listeners), HOST), strict=True))
        self._listeners = {name: dict(options) for name, options in listeners.items()}
        self._main = dict(main or {})
        self._tables = {name: dict(entries) for name, entries in (tables or {}).items()}
        self._mailboxes = tuple(mailboxes)
        self._tls = tls
        self._master_pid: int | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Postfix:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.conf.mkdir()
        self.queue.mkdir()
        self.mail.mkdir()
        os.chown(self.mail, MAILBOX_UID, MAILBOX_UID)
        main = MAIN_CF.format(
            conf=self.conf,
            queue=self.queue,
            data=self.root / "data",
            root=self.root,
            host=HOST,
            domains=", ".join(sorted({a.rsplit("@", 1)[1] for a in self._mailboxes})),
            mail=self.mail,
            uid=MAILBOX_UID,
            server_name=SERVER_NAME,
        )
        if self._tls:
            main += self._tls_settings()
        for name, entries in self._tables.items():
            path = self.conf / name
            path.write_text("".join(f"{key} {value}\n" for key, value in entries.items()))
            path.chmod(0o644)
        overrides = "".join(
            f"{key} = {self._resolve(value)}\n" for key, value in self._main.items()
        )
        (self.conf / "main.cf").write_text(main + overrides)
        # The trailing slash makes each <domain>/<user>/ a Maildir.
        (self.conf / "mailboxes").write_text(
            "".join(f"{a} {a.rsplit('@', 1)[1]}/{a.rsplit('@', 1)[0]}/\n" for a in self._mailboxes)
        )
        (self.conf / "master.cf").write_text(self._master_cf())
        # "postfix check" creates the queue and data directories with the right owners.
        self._postfix("check")
        self._postfix("start")
        self._master_pid = wait_until(self._read_master_pid, START_TIMEOUT, "postfix master.pid")
        for name, port in self.ports.items():
            wait_until(functools.partial(_listening, port), START_TIMEOUT, f"postfix {name} port")

    def stop(self) -> None:
        """Stop the master this instance started (stop, abort, then SIGKILL) and clean up."""
        try:
            pid = self._master_pid or self._read_master_pid()
            if pid is not None:
                self._postfix("stop", check=False)
                if not _wait_gone(pid, STOP_TIMEOUT):
                    self._postfix("abort", check=False)
                    if not _wait_gone(pid, 5.0):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        _wait_gone(pid, 5.0)
            self._master_pid = None
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- mail ----------------------------------------------------------------------------------

    def set_table(self, name: str, entries: Mapping[str, str]) -> None:
        """Replace a table's entries and `postfix reload`: new sessions read the new ones."""
        self._tables[name] = dict(entries)
        path = self.conf / name
        path.write_text("".join(f"{key} {value}\n" for key, value in entries.items()))
        self._postfix("reload")

    def maildir(self, address: str) -> Path:
        user, domain = address.rsplit("@", 1)
        return self.mail / domain / user

    def messages(self, address: str) -> list[bytes]:
        """The delivered files of `address`'s Maildir (new/ and cur/), oldest first."""
        files = [
            path
            for sub in ("new", "cur")
            if (self.maildir(address) / sub).is_dir()
            for path in (self.maildir(address) / sub).iterdir()
        ]
        files.sort(key=lambda path: (path.stat().st_mtime_ns, path.name))
        return [path.read_bytes() for path in files]

    def wait_for_messages(
        self, address: str, count: int, containing: bytes = b"", timeout: float = 20.0
    ) -> list[bytes]:
        """Poll `address`'s Maildir until `count` of its messages contain `containing`."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages(address) if containing in m]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{address}: {len(found)} of {count} messages in the Postfix Maildir after "
                    f"{timeout:g}s\npostfix log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # --- helpers -------------------------------------------------------------------------------

    def _resolve(self, value: str) -> str:
        for name in self._tables:
            value = value.replace("{" + name + "}", f"texthash:{self.conf / name}")
        return value

    def _tls_settings(self) -> str:
        """RFC 3207: STARTTLS offered, not required, with a key and chain in one PEM file."""
        ca = trustme.CA()
        chain = self.conf / "smtpd-tls.pem"
        ca.issue_cert(SERVER_NAME).private_key_and_cert_chain_pem.write_to_path(str(chain))
        chain.chmod(0o600)  # read by smtpd before it drops privileges
        return f"smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {chain}\n"

    def _master_cf(self) -> str:
        lines = []
        for name, port in self.ports.items():
            options = "".join(
                f"\n  -o {key}={self._resolve(value)}"
                for key, value in self._listeners[name].items()
            )
            lines.append(f"{HOST}:{port} inet n - n - - smtpd{options}\n")
        return "".join(lines) + MASTER_CF

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.program, "-c", str(self.conf), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"postfix {' '.join(args)} exited {result.returncode}: "
                f"{(result.stdout + result.stderr).strip()}\n{self.log_tail()}"
            )
        return result

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def _listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
