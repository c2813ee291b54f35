"""Parser for Dovecot imaptest scripted tests and their mbox message sources.

Follows imaptest's own parser (src/test-parser.c, data format in scripted_test.md): a header of
`key: value` lines, an empty line, then command groups. `{{{ ... }}}` (or `~{{{` for literal8)
embed multi-line literals; `!ifenv`/`!ifnenv`/`!else`/`!endif`, `!ordered`, `!sleep` and
`!output` are honoured; untagged lines are `*` (must exist), `!` (must not) or `?` (may), and
default `$!` list directives are inserted for FETCH, FLAGS, LIST, LSUB and STATUS replies.
"""

from __future__ import annotations

import enum
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .imap_args import Arg, Kind, ParseError, parse_args

DEFAULT_MBOX = "default.mbox"
MAX_CONNECTIONS = 100


class ScriptError(ValueError):
    """The script is malformed (imaptest would refuse to run it)."""


class StartupState(enum.IntEnum):
    """How far imaptest prepares the session before the script's first command."""

    NONAUTH = 0
    AUTH = 1
    DELETED = 2  # the script header's `state: auth`
    CREATED = 3
    APPENDED = 4
    SELECTED = 5


class Existence(enum.Enum):
    MUST = "*"
    MUST_NOT = "!"
    MAY = "?"


@dataclass
class Untagged:
    """One expected (or banned) untagged reply."""

    args: list[Arg]
    existence: Existence
    source: str


@dataclass
class ScriptCommand:
    """One command: its text, its script tag number (0 if untagged) and expected reply."""

    linenum: int
    tag: int
    command: bytes
    reply: list[Arg] | None


@dataclass
class CommandGroup:
    """Commands sent together on one connection and the untagged replies expected meanwhile."""

    connection: int = 0
    commands: list[ScriptCommand] = field(default_factory=list)
    untagged: list[Untagged] | None = None
    replies_pending: int = 0
    ordered: bool = False
    sleep_secs: float = 0.0
    output: list[bytes] = field(default_factory=list)
    have_bye: bool = False


@dataclass
class Script:
    """A parsed imaptest script."""

    path: Path
    mbox_path: Path
    capabilities: tuple[str, ...] = ()
    connection_count: int = 1
    ignore_extra_untagged: bool = True
    usernames: dict[int, str] = field(default_factory=dict)
    require_user2: bool = False
    message_count: int | None = None  # None (the default): every message of the mbox
    state: StartupState = StartupState.SELECTED
    groups: list[CommandGroup] = field(default_factory=list)
    have_banner_check: bool = False

    @property
    def name(self) -> str:
        return self.path.name


REPLY_WORDS = {b"ok": b"ok", b"no": b"no", b"bad": b"bad", b'""': b""}


