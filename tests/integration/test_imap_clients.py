"""IMAP clients that no one here wrote, driven against a real postroom over loopback.

imapclient (a normal session, then imapclient's own `livetest` suite), mbsync two-way sync with a
Maildir, neomutt driven through tmux, curl's imap:// and imaps:// URLs, getmail6 into a Maildir
and fetchmail into an MDA. Every outcome is checked on both ends: message bytes, flags, counts.
"""

from __future__ import annotations

import contextlib
import email
import imaplib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient  # type: ignore[import-untyped]
from imapclient.response_types import Address, Envelope  # type: ignore[import-untyped]

from .conftest import ALICE, BOB, PASSWORDS, Postroom, require_program, wait_until
from .wire import new_token

SERVICES = ("smtp", "submission", "imap", "imaps")
CLIENT_TIMEOUT = 25.0


@pytest.fixture
def server(postroom_factory: Callable[..., Postroom]) -> Postroom:
    return postroom_factory(services=SERVICES)


def cert_path(server: Postroom) -> Path:
    return server.data_dir / "tls" / "cert.pem"


def deliver(server: Postroom, subject: str, body: str, to: str = ALICE) -> bytes:
    """Send one message over SMTP and wait until it is in the INBOX; returns what was sent."""
    before = server.mailbox_status(to)["messages"]
    message = (
        f"From: Bob <{BOB}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{new_token()}@client.example.net>\r\n\r\n{body}\r\n"
    ).encode()
    with server.smtp() as smtp:
        smtp.sendmail(BOB, [to], message)
    server.wait_for_messages(to, before + 1)
    return message


@contextlib.contextmanager
def imap(server: Postroom, user: str = ALICE) -> Iterator[imaplib.IMAP4_SSL]:
    client = imaplib.IMAP4_SSL(
        server.host, server.ports["imaps"], ssl_context=server.tls_context(), timeout=30
    )
    client.login(user, PASSWORDS[user])
    try:
        yield client
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            client.logout()


_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_UID = re.compile(rb"UID (\d+)")


def mailbox_contents(server: Postroom, mailbox: str = "INBOX") -> dict[int, tuple[set[str], bytes]]:
    """UID -> (flags, message bytes) of a mailbox, read with imaplib (BODY.PEEK: no \\Seen)."""
    with imap(server) as client:
        typ, _ = client.select(mailbox, readonly=True)
        assert typ == "OK"
        typ, data = client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        assert typ == "OK", data
    found: dict[int, tuple[set[str], bytes]] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        flags = _FLAGS.search(item[0])
        uid = _UID.search(item[0])
        assert flags and uid, item[0]
        found[int(uid[1])] = (set(flags[1].decode().split()), item[1])
    return found


def by_subject(contents: dict[int, tuple[set[str], bytes]]) -> dict[str, tuple[set[str], bytes]]:
    return {
        str(email.message_from_bytes(raw)["Subject"]): (flags, raw)
        for flags, raw in contents.values()
    }


