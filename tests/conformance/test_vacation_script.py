"""The account page's generated vacation script (services/vacation.py) against Pigeonhole:
with quotes, backslashes and a line holding a single "." in the user's text, it compiles with
both engines, and both send the same reply carrying the message exactly as typed."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from postroom.services import vacation

from .sieve_cases import Case
from .sieve_pigeonhole import SIEVE_TEST, comparable, ours, pigeonhole

MESSAGE = 'I am away.\n"Quoted" and a back\\slash \\" here.\n.\n..two dots\nBack on Monday.'
SUBJECT = 'Away "for now" \\ back soon'


def _case() -> Case:
    settings = vacation.checked(SUBJECT, MESSAGE, "3", "me@example.org, other@example.org")
    return Case("generated-vacation", vacation.script(settings))


def test_our_engine_replies_with_the_text_as_typed() -> None:
    found = ours(_case())
    assert len(found) == 2 and found[1] == "implicit store INBOX flags=", found
    assert found[0].startswith(f"vacation seconds={3 * 86400} subject={SUBJECT} handle=")
    assert found[0].endswith("body=" + MESSAGE)


@pytest.mark.skipif(
    not os.access(SIEVE_TEST, os.X_OK) or shutil.which("sieve-test") is None,
    reason="sieve-test (Debian dovecot-sieve, Pigeonhole) is not installed",
)
def test_pigeonhole_sends_the_same_reply() -> None:
    case = _case()
    with tempfile.TemporaryDirectory(prefix="postroom-sieve-", dir="/tmp") as root:
        theirs = pigeonhole(case, Path(root))
    assert any(item.startswith("vacation ") for item in theirs), theirs
    assert comparable(ours(case), theirs) == theirs


@pytest.mark.parametrize(
    ("subject", "message", "days", "addresses", "wrong"),
    [
        ("a\nb", "x", "1", "", "subject"),
        ("", "  \n", "1", "", "message"),
        ("", "x", "0", "", "Days"),
        ("", "x", "seven", "", "Days"),
        ("", "x", "366", "", "Days"),
        ("", "x", "1", 'a"b@c', "Addresses"),
        ("", "x", "1", "nobody", "Addresses"),
    ],
)
def test_bad_form_values_are_refused(
    subject: str, message: str, days: str, addresses: str, wrong: str
) -> None:
    with pytest.raises(vacation.VacationError, match=wrong):
        vacation.checked(subject, message, days, addresses)
