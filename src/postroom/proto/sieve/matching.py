"""Comparators (RFC 4790 via RFC 5228 §2.7.3), match types :is :contains :matches (RFC 5228
§2.7.1), :value and :count (RFC 5231), :regex (draft-ietf-sieve-regex), with the match
variables they set (RFC 5229 §3.2).

:matches is a glob: the pattern is split at "*" into segments matched in order, each as far
left as it can go, so each "*" takes as little as possible and the last takes the rest; this
is linear per segment position and never backtracks more than one segment at a time.

:regex uses Python's `re` on script-supplied patterns only. Sieve regexes are POSIX extended
regular expressions; the POSIX classes ([[:alpha:]] …) are translated, back-references (not
POSIX ERE) and patterns with a quantified group that itself holds a quantifier (the classic
catastrophic shapes such as (a+)+ or (a|aa)*) are refused at compile time, and the subject is
cut to MAX_REGEX_SUBJECT characters, so the worst case stays bounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_REGEX_SUBJECT = 8192
MAX_REGEX_PATTERN = 1024


class RegexRefused(ValueError):
    """A :regex pattern this engine will not run (invalid, or a catastrophic shape)."""


def fold(comparator: str, value: str) -> str:
    if comparator == "i;ascii-casemap":
        # RFC 4790 §9.2: a-z are mapped to A-Z, nothing else changes (lengths are kept)
        return value.upper() if value.isascii() else "".join(
            chr(ord(c) - 32) if "a" <= c <= "z" else c for c in value
        )
    return value


def _numeric(value: str) -> int | None:
    # RFC 4790 §9.1: the leading digits; none means "positive infinity" (None here)
    end = 0
    while end < len(value) and value[end].isascii() and value[end].isdigit():
        end += 1
    return int(value[:end]) if end else None


def compare(comparator: str, a: str, b: str) -> int:
    """-1, 0 or 1 ordering a against b under the comparator."""
    if comparator == "i;ascii-numeric":
        na, nb = _numeric(a), _numeric(b)
        if na is None or nb is None:
            if na is None and nb is None:
                return 0
            return 1 if na is None else -1
        return (na > nb) - (na < nb)
    fa, fb = fold(comparator, a), fold(comparator, b)
    if comparator == "i;octet":
        ba, bb = a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
        return (ba > bb) - (ba < bb)
    return (fa > fb) - (fa < fb)


def relational(op: str, order: int) -> bool:
    return {
        "gt": order > 0, "ge": order >= 0, "lt": order < 0, "le": order <= 0,
        "eq": order == 0, "ne": order != 0,
    }[op]


def _compile_glob(pattern: str) -> list[list[str | None]]:
    """Segments between unescaped "*": each a list of characters, None standing for "?"."""
    segments: list[list[str | None]] = [[]]
    escape = False
    for c in pattern:
        if escape:
            segments[-1].append(c)
            escape = False
        elif c == "\\":
            escape = True
        elif c == "*":
            segments.append([])
        elif c == "?":
            segments[-1].append(None)
        else:
            segments[-1].append(c)
    return segments


def _segment_regex(segment: list[str | None]) -> re.Pattern[str]:
    """A segment as a regular expression of literals and "." only: no quantifier, so each
    position is tried in time linear in the segment, in C."""
    return re.compile("".join("." if c is None else re.escape(c) for c in segment), re.DOTALL)


def glob_match(pattern: str, text: str, comparator: str) -> list[str] | None:
    """The values of the wildcards ("*" and "?", in order) if `text` matches, else None."""
    folded = fold(comparator, text)
    segments = _compile_glob(fold(comparator, pattern))
    captures: list[str] = []

    def questions(segment: list[str | None], pos: int) -> None:
        for offset, c in enumerate(segment):
            if c is None:
                captures.append(text[pos + offset])

    first = segments[0]
    if len(segments) == 1:
        if len(first) != len(folded) or not _segment_regex(first).match(folded):
            return None
        questions(first, 0)
        return captures
    if len(first) > len(folded) or not _segment_regex(first).match(folded):
        return None
    questions(first, 0)
    pos = len(first)
    last = segments[-1]
    tail_start = len(folded) - len(last)
    if tail_start < pos:
        return None
    for segment in segments[1:-1]:
        # Leftmost placement: each "*" takes as little as it can (as Pigeonhole does)
        found = _segment_regex(segment).search(folded, pos, tail_start)
        if found is None:
            return None
        captures.append(text[pos : found.start()])
        questions(segment, found.start())
        pos = found.start() + len(segment)
    if not _segment_regex(last).match(folded, tail_start):
        return None
    captures.append(text[pos:tail_start])
    questions(last, tail_start)
    return captures


_POSIX_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\r\n\v\f", "blank": r" \t", "punct": r"!-/:-@\[-`{-~", "xdigit": "0-9A-Fa-f",
    "cntrl": r"\x00-\x1f\x7f", "print": r" -~", "graph": r"!-~",
}


def translate_regex(pattern: str) -> str:
    """A POSIX ERE as a Python pattern; RegexRefused for what we will not run."""
    if len(pattern) > MAX_REGEX_PATTERN:
        raise RegexRefused("regular expression too long")
    out: list[str] = []
    i = 0
    n = len(pattern)
    # Stack of groups: whether the group holds a quantifier
    groups: list[bool] = []
    last_group_quantified = False
    last_was_group_end = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 < n and pattern[i + 1].isdigit():
                raise RegexRefused("back-references are not allowed")
            out.append(pattern[i : i + 2])
            i += 2
            last_was_group_end = False
            continue
        if c == "[":
            end = i + 1
            if end < n and pattern[end] == "^":
                end += 1
            if end < n and pattern[end] == "]":
                end += 1
            while end < n and pattern[end] != "]":
                if pattern.startswith("[:", end):
                    close = pattern.find(":]", end + 2)
                    if close < 0:
                        raise RegexRefused("unterminated character class")
                    end = close + 2
                    continue
                end += 1
            if end >= n:
                raise RegexRefused("unterminated bracket expression")
            out.append("[" + "".join(_bracket_body(pattern[i + 1 : end])) + "]")
            i = end + 1
            last_was_group_end = False
            continue
        if c == "(":
            if pattern.startswith("(?", i):
                raise RegexRefused("'(?' is not POSIX")
            groups.append(False)
            out.append("(")
            i += 1
            last_was_group_end = False
            continue
        if c == ")":
            if not groups:
                raise RegexRefused("unbalanced parenthesis")
            last_group_quantified = groups.pop()
            if groups and last_group_quantified:
                groups[-1] = True
            out.append(")")
            i += 1
            last_was_group_end = True
            continue
        if c in "*+?{":
            if last_was_group_end and last_group_quantified and c != "?":
                raise RegexRefused("nested quantifiers may take exponential time")
            if last_was_group_end and c != "?" and _has_alternation_overlap(out):
                raise RegexRefused("quantified alternation may take exponential time")
            if groups:
                groups[-1] = True
            if c == "{":
                close = pattern.find("}", i)
                if close < 0:
                    raise RegexRefused("unterminated interval")
                out.append(pattern[i : close + 1])
                i = close + 1
            else:
                out.append(c)
                i += 1
            last_was_group_end = False
            continue
        out.append(c)
        i += 1
        last_was_group_end = False
    if groups:
        raise RegexRefused("unbalanced parenthesis")
    return "".join(out)


def _bracket_body(body: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(body):
        if body.startswith("[:", i):
            close = body.find(":]", i + 2)
            name = body[i + 2 : close]
            if close < 0 or name not in _POSIX_CLASSES:
                raise RegexRefused("bad character class")
            out.append(_POSIX_CLASSES[name])
            i = close + 2
            continue
        c = body[i]
        out.append("\\\\" if c == "\\" else ("\\[" if c == "[" else c))
        i += 1
    return out


def _has_alternation_overlap(out: list[str]) -> bool:
    """The group just closed at the end of `out` holds alternatives that may start alike (such
    as (a|aa)): quantifying it risks exponential backtracking, so it is refused. Alternatives
    starting with distinct literal characters, such as (foo|bar), are fine."""
    text = "".join(out)
    depth = 0
    start = -1
    for index in range(len(text) - 1, -1, -1):
        c = text[index]
        if c == ")" and (index == 0 or text[index - 1] != "\\"):
            depth += 1
        elif c == "(" and (index == 0 or text[index - 1] != "\\"):
            depth -= 1
            if depth == 0:
                start = index
                break
    if start < 0:
        return False
    inner = text[start + 1 : -1]
    alternatives: list[str] = []
    depth = 0
    current: list[str] = []
    for c in inner:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if c == "|" and depth == 0:
            alternatives.append("".join(current))
            current = []
        else:
            current.append(c)
    alternatives.append("".join(current))
    if len(alternatives) < 2:
        return False
    firsts = [a[:1] for a in alternatives]
    if any(not f or not (f.isalnum() or f in " -_@,;:'\"/=") for f in firsts):
        return True
    return len({f.lower() for f in firsts}) != len(firsts)


def compile_regex(pattern: str, comparator: str) -> re.Pattern[str]:
    try:
        translated = translate_regex(pattern)
        flags = re.IGNORECASE | re.ASCII if comparator == "i;ascii-casemap" else 0
        return re.compile(translated, flags | re.DOTALL)
    except re.error as exc:
        raise RegexRefused(str(exc)) from None


def regex_match(compiled: re.Pattern[str], text: str) -> list[str] | None:
    """Groups 0..n of the first match (RFC: ${0} is the whole match), or None."""
    match = compiled.search(text[:MAX_REGEX_SUBJECT])
    if match is None:
        return None
    return [match.group(0)] + [g or "" for g in match.groups()]


def count_values(values: Iterable[str]) -> int:
    return sum(1 for _ in values)
