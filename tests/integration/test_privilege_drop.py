"""`postroom serve` started as root with `[server] user`: it binds, then becomes that user.

The tests run as root here; the user is a throwaway system user made by the test (useradd)
and removed afterwards. The server's root directory is outside pytest's 0700 tmp tree, so
the user can reach its data_dir. Checked on the running process: /proc/PID/status shows the
user's IDs in every slot, no supplementary groups and no capabilities; mail is delivered and
every file in data_dir belongs to the user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ALICE, BOB, Postroom, postroom_executable, require_program


@pytest.fixture
def throwaway_user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.skip("needs root (serve started as root, useradd)")
    useradd = require_program("useradd")
    userdel = require_program("userdel")
    name = "pr" + uuid.uuid4().hex[:10]
    subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", name],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run([userdel, name], check=True, capture_output=True, timeout=60)


@pytest.fixture
def reachable_root() -> Iterator[Path]:
    """A directory any user can traverse (pytest's own tmp tree is root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="postroom-drop-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def status_ids(pid: int) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return fields


def test_serve_as_root_drops_to_the_configured_user(
    throwaway_user: pwd.struct_passwd, reachable_root: Path, user_template: Path
) -> None:
    user = throwaway_user
    server = Postroom(
        reachable_root / "server",
        template=user_template,
        extra=f'[server]\nuser = "{user.pw_name}"\n',
    )
    os.chmod(server.root, 0o755)
    # What an older root-run server left: the user must be handed all of it.
    (server.data_dir / "leftover").write_bytes(b"made by root")
    assert server.data_dir.stat().st_uid == 0
    try:
        server.start()
        assert server.proc is not None
        pid = server.proc.pid
        server.wait_for_log(rf"running as user={user.pw_name} uid={user.pw_uid}")
        status = status_ids(pid)
        assert status["Uid"] == [str(user.pw_uid)] * 4, status["Uid"]
        assert status["Gid"] == [str(user.pw_gid)] * 4, status["Gid"]
        assert status["Groups"] == []
        assert int(status["CapEff"][0], 16) == 0 and int(status["CapPrm"][0], 16) == 0

        with server.submission(ALICE) as client:
            client.sendmail(ALICE, [BOB], b"Subject: dropped\r\n\r\nas a plain user\r\n")
        server.wait_for_messages(BOB, 1)
        owners = {
            os.path.join(directory, name): os.lstat(os.path.join(directory, name)).st_uid
            for directory, subdirectories, files in os.walk(server.data_dir)
            for name in (*subdirectories, *files)
        }
        wrong = {path: uid for path, uid in owners.items() if uid != user.pw_uid}
        assert not wrong, wrong
        assert server.data_dir.stat().st_uid == user.pw_uid
        assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    finally:
        code = server.stop()
    assert code == 0, server.log_tail()


def test_unknown_user_is_one_line_error(reachable_root: Path, user_template: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (serve started as root)")
    server = Postroom(
        reachable_root / "server",
        template=user_template,
        extra='[server]\nuser = "no-such-user-here"\n',
    )
    result = server.run_cli("serve", check=False, timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "useradd --system no-such-user-here" in lines[0], result.stderr
    with contextlib.suppress(FileNotFoundError):
        assert all(p.stat().st_uid == 0 for p in server.data_dir.iterdir())


def test_root_is_not_a_user_to_drop_to(reachable_root: Path, user_template: Path) -> None:
    server = Postroom(
        reachable_root / "server", template=user_template, extra='[server]\nuser = "root"\n'
    )
    result = server.run_cli("serve", check=False, timeout=30)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "server.user: must not be root" in lines[0], result.stderr


def test_started_as_another_user_is_refused(
    throwaway_user: pwd.struct_passwd, reachable_root: Path, user_template: Path
) -> None:
    """Started as neither root nor the configured user, serve cannot become it: it says so."""
    setpriv = require_program("setpriv")
    server = Postroom(
        reachable_root / "server",
        template=user_template,
        extra=f'[server]\nuser = "{throwaway_user.pw_name}"\n',
    )
    nobody = pwd.getpwnam("nobody")
    result = subprocess.run(
        [
            *(setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"),
            *(postroom_executable(), "--config", str(server.config_path), "serve"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot become user {throwaway_user.pw_name}: serve runs as nobody" in lines[0]