def run(
    argv: list[str], *, env: dict[str, str] | None = None, as_user: tuple[int, int] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a client program to completion (bounded in time), optionally as another uid/gid."""
    return subprocess.run(
        argv,
        capture_output=True,
        timeout=CLIENT_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        check=False,
        user=as_user[0] if as_user else None,
        group=as_user[1] if as_user else None,
        extra_groups=[] if as_user else None,
    )


# --- imapclient ----------------------------------------------------------------------------------


def test_imapclient_session(server: Postroom) -> None:
    token = new_token()
    sent = deliver(server, f"imapclient {token}", f"the body {token}")
    deliver(server, "second", "another body")
    with IMAPClient(
        server.host, port=server.ports["imaps"], ssl_context=server.tls_context(), timeout=30
    ) as client:
        client.login(ALICE, PASSWORDS[ALICE])
        folders = {name: flags for flags, _, name in client.list_folders()}
        assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"} <= set(folders)
        assert b"\\Sent" in folders["Sent"] and b"\\Archive" in folders["Archive"]

        info = client.select_folder("INBOX")
        assert info[b"EXISTS"] == 2
        assert info[b"UIDNEXT"] == 3
        assert client.search() == [1, 2]
        assert client.search(["SUBJECT", token]) == [1]
        assert client.search(["UNSEEN"]) == [1, 2]

        data = client.fetch([1], ["ENVELOPE", "BODY[]", "FLAGS"])[1]
        assert data[b"BODY[]"].endswith(sent)
        assert data[b"BODY[]"].startswith(b"Return-Path: <" + BOB.encode() + b">\r\n")
        envelope = data[b"ENVELOPE"]
        assert envelope.subject == f"imapclient {token}".encode()
        assert envelope.from_ == (Address(b"Bob", None, b"bob", b"example.test"),)
        # A non-PEEK BODY[] sets \Seen; this session is the first to see the message: \Recent.
        assert set(client.get_flags([1])[1]) == {b"\\Seen", b"\\Recent"}

        flags = client.add_flags([1], [b"\\Flagged", b"$Important"])
        assert set(flags[1]) == {b"\\Seen", b"\\Recent", b"\\Flagged", b"$Important"}

        client.move([1], "Archive")
        assert client.search() == [2]
        assert client.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 1

        client.idle()
        try:
            deliver(server, "pushed", "while idling")

            def exists() -> bool:
                return (2, b"EXISTS") in client.idle_check(timeout=1)

            wait_until(exists, 15, "* 2 EXISTS pushed during IDLE")
        finally:
            client.idle_done()
        assert client.search(["SUBJECT", "pushed"]) == [3]

        client.select_folder("Archive")
        archived = client.fetch([1], ["FLAGS", "BODY.PEEK[]"])[1]
        assert set(archived[b"FLAGS"]) - {b"\\Recent"} == {b"\\Seen", b"\\Flagged", b"$Important"}
        assert archived[b"BODY[]"].endswith(sent)


MULTIPART = (
    "From: Bob Smith <bob@smith.com>\r\n"
    "To: Some One <some@one.com>, foo@foo.com\r\n"
    "Date: Tue, 16 Mar 2010 16:45:32 +0000\r\n"
    "Message-ID: <livetest-envelope@client.example.net>\r\n"
    "Subject: A multipart message\r\n"
    'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    "--b1\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n--b1--\r\n"
)


def test_imapclient_envelope_of_appended_message(server: Postroom) -> None:
    """The ENVELOPE check from livetest's test_fetch, compared field by field here: livetest
    itself compares imapclient's dataclass Envelope with assertSequenceEqual, which fails on
    any server."""
    with IMAPClient(
        server.host, port=server.ports["imaps"], ssl_context=server.tls_context(), timeout=30
    ) as client:
        client.login(ALICE, PASSWORDS[ALICE])
        client.enable("CONDSTORE")
        client.append("Drafts", MULTIPART)
        client.select_folder("Drafts")
        data = client.fetch([1], ["RFC822", "FLAGS", "ENVELOPE"])[1]
    # RFC 7162 §3.1: with CONDSTORE enabled, the \Seen set by RFC822 comes with a MODSEQ.
    assert set(data) == {b"SEQ", b"RFC822", b"FLAGS", b"ENVELOPE", b"MODSEQ"}
    assert data[b"RFC822"] == MULTIPART.encode()
    bob = (Address(b"Bob Smith", None, b"bob", b"smith.com"),)
    envelope = data[b"ENVELOPE"]
    assert isinstance(envelope, Envelope)
    assert (envelope.subject, envelope.from_, envelope.sender, envelope.reply_to) == (
        b"A multipart message",
        bob,
        bob,
        bob,
    )
    assert envelope.to == (
        Address(b"Some One", None, b"some", b"one.com"),
        Address(None, None, b"foo", b"foo.com"),
    )
    assert (envelope.cc, envelope.bcc, envelope.in_reply_to) == (None, None, None)
    assert envelope.message_id == b"<livetest-envelope@client.example.net>"
    assert envelope.date.year == 2010 and envelope.date.hour == 16


# imapclient's livetest, minus the tests that cannot pass against any server on loopback or
# that exercise a bug of imapclient itself. Each key is "<class>.<method>".
LIVETEST_EXCLUDED = {
    # A fixed time.sleep(10) inside; IDLE is covered by test_imapclient_session.
    "TestGeneral.test_idle": "sleeps 10 s",
    # Compares the dataclass Envelope with assertSequenceEqual (covered above, field by field).
    "TestWithUIDs.test_fetch": "livetest bug",
    "TestWithoutUIDs.test_fetch": "livetest bug",
    # IMAPClient.move without UIDs calls imaplib's non-existent `move` method.
    "TestWithoutUIDs.test_move": "imapclient bug",
}

LIVETEST_DRIVER = """
import json, sys, unittest
from imapclient import livetest
from imapclient.config import parse_config_file

conf = parse_config_file(sys.argv[1])
excluded = set(json.loads(sys.argv[2]))
conf.namespace = livetest.probe_host(conf)
livetest.TestGeneral.conf = conf
classes = {
    "TestGeneral": livetest.TestGeneral,
    "TestWithUIDs": livetest.createUidTestClass(conf, use_uid=True),
    "TestWithoutUIDs": livetest.createUidTestClass(conf, use_uid=False),
}
loader = unittest.TestLoader()
suite = unittest.TestSuite(
    klass(method)
    for name, klass in classes.items()
    for method in loader.getTestCaseNames(klass)
    if f"{name}.{method}" not in excluded
)
result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
print("RESULT " + json.dumps({
    "run": result.testsRun,
    "failed": len(result.failures) + len(result.errors),
    "skipped": len(result.skipped),
}))
"""


def test_imapclient_livetest(server: Postroom, tmp_path: Path) -> None:
    """imapclient's own live test suite (shipped in its wheel as imapclient.livetest)."""
    try:
        import imapclient.livetest  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        pytest.skip("imapclient livetest module not in the installed imapclient")
    ini = tmp_path / "livetest.ini"
    ini.write_text(
        "[DEFAULT]\n"
        f"host = {server.host}\nport = {server.ports['imaps']}\nssl = true\n"
        f"ssl_ca_file = {cert_path(server)}\n"
        f"username = {ALICE}\npassword = {PASSWORDS[ALICE]}\ntimeout = 10\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", LIVETEST_DRIVER, str(ini), json.dumps(list(LIVETEST_EXCLUDED))],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    output = result.stdout + result.stderr
    match = re.search(r"^RESULT (.*)$", result.stdout, re.MULTILINE)
    assert match, output
    summary = json.loads(match[1])
    assert summary["failed"] == 0, output
    # 57 tests minus the excluded ones; the skipped ones need Gmail, XLIST, ACL or the like.
    assert summary["run"] - summary["skipped"] >= 44, output


def test_lsub_star_lists_only_subscribed_names(server: Postroom) -> None:
    with imap(server) as client:
        assert client.create("parent")[0] == "OK"
        assert client.create("parent/child")[0] == "OK"
        assert client.subscribe("parent/child")[0] == "OK"
        # RFC 3501 §6.3.9: only "%" makes LSUB show an unsubscribed parent (as \Noselect).
        typ, data = client.lsub('""', "parent%")
        assert data == [b'(\\Noselect) "/" parent']
        typ, data = client.lsub('""', "parent*")
        assert typ == "OK"
        assert [line.rsplit(b" ", 1)[1] for line in data if isinstance(line, bytes)] == [
            b"parent/child"
        ]


# --- mbsync --------------------------------------------------------------------------------------


def maildir_messages(folder: Path) -> dict[str, tuple[str, Path]]:
    """Subject -> (Maildir info flags, path) of the messages in new/ and cur/."""
    found: dict[str, tuple[str, Path]] = {}
    for sub in ("new", "cur"):
        for path in (folder / sub).iterdir():
            flags = path.name.split(":2,", 1)[1] if ":2," in path.name else ""
            subject = str(email.message_from_bytes(path.read_bytes())["Subject"])
            found[subject] = (flags, path)
    return found


def test_mbsync_two_way_sync(server: Postroom, tmp_path: Path) -> None:
    mbsync = require_program("mbsync")
    sent = [deliver(server, f"sync {i}", f"message number {i}") for i in range(4)]
    mail = tmp_path / "mail"
    mail.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"IMAPAccount postroom\nHost {server.host}\nPort {server.ports['imaps']}\n"
        f"User {ALICE}\nPass {PASSWORDS[ALICE]}\nSSLType IMAPS\n"
        f"CertificateFile {cert_path(server)}\n\n"
        "IMAPStore remote\nAccount postroom\n\n"
        f"MaildirStore local\nPath {mail}/\nInbox {mail}/INBOX\nSubFolders Verbatim\n\n"
        "Channel postroom\nFar :remote:\nNear :local:\nPatterns INBOX\n"
        "Create Both\nExpunge Both\nSyncState *\nSync All\n"
    )

    def sync() -> None:
        result = run([mbsync, "-c", str(rc), "postroom"], env={"HOME": str(tmp_path)})
        assert result.returncode == 0, result.stderr.decode(errors="replace")

    sync()
    inbox = mail / "INBOX"
    local = maildir_messages(inbox)
    remote = by_subject(mailbox_contents(server))
    assert sorted(local) == sorted(remote) == [f"sync {i}" for i in range(4)]
    for i, message in enumerate(sent):
        flags, raw = remote[f"sync {i}"]
        assert raw.endswith(message) and flags == set()
        # The Maildir store keeps LF line endings, and mbsync's X-TUID header (with which it
        # finds a message it copied).
        pulled = re.sub(rb"X-TUID: \S+\n", b"", local[f"sync {i}"][1].read_bytes())
        assert pulled == raw.replace(b"\r\n", b"\n")
        assert local[f"sync {i}"][0] == ""

    # Local side: "sync 0" read and flagged, "sync 1" deleted, a new message written.
    path = local["sync 0"][1]
    path.rename(inbox / "cur" / (path.name.split(":2,")[0] + ":2,FS"))
    local["sync 1"][1].unlink()
    new_local = b"From: <alice@example.test>\nTo: <bob@example.test>\nSubject: written here\n\n"
    new_local += b"composed offline\n"
    (inbox / "new" / "1700000000.P1Q1.client").write_bytes(new_local)
    # Server side: "sync 2" answered, "sync 3" expunged.
    with imap(server) as client:
        client.select("INBOX")
        assert client.uid("STORE", "3", "+FLAGS", "(\\Answered)")[0] == "OK"
        assert client.uid("STORE", "4", "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert client.expunge()[0] == "OK"

    sync()
    remote = by_subject(mailbox_contents(server))
    assert sorted(remote) == ["sync 0", "sync 2", "written here"]
    assert remote["sync 0"][0] == {"\\Seen", "\\Flagged"}
    assert remote["sync 2"][0] == {"\\Answered"}
    flags, raw = remote["written here"]
    assert flags == set()
    # mbsync adds its X-TUID header to what it uploads too.
    assert re.sub(rb"X-TUID: \S+\r\n", b"", raw) == new_local.replace(b"\n", b"\r\n")
    local = maildir_messages(inbox)
    assert sorted(local) == ["sync 0", "sync 2", "written here"]
    assert local["sync 0"][0] == "FS" and local["sync 2"][0] == "R"

    def snapshot() -> tuple[dict[int, tuple[set[str], bytes]], list[str]]:
        names = sorted(p.name for sub in ("new", "cur") for p in (inbox / sub).iterdir())
        return mailbox_contents(server), names

    before = snapshot()
    sync()
    assert snapshot() == before  # a third run finds nothing to do on either side


# --- neomutt in tmux -----------------------------------------------------------------------------


def test_neomutt_in_tmux(server: Postroom, tmp_path: Path) -> None:
    tmux = require_program("tmux")
    neomutt = require_program("neomutt")
    first = new_token()
    deliver(server, f"first {first}", f"body of the first {first}")
    deliver(server, "second message", "body of the second")
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(
        f'set folder="imaps://{server.host}:{server.ports["imaps"]}/"\n'
        'set spoolfile="+INBOX"\n'
        f'set imap_user="{ALICE}"\nset imap_pass="{PASSWORDS[ALICE]}"\n'
        f'set ssl_ca_certificates_file="{cert_path(server)}"\n'
        f'set certificate_file="{tmp_path / "certificates"}"\n'
        "set ssl_force_tls=yes\n"
        'set header_cache=""\nset message_cachedir=""\nset record=""\n'
        "set delete=yes\nset quit=yes\nset wait_key=no\nset move=no\nset mark_old=no\n"
        "set sort=date-received\nset imap_passive=yes\n"
    )
    socket_path = tmp_path / "tmux.sock"
    base = [tmux, "-S", str(socket_path), "-f", "/dev/null"]
    env = {"HOME": str(tmp_path), "TERM": "xterm"}

    def pane() -> str:
        result = run([*base, "capture-pane", "-p", "-t", "mutt"])
        return result.stdout.decode(errors="replace")

    def keys(*names: str) -> None:
        assert run([*base, "send-keys", "-t", "mutt", *names]).returncode == 0

    def wait_for(text: str) -> None:
        try:
            wait_until(lambda: text in pane(), 15, f"{text!r} on the neomutt screen")
        except AssertionError as error:
            raise AssertionError(f"{error}\nscreen:\n{pane()}") from None

    started = run(
        [
            *base,
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "40",
            "-s",
            "mutt",
            f"{neomutt} -n -F {muttrc}",
        ],
        env=env,
    )
    assert started.returncode == 0, started.stderr
    try:
        wait_for(f"first {first}")
        wait_for("second message")
        keys("1", "Enter")  # jump to message 1
        keys("Enter")  # and open it in the pager
        wait_for(f"body of the first {first}")
        keys("q")
        wait_for("second message")
        keys("j", "d", "$")  # delete message 2, then sync: expunge and store \Seen of 1
        wait_for("1 deleted")
        remote = by_subject(mailbox_contents(server))
        assert sorted(remote) == [f"first {first}"]
        assert "\\Seen" in remote[f"first {first}"][0]
        keys("q")
        wait_until(
            lambda: run([*base, "has-session", "-t", "mutt"]).returncode != 0,
            15,
            "neomutt to quit",
        )
    finally:
        run([*base, "kill-server"])


# --- curl ----------------------------------------------------------------------------------------


def test_curl_imap_and_imaps(server: Postroom, tmp_path: Path) -> None:
    curl = require_program("curl")
    token = new_token()
    deliver(server, f"curl {token}", f"fetched by curl {token}")
    stored = mailbox_contents(server)[1][1]
    imap_url = f"imap://{server.host}:{server.ports['imap']}/"
    imaps_url = f"imaps://{server.host}:{server.ports['imaps']}/"
    common = [curl, "-sS", "--cacert", str(cert_path(server)), "-u", f"{ALICE}:{PASSWORDS[ALICE]}"]

    # LIST over STARTTLS.
    listed = run([*common, "--ssl-reqd", imap_url])
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert '* LIST (\\HasNoChildren) "/" INBOX' in lines
    assert '* LIST (\\HasNoChildren \\Sent) "/" Sent' in lines
    # Without TLS the login is refused (LOGINDISABLED): curl's "login denied".
    assert run([*common, imap_url]).returncode == 67
    wrong = [curl, "-sS", "--cacert", str(cert_path(server)), "-u", f"{ALICE}:wrong"]
    assert run([*wrong, imaps_url]).returncode == 67

    # FETCH by UID: the message byte for byte.
    fetched = run([*common, imaps_url + "INBOX;UID=1"])
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == stored
    text = run([*common, imaps_url + "INBOX;UID=1;SECTION=TEXT"])
    assert text.stdout == f"fetched by curl {token}\r\n".encode()
    assert run([*common, imaps_url + "INBOX;UID=9"]).returncode == 78  # no such message

    # A custom command: EXAMINE.
    examined = run([*common, imaps_url + "INBOX", "-X", "EXAMINE INBOX"])
    assert examined.returncode == 0, examined.stderr
    out = examined.stdout.decode()
    assert "* 1 EXISTS" in out and "* OK [UIDNEXT 2]" in out and "UIDVALIDITY" in out

    # SEARCH through the URL query, and APPEND through an upload.
    found = run([*common, imaps_url + f"INBOX?SUBJECT%20{token}"])
    assert found.stdout.decode().split() == ["*", "SEARCH", "1"]
    upload = tmp_path / "upload.eml"
    upload.write_bytes(f"Subject: uploaded {token}\r\n\r\nsent with curl -T\r\n".encode())
    assert run([*common, "-T", str(upload), imaps_url + "Sent"]).returncode == 0
    sent = mailbox_contents(server, "Sent")
    assert [raw for _, raw in sent.values()] == [upload.read_bytes()]


# --- getmail6 and fetchmail ----------------------------------------------------------------------


@pytest.fixture
def unprivileged_dir(tmp_path: Path) -> Iterator[tuple[Path, tuple[int, int] | None]]:
    """A work directory, and the uid/gid to run in it for programs that refuse to run as root.

    getmail will not deliver into a Maildir as root; as root it runs as `nobody` in a directory
    of its own under /tmp (the pytest tmp tree is not searchable by other users)."""
    if os.geteuid() != 0:
        yield tmp_path, None
        return
    nobody = pwd.getpwnam("nobody")
    work = Path(tempfile.mkdtemp(prefix="postroom-getmail-"))
    try:
        work.chmod(0o755)
        yield work, (nobody.pw_uid, nobody.pw_gid)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_getmail_imaps_into_maildir(
    server: Postroom, unprivileged_dir: tuple[Path, tuple[int, int] | None]
) -> None:
    getmail = require_program("getmail")
    work, as_user = unprivileged_dir
    sent = [deliver(server, f"getmail {i}", f"retrieved {i}") for i in range(2)]
    maildir = work / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (work / "state").mkdir()
    shutil.copy(cert_path(server), work / "ca.pem")
    rc = work / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = SimpleIMAPSSLRetriever\n"
        f"server = {server.host}\nport = {server.ports['imaps']}\n"
        f"username = {ALICE}\npassword = {PASSWORDS[ALICE]}\n"
        f'mailboxes = ("INBOX",)\nca_certs = {work / "ca.pem"}\n\n'
        f"[destination]\ntype = Maildir\npath = {maildir}/\n\n"
        "[options]\nread_all = false\ndelete = false\nverbose = 1\n"
    )
    if as_user:
        for path in (work, *work.rglob("*")):
            os.chown(path, *as_user)

    def fetch() -> str:
        result = run(
            [getmail, f"--getmaildir={work / 'state'}", f"--rcfile={rc}"],
            env={"HOME": str(work)},
            as_user=as_user,
        )
        output = (result.stdout + result.stderr).decode(errors="replace")
        assert result.returncode == 0, output
        return output

    def delivered() -> list[bytes]:
        return sorted(p.read_bytes() for p in (maildir / "new").iterdir())

    assert "2 messages (" in fetch()
    stored = [raw for _, raw in mailbox_contents(server).values()]
    got = delivered()
    assert len(got) == 2
    for message, raw in zip(sent, stored, strict=True):
        assert raw.endswith(message)
        # getmail writes LF line endings, moves Return-Path on top of its own trace headers and
        # notes the mailbox at the end of the header.
        header, body = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)
        return_path, rest = header.split(b"\n", 1)
        tail = b"\n" + rest + b"\nX-getmail-retrieved-from-mailbox: INBOX\n\n" + body
        assert sum(m.startswith(return_path + b"\n") and m.endswith(tail) for m in got) == 1
    # Known messages are not fetched again (getmail remembers them by UID); a new one is.
    assert "0 messages (0 bytes) retrieved, 2 skipped" in fetch()
    assert len(delivered()) == 2
    deliver(server, "getmail late", "arrived later")
    assert "1 messages" in fetch()
    assert len(delivered()) == 3
    assert len(mailbox_contents(server)) == 3  # delete = false: the server keeps them