@dataclass
class _Parser:
    script: Script
    group: CommandGroup | None = None
    ifenv: list[tuple[int, bool, bool]] = field(default_factory=list)  # (line, skip, else_seen)
    skip: bool = False

    def header_line(self, line: bytes) -> None:
        colon = line.find(b":")
        if colon < 0:
            raise ScriptError("Missing ':'")
        key = line[:colon].rstrip(b" ").lower()
        value = line[colon + 1 :].lstrip(b" ")
        text = value.decode("latin-1")
        script = self.script
        if key == b"capabilities":
            script.capabilities = tuple(text.split())
        elif key == b"connections":
            script.connection_count = _leading_int(value)
            if not 0 < script.connection_count <= MAX_CONNECTIONS:
                raise ScriptError("Too many connections")
        elif key == b"ignore_extra_untagged":
            script.ignore_extra_untagged = value.startswith(b"y")
        elif key.startswith(b"user ") and key[5:].isdigit() and int(key[5:]) != 0:
            index = int(key[5:])
            if index > MAX_CONNECTIONS:
                raise ScriptError("Too many connections")
            if text in ("$user2", "${user2}"):
                script.require_user2 = True
            script.usernames[index - 1] = text
        elif key == b"messages":
            script.message_count = None if value == b"all" else _leading_int(value)
        elif key == b"state":
            states = {
                "nonauth": StartupState.NONAUTH,
                "auth": StartupState.DELETED,
                "created": StartupState.CREATED,
                "appended": StartupState.APPENDED,
                "selected": StartupState.SELECTED,
            }
            if text.lower() not in states:
                raise ScriptError("Unknown state value")
            script.state = states[text.lower()]
        else:
            raise ScriptError("Unknown setting")

    def preprocessor(self, linenum: int, line: bytes) -> bool:
        """Handle !ifenv/!ifnenv/!else/!endif; True when the line was one of them."""
        for prefix, missing_skips in ((b"!ifenv ", True), (b"!ifnenv ", False)):
            if line.startswith(prefix):
                present = os.environ.get(line[len(prefix) :].decode("latin-1")) is not None
                self.ifenv.append((linenum, self.skip, False))
                if present != missing_skips:
                    self.skip = True
                return True
        if line == b"!else":
            if not self.ifenv:
                raise ScriptError("!else without !ifenv")
            start, outer_skip, else_seen = self.ifenv[-1]
            if else_seen:
                raise ScriptError("!else already seen")
            self.ifenv[-1] = (start, outer_skip, True)
            if not outer_skip:
                self.skip = not self.skip
            return True
        if line == b"!endif":
            if not self.ifenv:
                raise ScriptError("!endif without !ifenv")
            self.skip = self.ifenv.pop()[1]
            return True
        return False

    def command_line(self, linenum: int, line: bytes) -> None:
        if self.preprocessor(linenum, line) or self.skip:
            return
        script, group = self.script, self.group
        if group is not None:
            if line.startswith(b"!sleep "):
                group.sleep_secs = _interval_secs(line[7:])
                return
            if line.startswith(b"!output "):
                group.output.append(line[8:])
                return
            if line == b"!ordered":
                group.ordered = True
                return
            existence = _untagged_existence(line)
            if existence is not None:
                self.untagged(group, line[2:], existence)
                return
            if group.replies_pending > 0 and self.tagged_reply(group, line):
                return
        if group is None or group.replies_pending == 0:
            group = CommandGroup()
            self.group = group
            script.groups.append(group)
        if script.connection_count > 1:
            word = line.split(b" ", 1)[0]
            if not word.isdigit() or int(word) == 0:
                raise ScriptError("Missing client index")
            index = int(word)
            if index > MAX_CONNECTIONS:
                raise ScriptError("Too many connections")
            if group.commands and group.connection != index - 1:
                raise ScriptError("All pipelined commands must use the same connection")
            group.connection = index - 1
            script.connection_count = max(script.connection_count, index)
            line = line.split(b" ", 1)[1] if b" " in line else b""
        tag, reply, line = _split_reply(line)
        if tag == 0:
            if group.replies_pending > 0:
                raise ScriptError("Missing reply from previous command group")
        elif any(cmd.tag == tag for cmd in group.commands):
            raise ScriptError("Tag reused within command group")
        existence = _untagged_existence(line)
        if not group.commands and existence is not None:
            script.have_banner_check = True
            self.untagged(group, line[2:], existence)
            return
        if reply is None:
            group.replies_pending += 1
        group.commands.append(ScriptCommand(linenum, tag, line, reply))

    def tagged_reply(self, group: CommandGroup, line: bytes) -> bool:
        """Parse `[conn] [tagN] ok|no|bad|"" ...` finishing a command; False if not one."""
        conn_index = 0
        if self.script.connection_count > 1:
            word = line.split(b" ", 1)[0]
            if word.isdigit() and int(word) > 0:
                conn_index = int(word)
                line = line.split(b" ", 1)[1] if b" " in line else b""
        tag, reply, _ = _split_reply(line)
        if reply is None:
            return False
        if self.script.connection_count > 1:
            if conn_index == 0:
                raise ScriptError("Missing client index")
            if conn_index - 1 != group.connection:
                raise ScriptError("Reply for wrong connection")
        command = next((cmd for cmd in group.commands if cmd.tag == tag), None)
        if command is None:
            raise ScriptError("Reply for unknown tag")
        if command.reply is not None:
            raise ScriptError("Command already has a reply")
        args = _parse(line)
        command.reply = args if tag == 0 else args[1:]
        group.replies_pending -= 1
        return True

    def untagged(self, group: CommandGroup, line: bytes, existence: Existence) -> None:
        if group.untagged is None:
            group.untagged = []
        args = expected_reply(line)
        if _reply_name(args)[:3].upper() == b"BYE":
            if existence is Existence.MUST:
                group.have_bye = True
            elif existence is Existence.MAY:
                raise ScriptError("? BYE not currently supported")
        group.untagged.append(Untagged(args, existence, line.decode("latin-1")))


