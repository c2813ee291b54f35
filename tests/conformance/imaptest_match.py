"""imaptest's reply matching (src/test-exec.c): variables, `$!` list directives, prefixes.

`Matcher.match_args` compares an expected argument list from a script with a server's reply the
way imaptest does: atoms, strings and literals compare case-insensitively as C strings (a NUL
ends them), an unset `$var` captures the input up to where the rest of the pattern continues,
`$` matches any argument or list, `$]` skips to the end of a response code, `${case:x}` is
case-sensitive, `$n` is message n's current sequence number, and lists honour `$!unordered[=n]`,
`$!ordered`, `$!noextra`, `$!extra`, `$!ignore=x` and `$!ban=x`.
"""

from __future__ import annotations

from .imap_args import Arg, Kind

MATCHED = -1  # "everything matched" (imaptest's UINT_MAX)


class UninitializedVariable(ValueError):
    """A command uses a `$variable` that no reply has set yet."""


class Matcher:
    """Variables and sequence bookkeeping shared by all matches of one script run."""

    def __init__(self) -> None:
        self.variables: dict[bytes, bytes] = {}
        self.added: list[bytes] = []  # variables captured by the match in progress
        self.seqmap: list[int] = []  # initial sequence -> current sequence (0 = expunged)
        self.highest_modseq_idx = 0
        self.highest_modseq = 0

    def revert_added(self) -> None:
        """Forget the variables captured by a match that failed."""
        for name in self.added:
            self.variables.pop(name, None)
        self.added = []

    def start_group(self, message_count: int) -> None:
        self.seqmap = list(range(1, message_count + 1))

    def expunged(self, seq: int) -> None:
        """Update `$n` sequence mapping after `* seq EXPUNGE`."""
        if seq > len(self.seqmap):
            return
        for index in range(seq - 1, len(self.seqmap)):
            if self.seqmap[index] == seq:
                self.seqmap[index] = 0
            elif self.seqmap[index] > seq:
                self.seqmap[index] -= 1

    def match_args(
        self, match: list[Arg], args: list[Arg], prefix: bool, limit: int | None = None
    ) -> int:
        """imaptest's test_imap_match_args: MATCHED, or how many arguments matched first."""
        count = 0
        pos = 0
        stop = len(match) if limit is None else min(len(match), limit)
        for mindex in range(stop):
            expected = match[mindex]
            actual = args[pos] if pos < len(args) else None
            if expected.kind is Kind.NIL:
                if actual is None or actual.kind is not Kind.NIL:
                    return count
            elif expected.kind is Kind.LIST:
                if actual is None or actual.kind is not Kind.LIST:
                    return count
                sub = self.match_list(expected.items, actual.items)
                if sub != MATCHED:
                    return count + sub
            else:
                pattern = cstr(expected.text)
                if pattern == b"$" and actual is not None and actual.kind is Kind.LIST:
                    pass  # "$" also skips over a list
                elif pattern == b"$]":
                    # "$]" skips atoms up to and including one containing ']'
                    while (
                        pos < len(args)
                        and (text := args[pos].atom()) is not None
                        and b"]" not in text
                    ):
                        pos += 1
                else:
                    value = actual.astring() if actual is not None else None
                    if value is None:
                        return count
                    value = cstr(value)
                    expanded = self.expand_input(pattern, value)
                    if expanded is None:
                        return count
                    wanted, icase = expanded
                    last = mindex == len(match) - 1
                    got = value[: len(wanted)] if prefix and last else value
                    if icase:
                        if got.upper() != wanted.upper():
                            return count
                    elif got != wanted:
                        return count
            pos += 1
            count += 1
        if prefix or pos >= len(args) or (limit is not None and stop == limit):
            return MATCHED
        return count

    def match_list(self, match: list[Arg], args: list[Arg]) -> int:
        """imaptest's test_imap_match_list: `$!` directives, then ordered or chained matching."""
        unordered = False
        chain = 1
        noextra: int | None = None
        ignores: list[bytes] = []
        bans: list[bytes] = []
        start = 0
        while start < len(match):
            text = match[start].atom()
            if text is None or not text.startswith(b"$!"):
                break
            body = text[2:]
            if body.startswith(b"unordered"):
                unordered = True
                if noextra is None:
                    noextra = 0
                if body[9:10] == b"=":
                    chain = int(body[10:]) if body[10:].isdigit() else 0
            elif body == b"ordered":
                unordered = False
            elif body == b"extra":
                noextra = 0
            elif body == b"noextra":
                noextra = 1
            elif body.startswith(b"ignore="):
                ignores.append(body[7:].lower())
            elif body.startswith(b"ban="):
                bans.append(body[4:].lower())
            start += 1
        match = match[start:]
        if not unordered:
            return self.match_args(match, args, prefix=False)
        if chain <= 0 or len(args) % chain != 0:
            return 0
        matched_at = [False] * len(args)
        count = 0
        for mindex in range(0, len(match), chain):
            for index in range(0, len(args), chain):
                if (
                    self.match_args(match[mindex:], args[index:], prefix=False, limit=chain)
                    == MATCHED
                ):
                    matched_at[index] = True
                    break
            else:
                return count
            count += 1
        extras = [
            cstr(text).lower()
            for index in range(0, len(args), chain)
            if not matched_at[index] and (text := args[index].astring()) is not None
        ]
        if noextra is None or noextra > 0:
            if any(extra not in ignores for extra in extras):
                return count
        elif bans and any(extra in bans for extra in extras):
            return count
        return MATCHED

    def relative_seq(self, seq: int) -> bytes:
        if seq == 0:
            return b"<zero seq>"
        if seq > len(self.seqmap):
            return b"<out of range>"
        if self.seqmap[seq - 1] == 0:
            return b"<expunged>"
        return str(self.seqmap[seq - 1]).encode()

    def expand_input(self, pattern: bytes, value: bytes) -> tuple[bytes, bool] | None:
        """imaptest's test_expand_input: expand `pattern` against `value`, capturing
        unset variables. Returns (expanded pattern, case-insensitive?) or None on mismatch."""
        icase = True
        out = bytearray()
        i = j = 0
        while i < len(pattern):
            if pattern[i] != ord("$") or pattern[i + 1 : i + 2] == b"$":
                if pattern[i] == ord("$"):
                    i += 1
                if _upper(pattern[i]) != _upper(_at(value, j)):
                    return None
                out.append(pattern[i])
                i += 1
                j += 1
                continue
            i += 1
            if pattern[i : i + 1] == b"{":
                close = pattern.find(b"}", i + 1)
                if close < 0:
                    return b"", icase
                name, i = pattern[i + 1 : close], close + 1
            else:
                end = i
                while end < len(pattern) and _is_var_char(pattern[end]):
                    end += 1
                name, i = pattern[i:end], end
            if _is_uint32(name):
                var = self.relative_seq(int(name))
            elif name.startswith(b"case:"):
                icase = False
                var = name[5:]
            else:
                known = self.variables.get(name) if name else None
                if known is not None:
                    var = known
                else:
                    captured = self._capture(name, pattern[i:], value, j)
                    if captured is None:
                        return None
                    var = captured
            out += var
            for byte in var:
                if _at(value, j) != byte:
                    return None
                j += 1
        return bytes(out), icase

    def _capture(self, name: bytes, rest: bytes, value: bytes, j: int) -> bytes | None:
        """Assign an unset variable: the input up to where the rest of the pattern begins."""
        icase = True
        if rest[:1] == b"$":
            expanded = self.expand_input(rest, value[j:])
            if expanded is None:
                return None
            rest, icase = expanded
        stop = rest[0] if rest else 0
        end = j
        while end < len(value) and (
            (_upper(value[end]) != _upper(stop)) if icase else (value[end] != stop)
        ):
            end += 1
        captured = value[j:end]
        if not name:
            return captured  # "$" matches without remembering
        if name.startswith(b"modseq") and _is_uint32(name[6:]):
            captured = self._modseq(int(name[6:]), captured)
            self.variables[name] = captured
            return captured
        self.variables[name] = captured
        self.added.append(name)
        return captured

    def _modseq(self, index: int, captured: bytes) -> bytes:
        if not captured.isdigit():
            return b"$modseq-not-number"
        if self.highest_modseq_idx > index:
            return b"$modseq-order-mismatch"
        value = int(captured)
        at_least = self.highest_modseq + (index - self.highest_modseq_idx)
        result = captured
        if value < at_least:
            result = b"$modseq-at-least-%d" % at_least
            value = at_least
        self.highest_modseq_idx, self.highest_modseq = index, value
        return result

    def expand_all(self, line: bytes, skip_uninitialized: bool) -> bytes:
        """imaptest's test_expand_all for command lines: `$$`, `$!directive`, `$var`, `$n`."""
        out = bytearray()
        i = 0
        while i < len(line):
            if line[i] != ord("$") or i == len(line) - 1:
                out.append(line[i])
                i += 1
                continue
            i += 1
            if line[i] == ord("$"):
                out.append(line[i])
                i += 1
                continue
            if line[i] == ord("!"):
                while i + 1 < len(line) and line[i + 1] != ord(" "):
                    i += 1
                i += 1
                continue
            if line[i] == ord("{"):
                close = line.find(b"}", i + 1)
                if close < 0:
                    raise UninitializedVariable("Missing '}'")
                name, i = line[i + 1 : close], close + 1
            else:
                end = i
                while end < len(line) and _is_var_char(line[end]):
                    end += 1
                name, i = line[i:end], end
            if _is_uint32(name):
                out += self.relative_seq(int(name))
                continue
            value = self.variables.get(name)
            if value is None:
                if not skip_uninitialized:
                    raise UninitializedVariable(f"Uninitialized variable: {name.decode('latin-1')}")
                value = b"$"
            out += value
        return bytes(out)


def cstr(text: bytes) -> bytes:
    """imaptest compares C strings: everything after a NUL byte is invisible."""
    return text.split(b"\0", 1)[0]


def _at(data: bytes, index: int) -> int:
    return data[index] if index < len(data) else 0


def _upper(byte: int) -> int:
    return byte - 32 if 0x61 <= byte <= 0x7A else byte


def _is_var_char(byte: int) -> bool:
    return chr(byte).isascii() and (chr(byte).isalnum() or byte == ord("_"))


def _is_uint32(text: bytes) -> bool:
    return text.isdigit() and int(text) <= 0xFFFFFFFF
