"""IMAP THREAD (RFC 5256 §2.2, §4): ORDEREDSUBJECT and REFERENCES threading, and the wire form.

Pure functions over the `SortKeys` records of `postroom.proto.imap.sort`. The result is a list
of `ThreadNode` trees (a node without a message is a dummy) that `format_threads` turns into the
`(1)(2 3)((4)(5))` text of the THREAD response. Sent dates fall back to INTERNALDATE and exact
ties are broken by sequence number, as RFC 5256 §2.2 asks.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from postroom.proto.imap.sort import SortKeys, base_subject, base_subject_full


class ThreadAlgorithm(enum.Enum):
    ORDEREDSUBJECT = "ORDEREDSUBJECT"
    REFERENCES = "REFERENCES"


@dataclass(frozen=True, slots=True)
class ThreadNode:
    """One message of a thread (or a dummy standing for a missing parent: seq/uid None)."""

    seq: int | None
    uid: int | None
    children: tuple[ThreadNode, ...] = ()


# RFC 5322 §3.6.4 msg-id = "<" id-left "@" id-right ">", read leniently: anything between
# angle brackets that has an "@" with text on both sides, folding whitespace removed.
_MSG_ID = re.compile(r"<([^<>]*)>")
_FWS = re.compile(r"[ \t\r\n]+")


def msg_ids(value: str) -> tuple[str, ...]:
    """The valid message IDs in a Message-ID/In-Reply-To/References value, without brackets."""
    found: list[str] = []
    for match in _MSG_ID.finditer(value):
        ident = _FWS.sub("", match.group(1))
        left, at, right = ident.rpartition("@")
        if at and left and right:
            found.append(ident)
    return tuple(found)


class _Container:
    """RFC 5256 §2.2 REFERENCES step 1: a message ID's slot; `msg` None means a dummy."""

    __slots__ = ("children", "msg", "parent")

    def __init__(self, msg: SortKeys | None = None) -> None:
        self.msg = msg
        self.parent: _Container | None = None
        self.children: list[_Container] = []

    def has_ancestor(self, other: _Container) -> bool:
        node: _Container | None = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False

    def link_to(self, parent: _Container) -> None:
        self.parent = parent
        parent.children.append(self)

    def unlink(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None


def _sort_key(node: _Container) -> tuple[float, int]:
    # RFC 5256 §2.2 steps 4 and 6: by sent date, then sequence number; a dummy counts as its
    # first child (its children are sorted first).
    while node.msg is None:
        node = node.children[0]
    return node.msg.sent_date, node.msg.seq


def _preorder(roots: Sequence[_Container]) -> list[_Container]:
    """Every node below `roots`, parents before children (no recursion: threads can be deep)."""
    order: list[_Container] = []
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(reversed(node.children))
    return order


def _sort_tree(roots: list[_Container]) -> None:
    # RFC 5256 §2.2 step 6: the youngest siblings are sorted first, the root level last.
    for node in reversed(_preorder(roots)):
        node.children.sort(key=_sort_key)
    roots.sort(key=_sort_key)


def _link_references(items: Sequence[SortKeys]) -> list[_Container]:
    """RFC 5256 §2.2 REFERENCES step 1: the ID table, linked; returns every container."""
    table: dict[str, _Container] = {}
    containers: list[_Container] = []

    def lookup(ident: str) -> _Container:
        container = table.get(ident)
        if container is None:
            container = table[ident] = _Container()
            containers.append(container)
        return container

    for item in items:
        # Step 1: a message without a valid Message ID, or repeating one already used by an
        # earlier message, gets a unique ID (a container outside the table).
        ident = item.message_id
        if ident is not None and (ident not in table or table[ident].msg is None):
            own = lookup(ident)
            own.msg = item
        else:
            own = _Container(item)
            containers.append(own)
        # Step 1: References, or failing that the first In-Reply-To ID.
        if item.references:
            refs = [lookup(ref) for ref in item.references]
        elif item.in_reply_to is not None:
            refs = [lookup(item.in_reply_to)]
        else:
            refs = []
        # Step 1.A: each reference becomes the parent of the next one, unless that one already
        # has a parent or the link would make a loop.
        for parent, child in itertools.pairwise(refs):
            if child.parent is None and not parent.has_ancestor(child):
                child.link_to(parent)
        # Step 1.B: the last reference becomes this message's parent, replacing any parent a
        # truncated References gave it earlier, unless that would make a loop.
        last = refs[-1] if refs else None
        if own.parent is not last:
            own.unlink()
            if last is not None and not last.has_ancestor(own):
                own.link_to(last)
    return containers


def _pruned(nodes: list[_Container], at_root: bool) -> list[_Container]:
    """RFC 5256 §2.2 REFERENCES step 3 for one sibling list whose subtrees are already pruned."""
    kept: list[_Container] = []
    for node in nodes:
        if node.msg is not None:
            kept.append(node)
        elif not node.children:
            continue  # a dummy without children is deleted
        elif at_root and len(node.children) > 1:
            kept.append(node)  # promoting them would make several roots: keep the dummy
        else:
            kept.extend(node.children)  # a dummy is replaced by its children
    return kept


def _prune(roots: list[_Container]) -> list[_Container]:
    for node in reversed(_preorder(roots)):
        node.children = _pruned(node.children, at_root=False)
        for child in node.children:
            child.parent = node
    kept = _pruned(roots, at_root=True)
    for node in kept:
        node.parent = None
    return kept


def _thread_subject(node: _Container) -> str:
    # RFC 5256 §2.2 step 5.B.i: a dummy's subject is its first child's.
    message = node.msg if node.msg is not None else node.children[0].msg
    return base_subject(message.subject) if message is not None else ""


def _is_reply(node: _Container) -> bool:
    return node.msg is not None and base_subject_full(node.msg.subject).reply_or_forward


def _gather_subjects(roots: list[_Container]) -> list[_Container]:
    """RFC 5256 §2.2 REFERENCES step 5: merge root threads that share a base subject."""
    # Step 5.A/5.B: one message per base subject.
    table: dict[str, _Container] = {}
    for node in roots:
        subject = _thread_subject(node)
        if not subject:
            continue  # 5.B.ii
        holder = table.get(subject)
        if holder is None:
            table[subject] = node  # 5.B.iv
        elif holder.msg is not None and (
            node.msg is None or (_is_reply(holder) and not _is_reply(node))
        ):
            table[subject] = node
    # Step 5.C: merge the other threads into the one in the table.
    removed: set[int] = set()
    replaced: dict[int, _Container] = {}
    for node in roots:
        subject = _thread_subject(node)
        if not subject or node.parent is not None or id(node) in removed:
            continue  # 5.C.ii, or already merged below another root
        holder = table[subject]
        if holder is node:
            continue  # 5.C.iv
        removed.add(id(node))
        if holder.msg is None and node.msg is None:
            # Both dummies: the children become siblings, the current dummy goes.
            for child in node.children:
                child.link_to(holder)
            node.children = []
        elif holder.msg is None or (_is_reply(node) and not _is_reply(holder)):
            # A real message under a dummy, or a reply under the original: a child.
            node.link_to(holder)
        else:
            # Otherwise both go under a new dummy, which takes the table's place.
            dummy = _Container()
            replaced[id(holder)] = dummy
            holder.link_to(dummy)
            node.link_to(dummy)
            table[subject] = dummy
    return [replaced.get(id(node), node) for node in roots if id(node) not in removed]


def _freeze(roots: list[_Container]) -> list[ThreadNode]:
    frozen: dict[int, ThreadNode] = {}
    for node in reversed(_preorder(roots)):
        children = tuple(frozen[id(child)] for child in node.children)
        if node.msg is None:
            frozen[id(node)] = ThreadNode(None, None, children)
        else:
            frozen[id(node)] = ThreadNode(node.msg.seq, node.msg.uid, children)
    return [frozen[id(node)] for node in roots]


def thread_references(items: Iterable[SortKeys]) -> list[ThreadNode]:
    """RFC 5256 §2.2 THREAD=REFERENCES."""
    messages = sorted(items, key=lambda item: item.seq)
    containers = _link_references(messages)  # step 1
    roots = [node for node in containers if node.parent is None]  # step 2
    roots = _prune(roots)  # step 3
    for node in roots:  # step 4
        if node.msg is None:
            node.children.sort(key=_sort_key)
    roots.sort(key=_sort_key)
    roots = _gather_subjects(roots)  # step 5
    _sort_tree(roots)  # step 6
    return _freeze(roots)


def thread_orderedsubject(items: Iterable[SortKeys]) -> list[ThreadNode]:
    """RFC 5256 §2.2 THREAD=ORDEREDSUBJECT."""
    # Sort by base subject, then sent date (then sequence number), and split into runs of one
    # base subject; the first message of each run is the root, the others its children.
    keyed = sorted(
        ((base_subject(item.subject), item.sent_date, item.seq, item) for item in items),
        key=lambda entry: entry[:3],
    )
    threads: list[list[SortKeys]] = []
    previous: str | None = None
    for subject, _date, _seq, item in keyed:
        if subject != previous:
            threads.append([])
            previous = subject
        threads[-1].append(item)
    # The threads are ordered by the sent date of their first message.
    threads.sort(key=lambda thread: (thread[0].sent_date, thread[0].seq))
    return [
        ThreadNode(
            first.seq,
            first.uid,
            tuple(ThreadNode(item.seq, item.uid) for item in rest),
        )
        for first, *rest in threads
    ]


def thread_messages(items: Iterable[SortKeys], algorithm: ThreadAlgorithm) -> list[ThreadNode]:
    if algorithm is ThreadAlgorithm.REFERENCES:
        return thread_references(items)
    return thread_orderedsubject(items)


def format_threads(threads: Sequence[ThreadNode], *, use_uid: bool = False) -> str:
    """The THREAD response data after "THREAD ", e.g. `(2)(3 6 (4 23)(44 7 96))`.

    `use_uid` writes UIDs instead of sequence numbers (for UID THREAD).
    """
    # RFC 5256 §4: thread-list = "(" (thread-members / thread-nested) ")",
    #   thread-members = nz-number *(SP nz-number) [SP thread-nested],
    #   thread-nested = 2*thread-list.
    # A node with one child continues its chain ("3 6"), with several children each child
    # is a nested list ("6 (4 23)(44 7 96)"); a dummy is its nested list alone.
    out: list[str] = []
    stack: list[str | ThreadNode] = []
    for node in reversed(threads):
        stack.extend((")", node, "("))
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        number = item.uid if use_uid else item.seq
        children = item.children
        if number is not None:
            out.append(str(number))
            if children:
                out.append(" ")
        if len(children) == 1 and number is not None:
            stack.append(children[0])
            continue
        for child in reversed(children):
            stack.extend((")", child, "("))
    return "".join(out)
