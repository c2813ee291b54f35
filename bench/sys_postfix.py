"""Benchmark a private Postfix instance (accept-and-deliver rate).

A throw-away Postfix runs entirely under a temporary directory: its own
config_directory, queue_directory and data_directory, ``syslog_name``
``postfix-bench``, ``maillog_file`` in the temp dir, an smtpd on a free
127.0.0.1 port, and virtual(8) delivery of ``bench.test`` to a Maildir with a
static uid (no system user needed).  It never touches /etc/postfix's instance.

The rate is messages / time from smtp-source start until every message is a
file in the Maildir's ``new/``.  Must run as root (Postfix's master does).
Besides compatibility_level and the settings needed to isolate the instance,
Postfix runs with its stock defaults.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    HOST,
    BenchError,
    Load,
    check_smtp_source,
    find_tool,
    free_port,
    rate,
    start_smtp_source,
    stop_process,
    tail,
    wait_port,
)

DOMAIN = "bench.test"
MAILBOX_UID = 65534  # any uid >= virtual_minimum_uid; need not exist in /etc/passwd
POLL = 0.05

MAIN_CF = """\
# Private benchmark instance written by bench/sys_postfix.py.
compatibility_level = 3.6
config_directory = {conf}
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
maillog_file = {tmp}/maillog
maillog_file_prefixes = {tmp}
myhostname = mx.postfix-bench.test
mydomain = postfix-bench.test
myorigin = $myhostname
mydestination = localhost
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
biff = no
readme_directory = no
html_directory = no
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = inline:{{ {{ {recipient} = {mailbox}/ }} }}
virtual_minimum_uid = 100
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
"""

# Debian's stock master.cf, without chroot and with smtpd on one loopback port.
MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
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


def _count(path: Path) -> int:
    try:
        return len(os.listdir(path))
    except FileNotFoundError:
        return 0


class PrivatePostfix:
    """A Postfix instance living in a temp dir; use as a context manager."""

    def __init__(self, load: Load, extra_main_cf: str = "") -> None:
        self.load = load
        self.extra_main_cf = extra_main_cf  # appended to main.cf: a later setting wins
        self.tmp = Path(tempfile.mkdtemp(prefix="postroom-bench-postfix-"))
        self.conf = self.tmp / "conf"
        self.queue = self.tmp / "queue"
        self.data = self.tmp / "data"
        self.mail = self.tmp / "mail"
        self.port = free_port()
        self.postfix = find_tool("postfix")
        self.started = False
        mailbox = load.recipient.split("@", 1)[0]
        self.new_dir = self.mail / mailbox / "new"
        self._mailbox = mailbox

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [self.postfix, "-c", str(self.conf), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and res.returncode != 0:
            out = (res.stdout + res.stderr).strip()
            raise BenchError(f"postfix {' '.join(args)} failed ({res.returncode}): {out}")
        return res

    def __enter__(self) -> PrivatePostfix:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        if os.geteuid() != 0:
            raise BenchError("the Postfix benchmark must run as root")
        try:
            pwd.getpwnam("postfix")
        except KeyError as exc:
            raise BenchError("no 'postfix' user: apt-get install postfix") from exc
        # Postfix daemons drop to the postfix user; they must be able to traverse.
        self.tmp.chmod(0o755)
        self.conf.mkdir()
        self.queue.mkdir()
        self.mail.mkdir()
        os.chown(self.mail, MAILBOX_UID, MAILBOX_UID)
        (self.conf / "main.cf").write_text(
            MAIN_CF.format(
                conf=self.conf,
                queue=self.queue,
                data=self.data,
                tmp=self.tmp,
                host=HOST,
                domain=DOMAIN,
                mail=self.mail,
                recipient=self.load.recipient,
                mailbox=self._mailbox,
                uid=MAILBOX_UID,
                gid=MAILBOX_UID,
            )
            + self.extra_main_cf
        )
        (self.conf / "master.cf").write_text(MASTER_CF.format(host=HOST, port=self.port))
        # "postfix check" creates the queue and data directories with the right owners.
        self._postfix("check")
        self._postfix("start")
        self.started = True
        try:
            wait_port(self.port, timeout=30)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{tail(self.tmp / 'maillog')}".rstrip()) from exc

    def _master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def __exit__(self, *exc: object) -> None:
        try:
            if self.started:
                pid = self._master_pid()
                self._postfix("stop", check=False)
                deadline = time.monotonic() + 20
                while pid and time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.1)
                if pid and _alive(pid):
                    self._postfix("abort", check=False)
                    time.sleep(1)
                    if _alive(pid):
                        os.kill(pid, 9)
                self.started = False
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def deliver(self, timeout: float) -> dict[str, Any]:
        """Run the load and wait until all messages are in new/."""
        n = self.load.messages
        log = self.tmp / "smtp-source.log"
        start = time.monotonic()
        proc = start_smtp_source(self.load, self.port, log)
        accepted_at: float | None = None
        try:
            delivered = 0
            while True:
                now = time.monotonic()
                if accepted_at is None and proc.poll() is not None:
                    accepted_at = now
                    check_smtp_source(proc, log)
                delivered = _count(self.new_dir)
                if delivered >= n:
                    done = time.monotonic()
                    break
                if now - start > timeout:
                    raise BenchError(
                        f"only {delivered}/{n} messages delivered after {timeout:.0f}s\n"
                        + tail(self.tmp / "maillog")
                    )
                time.sleep(POLL)
        finally:
            stop_process(proc)
        if accepted_at is None:  # all delivered before we saw smtp-source exit
            proc.wait()
            check_smtp_source(proc, log)
            accepted_at = done
        elapsed = done - start
        return {
            "messages": n,
            "seconds": round(elapsed, 3),
            "msg_per_s": round(rate(n, elapsed), 1),
            "smtp_source_seconds": round(accepted_at - start, 3),
            "accept_msg_per_s": round(rate(n, accepted_at - start), 1),
            "measure": "smtp-source start until all messages are files in Maildir new/",
        }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def postfix_version() -> str:
    try:
        res = subprocess.run(
            [find_tool("postconf"), "-h", "-d", "mail_version"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return res.stdout.strip()
    except (BenchError, OSError, subprocess.SubprocessError):
        return ""


def run(load: Load, timeout: float = 600.0) -> dict[str, Any]:
    """Measure a private Postfix instance under ``load``."""
    with PrivatePostfix(load) as pf:
        result = pf.deliver(timeout)
    result["version"] = postfix_version()
    return result