def expected_reply(line: bytes) -> list[Arg]:
    """Parse an expected untagged reply (without `* `), adding imaptest's default directives."""
    args = _parse(line)
    _add_directives(_ListContext(_reply_name(args)), args)
    return args


def _reply_name(args: list[Arg]) -> bytes:
    name = args[0].atom() if args else None
    if name is not None and name[:1] and name[:1] in b"$0123456789":
        name = args[1].atom() if len(args) > 1 else None
    return name or b""


def _split_reply(line: bytes) -> tuple[int, list[Arg] | None, bytes]:
    """imaptest's test_get_cmd_reply: optional `tagN`, then optional ok/no/bad/\"\"."""
    tag = 0
    word = line.split(b" ", 1)[0]
    if word[:3].lower() == b"tag" and b" " in line and word[3:].isdigit() and int(word[3:]) > 0:
        tag = int(word[3:])
        line = line.split(b" ", 1)[1]
        word = line.split(b" ", 1)[0]
    reply_word = REPLY_WORDS.get(word.lower())
    if reply_word is None:
        return tag, None, line
    line = line[len(word) :]
    if line.startswith(b" "):
        line = line[1:]
    return tag, [Arg(Kind.ATOM, reply_word)], line


def _untagged_existence(line: bytes) -> Existence | None:
    for existence in Existence:
        if line.startswith(existence.value.encode() + b" "):
            return existence
    return None


def _parse(line: bytes) -> list[Arg]:
    try:
        return parse_args(line)
    except ParseError as exc:
        raise ScriptError(str(exc)) from None


def _leading_int(value: bytes) -> int:
    match = re.match(rb"\d+", value)
    return int(match.group()) if match else 0


def _interval_secs(value: bytes) -> float:
    match = re.fullmatch(rb"\s*(\d+)\s*(ms|msecs?|s|secs?|m|mins?)?\s*", value)
    if match is None:
        raise ScriptError(f"Invalid !sleep value {value.decode('latin-1')}")
    unit = (match.group(2) or b"s").decode()
    scale = {"m": 60.0, "s": 1.0}[unit[0]] if not unit.startswith("ms") else 0.001
    return int(match.group(1)) * scale


@dataclass
class _ListContext:
    """Where a list sits in an untagged reply, to decide its default `$!` directives."""

    reply_name: bytes
    parent: _ListContext | None = None
    prev_atom: bytes | None = None
    parent_chain_idx: int = 0
    chain_count: int = 1
    directives: bool = False


def _directive(text: bytes) -> Arg:
    return Arg(Kind.ATOM, text)


