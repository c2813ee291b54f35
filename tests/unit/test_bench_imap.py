"""The IMAP benchmark's pure parts: the generated mailbox and the SCRAM client.

The corpus must be identical for every server and have the planted search words where the
benchmark expects them; the SCRAM client must log in to postroom's own SCRAM-SHA-256 server
mechanism (and fail with a wrong password), since the memory test logs in 10,000 times with it.
"""

from __future__ import annotations

import email
import email.policy
import sys
from pathlib import Path

import pytest

from postroom.proto.sasl import derive_scram_credentials
from postroom.proto.sasl.scram import ScramSha256Mechanism
from postroom.proto.sasl.steps import Challenge, NeedScramCredentials, Success

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import imap_corpus
from imap_client import ScramClient


def test_corpus_is_deterministic_and_varied() -> None:
    first = [imap_corpus.message(i) for i in range(300)]
    again = [imap_corpus.message(i) for i in range(300)]
    assert [m.data for m in first] == [m.data for m in again]
    sizes = [len(m.data) for m in first]
    assert min(sizes) > 1800 and max(sizes) < 21 * 1024
    assert len({m.data.split(b"\r\n", 2)[1] for m in first}) > 100  # From: lines
    assert sum(b"multipart/" in m.data for m in first) > 30
    assert len({m.internal_date for m in first}) == 300


def test_corpus_markers_are_where_the_benchmark_expects_them() -> None:
    for i in range(400):
        m = imap_corpus.message(i)
        parsed = email.message_from_bytes(m.data, policy=email.policy.default)
        assert m.data.count(b"\r\n") == m.data.count(b"\n"), "CRLF only"
        subject = str(parsed["Subject"])
        assert (imap_corpus.SUBJECT_WORD in subject.lower()) == (i % 100 == 7) == m.subject_marked
        assert (imap_corpus.BODY_WORD.encode() in m.data) == (i % 50 == 11) == m.body_marked


def test_report_phrases_find_one_message_each() -> None:
    subjects = [
        str(
            email.message_from_bytes(imap_corpus.message(i).data, policy=email.policy.default)[
                "Subject"
            ]
        ).lower()
        for i in range(300)
    ]
    assert all(subject.startswith("report ") for subject in subjects)
    for i in (31, 77, 250):  # no other subject has "report i" among fewer than 10 i
        assert [n for n, s in enumerate(subjects) if imap_corpus.report_phrase(i) in s] == [i]


def test_search_queries_name_the_probe_message() -> None:
    queries = imap_corpus.search_queries(10000)
    assert queries["search_phrase"] == b'HEADER Subject "report 2424"'
    assert queries["search_and"] == b"HEADER Subject report 2424"
    assert imap_corpus.probe(100) == 50


def _exchange(password: str) -> bool:
    creds = derive_scram_credentials("benchpw")
    client = ScramClient("user@bench.test", password)
    server = ScramSha256Mechanism()
    first, nonce = client.first()
    step = server.start(first)
    assert isinstance(step, NeedScramCredentials)
    step = server.credentials_found(creds)
    assert isinstance(step, Challenge)
    step = server.respond(client.final(first, nonce, step.data))
    if not isinstance(step, Challenge):
        return False
    return isinstance(server.respond(b""), Success)


@pytest.mark.parametrize(("password", "ok"), [("benchpw", True), ("wrong", False)])
def test_scram_client_against_postroom_server(password: str, ok: bool) -> None:
    assert _exchange(password) is ok
