"""The doctor's port check with a service on several addresses: each address of the host name
is tried on the port of the listening address that takes it, and an address family nothing
listens on (an AAAA record, a listener on IPv4 only) fails with the [listen] line to write."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.config import Config, load_config
from postroom.net.listener import listening_socket
from postroom.services import doctor_local


def config(tmp_path: Path, smtp: str) -> Config:
    path = tmp_path / "postroom.toml"
    path.write_text(f'hostname = "mx.example.test"\n[listen]\nsmtp = {smtp}\n', encoding="utf-8")
    return load_config(path)


@pytest.fixture
def port() -> Iterator[int]:
    """A port listened on at 127.0.0.1 and [::1] (the kernel queues the connections)."""
    four = listening_socket("127.0.0.1", 0)
    number = four.getsockname()[1]
    try:
        six = listening_socket("::1", number)
    except OSError:
        four.close()
        pytest.fail("no IPv6 loopback here, or the port is taken on it", pytrace=False)
    with four, six:
        yield number


def run(config: Config, addresses: list[str]) -> doctor_local.Check:
    [check] = asyncio.run(doctor_local.port("smtp", config.listen.smtp, addresses, 5.0, config))
    return check


def test_both_families_listened_on(tmp_path: Path, port: int) -> None:
    cfg = config(tmp_path, f'["127.0.0.1:{port}", "[::1]:{port}"]')
    check = run(cfg, ["127.0.0.1", "::1"])
    assert check.status == "warn"  # reachable, but not on port 25
    assert f"reachable at 127.0.0.1:{port}, [::1]:{port}" in check.detail
    assert '["0.0.0.0:25", "[::]:25"]' in check.fix


def test_a_family_without_a_listener_says_what_to_add(tmp_path: Path) -> None:
    # Nothing of ours on ::1: the IPv6 address of the host name is not served.
    with listening_socket("127.0.0.1", 0) as four:
        number = four.getsockname()[1]
        with socket.socket(socket.AF_INET6) as hold:  # bound, not listening: refuses
            hold.bind(("::1", number))
            cfg = config(tmp_path, f'"127.0.0.1:{number}"')
            check = run(cfg, ["127.0.0.1", "::1"])
    assert check.status == "fail", check
    assert f"[::1]:{number}" in check.detail and f"127.0.0.1:{number}:" not in check.detail
    assert f'[listen] smtp is "127.0.0.1:{number}"' in check.fix
    assert f"listen on [::]:{number} too" in check.fix
    assert f'smtp = ["0.0.0.0:{number}", "[::]:{number}"]' in check.fix
