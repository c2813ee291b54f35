"""The built-in junk filter: each local user's Bayesian classifier (junk/), judged when mail
arrives and trained when the user moves mail into or out of Junk.

Judging (`JunkFilter.judge`) runs for mail on `smtp` from clients that did not log in, once per
local recipient whose training has at least 200 ham and 200 spam messages; it sets each
recipient's RFC 5235 score (X-Spam-Score/X-Spam-Status on that copy, Sieve spamtest) and its
Junk mark. Users who trained too little cost nothing per message: that answer is remembered for
UNTRAINED_TTL (training in this process forgets it at once; the CLI's within that time).
Tokenising and the counts' read run on the store's reader thread, off the event loop. Messages
larger than MAX_JUDGED are not judged (score 0, as SpamAssassin's spamc skips big mail).

Training (`train_message`, in a store transaction): a message copied or moved into Junk counts
as spam, one moved out of Junk (to anywhere but Trash) or filed into Archive as ham; the CLI's
`spam train` does the same for files. A message is identified by a digest of its bytes, so
training it again changes nothing and a change of mind moves its counts.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from postroom.junk.bayes import spam_probability, spamtest, trained_enough
from postroom.junk.tokens import message_tokens
from postroom.model.queue import Recipient
from postroom.storage.api import Store, Tx

UNTRAINED_TTL = 60.0  # seconds an "untrained" answer is trusted
MAX_JUDGED = 2 * 2**20  # bytes

_AUTH_FIELD = re.compile(rb"^authentication-results:[ \t]*([^\r\n]{0,998})", re.I | re.M)


def message_digest(message: bytes) -> bytes:
    return hashlib.sha256(message).digest()


def score_of(tx: Tx, user_id: int, tokens: Callable[[], frozenset[str]]) -> int:
    """The user's RFC 5235 score for a message whose tokens `tokens()` gives (asked only when
    the user trained enough to judge); 0 when the user trained too little."""
    ham_total, spam_total = tx.junk.totals(user_id)
    if not trained_enough(ham_total, spam_total):
        return 0
    counts = tx.junk.counts(user_id, tokens())
    return spamtest(spam_probability(counts, ham_total, spam_total))


def copy_auth(copy: bytes, hostname: str) -> str:
    """The verdicts of our own Authentication-Results field in a stored copy (the one whose
    authserv-id is `hostname`), "" when it has none: what judging saw as the checks' summary."""
    head_end = copy.find(b"\r\n\r\n")
    head = copy if head_end < 0 else copy[:head_end]
    for match in _AUTH_FIELD.finditer(head):
        value = match.group(1).decode("utf-8", "replace")
        if value.split(";", 1)[0].strip().lower() == hostname.lower():
            return value
    return ""


def train_message(tx: Tx, user_id: int, copy: bytes, *, spam: bool, hostname: str) -> bool:
    """Count one stored copy (or a file) as spam or ham for the user; False when it was
    trained so already."""
    tokens = message_tokens(copy, copy_auth(copy, hostname))
    return tx.junk.train(user_id, message_digest(copy), tokens, spam)


@dataclass
class JunkFilter:
    store: Store
    junk_above: int
    refuse_above: int
    _untrained: dict[int, float] = field(default_factory=dict)  # user → until (monotonic)

    def forget(self, user_id: int) -> None:
        """The user trained something: judge their next message afresh."""
        self._untrained.pop(user_id, None)

    async def judge(
        self, recipients: Sequence[Recipient], content: Callable[[], bytes], size: int, auth: str
    ) -> None:
        """Score each local recipient's copy (`spam_score`, `junk`); `content()` gives the
        message as it will be stored (called on the reader thread, only when a recipient's
        filter is trained), `auth` is the checks' summary ("" when none ran)."""
        now = time.monotonic()
        users = {
            r.user_id
            for r in recipients
            if r.user_id is not None and self._untrained.get(r.user_id, 0.0) <= now
        }
        if not users or size > MAX_JUDGED:
            return

        @functools.cache
        def tokens() -> frozenset[str]:  # once per message, whatever the recipients
            return message_tokens(content(), auth)

        def read(tx: Tx) -> dict[int, int]:
            return {user_id: score_of(tx, user_id, tokens) for user_id in users}

        scores = await self.store.read(read)
        for user_id, score in scores.items():
            if score == 0:
                self._untrained[user_id] = now + UNTRAINED_TTL
        for rcpt in recipients:
            if rcpt.user_id is None:
                continue
            rcpt.spam_score = scores.get(rcpt.user_id, 0)
            rcpt.junk = bool(self.junk_above) and rcpt.spam_score > self.junk_above

    def refuses(self, recipients: Iterable[Recipient]) -> bool:
        """Refuse at DATA: every recipient is local and scored above `refuse_above`."""
        if not self.refuse_above:
            return False
        listed = list(recipients)
        return bool(listed) and all(
            r.user_id is not None and r.spam_score > self.refuse_above for r in listed
        )
