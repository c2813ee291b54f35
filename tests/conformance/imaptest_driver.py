"""Run Dovecot imaptest scripted tests against any IMAP server (stdlib sockets only).

Replicates imaptest's test executor (src/test-exec.c): it prepares the session as the script's
`state:` asks (log in, delete every `<mailbox>*` mailbox, create the test mailbox, APPEND the
mbox messages, SELECT), runs the command groups over numbered connections, and matches replies
the way imaptest does: case-insensitive, `$var` captured on first use, `$` matching anything,
`$!` list directives (with imaptest's defaults for FETCH, FLAGS, LIST, LSUB and STATUS), `*`/`!`/
`?` untagged existence, prefix matching of tagged replies and of untagged OK/NO/BAD/BYE.

    python -m tests.conformance.imaptest_driver --host 127.0.0.1 --port 1143 \\
        --user u@example.test --password secret [--user2 ... --password2 ...] SCRIPT|DIR...
"""

from __future__ import annotations

import argparse
import base64
import enum
import select
import socket
import ssl
import sys
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .imap_args import Arg, Kind, ParseError, atom, parse_args, quote, render
from .imaptest_match import MATCHED, Matcher, UninitializedVariable
from .imaptest_script import (
    CommandGroup,
    Existence,
    MboxMessage,
    Script,
    ScriptCommand,
    ScriptError,
    StartupState,
    load_mbox,
    load_script,
    script_paths,
)

TRANSCRIPT_LINES = 40
_LITERAL_END = b"}"


@dataclass(frozen=True)
class ServerInfo:
    """Where and as whom to run scripts. `user2` is needed by scripts with `user 2: $user2`."""

    host: str
    port: int
    user: str
    password: str
    user2: str | None = None
    password2: str | None = None
    mailbox: str = "imaptest"
    timeout: float = 15.0
    tls: ssl.SSLContext | None = None  # implicit TLS (imaps) when set


