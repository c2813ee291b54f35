"""Which mailboxes a LIST or LSUB answers with, and with which attributes.

RFC 3501 §6.3.8/§6.3.9 (patterns with "*" and "%", LSUB's \\Noselect parents), RFC 5258
LIST-EXTENDED (SUBSCRIBED and RECURSIVEMATCH selection, RETURN (SUBSCRIBED CHILDREN), CHILDINFO),
RFC 3348 CHILDREN and RFC 6154 SPECIAL-USE. Pure: names in, `Listed` entries out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DELIMITER = "/"


@dataclass(frozen=True, slots=True)
class Listed:
    name: str
    attributes: tuple[str, ...]
    childinfo: bool = False  # RFC 5258 §3.5: (CHILDINFO ("SUBSCRIBED"))


def pattern_matcher(pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8: "*" matches anything, "%" anything but the hierarchy delimiter."""
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "%":
            parts.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            parts.append(re.escape(char))
    if pattern[:5].upper() == "INBOX":
        parts[:5] = ["(?i:INBOX)"]  # RFC 3501 §5.1: INBOX in any case
    return re.compile("".join(parts), re.DOTALL)


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
    matchers = [pattern_matcher(p) for p in patterns]

    def matches(name: str) -> bool:
        return any(m.fullmatch(name) for m in matchers)

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
    matchers = [pattern_matcher(p) for p in patterns]

    def matches(name: str) -> bool:
        return any(m.fullmatch(name) for m in matchers)

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
