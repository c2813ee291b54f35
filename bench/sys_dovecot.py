"""A private Dovecot IMAP server for the IMAP benchmark, and the TLS certificate both servers use.

Everything lives in one temp dir: config, base_dir/state_dir, log, a passwd-file and the users'
sdbox mailboxes (mail accessed as ``nobody``).  Dovecot runs in the foreground (``dovecot -c
CONF -F``) with only an imaps listener on 127.0.0.1 (``pop3=True`` adds pop3s, ``sasl=True``
an auth socket for Postfix's ``smtpd_sasl_type = dovecot``), ``ssl = required`` and stock
defaults otherwise (one login process per connection, ``mail_fsync = optimized``, no auth
cache, no FTS).  Passwords are stored as ``{ARGON2ID}`` hashes with postroom's own argon2 parameters
(argon2-cffi defaults: t=3, m=64 MiB, p=4), so a LOGIN costs both servers the same
verification.  The system's own Dovecot is never touched.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from argon2 import PasswordHasher
from common import HOST, BenchError, free_port, stop_process, tail, wait_port

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = postroom-bench-{port}
listen = {host}
protocols = {protocols}
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
log_path = {root}/dovecot.log
mail_location = sdbox:~/mail
mail_uid = {uid}
mail_gid = {gid}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = {host}
    port = {port}
  }}
}}
passdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = home={root}/home/%u
}}
"""
POP3_SERVICE = """\
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    address = {host}
    port = {port}
  }}
}}
"""
SASL_SERVICE = """\
service auth {{
  unix_listener {socket} {{
    mode = 0666
  }}
}}
"""


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate (the key type postroom generates for itself)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BenchError("openssl not found (apt-get install openssl)")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=imap.bench.test", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def dovecot_version() -> str | None:
    try:
        res = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None


class Dovecot:
    """One private Dovecot; use as a context manager."""

    def __init__(
        self,
        users: dict[str, str],
        cert: Path,
        key: Path,
        *,
        pop3: bool = False,
        sasl: bool = False,
    ) -> None:
        self.users = users
        self.cert, self.key = cert, key
        self.tmp = Path(tempfile.mkdtemp(prefix="postroom-bench-dovecot-"))
        self.port = free_port()
        self.pop3_port = free_port() if pop3 else None
        # Postfix's smtpd (user postfix) connects here for SASL (smtpd_sasl_path).
        self.sasl_socket = self.tmp / "run" / "auth-postfix" if sasl else None
        self.log = self.tmp / "dovecot.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Dovecot:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        program = shutil.which("dovecot", path=os.pathsep.join([os.environ["PATH"], "/usr/sbin"]))
        if program is None:
            raise BenchError("dovecot not found (apt-get install dovecot-imapd)")
        nobody = pwd.getpwnam("nobody")
        self.tmp.chmod(0o755)  # Dovecot's unprivileged processes must reach their sockets
        for sub in ("run", "state", "home"):
            (self.tmp / sub).mkdir()
        os.chown(self.tmp / "home", nobody.pw_uid, nobody.pw_gid)
        hasher = PasswordHasher()
        (self.tmp / "passwd").write_text(
            "".join(f"{u}:{{ARGON2ID}}{hasher.hash(p)}::::::\n" for u, p in self.users.items())
        )
        conf = self.tmp / "dovecot.conf"
        text = CONFIG.format(
            root=self.tmp,
            host=HOST,
            port=self.port,
            protocols="imap pop3" if self.pop3_port else "imap",
            cert=self.cert,
            key=self.key,
            uid=nobody.pw_name,
            gid=grp.getgrgid(nobody.pw_gid).gr_name,
        )
        if self.pop3_port:
            text += POP3_SERVICE.format(host=HOST, port=self.pop3_port)
        if self.sasl_socket:
            text += SASL_SERVICE.format(socket=self.sasl_socket.name)
        conf.write_text(text)
        stderr = self.tmp / "stderr.log"
        with open(stderr, "wb") as out:
            self.proc = subprocess.Popen(
                [program, "-c", str(conf), "-F"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            for port in (self.port, self.pop3_port):
                if port:
                    wait_port(port, timeout=30, proc=self.proc, log=stderr)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{tail(self.log)}") from exc

    def __exit__(self, *exc: object) -> None:
        try:
            stop_process(self.proc)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
