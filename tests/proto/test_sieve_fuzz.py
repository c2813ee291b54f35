"""Fuzzing the Sieve parser and validator: whatever the text, only SieveError escapes, and
quickly; scripts that do compile also run without raising."""

from __future__ import annotations

import contextlib
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.proto.sieve import Envelope, NullEnv, SieveError, compile_script, run

# Pieces of real Sieve so that the fuzzer reaches deep into the grammar, not just the lexer.
TOKENS = [
    "require", '"fileinto"', '["variables", "fileinto", "imap4flags", "regex", "relational"]',
    "if", "elsif", "else", "header", "address", "envelope", "exists", "size", "not", "allof",
    "anyof", "true", "false", "keep", "discard", "stop", "fileinto", "redirect", "set",
    "string", "addflag", "hasflag", ":is", ":contains", ":matches", ":regex", ":value",
    ":count", ":comparator", ":over", ":under", ":all", ":domain", ":flags", '"gt"',
    '"i;ascii-numeric"', '"Subject"', '"${1}"', '"a*b?"', '"(a+)+"', '"x@y.z"', "10K", "3",
    "99999999999999999999", "{", "}", "(", ")", "[", "]", ",", ";", " ", "\n", "#c\n",
    "/* c */", "text:\nline\n.\n", '"\\"', "\\", ":", "/*", '"', "${hex:41}",
]
MESSAGE = b"From: a@b.c\r\nTo: me@d.e\r\nSubject: hi there\r\n\r\nbody\r\n"


def _check(source: str) -> None:
    started = time.monotonic()
    try:
        script = compile_script(source)
    except SieveError as error:
        assert error.line >= 0 and error.column >= 0 and error.message
    else:
        outcome = run(script, MESSAGE, Envelope("a@b.c", "me@d.e"), NullEnv())
        assert outcome.actions  # at least the implicit keep, or what the script did
    assert time.monotonic() - started < 2


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_token_soup_raises_only_sieve_error(tokens: list[str]) -> None:
    _check(" ".join(tokens))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_raises_only_sieve_error(source: str) -> None:
    _check(source)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_raise_only_sieve_error(source: bytes) -> None:
    with contextlib.suppress(SieveError):
        compile_script(source)
