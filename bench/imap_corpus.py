"""Deterministic test mailbox for the IMAP benchmark.

``message(i)`` builds message number ``i`` (0-based) from a seeded generator, so every server
gets byte-identical mail: 2 to 20 KiB, senders from a pool of 240 addresses, subjects of 3 to 8
words (every 20th one RFC 2047 encoded UTF-8), dates spread over two years, and about a quarter
multipart (text + HTML alternative, or text + a base64 attachment).  Every subject starts
"Report <i>" (``report_phrase(i)``, a phrase with a blank whose first word is in every subject,
so that no single-word shortcut narrows a search for it).  Two marker words are planted at
known positions so searches have a known answer: ``SUBJECT_WORD`` in the subject of every 100th
message, ``BODY_WORD`` in the body text of every 50th.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import re
from dataclasses import dataclass

SEED = 20240607
MIN_SIZE = 2 * 1024
MAX_SIZE = 20 * 1024
SUBJECT_WORD = "zanzibar"
BODY_WORD = "quokkas"
EPOCH = dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
SPAN_SECONDS = 2 * 365 * 24 * 3600

_WORDS_TEXT = (
    "account agenda almost answer april autumn balance battery before budget button calendar "
    "camera change charge circle client closing coffee comment common contract corner cotton "
    "course cousin credit custom dealer decide degree deliver design detail dinner direct "
    "doctor double driver engine estate evening expect export fabric family farmer figure "
    "finance flight follow forest format friday garden gather gentle global golden ground "
    "growth guitar handle harbor health hidden holiday honest hotel income indoor inside "
    "island jacket journal kitchen ladder launch leader letter lesson listen little local "
    "lunch manage market master meeting member method middle minute mirror modern monday "
    "motion museum native nature network notice number object office orange outline output "
    "packet palace parcel parent people period permit picture planet player pocket policy "
    "portal powder prefer pretty print profit project public puzzle quiet rabbit random "
    "reason record region remote report result review ribbon rocket salary sample school "
    "screen season second secret select sender server settle signal silver simple sister "
    "socket source spring square stable status street strong studio submit summer supply "
    "system tablet target ticket timber toward travel tunnel update useful valley vendor "
    "version village visual volume wallet weekly window winter wonder yellow"
)
_WORDS = _WORDS_TEXT.split()
_FIRST_TEXT = (
    "alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert "
    "sybil trent victor walter yvonne"
)
_FIRST = _FIRST_TEXT.split()
_DOMAINS_TEXT = (
    "example.com example.org example.net mail.test corp.example lists.example shop.example "
    "news.example uni.example home.example bank.example travel.example"
)
_DOMAINS = _DOMAINS_TEXT.split()
_UNICODE = ("Grüße", "réunion", "naïve", "Zürich", "smörgåsbord", "crème", "piñata", "façade")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WRAP = re.compile(r"\S.{0,75}(?=\s|$)")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class Message:
    """One generated message and the INTERNALDATE to APPEND it with."""

    data: bytes
    internal_date: str  # RFC 3501 date-time, e.g. "07-Jun-2024 12:00:00 +0000"
    subject_marked: bool
    body_marked: bool


def report_phrase(i: int) -> str:
    """A phrase in the subject of message ``i`` (0-based), and of no other one in a mailbox
    of fewer than 10 i messages."""
    return f"report {i}"


def probe(n: int) -> int:
    """The message number (2424, or less in a small mailbox) the one-message searches find."""
    return 2424 if n > 2424 else max(n // 2, 1)


# Searches that take well under a millisecond are timed this many times in a row.
SEARCH_REPEAT = {"search_and": 50}


def search_queries(n: int) -> dict[str, bytes]:
    """The benchmark's searches over the first ``n`` messages: name → ``UID SEARCH`` arguments."""
    i = probe(n)
    return {
        "search_subject": b"HEADER Subject " + SUBJECT_WORD.encode(),
        "search_phrase": b'HEADER Subject "%s"' % report_phrase(i).encode(),
        "search_and": b"HEADER Subject report %d" % i,  # the header test AND sequence number i
        "search_msgid": b"HEADER Message-ID bench.%d." % i,
        "search_from": b"FROM olivia",
        "search_none": b'HEADER Subject "report 99999"',
        "search_text": b"TEXT " + BODY_WORD.encode(),
    }


