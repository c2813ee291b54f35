"""Storage that fails under a running server: every failure is a 4xx, one log line and no
traceback, the session goes on, and nothing half-written stays behind.

The failures are real. A full disk: the server runs in a mount namespace of its own (`unshare
--mount`) with its data_dir on a small tmpfs that the test fills through /proc/PID/root; the
mount exists only in that namespace, so it goes away with the process, however the test ends.
A spill directory that is not one: blobs/tmp replaced by a plain file (root ignores file
modes, so a read-only directory would not do). Messages under 256 KiB stay in memory and fail
in SQLite's write (SQLITE_FULL); larger ones fail writing their spill file (ENOSPC, ENOTDIR).
"""

from __future__ import annotations

import contextlib
import errno
import imaplib
import os
import re
import shutil
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

from .conftest import ALICE, BOB, PASSWORDS, Postroom, wait_until
from .mounts import tmpfs
from .wire import Wire, new_token, open_session, send_message, simple_message

SPILL = 256 * 1024
SERVICES = ("smtp", "imap")


def message(size: int) -> bytes:
    """A message of about `size` bytes (CRLF lines of 1,000 bytes)."""
    head = simple_message(new_token(), BOB, ALICE)
    return head + (b"z" * 998 + b"\r\n") * (size // 1000)


def bdat(wire: Wire, content: bytes, chunk: int = 200_000) -> Wire:
    """MAIL, RCPT and the content in BDAT chunks; the replies to the chunks before the last
    are read (and must be 250), the last one's is left to the caller."""
    wire.cmd(f"MAIL FROM:<{BOB}>", 250)
    wire.cmd(f"RCPT TO:<{ALICE}>", 250)
    pieces = [content[i : i + chunk] for i in range(0, len(content), chunk)]
    for piece in pieces[:-1]:
        wire.send(b"BDAT %d\r\n" % len(piece) + piece)
        wire.expect(250)
    wire.send(b"BDAT %d LAST\r\n" % len(pieces[-1]) + pieces[-1])
    return wire


def refused(reply_code: int, enhanced: str) -> Callable[[Wire], None]:
    def check(wire: Wire) -> None:
        reply = wire.reply()
        assert (reply.code, reply.enhanced) == (reply_code, enhanced), f"{reply}\n{wire}"

    return check


def files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


@contextlib.contextmanager
def imap_login(server: Postroom, cafile: Path) -> Iterator[imaplib.IMAP4]:
    client = imaplib.IMAP4(server.host, server.ports["imap"], timeout=30)
    try:
        client.starttls(ssl_context=ssl.create_default_context(cafile=str(cafile)))
        client.login(ALICE, PASSWORDS[ALICE])
        yield client
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()


def log_count(server: Postroom, pattern: str) -> int:
    return len(re.findall(pattern, server.log()))


# --- a full disk ---------------------------------------------------------------------------------


def on_tmpfs(server: Postroom, size: str) -> None:
    """Run `server` with its data_dir on a tmpfs of `size` in a mount namespace of its own."""
    seed = server.root / "seed"
    server.data_dir.rename(seed)
    server.data_dir.mkdir(mode=0o700)
    server.launcher = tmpfs(str(server.data_dir), size, str(seed))


def inside(server: Postroom) -> Path:
    """The server's data_dir as seen from its own mount namespace."""
    assert server.proc is not None
    return Path(f"/proc/{server.proc.pid}/root") / str(server.data_dir).lstrip("/")


def fill(path: Path) -> None:
    """Write `path` until the file system has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        block = b"\0" * 65536
        while True:
            try:
                os.write(fd, block)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                return
    finally:
        os.close(fd)


def test_a_full_disk_is_452_and_the_sessions_go_on(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(services=SERVICES, start=False)
    on_tmpfs(server, "24m")
    server.start()
    data = inside(server)
    cafile = data / "tls" / "cert.pem"
    with imap_login(server, cafile) as imap:
        before = files(data / "blobs")
        filler = data / "filler"
        fill(filler)
        full = refused(452, "4.3.1")
        with open_session(server.smtp_port) as wire:
            # Under 256 KiB: in memory, refused by SQLite's write; over it: its spill file.
            for size in (100_000, 3 * SPILL):
                full_reply = send_message(wire, BOB, [ALICE], message(size))
                assert (full_reply.code, full_reply.enhanced) == (452, "4.3.1"), full_reply
                assert "Insufficient system storage" in full_reply.text
                wire.cmd("RSET", 250)
                full(bdat(wire, message(size)))
                wire.cmd("NOOP", 250)
            for size in (10_000, 3 * SPILL):
                status, answer = imap.append("INBOX", None, None, message(size))
                assert status == "NO" and answer[0].startswith(b"[OVERQUOTA]"), answer
                assert imap.noop()[0] == "OK"
            assert files(data / "blobs") == before  # nothing half-written left, tmp/ empty
            filler.unlink()
            accepted = send_message(wire, BOB, [ALICE], message(3 * SPILL))
            assert accepted.code == 250, accepted
            wire.cmd(f"MAIL FROM:<{BOB}>", 250)
            wire.cmd(f"RCPT TO:<{ALICE}>", 250)
            wire.cmd("RSET", 250)
            accepted = send_message(wire, BOB, [ALICE], message(10_000))
            assert accepted.code == 250, accepted
        assert imap.append("INBOX", None, None, message(3 * SPILL))[0] == "OK"
        imap.select("INBOX")
        assert imap.search(None, "ALL")[1][0].split() == [b"1", b"2", b"3"]
    assert files(data / "blobs" / "tmp") == set()
    # One line per refusal, with the reason; no traceback (the factory checks that).
    assert log_count(server, r"queueing failed .* result=452 4\.3\.1") == 4
    assert log_count(server, r"APPEND failed .* result=NO \[OVERQUOTA\]") == 2


# --- a spill directory that is not one ----------------------------------------------------------


def test_unwritable_spill_directory_is_451_and_the_session_goes_on(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(services=SERVICES)
    spill_dir = server.data_dir / "blobs" / "tmp"
    shutil.rmtree(spill_dir)
    spill_dir.write_bytes(b"")  # not a directory: every spill file fails (ENOTDIR)
    local_error = refused(451, "4.3.0")
    with open_session(server.smtp_port) as wire:
        reply = send_message(wire, BOB, [ALICE], message(3 * SPILL))
        assert (reply.code, reply.enhanced) == (451, "4.3.0"), reply
        local_error(bdat(wire, message(3 * SPILL)))
        # A small message never touches the spill directory.
        assert send_message(wire, BOB, [ALICE], message(10_000)).code == 250
        with imap_login(server, server.data_dir / "tls" / "cert.pem") as imap:
            status, answer = imap.append("INBOX", None, None, message(3 * SPILL))
            assert status == "NO" and answer[0].startswith(b"[UNAVAILABLE]"), answer
            assert imap.noop()[0] == "OK"
            spill_dir.unlink()
            spill_dir.mkdir(mode=0o700)
            assert imap.append("INBOX", None, None, message(3 * SPILL))[0] == "OK"
        assert send_message(wire, BOB, [ALICE], message(3 * SPILL)).code == 250
    server.wait_for_messages(ALICE, 3)
    wait_until(lambda: not files(spill_dir), 10, "blobs/tmp to be empty")
    assert log_count(server, r"queueing failed .* result=451 4\.3\.0") == 2
    assert log_count(server, r"APPEND failed .* result=NO \[UNAVAILABLE\]") == 1
