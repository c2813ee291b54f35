"""`postroom quickstart` and `postroom service install`, through the real CLI.

The quickstart's config is loaded back and, moved to free loopback ports, served: the printed
password logs in over IMAP. The unit is checked by `systemd-analyze verify`, and the server
is run under MemoryDenyWriteExecute as the unit asks (the kernel's PR_SET_MDWE, which systemd
uses too) to show Python, OpenSSL and the event loop work with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import imaplib
import os
import pwd
import re
import ssl
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.cli.setup import has_ipv6
from postroom.config import load_config

from .conftest import (
    ALICE,
    BOB,
    Factory,
    Postroom,
    free_ports_on,
    postroom_executable,
    require_program,
    toml_value,
)
from .wire import HOST

ADMIN = "admin@example.org"
STANDARD_PORTS = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "imap": 143,
    "imaps": 993,
    "pop3": 110,
    "pop3s": 995,
    "managesieve": 4190,
    "http": 80,
    "https": 443,
}
PR_SET_MDWE = 65  # linux/prctl.h (Linux 6.3)
PR_GET_MDWE = 66
PR_MDWE_REFUSE_EXEC_GAIN = 1


def postroom_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [postroom_executable(), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def quickstart(tmp_path: Path, *extra: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    config = tmp_path / "etc" / "postroom.toml"
    result = postroom_cli(
        "quickstart", ADMIN, "--config", str(config), "--data-dir", str(tmp_path / "data"), *extra
    )
    return config, result


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_quickstart_writes_a_production_setup(tmp_path: Path) -> None:
    path, result = quickstart(tmp_path)
    assert result.returncode == 0, result.stderr
    config = load_config(path)
    assert config.hostname == "mx.example.org"
    assert config.domains == ("example.org",)
    assert config.data_dir == tmp_path / "data"
    # Every service on every IPv4 and (where the kernel has it) every IPv6 address.
    enabled = config.listen.enabled()
    assert {name: {e.port for e in ends} for name, ends in enabled.items()} == {
        name: {port} for name, port in STANDARD_PORTS.items()
    }
    families = ("0.0.0.0", "::") if has_ipv6() else ("0.0.0.0",)
    assert {tuple(e.host for e in ends) for ends in enabled.values()} == {families}
    assert config.acme.enabled and config.acme.email == ADMIN
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    passwords = re.findall(r"^\s*password:\s*(\S+)\s*$", result.stdout, re.MULTILINE)
    assert len(passwords) == 1, result.stdout
    password = passwords[0]
    assert len(password) >= 20
    assert f"login:    {ADMIN}" in result.stdout
    # The records are those `dns records` prints (the keys made by quickstart, not made again).
    records = postroom_cli("--config", str(path), "dns", "records", "example.org")
    assert records.returncode == 0, records.stderr
    assert records.stdout.strip() in result.stdout
    assert "_domainkey.example.org. 3600 IN TXT" in records.stdout
    assert "service install" in result.stdout and "doctor example.org" in result.stdout
    assert password not in path.read_text() and password not in records.stdout
    # The admin may use the web admin.
    users = postroom_cli("--config", str(path), "user", "list")
    assert users.returncode == 0, users.stderr
    assert users.stdout.split()[-1:] == ["admin"] and ADMIN in users.stdout, users.stdout

    # The printed password logs in, on the server that config makes (moved to free ports on
    # the loopback addresses of both families).
    hosts = (HOST, "::1") if has_ipv6() else (HOST,)
    ports = dict(zip(STANDARD_PORTS, free_ports_on(len(STANDARD_PORTS), hosts), strict=True))
    text = path.read_text()
    for name, port in STANDARD_PORTS.items():
        text = text.replace(f'"0.0.0.0:{port}"', toml_value(f"{HOST}:{ports[name]}"), 1)
        text = text.replace(f'"[::]:{port}"', toml_value(f"[::1]:{ports[name]}"), 1)
    text = text.replace("enabled = true", "enabled = false", 1)  # [acme]: no CA here
    text = re.sub(r"(?m)^# nameservers = .*$", 'nameservers = ["127.0.0.1:9"]', text)
    served = tmp_path / "served.toml"
    served.write_text(text)
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        proc = subprocess.Popen(
            [postroom_executable(), "--config", str(served), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        for host in hosts:
            client = connect_imap(ports["imap"], proc, log, host)
            client.starttls(ssl_context=ssl._create_unverified_context())
            client.login(ADMIN, password)
            assert client.select("INBOX")[0] == "OK"
            client.logout()
    finally:
        proc.terminate()
        assert proc.wait(timeout=45) == 0, log.read_text()


def connect_imap(
    port: int, proc: subprocess.Popen[bytes], log: Path, host: str = HOST
) -> imaplib.IMAP4:
    from .conftest import wait_until

    def attempt() -> imaplib.IMAP4 | None:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(OSError):
            return imaplib.IMAP4(host, port, timeout=10)
        return None

    client: imaplib.IMAP4 = wait_until(attempt, 30, "the quickstart server's IMAP port")
    return client


def test_quickstart_refuses_an_existing_config(tmp_path: Path) -> None:
    path, first = quickstart(tmp_path)
    assert first.returncode == 0, first.stderr
    before = path.read_bytes()
    _, again = quickstart(tmp_path)
    line = one_line_error(again)
    assert str(path) in line and "already exists" in line
    assert path.read_bytes() == before
    assert "password" not in again.stdout


@pytest.mark.parametrize(
    ("admin", "words"),
    [("admin", "not a valid mail address"), ("admin@localhost", "not a public domain")],
)
def test_quickstart_refuses_a_bad_address(tmp_path: Path, admin: str, words: str) -> None:
    config = tmp_path / "postroom.toml"
    data = tmp_path / "data"
    result = postroom_cli("quickstart", admin, "--config", str(config), "--data-dir", str(data))
    assert words in one_line_error(result)
    assert not config.exists() and not data.exists()


def test_quickstart_over_an_existing_admin_leaves_no_config(tmp_path: Path) -> None:
    path, first = quickstart(tmp_path)
    assert first.returncode == 0, first.stderr
    path.unlink()
    _, again = quickstart(tmp_path)
    assert "already exists" in one_line_error(again)
    assert not path.exists()


# --- service install ---------------------------------------------------------------------------


def test_service_unit_verifies(postroom_factory: Factory, tmp_path: Path) -> None:
    analyze = require_program("systemd-analyze")
    server: Postroom = postroom_factory(start=False)
    result = server.run_cli("service", "install", "--dry-run")
    unit = result.stdout
    program = postroom_executable()
    assert f"ExecStart={program} --config {server.config_path} serve" in unit
    for line in (
        "User=postroom",
        "Group=postroom",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        f"ReadWritePaths={server.data_dir}",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "NoNewPrivileges=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
    ):
        assert line in unit.splitlines(), line
    path = tmp_path / "postroom.service"
    path.write_text(unit)
    check = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert check.returncode == 0 and not check.stderr.strip(), check.stderr
    assert not (tmp_path / "units").exists()


@pytest.fixture
def system_user() -> Iterator[str]:
    """A throwaway system user name; the user (if made) is removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root (useradd, chown)")
    name = "pr" + uuid.uuid4().hex[:10]
    yield name
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        userdel = require_program("userdel")
        subprocess.run([userdel, name], check=True, capture_output=True, timeout=60)


