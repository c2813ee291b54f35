"""A private Dovecot IMAP server for calibrating the imaptest driver.

Everything lives in one temporary directory: the config, base_dir/state_dir, the log, a
passwd-file and every user's sdbox mailboxes. Dovecot runs in the foreground (`dovecot -c CONF
-F`) listening on 127.0.0.1 only, without TLS, accepting plaintext LOGIN; mail is accessed as
`nobody`. The passwd-file is written once with a pool of users (Dovecot only notices edits a
second apart) and `new_user()` hands out an unused one, so each script starts from an empty
account. Usernames carry no domain: imaptest's URLAUTH scripts build `imap://$username@$domain/`
URLs whose host is then the server's address. The system's own Dovecot is never touched.
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
USER_POOL = 500
PASSWORD = "imaptest-secret"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = postroom-imaptest-{port}
listen = {host}
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {root}/dovecot.log
mail_location = sdbox:~/mail
mail_fsync = never
mail_uid = {uid}
mail_gid = {gid}
mail_attribute_dict = file:%h/dovecot-attributes
imap_urlauth_host = {host}
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = home={root}/home/%u
}}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateDovecot:
    """One running Dovecot instance; use `PrivateDovecot.running(program)`."""

    def __init__(self, program: str, root: Path) -> None:
        self.program = program
        self.root = root
        self.host = HOST
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._users = itertools.count(1)

    @classmethod
    @contextlib.contextmanager
    def running(cls, program: str) -> Iterator[PrivateDovecot]:
        root = Path(tempfile.mkdtemp(prefix="postroom-dovecot-"))
        server = cls(program, root)
        try:
            server.start()
            yield server
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)

    def start(self) -> None:
        nobody = pwd.getpwnam("nobody")
        group = grp.getgrgid(nobody.pw_gid).gr_name
        self.root.chmod(0o755)  # Dovecot's unprivileged processes must reach their sockets
        home = self.root / "home"
        for sub in ("run", "state", "home"):
            (self.root / sub).mkdir()
        os.chown(home, nobody.pw_uid, nobody.pw_gid)
        users = "".join(f"u{n}:{{PLAIN}}{PASSWORD}::::::\n" for n in range(1, USER_POOL + 1))
        (self.root / "passwd").write_text(users)
        config = CONFIG.format(
            root=self.root, host=self.host, port=self.port, uid=nobody.pw_name, gid=group
        )
        conf_path = self.root / "dovecot.conf"
        conf_path.write_text(config)
        self.process = subprocess.Popen(
            [self.program, "-c", str(conf_path), "-F"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited at startup:\n{self._diagnostics()}")
            if self._greets():
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"dovecot did not listen on {self.host}:{self.port}\n{self._diagnostics()}"
        )

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as sock:
                return sock.recv(1024).startswith(b"* OK")
        except OSError:
            return False

    def _diagnostics(self) -> str:
        stderr = b""
        if self.process is not None and self.process.poll() is not None and self.process.stderr:
            stderr = self.process.stderr.read()
        return stderr.decode(errors="replace") + self.log_tail()

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "dovecot.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        if process.stderr is not None:
            process.stderr.close()

    def new_user(self) -> tuple[str, str]:
        """A user nobody has logged in as yet (empty mailbox); returns (user, password)."""
        number = next(self._users)
        if number > USER_POOL:
            raise RuntimeError(f"all {USER_POOL} users of the private Dovecot are used")
        return f"u{number}", PASSWORD
