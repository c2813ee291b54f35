"""The data directory is the owner's alone, whatever the umask: it holds all mail, password
hashes, SCRAM keys and the TLS key. Every process here runs under umask 022 (the usual default,
which makes files 0644), and the modes are read back with os.stat: directories 0700, files
0600, the config written by `init` 0600. A data directory left open by an older version is
named in one warning line per path at start."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from .conftest import ALICE, BOB, PASSWORDS, Postroom, postroom_executable, wait_until
from .wire import Wire, new_token, simple_message

UMASK = 0o022
SPILL = 256 * 1024  # content past this size is written to blobs/tmp while it arrives


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def loose(data_dir: Path) -> list[str]:
    """Every path under (and including) data_dir whose mode is not 0700/0600."""
    found = []
    for path in [data_dir, *data_dir.rglob("*")]:
        want = 0o700 if path.is_dir() else 0o600
        if mode(path) != want:
            found.append(f"{path.relative_to(data_dir.parent)} {mode(path):04o}")
    return found


def test_init_writes_the_config_0600(tmp_path: Path) -> None:
    config = tmp_path / "postroom.toml"
    run = [postroom_executable(), "--config", str(config), "init", "--domain", "example.test"]
    subprocess.run(run, check=True, capture_output=True, umask=UMASK)
    assert mode(config) == 0o600  # it may come to hold [relay] password
    config.chmod(0o644)
    subprocess.run([*run, "--force"], check=True, capture_output=True, umask=UMASK)
    assert mode(config) == 0o600


def test_everything_under_data_dir_is_private(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(start=False)
    server.umask = UMASK
    shutil.rmtree(server.data_dir)  # made from nothing by the commands below
    server.run_cli("user", "add", ALICE, "--password", PASSWORDS[ALICE])
    assert loose(server.data_dir) == []
    server.start()  # the TLS pair, the pid file, blobs/, the WAL
    server.add_user(BOB, PASSWORDS[BOB])  # while it runs: the accounts stamp
    with server.smtp() as client:
        client.sendmail(BOB, [ALICE], simple_message(new_token(), BOB, ALICE))
    spill_dir = server.data_dir / "blobs" / "tmp"
    with Wire(server.smtp_port) as wire:
        wire.expect(220)
        wire.cmd("EHLO client.example.net", 250)
        wire.cmd(f"MAIL FROM:<{BOB}>", 250)
        wire.cmd(f"RCPT TO:<{ALICE}>", 250)
        wire.cmd("DATA", 354)
        wire.send(b"Subject: large\r\n\r\n" + b"x" * 998 + b"\r\n")
        wire.send((b"y" * 998 + b"\r\n") * (SPILL // 1000 + 10))
        # Halfway through DATA the content is in its spill file.
        spilled = wait_until(lambda: list(spill_dir.iterdir()), 15, "a spill file")
        assert [mode(path) for path in spilled] == [0o600]
        wire.send(b".\r\n")
        wire.expect(250)
    server.wait_for_messages(ALICE, 2)
    server.run_cli("queue", "retry", "--all")  # the queue stamp
    for name in (
        "postroom.db",
        "postroom.db-wal",
        "postroom.db-shm",
        "postroom.pid",
        "accounts.changed",
        "queue.changed",
        "tls/key.pem",
        "tls/cert.pem",
    ):
        assert (server.data_dir / name).exists(), name
    assert [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()], "no blob file"
    assert loose(server.data_dir) == []
    assert server.stop() == 0
    assert loose(server.data_dir) == []


def test_an_open_data_dir_is_named_at_start(postroom_factory: Callable[..., Postroom]) -> None:
    server = postroom_factory(start=False)
    database = server.data_dir / "postroom.db"
    server.data_dir.chmod(0o755)  # as an older version left it
    database.chmod(0o644)
    server.start()
    log = server.log()
    assert f"{server.data_dir} is open to group or others (mode 0755)" in log
    assert f"chmod 700 {server.data_dir}" in log
    assert f"{database} is open to group or others (mode 0644)" in log
    assert f"chmod 600 {database}" in log
    # Told, not changed behind the administrator's back (see README).
    assert (mode(server.data_dir), mode(database)) == (0o755, 0o644)
    server.stop()
    server.data_dir.chmod(0o700)
    database.chmod(0o600)
    server.start()
    assert "open to group or others" not in server.log(current=True)