class Status(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Failure:
    """One failed check, with the script line and command of the group it happened in."""

    line: int
    command: str
    message: str
    transcript: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "setup"
        text = f"{where}: {self.command}\n  {self.message.replace(chr(10), chr(10) + '  ')}"
        if self.transcript:
            text += "\n  last traffic:\n    " + "\n    ".join(self.transcript)
        return text


@dataclass
class ScriptResult:
    """Outcome of one script; `report()` is the readable failure diff."""

    name: str
    status: Status
    failures: list[Failure] = field(default_factory=list)
    skip_reason: str = ""
    output: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED

    def report(self) -> str:
        if self.status is Status.SKIPPED:
            return f"{self.name}: skipped ({self.skip_reason})"
        if not self.failures:
            return f"{self.name}: passed"
        body = "\n".join(str(failure) for failure in self.failures)
        return f"{self.name}: {len(self.failures)} failure(s)\n{body}"


def required_capabilities(path: Path) -> set[str]:
    """Capabilities (upper-case) a script's header requires; skip the script without them."""
    return {cap.upper() for cap in load_script(path).capabilities}


def run_script(path: Path, server: ServerInfo) -> ScriptResult:
    """Run one imaptest script against `server` and report what did not match."""
    try:
        script = load_script(path)
    except ScriptError as exc:
        return ScriptResult(path.name, Status.FAILED, [Failure(0, "", f"bad script: {exc}")])
    return _Execution(script, server).run()


class _Abort(Exception):
    """Stop the script: the session cannot continue (imaptest disconnects in these cases)."""


class _Skip(Exception):
    """The server lacks what the script needs."""


@dataclass
class _Response:
    raw: bytes
    tag: bytes
    args: list[Arg]  # after the tag


class _Connection:
    """One IMAP connection with imaptest's client-side state (tags, capabilities, view)."""

    def __init__(self, index: int, sock: socket.socket, timeout: float) -> None:
        self.index = index
        self.sock = sock
        self.timeout = timeout
        self.buffer = bytearray()
        self.tag_counter = 1
        self.capabilities: set[bytes] = set()
        self.storage = b""
        self.count = 0  # messages in imaptest's view of the selected mailbox
        self.seen_bye = False
        self.logout_sent = False
        self.closed = False
        self.preauth = False
        self.transcript: deque[str] = deque(maxlen=TRANSCRIPT_LINES)

    def next_tag(self) -> bytes:
        tag = f"{self.index + 1}.{self.tag_counter}".encode()
        self.tag_counter += 1
        return tag

    def send(self, data: bytes) -> None:
        for line in data.split(b"\r\n")[:-1] if data.endswith(b"\r\n") else [data]:
            self._log(">", line)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.closed = True
            raise _Abort(f"connection {self.index + 1}: send failed: {exc}") from None

    def _log(self, direction: str, line: bytes) -> None:
        text = line[:300].decode("latin-1").encode("unicode_escape").decode("ascii")
        self.transcript.append(f"C{self.index + 1}{direction} {text}")

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False on EOF. Raises _Abort on timeout."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
            raise _Abort(f"connection {self.index + 1}: timed out waiting for the server")
        try:
            chunk = self.sock.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def read_line(self, deadline: float) -> bytes | None:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                return line
            if not self._fill(deadline):
                return None

    def read_response(self) -> _Response | None:
        """One complete server response (literals included), or None on disconnection."""
        deadline = time.monotonic() + self.timeout
        raw = bytearray()
        while True:
            line = self.read_line(deadline)
            if line is None:
                return None
            raw += line
            size = _trailing_literal(line)
            if size is None:
                break
            while len(self.buffer) < size:
                if not self._fill(deadline):
                    return None
            raw += self.buffer[:size]
            del self.buffer[:size]
        data = bytes(raw)
        for part in data.split(b"\r\n")[:-1]:
            self._log("<", part)
        return _parse_response(data)


def _trailing_literal(line: bytes) -> int | None:
    body = line.rstrip(b"\r\n")
    if not body.endswith(_LITERAL_END):
        return None
    start = body.rfind(b"{")
    digits = body[start + 1 : -1].removesuffix(b"+")
    return int(digits) if start >= 0 and digits.isdigit() else None


def _parse_response(data: bytes) -> _Response:
    tag, _, rest = data.partition(b" ")
    if tag == b"+":
        return _Response(data, tag, [])
    try:
        return _Response(data, tag, parse_args(rest))
    except ParseError:
        # Free-form text after a status response may be unparseable: keep the code, split text.
        code_end = rest.find(b"]") + 1 if b" [" in rest[:12] else 0
        head = parse_args(rest[:code_end]) if code_end else []
        words = rest[code_end:].split() if code_end else rest.split()
        return _Response(data, tag, head + [atom(word) for word in words])


class _Execution:
    """State of one script run (imaptest's struct test_exec_context)."""

    def __init__(self, script: Script, server: ServerInfo) -> None:
        self.script = script
        self.server = server
        self.result = ScriptResult(script.name, Status.PASSED)
        self.conns: list[_Connection] = []
        self.matcher = Matcher()
        self.variables = self.matcher.variables
        self.messages: list[MboxMessage] = []
        self.next_message = 0
        self.init_finished = False
        self.group: CommandGroup | None = None
        self.found: list[bool] = []
        self.maybes: list[tuple[int, str]] = []
        self.mismatches = 0
        self.first_extra: str | None = None
        self.pending: dict[bytes, ScriptCommand] = {}
        self.first_tag: bytes | None = None
        self.expect_bad: set[bytes] = set()
        self.list_names: list[bytes] = []
        self.lsub_names: list[bytes] = []

    # ----------------------------------------------------------------- running
    def run(self) -> ScriptResult:
        try:
            self.messages = load_mbox(self.script.mbox_path)
            self._setup()
            self.init_finished = True
            for group in self.script.groups:
                self._run_group(group)
        except _Skip as exc:
            self.result.status = Status.SKIPPED
            self.result.skip_reason = str(exc)
        except _Abort as exc:
            self._fail(str(exc))
        except ScriptError as exc:
            self._fail(f"bad script: {exc}")
        finally:
            for conn in self.conns:
                conn.sock.close()
        if self.result.failures:
            self.result.status = Status.FAILED
        return self.result

    def _fail(self, message: str) -> None:
        group = self.group
        command, line = "", 0
        transcript: tuple[str, ...] = ()
        if group is not None and self.init_finished:
            if group.commands:
                first = group.commands[0]
                command, line = first.command.decode("latin-1"), first.linenum
            if group.connection < len(self.conns):
                transcript = tuple(self.conns[group.connection].transcript)
        elif self.conns:
            command = "(session setup)"
            transcript = tuple(self.conns[0].transcript)
        if len(command) > 200:
            command = command[:200] + "..."
        self.result.failures.append(Failure(line, command, message, transcript))

    # ------------------------------------------------------------------ setup
    def _credentials(self, index: int) -> tuple[str, str]:
        name = self.script.usernames.get(index)
        if name in ("$user2", "${user2}"):
            assert self.server.user2 is not None and self.server.password2 is not None
            return self.server.user2, self.server.password2
        return (name or self.server.user), self.server.password

    def _setup(self) -> None:
        script, server = self.script, self.server
        if script.require_user2 and (server.user2 is None or server.password2 is None):
            raise _Skip("the script needs a second user (user2)")
        mailbox = server.mailbox.encode()
        for index in range(script.connection_count):
            user, password = self._credentials(index)
            suffix = b"" if index == 0 else str(index + 1).encode()
            username, _, domain = user.partition("@")
            self.variables[b"user" + suffix] = user.encode()
            self.variables[b"username" + suffix] = username.encode()
            self.variables[b"domain" + suffix] = (domain or server.host).encode()
            self.variables[b"password" + suffix] = password.encode()
        self.variables[b"mailbox"] = mailbox
        self.variables[b"mailbox_url"] = _mailbox_url(server.mailbox).encode()
        for index in range(script.connection_count):
            self.conns.append(self._connect(index, mailbox))
        first = self.conns[0]
        if script.state is StartupState.NONAUTH:
            self._check_capabilities(first)
            return
        for index, conn in enumerate(self.conns):
            if conn.preauth:
                continue
            user, password = self._credentials(index)
            self._init_command(
                conn, b"LOGIN " + quote(user.encode()) + b" " + quote(password.encode())
            )
        self._init_command(first, b"CAPABILITY")
        self._check_capabilities(first)
        mask = quote(mailbox + b"*")
        self._init_commands(first, [b'LIST "" ' + mask, b'LSUB "" ' + mask])
        deletes = [b"DELETE " + quote(name) for name in _reverse_sorted(self.list_names)]
        deletes += [b"UNSUBSCRIBE " + quote(name) for name in _reverse_sorted(self.lsub_names)]
        self._init_commands(first, deletes, allow_no=True)
        if script.state >= StartupState.CREATED and mailbox.upper() != b"INBOX":
            self._init_command(first, b"CREATE " + quote(mailbox))
        if script.state >= StartupState.APPENDED:
            total = len(self.messages) if script.message_count is None else script.message_count
            for _ in range(total):
                self._init_append(first)
        if script.state >= StartupState.CREATED:
            # Driver's addition: imaptest only prepares the first user's account, so a
            # second user (`user 2: $user2`) gets the test mailbox created if it lacks one.
            for conn in self.conns[1:]:
                if self._credentials(conn.index)[0] != self._credentials(0)[0]:
                    self._init_commands(conn, [b"CREATE " + quote(mailbox)], allow_no=True)
        if script.state >= StartupState.SELECTED:
            for conn in self.conns:
                self._init_command(conn, b"SELECT " + quote(mailbox))

    def _connect(self, index: int, mailbox: bytes) -> _Connection:
        try:
            sock = socket.create_connection(
                (self.server.host, self.server.port), timeout=self.server.timeout
            )
            if self.server.tls is not None:
                sock = self.server.tls.wrap_socket(sock, server_hostname=self.server.host)
        except OSError as exc:
            raise _Abort(
                f"cannot connect to {self.server.host}:{self.server.port}: {exc}"
            ) from None
        conn = _Connection(index, sock, self.server.timeout)
        conn.storage = mailbox
        banner = conn.read_response()
        if banner is None or banner.tag != b"*" or not banner.args:
            raise _Abort(f"connection {index + 1}: no greeting")
        greeting = banner.args[0].atom() or b""
        conn.preauth = greeting.upper() == b"PREAUTH"
        if greeting.upper() not in (b"OK", b"PREAUTH"):
            raise _Abort(f"connection {index + 1}: malformed banner {banner.raw!r}")
        if index == 0 and self.script.have_banner_check and self.script.groups:
            self.group = self.script.groups[0]
            self._start_group(conn)
            self._match_untagged(conn, banner.args)
            self._finish_group()
        self._track(conn, banner.args)
        if not conn.capabilities:
            self._init_command(conn, b"CAPABILITY")
        return conn

    def _check_capabilities(self, conn: _Connection) -> None:
        missing = [
            cap for cap in self.script.capabilities if cap.upper().encode() not in conn.capabilities
        ]
        if missing:
            for each in self.conns:
                self._logout_quietly(each)
            raise _Skip("server lacks " + " ".join(missing))

    def _logout_quietly(self, conn: _Connection) -> None:
        try:
            conn.send(conn.next_tag() + b" LOGOUT\r\n")
            while conn.read_response() is not None:
                pass
        except _Abort:
            pass

    def _init_command(self, conn: _Connection, command: bytes) -> None:
        self._init_commands(conn, [command])

    def _init_commands(
        self, conn: _Connection, commands: list[bytes], allow_no: bool = False
    ) -> None:
        tags = []
        for command in commands:
            tag = conn.next_tag()
            tags.append(tag)
            self._send_command(conn, tag, command)
        for tag in tags:
            reply = self._await_tagged(conn, tag)
            status = (reply.args[0].atom() or b"").upper() if reply.args else b""
            if status == b"OK" or (status == b"NO" and allow_no):
                continue
            raw = reply.raw.decode("latin-1").strip()
            raise _Abort(f"session setup failed: {raw}")

    def _init_append(self, conn: _Connection) -> None:
        tag = conn.next_tag()
        self._send_append(conn, tag, quote(conn.storage), with_date=True)
        reply = self._await_tagged(conn, tag)
        if not reply.args or (reply.args[0].atom() or b"").upper() != b"OK":
            raise _Abort(f"session setup failed: {reply.raw.decode('latin-1').strip()}")

    def _await_tagged(self, conn: _Connection, tag: bytes) -> _Response:
        while True:
            response = conn.read_response()
            if response is None:
                raise _Abort(f"connection {conn.index + 1}: unexpected disconnection")
            if response.tag == b"*":
                self._track(conn, response.args)
                self._collect_list(response.args)
            elif response.tag == tag:
                self._track_tagged(conn, response.args)
                return response

    def _collect_list(self, args: list[Arg]) -> None:
        name = args[0].atom() if args else None
        if (
            name is None
            or len(args) < 4
            or args[1].kind is not Kind.LIST
            or args[2].kind is Kind.LIST
            or args[3].astring() is None
        ):
            return
        mailbox = args[3].astring() or b""
        if name.upper() == b"LIST":
            self.list_names.append(mailbox)
        elif name.upper() == b"LSUB":
            self.lsub_names.append(mailbox)

    # ------------------------------------------------------------ sending
    def _send_command(self, conn: _Connection, tag: bytes, command: bytes) -> None:
        """Send `tag command`, turning `{n}` literals into LITERAL+ or waiting for '+'."""
        chunks = _literal_chunks(command, conn.capabilities)
        conn.send(tag + b" " + chunks[0] + (b"\r\n" if len(chunks) == 1 else b""))
        for index, chunk in enumerate(chunks[1:], start=1):
            if not self._await_continuation(conn, tag):
                return
            conn.send(chunk + (b"\r\n" if index == len(chunks) - 1 else b""))

    def _send_append(self, conn: _Connection, tag: bytes, args: bytes, with_date: bool) -> None:
        message = self.messages[self.next_message % len(self.messages)]
        self.next_message += 1
        line = b"APPEND " + args
        if with_date:
            line += b' "' + message.internal_date.encode() + b'"'
        nonsync = _nonsync_ok(conn.capabilities, len(message.data))
        line += b" {%d%s}\r\n" % (len(message.data), b"+" if nonsync else b"")
        if nonsync:
            conn.send(tag + b" " + line + message.data + b"\r\n")
            return
        conn.send(tag + b" " + line)
        if self._await_continuation(conn, tag):
            conn.send(message.data + b"\r\n")

    def _await_continuation(self, conn: _Connection, tag: bytes) -> bool:
        """Process responses until '+' (True) or the command's tagged reply (False)."""
        while True:
            response = conn.read_response()
            if response is None:
                raise _Abort(f"connection {conn.index + 1}: unexpected disconnection")
            if response.tag == b"+":
                return True
            if self.init_finished:
                self._handle(conn, response)
                if tag not in self.pending:
                    return False
            elif response.tag == b"*":
                self._track(conn, response.args)
            elif response.tag == tag:
                raise _Abort(f"session setup failed: {response.raw.decode('latin-1').strip()}")

    # ------------------------------------------------------------ groups
    def _start_group(self, conn: _Connection) -> None:
        group = self.group
        assert group is not None
        count = len(group.untagged or [])
        self.found = [False] * count
        self.maybes = [(0, "")] * count
        self.mismatches = 0
        self.first_extra = None
        self.matcher.start_group(conn.count)

    def _run_group(self, group: CommandGroup) -> None:
        if not group.commands:
            return  # the banner check, done while connecting
        self.group = group
        conn = self.conns[group.connection]
        self._start_group(conn)
        self.pending = {}
        self.expect_bad = set()
        for command in group.commands:
            self._send_script_command(conn, group, command)
        while self.pending:
            response = conn.read_response()
            if response is None:
                self._disconnected(conn, group)
                return
            self._handle(conn, response)
        self._finish_group()

    def _send_script_command(
        self, conn: _Connection, group: CommandGroup, command: ScriptCommand
    ) -> None:
        line = self._expand(command.command, skip_uninitialized=False)
        tag = conn.next_tag()
        self.pending[tag] = command
        if command is group.commands[0]:
            self.first_tag = tag
        if command.reply and (command.reply[0].atom() or b"").lower() == b"bad":
            self.expect_bad.add(tag)
        lower = line.lower()
        if lower == b"append":
            self._send_append(conn, tag, quote(conn.storage), with_date=True)
            return
        if lower.startswith(b"append ") and not _append_has_body(line[7:]):
            self._send_append(conn, tag, line[7:], with_date=False)
            return
        if command.linenum == 0 or lower == b"logout" or group.have_bye:
            conn.logout_sent = True
        verb, _, rest = line.partition(b" ")
        if verb.lower() in (b"select", b"examine") and rest:
            name = _first_astring(rest)
            if name is not None and name != conn.storage:
                conn.storage, conn.count = name, 0
        self._send_command(conn, tag, line)

    def _expand(self, line: bytes, skip_uninitialized: bool) -> bytes:
        try:
            return self.matcher.expand_all(line, skip_uninitialized)
        except UninitializedVariable as exc:
            raise _Abort(str(exc)) from None

    def _disconnected(self, conn: _Connection, group: CommandGroup) -> None:
        if group.have_bye and conn.seen_bye:
            for command in group.commands:
                if command.reply is None or render(command.reply) != "":
                    self._fail(
                        "Command expected a tagged reply but the server said BYE; "
                        'only "" is allowed when BYE happens'
                    )
            self._finish_group()
            return
        raise _Abort(f"connection {conn.index + 1}: unexpected disconnection")

    def _finish_group(self) -> None:
        group = self.group
        assert group is not None
        untagged = group.untagged or []
        missing = [
            i
            for i, each in enumerate(untagged)
            if each.existence is Existence.MUST and not self.found[i]
        ]
        if missing:
            first = untagged[missing[0]]
            expanded = self._expand(
                render(first.args).encode("latin-1"), skip_uninitialized=True
            ).decode("latin-1")
            self._fail(
                f"Missing {len(missing)} untagged replies ({self.mismatches} mismatches)\n"
                f"expected:  * {first.source}\n"
                f"expanded:  * {expanded}\n"
                f"best match: {self.maybes[missing[0]][1] or '(none)'}"
            )
        if self.first_extra is not None:
            self._fail(
                f"{self.mismatches} unexpected untagged replies received, first: {self.first_extra}"
            )
        for text in group.output:
            self.result.output.append(
                self._expand(text, skip_uninitialized=False).decode("latin-1")
            )
        if group.sleep_secs:
            time.sleep(group.sleep_secs)

    # ------------------------------------------------------------ responses
    def _handle(self, conn: _Connection, response: _Response) -> None:
        if response.tag == b"+":
            return
        if response.tag == b"*":
            self._track(conn, response.args)
            if self.init_finished:
                self._match_untagged(conn, response.args)
            self._after_untagged(response.args)
            return
        command = self.pending.pop(response.tag, None)
        status = (response.args[0].atom() or b"").upper() if response.args else b""
        if command is None:
            raise _Abort(f"unexpected tagged reply: {response.raw.decode('latin-1').strip()}")
        if status not in (b"OK", b"NO", b"BAD"):
            raise _Abort(f"broken tagged reply: {response.raw.decode('latin-1').strip()}")
        self._track_tagged(conn, response.args)
        if status == b"BAD" and response.tag not in self.expect_bad:
            raise _Abort(
                f"BAD reply for command: {command.command.decode('latin-1')[:200]}\n"
                f"got: {render(response.args)}"
            )
        assert command.reply is not None
        self.variables[b"tag"] = response.tag
        try:
            matched = self.matcher.match_args(command.reply, response.args, prefix=True)
        finally:
            self.variables.pop(b"tag", None)
        if matched != MATCHED:
            self._fail(
                f"Expected tagged reply '{render(command.reply)}', got '{render(response.args)}'"
            )

    def _track(self, conn: _Connection, args: list[Arg]) -> None:
        """imaptest's client-side bookkeeping of untagged replies (message count, BYE, caps)."""
        name = args[0].atom() if args else None
        if name is None:
            raise _Abort(f"invalid untagged reply: {render(args)}")
        if name.isdigit():
            kind = args[1].atom() if len(args) > 1 else None
            if kind is None:
                raise _Abort(f"invalid untagged reply: {render(args)}")
            number = int(name)
            if kind.upper() == b"EXISTS":
                conn.count = number
            elif kind.upper() == b"EXPUNGE":
                if number == 0 or number > conn.count:
                    raise _Abort(
                        f"tried to expunge sequence {number} with only {conn.count} messages"
                    )
                conn.count -= 1
        elif name.upper() == b"BYE":
            conn.seen_bye = True
            conn.count = 0
        elif name.upper() == b"CAPABILITY":
            conn.capabilities = {(arg.atom() or b"").upper() for arg in args[1:]}
        elif name.upper() in (b"OK", b"PREAUTH"):
            self._track_code(conn, args[1:])

    def _track_tagged(self, conn: _Connection, args: list[Arg]) -> None:
        self._track_code(conn, args[1:])

    @staticmethod
    def _track_code(conn: _Connection, args: list[Arg]) -> None:
        first = args[0].atom() if args else None
        if first is None or first.upper() != b"[CAPABILITY":
            return
        caps: set[bytes] = set()
        for arg in args[1:]:
            text = arg.atom()
            if text is None:
                break
            caps.add(text.rstrip(b"]").upper())
            if text.endswith(b"]"):
                break
        conn.capabilities = caps

    def _after_untagged(self, args: list[Arg]) -> None:
        name = args[0].atom() or b""
        if len(args) > 1 and (args[1].atom() or b"").upper() == b"EXPUNGE" and name.isdigit():
            self.matcher.expunged(int(name))  # after matching, like imaptest

    def _match_untagged(self, conn: _Connection, args: list[Arg]) -> None:
        """imaptest's test_handle_untagged_match."""
        group = self.group
        assert group is not None
        if group.untagged is None:
            if self.script.ignore_extra_untagged or conn.logout_sent:
                return
            untagged = []
        else:
            untagged = group.untagged
        first = (args[0].atom() or b"").upper() if args else b""
        prefix = first in (b"OK", b"NO", b"BAD", b"BYE")
        # imaptest offers $tag only while the group's first command is running
        tag = self.first_tag if self.first_tag in self.pending else None
        self.matcher.added = []
        found_some = False
        for index, expected in enumerate(untagged):
            if self.found[index]:
                continue
            if tag is not None:
                self.variables[b"tag"] = tag
            try:
                count = self.matcher.match_args(expected.args, args, prefix=prefix)
            finally:
                if tag is not None:
                    self.variables.pop(b"tag", None)
            if count == MATCHED:
                if expected.existence is Existence.MUST_NOT:
                    self._fail(
                        f"Unexpected untagged match:\nbanned: ! {expected.source}\n"
                        f"reply:  * {render(args)}"
                    )
                    return
                self.found[index] = True
                found_some = True
                self.matcher.added = []
                if group.ordered:
                    break
                continue
            if self.maybes[index][0] < count:
                self.maybes[index] = (count, "* " + render(args))
            self.matcher.revert_added()
            if group.ordered and expected.existence is Existence.MUST:
                break
        if not found_some:
            self.mismatches += 1
            if not self.script.ignore_extra_untagged and self.first_extra is None:
                self.first_extra = "* " + render(args)


def _reverse_sorted(names: list[bytes]) -> list[bytes]:
    return sorted(set(names), key=lambda name: name.lower(), reverse=True)


def _first_astring(text: bytes) -> bytes | None:
    try:
        args = parse_args(text)
    except ParseError:
        return None
    return args[0].astring() if args and args[0].kind is not Kind.NIL else None


def _append_has_body(args_text: bytes) -> bool:
    """imaptest's append_has_body: `mailbox [(flags)] ["date"]` then a literal or CATENATE?"""
    try:
        args = parse_args(args_text)
    except ParseError:
        return False
    if not args:
        return False
    pos = 0
    if pos + 1 < len(args) and args[pos + 1].kind is Kind.LIST:
        pos += 1
    if pos + 1 < len(args) and args[pos + 1].kind is Kind.STRING:
        pos += 1
    if pos + 1 >= len(args):
        return False
    following = args[pos + 1]
    return following.kind is Kind.LITERAL or (following.atom() or b"").lower() == b"catenate"


def _nonsync_ok(capabilities: set[bytes], size: int) -> bool:
    """RFC 7888 §3-4: LITERAL+ allows any non-synchronizing literal, LITERAL- up to 4096."""
    return b"LITERAL+" in capabilities or (b"LITERAL-" in capabilities and size <= 4096)


def _literal_chunks(command: bytes, capabilities: set[bytes]) -> list[bytes]:
    """Split a command at its `{n}` literals (imaptest's command_get_cmdline): non-sync
    literals stay in the current chunk, each synchronizing one starts a chunk sent after '+'."""
    chunks = [bytearray()]
    pos = 0
    while True:
        newline = command.find(b"\n", pos)
        if newline < 0:
            chunks[-1] += command[pos:]
            break
        head = command[pos:newline].removesuffix(b"\r")
        size = _literal_size(head)
        if size is None:
            chunks[-1] += command[pos : newline + 1]
            pos = newline + 1
            continue
        marker = head[:-1].removesuffix(b"+")
        literal = command[newline + 1 : newline + 1 + size]
        if _nonsync_ok(capabilities, size):
            chunks[-1] += marker + b"+}\r\n" + literal
        else:
            chunks[-1] += marker + b"}\r\n"
            chunks.append(bytearray(literal))
        pos = newline + 1 + size
    return [bytes(chunk) for chunk in chunks]


def _literal_size(head: bytes) -> int | None:
    if not head.endswith(b"}"):
        return None
    start = head.rfind(b"{")
    if start < 1:
        return None
    digits = head[start + 1 : -1].removesuffix(b"+")
    before = head[start - 1 : start]
    if before == b"~":
        before = head[start - 2 : start - 1]
    return int(digits) if digits.isdigit() and before == b" " else None


def _mailbox_url(mailbox: str) -> str:
    """IMAP URL path for a modified-UTF-7 mailbox name (RFC 5092 §6, RFC 3501 §5.1.3)."""
    decoded = []
    pos = 0
    while pos < len(mailbox):
        amp = mailbox.find("&", pos)
        if amp < 0:
            decoded.append(mailbox[pos:])
            break
        decoded.append(mailbox[pos:amp])
        end = mailbox.index("-", amp)
        chunk = mailbox[amp + 1 : end]
        if chunk:
            raw = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4))
            decoded.append(raw.decode("utf-16-be"))
        else:
            decoded.append("&")
        pos = end + 1
    return urllib.parse.quote("".join(decoded), safe="/:@!$&'()*+,=-._~")


