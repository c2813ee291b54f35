"""The ManageSieve wire format (RFC 5804 §4): commands read from bytes, responses rendered.

A command is an atom (its name) and arguments — quoted strings, literals, numbers — separated by
spaces and ended by CRLF. A literal is announced at the end of a line as `{n+}` (RFC 5804
§4 literal-c2s, non-synchronizing: its n octets follow at once) or `{n}` (synchronizing, as in
IMAP: the client waits for a "+" continuation before sending them). Everything is bounded: each
line segment by `max_line`, each literal by `max_literal` — checked when it is announced, before
any of it is read — and the whole command by `max_command`. An oversized non-synchronizing
literal is skipped as it arrives (never held), so the session stays in step and can answer NO.
The tokenizer walks each line once, left to right, without regular expressions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from postroom.proto.lines import LineProblem, LineSplitter

ArgKind = Literal["atom", "string", "number"]
MAX_NUMBER = 0xFFFFFFFF  # RFC 5804 §4: number = 1*DIGIT, a 32-bit unsigned value
_MAX_DIGITS = 10


@dataclass(frozen=True, slots=True)
class Arg:
    kind: ArgKind
    text: str  # the atom, the string's value, or the number's digits

    @property
    def number(self) -> int:
        return int(self.text)


@dataclass(frozen=True, slots=True)
class Problem:
    """A command that cannot be taken: answer NO (`code`, `text`), or BYE and close when
    `fatal` (the stream can no longer be split into commands)."""

    text: str
    code: str | None = None
    fatal: bool = False


class Continue:
    """A synchronizing literal was announced and accepted: send the continuation, read on."""


CONTINUE = Continue()


class SyntaxProblem(ValueError):
    pass


def _literal_spec(inner: str) -> tuple[int, bool]:
    """`n+` or `n` from inside the braces: (size, synchronizing)."""
    sync = not inner.endswith("+")
    digits = inner if sync else inner[:-1]
    if not digits or len(digits) > _MAX_DIGITS or not (digits.isascii() and digits.isdigit()):
        raise SyntaxProblem("bad literal size")
    size = int(digits)
    if size > MAX_NUMBER:
        raise SyntaxProblem("literal size out of range")
    return size, sync


def trailing_literal(line: str) -> tuple[int, bool] | None:
    """The literal a line announces at its end, if any (to stay in step after an error)."""
    if not line.endswith("}"):
        return None
    start = line.rfind("{")
    if start < 0:
        return None
    try:
        return _literal_spec(line[start + 1 : -1])
    except SyntaxProblem:
        return None


def _atom_char(ch: str) -> bool:
    # RFC 5804 §4 (after RFC 3501 ATOM-CHAR): printable ASCII but the specials.
    return "!" <= ch <= "~" and ch not in '"{}()%*\\'


def tokenize(line: str) -> tuple[list[Arg], tuple[int, bool] | None]:
    """The arguments of one line segment and the literal announced at its end (or None)."""
    args: list[Arg] = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch == " ":
            i += 1
            continue
        if ch == '"':
            # RFC 5804 §4: quoted = DQUOTE *QUOTED-CHAR DQUOTE; only '"' and "\" are escaped.
            chars: list[str] = []
            j = i + 1
            while True:
                if j >= n:
                    raise SyntaxProblem("unterminated quoted string")
                c = line[j]
                if c == "\\":
                    if j + 1 >= n or line[j + 1] not in '"\\':
                        raise SyntaxProblem("bad escape in a quoted string")
                    chars.append(line[j + 1])
                    j += 2
                    continue
                if c == '"':
                    break
                if (c < " " and c != "\t") or c == "\x7f":
                    raise SyntaxProblem("control character in a quoted string")
                chars.append(c)
                j += 1
            args.append(Arg("string", "".join(chars)))
            i = j + 1
            if i < n and line[i] != " ":
                raise SyntaxProblem("no space after a quoted string")
            continue
        if ch == "{":
            end = line.find("}", i)
            if end != n - 1:
                raise SyntaxProblem("a literal must end its line")
            return args, _literal_spec(line[i + 1 : end])
        j = i
        while j < n and line[j] != " ":
            if not _atom_char(line[j]):
                raise SyntaxProblem(f"unexpected character {line[j]!r}")
            j += 1
        word = line[i:j]
        if word.isascii() and word.isdigit():
            if len(word) > _MAX_DIGITS or int(word) > MAX_NUMBER:
                raise SyntaxProblem("number out of range")
            args.append(Arg("number", word))
        else:
            args.append(Arg("atom", word))
        i = j
    return args, None


class CommandReader:
    """Splits the input into commands (lists of `Arg`), bounded as the module says."""

    def __init__(self, max_line: int, max_literal: int, max_command: int) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_command = max_command
        self._lines = LineSplitter()
        self._reset()

    def _reset(self) -> None:
        self._args: list[Arg] = []
        self._literal: int | None = None  # octets of an accepted literal still to come
        self._skip = 0  # octets of a refused literal still to drop
        self._problem: Problem | None = None  # the command is refused; read to its end
        self._size = 0
        self._told = False  # the problem was answered already (an oversized literal)

    @property
    def mid_command(self) -> bool:
        """Part of a command is in, not its end (the driver times it)."""
        return (
            bool(self._args)
            or self._literal is not None
            or self._skip > 0
            or (self._problem is not None or self._lines.skipping)
        )

    def abandon(self) -> None:
        """Forget a half-read command (at the TLS upgrade, or when the session ends)."""
        self._lines = LineSplitter()
        self._reset()

    def take(self, buf: bytearray) -> list[Arg] | Problem | Continue | None:
        """The next whole command from `buf` (consumed), a problem, CONTINUE, or None when
        more input is needed."""
        while True:
            if self._skip:
                dropped = min(self._skip, len(buf))
                del buf[:dropped]
                self._skip -= dropped
                if self._skip:
                    return None
                continue
            if self._literal is not None:
                if len(buf) < self._literal:
                    return None
                data = bytes(buf[: self._literal])
                del buf[: self._literal]
                self._literal = None
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    self._refuse(Problem("A literal is not valid UTF-8"))
                    continue
                if "\0" in text:
                    self._refuse(Problem("A literal holds a NUL character"))
                    continue
                if self._problem is None:
                    self._args.append(Arg("string", text))
                continue
            line = self._lines.take(buf, self.max_line)
            if line is None:
                return None
            if line is LineProblem.TOO_LONG:
                # Whatever a line that long announced is lost: the stream cannot be followed.
                self._reset()
                return Problem(f"Line longer than {self.max_line} octets", fatal=True)
            if line is LineProblem.BAD_ENCODING:
                self._refuse(Problem("Commands must be UTF-8 without NUL"))
                finished = self._finish()
                if finished is not None:
                    return finished
                continue
            assert isinstance(line, str)
            self._size += len(line) + 2
            try:
                args, literal = tokenize(line)
            except SyntaxProblem as error:
                self._refuse(Problem(f"Syntax error: {error}"))
                args, literal = [], trailing_literal(line)
            if self._problem is None:
                self._args.extend(args)
            if literal is None:
                finished = self._finish()
                if finished is not None:
                    return finished
                continue
            size, sync = literal
            self._size += size
            if (size > self.max_literal or self._size > self.max_command) and not self._told:
                # Refused at once, before a byte of it is read (RFC 5804 §2.6 QUOTA/MAXSIZE);
                # the rest of the command is dropped as it comes, and not answered again.
                problem = Problem(f"Literal of {size} octets is too large", "QUOTA/MAXSIZE")
                self._problem = problem
                self._args = []
                if sync:  # no continuation follows, so the client sends no literal
                    self._reset()
                else:
                    self._told = True
                    self._skip = size
                return problem
            if self._problem is not None:
                if sync:
                    finished = self._finish()  # no continuation: the client sends no literal
                    if finished is not None:
                        return finished
                    continue
                self._skip = size
                continue
            self._literal = size
            if sync:
                return CONTINUE

    def _refuse(self, problem: Problem) -> None:
        if self._problem is None:
            self._problem = problem
        self._args = []

    def _finish(self) -> list[Arg] | Problem | None:
        """The command that ended: its arguments or its problem; None when its problem was
        answered already."""
        result: list[Arg] | Problem | None = self._args
        if self._problem is not None:
            result = None if self._told else self._problem
        self._reset()
        return result


# --- responses (RFC 5804 §4 response-ok / response-nobye) --------------------------------------


def string(text: str) -> str:
    """A string as the server sends it: quoted when it can be, else a literal (RFC 5804 §4)."""
    if len(text) <= 1024 and "\r" not in text and "\n" not in text and "\0" not in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{{{len(text.encode('utf-8'))}}}\r\n{text}"


@dataclass(frozen=True, slots=True)
class Response:
    """OK, NO or BYE, an optional response code (with its argument) and a human text."""

    status: Literal["OK", "NO", "BYE"]
    text: str = ""
    code: str | None = None
    code_arg: str | None = None  # TAG and SASL carry a string (RFC 5804 §4 resp-code)

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    def to_bytes(self) -> bytes:
        parts: list[str] = [self.status]
        if self.code:
            arg = f" {string(self.code_arg)}" if self.code_arg is not None else ""
            parts.append(f"({self.code}{arg})")
        if self.text:
            parts.append(string(self.text))
        return (" ".join(parts) + "\r\n").encode("utf-8")