def _rfc5322_date(when: dt.datetime) -> str:
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year} "
        f"{when:%H:%M:%S} +0000"
    )


def _internal_date(when: dt.datetime) -> str:
    return f"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year} {when:%H:%M:%S} +0000"


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choices(_WORDS, k=rng.randint(6, 14))).capitalize() + "."


def _text(rng: random.Random, size: int, marker: str | None) -> str:
    """Plain text of about ``size`` bytes in paragraphs of lines up to 76 characters, CRLF."""
    paragraphs: list[str] = []
    total = 0
    while total < size:
        sentences = [_sentence(rng) for _ in range(rng.randint(2, 8))]
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        total += len(paragraph) + 4
    if marker is not None:
        where = len(paragraphs) // 2
        paragraphs[where] = f"The {marker} were mentioned here. {paragraphs[where]}"
    lines: list[str] = []
    for paragraph in paragraphs:
        lines.extend(line.rstrip() for line in _WRAP.findall(paragraph))
        lines.append("")
    return "\r\n".join(lines)


def _attachment(rng: random.Random, size: int) -> str:
    raw = rng.randbytes(max(size * 3 // 4, 48))
    encoded = base64.b64encode(raw).decode("ascii")
    return "\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\r\n"


def message(i: int) -> Message:
    """Message number ``i``: the same bytes on every call and in every process."""
    rng = random.Random(SEED * 1_000_003 + i)
    size = rng.randint(MIN_SIZE + 600, MAX_SIZE)
    when = EPOCH + dt.timedelta(seconds=(i * 6311 + rng.randrange(6000)) % SPAN_SECONDS)
    first = rng.choice(_FIRST)
    sender = f"{first.capitalize()} {rng.choice(_WORDS).capitalize()}"
    address = f"{first}.{i % 12}@{_DOMAINS[i % len(_DOMAINS)]}"
    subject_marked = i % 100 == 7
    body_marked = i % 50 == 11
    words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 8))]
    if subject_marked:
        words.insert(rng.randint(0, len(words)), SUBJECT_WORD)
    subject = f"Report {i} " + " ".join(words)
    if i % 20 == 13:
        text = f"{subject} {rng.choice(_UNICODE)}"
        subject = "=?UTF-8?B?" + base64.b64encode(text.encode()).decode("ascii") + "?="
    headers = [
        f"Return-Path: <{address}>",
        f"From: {sender} <{address}>",
        "To: Bench User <user@bench.test>",
        f"Subject: {subject}",
        f"Date: {_rfc5322_date(when)}",
        f"Message-ID: <bench.{i}.{rng.getrandbits(32):08x}@{_DOMAINS[i % len(_DOMAINS)]}>",
        "MIME-Version: 1.0",
    ]
    if i % 7 == 0:
        headers.append(f"Cc: {rng.choice(_FIRST)}@{rng.choice(_DOMAINS)}")
    if i % 9 == 0:
        headers.append(f"In-Reply-To: <bench.{max(i - 3, 0)}@thread.example>")
    marker = BODY_WORD if body_marked else None
    kind = rng.random()
    head_size = sum(len(h) + 2 for h in headers) + 100
    budget = size - head_size - 700  # _text overshoots by up to a paragraph
    if kind < 0.12:
        boundary = f"alt-{i:06d}"
        text = _text(rng, budget // 2, marker)
        html = "<html><body><p>" + _text(rng, budget // 2 - 40, None) + "</p></body></html>\r\n"
        headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        body = (
            f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}"
            f"--{boundary}\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n{html}"
            f"--{boundary}--\r\n"
        )
    elif kind < 0.25:
        boundary = f"mix-{i:06d}"
        text = _text(rng, budget // 3, marker)
        blob = _attachment(rng, budget * 2 // 3 - 200)
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        body = (
            f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}"
            f'--{boundary}\r\nContent-Type: application/octet-stream; name="data{i}.bin"\r\n'
            f'Content-Disposition: attachment; filename="data{i}.bin"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{blob}"
            f"--{boundary}--\r\n"
        )
    else:
        headers.append("Content-Type: text/plain; charset=us-ascii")
        body = _text(rng, budget, marker)
    data = ("\r\n".join(headers) + "\r\n\r\n" + body).encode("ascii")
    return Message(data, _internal_date(when), subject_marked, body_marked)