def _add_directives(ctx: _ListContext, items: list[Arg]) -> None:
    """imaptest's test_parse_untagged_handle_directives, recursively over sublists."""
    for item in items:
        text = item.atom()
        if text is None or not text.startswith(b"$!"):
            break
        body = text[2:]
        if body.startswith(b"unordered"):
            rest = body[9:]
            if rest.startswith(b"=") and rest[1:].isdigit():
                ctx.chain_count = int(rest[1:])
            elif rest:
                raise ScriptError("Broken $!unordered directive")
        elif not (
            body in (b"ordered", b"noextra", b"extra") or body.startswith((b"ignore=", b"ban="))
        ):
            raise ScriptError(f"Unknown directive: {body.decode('latin-1')}")
        ctx.directives = True
    if not ctx.directives:
        items[:0] = _default_directives(ctx)
    prev_atom: bytes | None = None
    for index, item in enumerate(items):
        text = item.atom()
        if text is not None:
            prev_atom = text.lower()
        if item.kind is not Kind.LIST:
            continue
        sub = _ListContext(
            reply_name=ctx.reply_name.lower(),
            parent=ctx,
            prev_atom=prev_atom,
            parent_chain_idx=index if ctx.chain_count == 1 else index % ctx.chain_count,
        )
        _add_directives(sub, item.items)


def _default_directives(ctx: _ListContext) -> list[Arg]:
    parent = ctx.parent
    if parent is None:
        return []
    top_level = parent.parent is None and parent.parent_chain_idx == 0
    if ctx.reply_name in (b"list", b"lsub"):
        if top_level and ctx.parent_chain_idx == 1:
            return [_directive(b"$!unordered")]  # list|lsub (flags) sep mailbox
    elif ctx.reply_name == b"status":
        if top_level and ctx.parent_chain_idx == 2:
            return [_directive(b"$!unordered=2")]  # status <mailbox> (items)
    elif ctx.reply_name == b"fetch":
        if top_level and ctx.parent_chain_idx == 2:
            return [_directive(b"$!unordered=2")]  # <seq> fetch (items)
        grand = parent.parent
        if (
            grand is not None
            and grand.parent is None
            and grand.parent_chain_idx == 0
            and parent.parent_chain_idx == 2
            and ctx.prev_atom == b"flags"
        ):  # <seq> fetch (flags (...)): imaptest inserts these in this order
            return [
                _directive(b"$!ignore=$HasNoAttachment"),
                _directive(b"$!ignore=$HasAttachment"),
                _directive(b"$!ignore=\\recent"),
                _directive(b"$!noextra"),
                _directive(b"$!unordered"),
            ]
    return []


def load_script(path: Path) -> Script:
    """Parse an imaptest script file (its mbox is `<path>.mbox` or default.mbox beside it)."""
    own_mbox = path.with_name(path.name + ".mbox")
    script = Script(
        path=path, mbox_path=own_mbox if own_mbox.exists() else path.with_name(DEFAULT_MBOX)
    )
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        raise ScriptError(f"{path}: Last line doesn't end with LF")
    parser = _Parser(script)
    header = True
    multiline: bytearray | None = None
    binary = False
    start_pos = last_line_end = start_linenum = 0
    for linenum, raw in enumerate(data.split(b"\n")[:-1], start=1):
        line = raw
        if multiline is not None:
            if not raw.startswith(b"}}}"):
                multiline += raw
                last_line_end = len(multiline)
                multiline += b"\n" if binary else b"\r\n"
                continue
            del multiline[last_line_end:]
            rest = raw[3:]
            size = len(multiline) - start_pos
            multiline[start_pos:start_pos] = (b"~" if binary else b"") + b"{%d}\r\n" % size
            if rest.endswith(b"{{{"):
                binary = rest.endswith(b"~{{{")
                multiline += rest[: -4 if binary else -3]
                start_pos = last_line_end = len(multiline)
                continue
            line = bytes(multiline + rest)
            multiline = None
        else:
            start_linenum = linenum
            if not raw:
                header = False
                continue
            if raw.startswith(b"#"):
                continue
            if raw.endswith(b"{{{"):
                binary = raw.endswith(b"~{{{")
                multiline = bytearray(raw[: -4 if binary else -3])
                start_pos = last_line_end = len(multiline)
                continue
        try:
            if header:
                parser.header_line(line)
            else:
                parser.command_line(start_linenum, line)
        except ScriptError as exc:
            raise ScriptError(f"{path} line {linenum}: {exc}") from None
    if multiline is not None:
        raise ScriptError(f"{path}: Multiline reply at line {start_linenum} not ended")
    if not script.groups:
        raise ScriptError(f"{path}: No commands in file")
    if script.groups[-1].replies_pending > 0:
        raise ScriptError(f"{path}: Missing reply from previous command")
    if parser.ifenv:
        raise ScriptError(f"{path}: !ifenv at line {parser.ifenv[0][0]} not closed with !endif")
    _add_logout(script)
    return script


