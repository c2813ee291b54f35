"""Lexer and parser of the Sieve language (RFC 5228 §8): script text → a tree of commands.

One pass over the text, no backtracking and no regular expressions: every character is looked
at a bounded number of times, so time is linear in the script's size. Memory is bounded by the
script size limit, the nesting limit (blocks and tests together) and the string-list limit.
Strings are kept raw here (escapes removed, dot-stuffing undone); encoded-character and
variables are applied by the validator and the interpreter, which know what was required.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postroom.proto.sieve.errors import SieveError

MAX_SCRIPT_BYTES = 1 << 20  # scripts larger than 1 MiB are refused
MAX_NESTING = 32  # blocks and tests nested deeper than this are refused
MAX_LIST_ITEMS = 1024  # strings in one string list, tests in one test list, arguments
MAX_NUMBER = (1 << 63) - 1  # numbers (after the K/M/G multiplier) must fit
_QUANTIFIERS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}  # RFC 5228 §2.4.1


@dataclass(frozen=True, slots=True)
class Tag:
    name: str  # without the colon, lower case
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Number:
    value: int
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class StringList:
    values: tuple[str, ...]
    is_list: bool  # written with brackets (a one-string list is still a list)
    line: int
    column: int


Argument = Tag | Number | StringList


@dataclass(slots=True)
class Test:
    name: str  # lower case
    arguments: list[Argument]
    tests: list[Test]
    line: int
    column: int
    test_list: bool = False  # written as "( test, ... )"


@dataclass(slots=True)
class Command:
    name: str  # lower case
    arguments: list[Argument]
    tests: list[Test]
    block: list[Command] | None
    line: int
    column: int
    test_list: bool = False
    extra: dict[str, object] = field(default_factory=dict)


# Token kinds
_IDENT, _TAG, _NUM, _STR, _MSTR, _SPECIAL, _EOF = range(7)


@dataclass(slots=True)
class _Token:
    kind: int
    text: str
    value: int
    line: int
    column: int


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.line_start = 0

    def error(self, message: str, pos: int | None = None) -> SieveError:
        p = self.pos if pos is None else pos
        return SieveError(self.line, p - self.line_start + 1, message)

    def _newline_at(self, pos: int) -> None:
        self.line += 1
        self.line_start = pos + 1

    def _skip_space(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c == "\n":
                self._newline_at(self.pos)
                self.pos += 1
            elif c in " \t\r":
                self.pos += 1
            elif c == "#":  # hash-comment to the end of the line (RFC 5228 §2.3)
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            elif c == "/" and text.startswith("/*", self.pos):  # bracket-comment
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unterminated comment")
                for i in range(self.pos, end):
                    if text[i] == "\n":
                        self._newline_at(i)
                self.pos = end + 2
            else:
                return

    def next(self) -> _Token:
        self._skip_space()
        text, n = self.text, len(self.text)
        start = self.pos
        line, column = self.line, start - self.line_start + 1
        if start >= n:
            return _Token(_EOF, "", 0, line, column)
        c = text[start]
        if c in "[](){},;":
            self.pos += 1
            return _Token(_SPECIAL, c, 0, line, column)
        if c == ":":
            end = self._identifier_end(start + 1)
            if end == start + 1:
                raise self.error("a ':' must be followed by a tag name")
            self.pos = end
            return _Token(_TAG, text[start + 1 : end].lower(), 0, line, column)
        if c.isascii() and c.isdigit():
            end = start
            while end < n and text[end].isascii() and text[end].isdigit():
                end += 1
            if end - start > 20:
                raise self.error("number too large")
            value = int(text[start:end])
            if end < n and text[end].upper() in _QUANTIFIERS:
                value *= _QUANTIFIERS[text[end].upper()]
                end += 1
            if value > MAX_NUMBER:
                raise self.error("number too large")
            if end < n and (text[end].isalnum() or text[end] == "_"):
                raise self.error(f"unexpected character {text[end]!r} after a number", end)
            self.pos = end
            return _Token(_NUM, text[start:end], value, line, column)
        if c == '"':
            return self._quoted(line, column)
        if c.isascii() and (c.isalpha() or c == "_"):
            end = self._identifier_end(start)
            word = text[start:end]
            if word.lower() == "text" and end < n and text[end] == ":":
                self.pos = end + 1
                return self._multiline(line, column)
            self.pos = end
            return _Token(_IDENT, word.lower(), 0, line, column)
        raise self.error(f"unexpected character {c!r}")

    def _identifier_end(self, pos: int) -> int:
        text, n = self.text, len(self.text)
        if pos < n and text[pos].isascii() and (text[pos].isalpha() or text[pos] == "_"):
            pos += 1
            while pos < n and text[pos].isascii() and (text[pos].isalnum() or text[pos] == "_"):
                pos += 1
        return pos

    def _quoted(self, line: int, column: int) -> _Token:
        # RFC 5228 §2.4.2: "\" escapes the next character; undefined escapes lose the backslash.
        text, n = self.text, len(self.text)
        out: list[str] = []
        pos = self.pos + 1
        chunk = pos
        while True:
            if pos >= n:
                raise SieveError(line, column, "unterminated string")
            c = text[pos]
            if c == '"':
                out.append(text[chunk:pos])
                self.pos = pos + 1
                return _Token(_STR, "".join(out), 0, line, column)
            if c == "\\":
                out.append(text[chunk:pos])
                if pos + 1 >= n:
                    raise SieveError(line, column, "unterminated string")
                out.append(text[pos + 1])
                if text[pos + 1] == "\n":
                    self._newline_at(pos + 1)
                pos += 2
                chunk = pos
                continue
            if c == "\n":
                self._newline_at(pos)
            pos += 1

    def _multiline(self, line: int, column: int) -> _Token:
        # RFC 5228 §2.4.2: "text:" [spaces] (hash-comment / CRLF), lines, "." CRLF.
        text, n = self.text, len(self.text)
        pos = self.pos
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos < n and text[pos] == "#":
            pos = text.find("\n", pos)
            if pos < 0:
                raise SieveError(line, column, "unterminated multi-line string")
        elif text.startswith("\r\n", pos):
            pos += 1
        if pos >= n or text[pos] != "\n":
            raise SieveError(line, column, "'text:' must be followed by the end of the line")
        self._newline_at(pos)
        pos += 1
        lines: list[str] = []
        while True:
            end = text.find("\n", pos)
            if end < 0:
                raise SieveError(line, column, "unterminated multi-line string")
            content = text[pos:end]
            if content.endswith("\r"):
                content = content[:-1]
            self._newline_at(end)
            pos = end + 1
            if content == ".":
                break
            if content.startswith(".."):  # dot-stuffing
                content = content[1:]
            lines.append(content + "\r\n")
        self.pos = pos
        return _Token(_MSTR, "".join(lines), 0, line, column)


class _Parser:
    def __init__(self, text: str) -> None:
        self.lexer = _Lexer(text)
        self.token = self.lexer.next()
        self.depth = 0

    def advance(self) -> _Token:
        current = self.token
        self.token = self.lexer.next()
        return current

    def fail(self, message: str, token: _Token | None = None) -> SieveError:
        t = token or self.token
        return SieveError(t.line, t.column, message)

    def describe(self, token: _Token) -> str:
        if token.kind == _EOF:
            return "end of script"
        if token.kind in (_STR, _MSTR):
            return "a string"
        return repr(token.text if token.kind != _TAG else ":" + token.text)

    def is_special(self, char: str) -> bool:
        return self.token.kind == _SPECIAL and self.token.text == char

    def expect(self, char: str) -> None:
        if not self.is_special(char):
            raise self.fail(f"expected '{char}' but found {self.describe(self.token)}")
        self.advance()

    def enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.fail(f"nesting deeper than {MAX_NESTING} levels", token)

    def commands(self, closing: bool) -> list[Command]:
        result: list[Command] = []
        while True:
            if self.token.kind == _EOF:
                if closing:
                    raise self.fail("missing '}' at the end of a block")
                return result
            if closing and self.is_special("}"):
                self.advance()
                return result
            result.append(self.command())

    def command(self) -> Command:
        token = self.token
        if token.kind != _IDENT:
            raise self.fail(f"expected a command but found {self.describe(token)}")
        self.advance()
        arguments, tests, test_list = self.arguments()
        command = Command(token.text, arguments, tests, None, token.line, token.column, test_list)
        if self.is_special(";"):
            self.advance()
        elif self.is_special("{"):
            self.enter(self.token)
            self.advance()
            command.block = self.commands(closing=True)
            self.depth -= 1
        else:
            raise self.fail(f"expected ';' or '{{' but found {self.describe(self.token)}")
        return command

    def arguments(self) -> tuple[list[Argument], list[Test], bool]:
        arguments: list[Argument] = []
        while True:
            token = self.token
            if len(arguments) > MAX_LIST_ITEMS:
                raise self.fail("too many arguments")
            if token.kind == _TAG:
                self.advance()
                arguments.append(Tag(token.text, token.line, token.column))
            elif token.kind == _NUM:
                self.advance()
                arguments.append(Number(token.value, token.line, token.column))
            elif token.kind in (_STR, _MSTR):
                self.advance()
                arguments.append(StringList((token.text,), False, token.line, token.column))
            elif self.is_special("["):
                arguments.append(self.string_list())
            else:
                break
        if self.token.kind == _IDENT:
            return arguments, [self.test()], False
        if self.is_special("("):
            return arguments, self.test_list(), True
        return arguments, [], False

    def string_list(self) -> StringList:
        start = self.advance()
        values: list[str] = []
        while True:
            if self.token.kind not in (_STR, _MSTR):
                raise self.fail(f"expected a string but found {self.describe(self.token)}")
            values.append(self.advance().text)
            if len(values) > MAX_LIST_ITEMS:
                raise self.fail(f"more than {MAX_LIST_ITEMS} strings in a list", start)
            if self.is_special("]"):
                self.advance()
                return StringList(tuple(values), True, start.line, start.column)
            self.expect(",")

    def test_list(self) -> list[Test]:
        start = self.token
        self.enter(start)
        self.advance()
        tests = [self.test()]
        while self.is_special(","):
            self.advance()
            tests.append(self.test())
            if len(tests) > MAX_LIST_ITEMS:
                raise self.fail(f"more than {MAX_LIST_ITEMS} tests in a list", start)
        self.expect(")")
        self.depth -= 1
        return tests

    def test(self) -> Test:
        token = self.token
        if token.kind != _IDENT:
            raise self.fail(f"expected a test but found {self.describe(token)}")
        self.enter(token)
        self.advance()
        arguments, tests, test_list = self.arguments()
        self.depth -= 1
        return Test(token.text, arguments, tests, token.line, token.column, test_list)


def parse(source: str | bytes) -> list[Command]:
    """The commands of a script (RFC 5228 §8.2), or SieveError with line:column."""
    if isinstance(source, bytes):
        data: bytes = source
        if len(data) > MAX_SCRIPT_BYTES:
            raise SieveError(0, 0, f"script larger than {MAX_SCRIPT_BYTES} bytes")
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            prefix = data[: exc.start]
            line = prefix.count(b"\n") + 1
            column = exc.start - (prefix.rfind(b"\n") + 1) + 1
            raise SieveError(line, column, "script is not valid UTF-8") from None
    elif len(source) > MAX_SCRIPT_BYTES:  # characters, a cheap bound before encoding
        raise SieveError(0, 0, f"script larger than {MAX_SCRIPT_BYTES} bytes")
    if "\x00" in source:
        index = source.index("\x00")
        line = source.count("\n", 0, index) + 1
        raise SieveError(line, index - (source.rfind("\n", 0, index) + 1) + 1, "NUL in script")
    return _Parser(source).commands(closing=False)
