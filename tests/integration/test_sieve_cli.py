"""`postroom sieve ...` through the real CLI: check, put (refusing an invalid script with
FILE:LINE:COLUMN), list (and --json), get, activate, deactivate, delete; and what the CLI
stores is what ManageSieve serves."""

from __future__ import annotations

import base64
import json
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from postroom.proto.managesieve import MAX_SCRIPT_SIZE

from .conftest import ALICE, BOB, Postroom

GOOD = 'require "fileinto";\nif address :is "from" "boss@example.test" { fileinto "Boss"; }\n'
BAD = 'require "fileinto";\nif address :is "from" "boss@example.test" {\n  fileinto "Boss"\n}\n'


def scripts(tmp_path: Path) -> tuple[Path, Path]:
    good, bad = tmp_path / "good.sieve", tmp_path / "bad.sieve"
    good.write_text(GOOD)
    bad.write_text(BAD)
    return good, bad


def test_check(postroom_factory: Callable[..., Postroom], tmp_path: Path) -> None:
    server = postroom_factory(start=False)
    good, bad = scripts(tmp_path)
    ok = server.run_cli("sieve", "check", str(good))
    assert ok.stdout == f"{good}: valid\n"
    refused = server.run_cli("sieve", "check", str(bad), check=False)
    assert refused.returncode == 1
    assert refused.stderr == f"{bad}:4:1: expected ';' or '{{' but found '}}'\n"
    missing = server.run_cli("sieve", "check", str(tmp_path / "none"), check=False)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "No such file" in missing.stderr


def test_put_list_get_activate_delete(
    postroom_factory: Callable[..., Postroom], tmp_path: Path
) -> None:
    server = postroom_factory(start=False)
    good, bad = scripts(tmp_path)
    refused = server.run_cli("sieve", "put", ALICE, "broken", str(bad), check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"{bad}:4:1: ")
    assert "alice" in server.run_cli("sieve", "list", ALICE).stdout  # "... has no scripts"
    server.run_cli("sieve", "put", ALICE, "boss", str(good))
    server.run_cli("sieve", "put", ALICE, "spare", str(good))
    assert server.run_cli("sieve", "get", ALICE, "boss").stdout == GOOD
    server.run_cli("sieve", "activate", ALICE, "boss")
    size = len(GOOD.encode())
    assert json.loads(server.run_cli("sieve", "list", ALICE, "--json").stdout) == [
        {"name": "boss", "active": True, "size": size},
        {"name": "spare", "active": False, "size": size},
    ]
    assert server.run_cli("sieve", "list", ALICE).stdout.splitlines() == [
        f"boss\t{size}\tactive",
        f"spare\t{size}\t-",
    ]
    active = server.run_cli("sieve", "delete", ALICE, "boss", check=False)
    assert active.returncode == 1 and "deactivate" in active.stderr
    server.run_cli("sieve", "deactivate", ALICE)
    server.run_cli("sieve", "delete", ALICE, "boss")
    assert json.loads(server.run_cli("sieve", "list", ALICE, "--json").stdout) == [
        {"name": "spare", "active": False, "size": size}
    ]
    assert json.loads(server.run_cli("sieve", "list", BOB, "--json").stdout) == []
    for args in (
        ("get", ALICE, "boss"),
        ("activate", ALICE, "boss"),
        ("delete", ALICE, "boss"),
        ("list", "nobody@example.test"),
        ("put", ALICE, "bad\tname", str(good)),
    ):
        failed = server.run_cli("sieve", *args, check=False)
        assert failed.returncode == 1, args
        assert failed.stderr.startswith("postroom: error: ") and failed.stderr.count("\n") == 1


def test_script_size_limit(postroom_factory: Callable[..., Postroom], tmp_path: Path) -> None:
    server = postroom_factory(start=False)
    big = tmp_path / "big.sieve"
    big.write_text("# " + "x" * MAX_SCRIPT_SIZE + "\nkeep;\n")
    refused = server.run_cli("sieve", "put", ALICE, "big", str(big), check=False)
    assert refused.returncode == 1
    assert f"larger than {MAX_SCRIPT_SIZE} bytes" in refused.stderr
    assert json.loads(server.run_cli("sieve", "list", ALICE, "--json").stdout) == []


def test_cli_script_served_over_managesieve(
    postroom_factory: Callable[..., Postroom], tmp_path: Path
) -> None:
    server = postroom_factory(services=("smtp", "managesieve"))
    good, _ = scripts(tmp_path)
    server.run_cli("sieve", "put", ALICE, "boss", str(good), "--activate")
    sock = socket.create_connection((server.host, server.ports["managesieve"]), timeout=30)
    reader = sock.makefile("rb")
    try:
        while not reader.readline().startswith(b"OK"):
            pass
        sock.sendall(b"STARTTLS\r\n")
        assert reader.readline().startswith(b"OK")
        reader.close()
        tls: ssl.SSLSocket = server.tls_context().wrap_socket(sock, server_hostname=server.host)
        reader = tls.makefile("rb")
        while not reader.readline().startswith(b"OK"):
            pass
        token = base64.b64encode(f"\0{ALICE}\0{server.passwords[ALICE]}".encode())
        tls.sendall(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\nLISTSCRIPTS\r\n')
        assert reader.readline() == b'OK "Logged in"\r\n'
        assert reader.readline() == b'"boss" ACTIVE\r\n'
        assert reader.readline() == b'OK "Listscripts completed"\r\n'
    finally:
        reader.close()
        sock.close()