def test_fetchmail_imaps_into_mda(server: Postroom, tmp_path: Path) -> None:
    fetchmail = require_program("fetchmail")
    sent = [deliver(server, f"fetchmail {i}", f"polled {i}") for i in range(2)]
    stored = [raw for _, raw in mailbox_contents(server).values()]
    out = tmp_path / "out"
    out.mkdir()
    mda = tmp_path / "deliver"
    mda.write_text(f'#!/bin/sh\nexec cat > "$(mktemp {out}/msg.XXXXXX)"\n')
    mda.chmod(0o755)
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll {server.host} service {server.ports['imaps']} protocol IMAP auth password\n"
        f'  user "{ALICE}" password "{PASSWORDS[ALICE]}" is "alice" here\n'
        # The certificate names mx.example.test, localhost and 127.0.0.1; fetchmail matches
        # only DNS names, so it is told which one to expect.
        f'  ssl sslcertck sslcertfile "{cert_path(server)}" sslcommonname "localhost"\n'
        f'  folder INBOX\n  fetchall\n  mda "{mda}"\n'
    )
    rc.chmod(0o600)
    env = {"HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}

    def poll() -> subprocess.CompletedProcess[bytes]:
        return run([fetchmail, "-f", str(rc), "--nodetach", "-v"], env=env)

    result = poll()
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    got = sorted(p.read_bytes() for p in out.iterdir())
    assert len(got) == 2
    for message, raw in zip(sent, stored, strict=True):
        assert raw.endswith(message)
        # fetchmail hands the MDA the message with LF endings and its own Received: line
        # right under Return-Path.
        return_path, rest = raw.replace(b"\r\n", b"\n").split(b"\n", 1)
        head = return_path + b"\nReceived: from 127.0.0.1 [127.0.0.1]\n"
        assert sum(m.startswith(head) and m.endswith(b"\n" + rest) for m in got) == 1, got
    # Without `keep`, fetchmail marks what it delivered \Deleted and expunges it.
    assert mailbox_contents(server) == {}
    assert poll().returncode == 1  # fetchmail's "no mail"