def _add_logout(script: Script) -> None:
    """imaptest ends every script with LOGOUT on connection 1 unless it logs out itself."""
    for group in script.groups:
        for command in group.commands:
            if command.command.lower() == b"logout" or group.have_bye:
                return
    logout = ScriptCommand(0, 0, b"logout", [Arg(Kind.ATOM, b"ok")])
    script.groups.append(CommandGroup(connection=0, commands=[logout]))


def script_paths(directory: Path) -> list[Path]:
    """The scripts of a test directory, sorted (skipping .mbox files, dot files and dirs)."""
    return sorted(
        path
        for path in directory.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix != ".mbox"
    )


_FROM_LINE = re.compile(
    rb"From \S+ +[A-Za-z]{3} ([A-Za-z]{3}) +(\d{1,2}) (\d\d):(\d\d)(?::(\d\d))?"
    rb" (?:([+-]\d{4}) )?(\d{4})(?: ([+-]\d{4}))?"
)
_MONTHS = [
    b"jan",
    b"feb",
    b"mar",
    b"apr",
    b"may",
    b"jun",
    b"jul",
    b"aug",
    b"sep",
    b"oct",
    b"nov",
    b"dec",
]


@dataclass(frozen=True)
class MboxMessage:
    """One message of an mbox: CRLF-terminated lines and its From_ line as an IMAP date-time."""

    data: bytes
    internal_date: str


def _internal_date(match: re.Match[bytes]) -> str | None:
    month = match.group(1).lower()
    if month not in _MONTHS:
        return None
    day, hour, minute = int(match.group(2)), int(match.group(3)), int(match.group(4))
    second, year = int(match.group(5) or b"0"), int(match.group(7))
    zone = match.group(6) or match.group(8)
    if zone is None:  # no zone: the local time zone, like mbox_from_parse()
        stamp = time.mktime((year, _MONTHS.index(month) + 1, day, hour, minute, second, 0, 0, -1))
        offset = time.localtime(stamp).tm_gmtoff // 60
        sign = "+" if offset >= 0 else "-"
        zone = f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}".encode()
    name = month.decode().capitalize()
    return f"{day:02d}-{name}-{year:04d} {hour:02d}:{minute:02d}:{second:02d} {zone.decode()}"


def load_mbox(path: Path) -> list[MboxMessage]:
    """Split an mbox the way imaptest's mbox source does (no >From unescaping)."""
    messages: list[MboxMessage] = []
    lines: list[bytes] | None = None
    date = ""
    for raw in path.read_bytes().split(b"\n"):
        line = raw.removesuffix(b"\r")
        match = _FROM_LINE.match(line)
        stamp = _internal_date(match) if match else None
        if stamp is not None and (lines is None or lines):
            if lines:
                messages.append(MboxMessage(b"".join(x + b"\r\n" for x in lines), date))
            lines, date = [], stamp
            continue
        if lines is None:
            raise ScriptError(f"{path}: Not a valid mbox file")
        lines.append(line)
    if lines is not None and lines and lines[-1] == b"":
        lines.pop()  # the split() artefact after the final LF
    if not lines:
        raise ScriptError(f"{path}: mbox file ends with From-line")
    messages.append(MboxMessage(b"".join(x + b"\r\n" for x in lines), date))
    return messages