def test_service_install_makes_the_user_and_hands_over_the_data(
    postroom_factory: Factory, tmp_path: Path, system_user: str
) -> None:
    require_program("useradd")
    server: Postroom = postroom_factory(start=False)
    units = tmp_path / "units"
    result = server.run_cli("service", "install", "--user", system_user, "--unit-dir", str(units))
    entry = pwd.getpwnam(system_user)
    unit = (units / "postroom.service").read_text()
    assert f"User={system_user}" in unit.splitlines()
    assert stat.S_IMODE((units / "postroom.service").stat().st_mode) == 0o644
    assert str(units / "postroom.service") in result.stdout
    for directory, _, files in os.walk(server.data_dir):
        for name in (directory, *(os.path.join(directory, f) for f in files)):
            assert os.stat(name).st_uid == entry.pw_uid, name
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    config = server.config_path.stat()
    assert (config.st_uid, config.st_gid) == (0, entry.pw_gid)
    assert stat.S_IMODE(config.st_mode) == 0o640
    # Again: the user exists now; the unit is written over.
    server.run_cli("service", "install", "--user", system_user, "--unit-dir", str(units))


def test_service_install_refuses_a_bad_user(postroom_factory: Factory, tmp_path: Path) -> None:
    server: Postroom = postroom_factory(start=False)
    result = server.run_cli("service", "install", "--user", "Bad User", check=False)
    assert "--user" in one_line_error(result)


# --- MemoryDenyWriteExecute ---------------------------------------------------------------------

MDWE_LAUNCHER = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
    "    sys.exit('PR_SET_MDWE: ' + os.strerror(ctypes.get_errno()))\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def test_server_works_without_writable_executable_memory(postroom_factory: Factory) -> None:
    """What MemoryDenyWriteExecute=yes does to the unit's process (systemd sets PR_SET_MDWE
    where the kernel has it): TLS, logins (argon2) and delivery still work."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) < 0:
        pytest.skip(
            f"the kernel has no PR_SET_MDWE (Linux < 6.3): {os.strerror(ctypes.get_errno())}"
        )
    server: Postroom = postroom_factory(start=False)
    server.launcher = (sys.executable, "-c", MDWE_LAUNCHER)
    server.start()
    with server.submissions(ALICE) as client:
        client.sendmail(ALICE, [BOB], b"Subject: mdwe\r\n\r\nunder W^X\r\n")
    server.wait_for_messages(BOB, 1)


def test_quickstart_takes_postroom_config_too(tmp_path: Path) -> None:
    """`postroom --config PATH quickstart ...` writes PATH, as every command reads it."""
    path = tmp_path / "given.toml"
    data = tmp_path / "data"
    result = postroom_cli("--config", str(path), "quickstart", ADMIN, "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {path}\n")
    assert load_config(path).data_dir == data
