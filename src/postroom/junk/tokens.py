"""A message's tokens for the junk filter: what the classifier counts, once per message.

Words of the Subject (`s:` prefix) and of the text parts (decoded as IMAP SEARCH decodes them:
transfer encoding, charset, RFC 2047 words; HTML tags dropped), the From address and domain,
the domains of links, a few header facts, and the inbound checks' verdicts (`auth:dmarc=fail`):
mail that failed authentication weighs in as far as the user's own training says it should.

Bounded whatever the input: at most MAX_TEXT characters of text are read, words are 3 to 24
characters, and at most MAX_TOKENS distinct tokens are kept. The patterns are single character
classes with bounded repetition (linear time, no backtracking).
"""

from __future__ import annotations

import re

from postroom.proto.imap.address import parse_addresses
from postroom.proto.imap.search import SearchMessage

MAX_TEXT = 100_000  # characters of body text looked at
MAX_TOKENS = 1_500  # distinct tokens kept per message

_WORD = re.compile(r"[^\W_][\w'$€£-]{2,23}")
_TAG = re.compile(r"<[^<>]{0,2000}>")
_LINK = re.compile(r"https?://([a-z0-9.-]{1,253})", re.ASCII)
_AUTH = re.compile(r"\b(spf|dkim|dmarc|arc)=([a-z]{1,12})", re.ASCII)


def message_tokens(message: bytes, auth: str = "") -> frozenset[str]:
    """The distinct tokens of `message` (RFC 5322 bytes); `auth` is the inbound checks'
    summary ("spf=pass dkim=fail dmarc=fail arc=none"), "" when none ran."""
    found: dict[str, None] = {}  # insertion-ordered set: the first MAX_TOKENS win

    def add(token: str) -> None:
        if len(found) < MAX_TOKENS:
            found[token] = None

    parsed = SearchMessage(0, 0, (), 0.0, len(message), 0, content=message)
    for subject in parsed.header_values("subject")[:1]:
        for word in _WORD.findall(subject[:1000].lower()):
            add("s:" + word)
    for raw in parsed.raw_values("from")[:1]:
        for address in parse_addresses(raw)[:1]:
            if address.mailbox is not None and address.host is not None:
                host = address.host.decode("utf-8", "replace").lower()
                add("from:" + address.mailbox.decode("utf-8", "replace").lower() + "@" + host)
                add("from@" + host)
    for name in ("reply-to", "list-id", "x-mailer", "user-agent"):
        if parsed.header_values(name):
            add("h:" + name)
    for kind, value in _AUTH.findall(auth.lower()):
        add(f"auth:{kind}={value}")
    text = parsed.body_text()[:MAX_TEXT].lower()
    if "<" in text:
        for host in _LINK.findall(text):
            add("url:" + host.rstrip("."))
        text = _TAG.sub(" ", text)
    else:
        for host in _LINK.findall(text):
            add("url:" + host.rstrip("."))
    for word in _WORD.findall(text):
        add(word)
    return frozenset(found)
