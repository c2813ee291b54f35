"""Which mailboxes a LIST or LSUB answers with, and with which attributes.

RFC 3501 §6.3.8/§6.3.9 (patterns with "*" and "%", LSUB's \\Noselect parents), RFC 5258
LIST-EXTENDED (SUBSCRIBED and RECURSIVEMATCH selection, RETURN (SUBSCRIBED CHILDREN), CHILDINFO),
RFC 3348 CHILDREN and RFC 6154 SPECIAL-USE. Pure: names in, `Listed` entries out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DELIMITER = "/"
# Characters in the reference and patterns of one LIST or LSUB, counted with the reference in
# front of every pattern: more is refused with BAD by the grammar.
MAX_PATTERNS = 1024


@dataclass(frozen=True, slots=True)
class Listed:
    name: str
    attributes: tuple[str, ...]
    childinfo: bool = False  # RFC 5258 §3.5: (CHILDINFO ("SUBSCRIBED"))


class Matcher:
    """Whether a name matches any of some LIST patterns, in time linear in the name.

    RFC 3501 §6.3.8: "*" matches zero or more characters, "%" the same but not the hierarchy
    delimiter. Runs of wildcards are collapsed first ("%*" and "**" are "*", "%%" is "%"), then
    the patterns run as one bit-parallel NFA: bit i of the state is "the first i tokens of a
    pattern matched so far", and each character of the name costs a few integer operations on
    that state, never a backtrack (O(len(name) * len(patterns) / word size)).
    """

    __slots__ = ("_accept", "_literal", "_percent", "_star", "_start", "_wild")

    def __init__(self, patterns: Iterable[str]) -> None:
        self._literal: dict[str, int] = {}  # character -> tokens that match it
        self._star = self._percent = self._start = self._accept = 0
        bit = 0
        for pattern in patterns:
            self._start |= 1 << bit
            # RFC 3501 §5.1: INBOX in any case.
            folded = 5 if pattern[:5].upper() == "INBOX" else 0
            for index, token in enumerate(collapse_wildcards(pattern)):
                mask = 1 << bit
                if token == "*":
                    self._star |= mask
                elif token == "%":
                    self._percent |= mask
                elif index < folded:
                    for variant in {token.upper(), token.lower()}:
                        self._literal[variant] = self._literal.get(variant, 0) | mask
                else:
                    self._literal[token] = self._literal.get(token, 0) | mask
                bit += 1
            self._accept |= 1 << bit  # all the pattern's tokens matched; leads nowhere
            bit += 1
        self._wild = self._star | self._percent
        self._start = self._close(self._start)

    def _close(self, state: int) -> int:
        # A wildcard may match nothing: being before it is being after it too. Collapsed
        # patterns never have two wildcards in a row, so one step is the whole closure.
        return state | (state & self._wild) << 1

    def __call__(self, name: str) -> bool:
        state = self._start
        literal, star, percent = self._literal, self._star, self._percent
        for char in name:
            moved = (state & literal.get(char, 0)) << 1 | state & star
            if char != DELIMITER:  # RFC 3501 §6.3.8: "%" stops at the hierarchy delimiter
                moved |= state & percent
            state = self._close(moved)
            if not state:
                return False
        return bool(state & self._accept)


def collapse_wildcards(pattern: str) -> str:
    """The same pattern with each run of wildcards as one: "*" if it holds a "*", else "%"."""
    out: list[str] = []
    for char in pattern:
        if char in "*%" and out and out[-1] in "*%":
            if char == "*":
                out[-1] = "*"
        else:
            out.append(char)
    return "".join(out)


def _order(name: str) -> tuple[bool, str]:
    return (name != "INBOX", name)


def _ancestors(name: str) -> Iterable[str]:
    parts = name.split(DELIMITER)
    for depth in range(1, len(parts)):
        yield DELIMITER.join(parts[:depth])


def list_entries(
    mailboxes: Mapping[str, str],
    subscribed: set[str],
    patterns: Iterable[str],
    *,
    selection: frozenset[str] = frozenset(),
    returns: frozenset[str] = frozenset(),
) -> list[Listed]:
    """LIST: `mailboxes` maps every existing name to its special-use attributes ("" for none)."""
    matches = Matcher(patterns)

    def children_of(name: str) -> bool:
        prefix = name + DELIMITER
        return any(other.startswith(prefix) for other in mailboxes)

    def attributes(name: str, *, is_subscribed: bool) -> list[str]:
        attrs: list[str] = []
        if name not in mailboxes:
            attrs.append("\\NonExistent")  # RFC 5258 §3.4 (implies \Noselect)
        else:
            attrs.append("\\HasChildren" if children_of(name) else "\\HasNoChildren")
            if mailboxes[name]:
                attrs += mailboxes[name].split()
        if is_subscribed:
            attrs.append("\\Subscribed")
        return attrs

    entries: list[Listed] = []
    if "SUBSCRIBED" in selection:
        names = {n for n in subscribed if matches(n)}
        parents: set[str] = set()
        if "RECURSIVEMATCH" in selection:
            # RFC 5258 §3.5: a matching name with a subscribed descendant that does not match
            # itself is returned with CHILDINFO, so the client knows to look deeper.
            for sub in subscribed:
                if matches(sub):
                    continue
                parents.update(a for a in _ancestors(sub) if matches(a))
        for name in sorted(names | parents, key=_order):
            attrs = attributes(name, is_subscribed=name in subscribed)
            entries.append(Listed(name, tuple(attrs), childinfo=name in parents))
        return entries
    special_only = "SPECIAL-USE" in selection
    for name in sorted(mailboxes, key=_order):
        if not matches(name) or (special_only and not mailboxes[name]):
            continue
        attrs = attributes(name, is_subscribed="SUBSCRIBED" in returns and name in subscribed)
        entries.append(Listed(name, tuple(attrs)))
    return entries


def lsub_entries(
    mailboxes: Mapping[str, str], subscribed: set[str], patterns: Iterable[str]
) -> list[Listed]:
    """LSUB (RFC 3501 §6.3.9): subscribed names; with "%", an unsubscribed level above a
    subscribed one is listed as \\Noselect."""
    matches = Matcher(patterns)
    found: dict[str, tuple[str, ...]] = {}
    for name in subscribed:
        if matches(name):
            found[name] = () if name in mailboxes else ("\\Noselect",)
            continue
        # Only a pattern that stops above the subscribed name ("%") shows the level it stops at.
        for parent in _ancestors(name):
            if parent not in subscribed and matches(parent):
                found.setdefault(parent, ("\\Noselect",))
    return [Listed(name, found[name]) for name in sorted(found, key=_order)]
