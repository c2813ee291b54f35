"""IMAP operations timed with a stock client: Python's imaplib with its defaults.

imaplib is what many scripts and small clients use, and it behaves as most client libraries
do: Nagle's algorithm stays on, literals are synchronising (it waits for "+" and then sends the
literal and its closing CRLF in two sends), one command at a time.  A server that delays an
ACK or splits an answer badly stalls such a client for the delayed-ACK timeout (40 ms on Linux)
while bench/imap_client.py (TCP_NODELAY, LITERAL+) never notices; these operations are there
so that such a stall shows up in the table.  All over implicit TLS (IMAP4_SSL), against each
server's mailbox as sys_imap.py loaded it:

* ``login_select``: IMAP4_SSL (connect, TLS, greeting), LOGIN, SELECT INBOX (LOGOUT untimed);
* ``fetch_body``: FETCH_BODIES commands ``FETCH n BODY[]``, n random (a new sample per rep);
* ``search_phrase``: ``UID SEARCH HEADER Subject "report 2424"``;
* ``search_and``: 50 × ``UID SEARCH HEADER Subject report 2424`` (header test AND sequence
  number);
* ``store``: STORES commands ``STORE n +FLAGS (\\Flagged)``, n random;
* ``append``: APPENDS commands of one message each (synchronising literal).
"""

from __future__ import annotations

import contextlib
import imaplib
import random
import ssl
from collections.abc import Sequence
from typing import Any

import imap_corpus as corpus

OPS = ("login_select", "fetch_body", "search_phrase", "search_and", "store", "append")
FETCH_BODIES = 200
STORES = 200
APPENDS = 50


class StockClient:
    """One imaplib session, logged in with INBOX selected."""

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext, user: str, password: str
    ) -> None:
        self.args = (host, port, context, user, password)
        self.imap = imaplib.IMAP4_SSL(host, port, ssl_context=context)
        self.imap.login(user, password)
        self.imap.select("INBOX")

    def another(self) -> StockClient:
        """A new session to the same server as the same user."""
        return StockClient(*self.args)

    def close(self) -> None:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            self.imap.logout()


def _check(result: tuple[str, Sequence[Any]], what: str) -> Sequence[Any]:
    status, data = result
    if status != "OK":
        raise imaplib.IMAP4.error(f"{what}: {status} {data!r}")
    return data


def append_messages(first: int, reps: int) -> list[list[corpus.Message]]:
    """The messages each rep appends, numbered from ``first`` on (none in the mailbox)."""
    return [
        [corpus.message(first + rep * APPENDS + j) for j in range(APPENDS)] for rep in range(reps)
    ]


def run_op(
    op: str, client: StockClient, n: int, rep: int, appends: list[list[corpus.Message]]
) -> dict[str, Any]:
    """One rep of one operation on ``client``, whose INBOX holds the first ``n`` messages."""
    imap = client.imap
    searches = corpus.search_queries(n)
    if op == "login_select":
        client.another().close()
        return {}
    if op == "fetch_body":
        total = 0
        for seq in random.Random(1000 + rep).sample(range(1, n + 1), min(FETCH_BODIES, n)):
            data = _check(imap.fetch(str(seq), "(BODY[])"), "FETCH")
            total += sum(len(part[1]) for part in data if isinstance(part, tuple))
        return {"bytes": total}
    if op in searches:
        for _ in range(corpus.SEARCH_REPEAT.get(op, 1)):
            data = _check(imap.uid("SEARCH", searches[op].decode()), "SEARCH")
        return {"hits": len(data[0].split()) if data and data[0] else 0}
    if op == "store":
        for seq in random.Random(2000 + rep).sample(range(1, n + 1), min(STORES, n)):
            _check(imap.store(str(seq), "+FLAGS", "(\\Flagged)"), "STORE")
        return {}
    if op == "append":
        for message in appends[rep]:
            _check(imap.append("INBOX", None, None, message.data), "APPEND")
        return {"appended": len(appends[rep])}
    raise ValueError(op)