def _iter_scripts(targets: list[Path]) -> Iterator[Path]:
    for target in targets:
        if target.is_dir():
            yield from script_paths(target)
        else:
            yield target


def main(argv: list[str] | None = None) -> int:
    """Command line: run scripts (or whole directories of them) against a server."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=143)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--user2")
    parser.add_argument("--password2")
    parser.add_argument("--mailbox", default="imaptest")
    parser.add_argument("--timeout", type=float, default=15.0)
    parser.add_argument("--tls", action="store_true", help="implicit TLS, certificate unchecked")
    parser.add_argument("scripts", nargs="+", type=Path)
    options = parser.parse_args(argv)
    server = ServerInfo(
        options.host,
        options.port,
        options.user,
        options.password,
        options.user2,
        options.password2,
        options.mailbox,
        options.timeout,
        _unchecked_tls() if options.tls else None,
    )
    counts = dict.fromkeys(Status, 0)
    for path in _iter_scripts(options.scripts):
        result = run_script(path, server)
        counts[result.status] += 1
        print(result.report())
        for line in result.output:
            print(f"  output: {line}")
    print(", ".join(f"{count} {status.value}" for status, count in counts.items()))
    return 1 if counts[Status.FAILED] else 0


def _unchecked_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


if __name__ == "__main__":
    sys.exit(main())
