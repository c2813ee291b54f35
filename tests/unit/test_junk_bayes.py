"""The junk filter's pure logic: tokens of hostile input stay bounded, token probabilities and
the chi-square combination behave at the extremes and in between, and the RFC 5235 mapping."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.junk.bayes import (
    MIN_TRAINED,
    chi2_survival,
    spam_probability,
    spamtest,
    token_probability,
    trained_enough,
)
from postroom.junk.tokens import MAX_TOKENS, message_tokens


def test_tokens_of_a_message() -> None:
    message = (
        b"From: Ann <Ann@Example.TEST>\r\nSubject: =?utf-8?q?Cheap_V=C3=ADagra?= now\r\n"
        b"List-Id: <x.example.test>\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<p>Buy <a href="http://Spam.Example/x">pills</a> 42 ok</p>\r\n'
    )
    tokens = message_tokens(message, "spf=fail dkim=none dmarc=fail arc=none")
    assert tokens == {
        "from:ann@example.test", "from@example.test", "h:list-id", "s:cheap", "s:víagra",
        "s:now", "auth:spf=fail", "auth:dkim=none", "auth:dmarc=fail", "auth:arc=none",
        "url:spam.example", "buy", "pills",
    }  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000), st.text(max_size=200))
def test_any_input_gives_a_bounded_token_set(message: bytes, auth: str) -> None:
    tokens = message_tokens(message, auth)
    assert len(tokens) <= MAX_TOKENS
    assert all(0 < len(token) <= 300 for token in tokens)


def test_many_words_are_cut_at_max_tokens() -> None:
    body = " ".join(f"word{n:05d}" for n in range(MAX_TOKENS * 2)).encode()
    assert len(message_tokens(b"Subject: x\r\n\r\n" + body)) == MAX_TOKENS


def test_token_probability() -> None:
    assert token_probability(0, 0, 10, 10) == 0.5
    assert token_probability(0, 10, 10, 10) > 0.95
    assert token_probability(10, 0, 10, 10) < 0.05
    # Seen once only: pulled towards 0.5 (Robinson's smoothing).
    assert 0.5 < token_probability(0, 1, 10, 10) < token_probability(0, 5, 10, 10)
    # Ratios, not counts: 5 of 10 spam against 5 of 100 ham is spammy.
    assert token_probability(5, 5, 100, 10) > 0.85


def test_chi2_survival_matches_the_closed_form() -> None:
    assert chi2_survival(0.0, 2) == 1.0
    assert math.isclose(chi2_survival(2.0, 2), math.exp(-1.0))
    assert math.isclose(chi2_survival(4.0, 4), math.exp(-2.0) * 3.0)
    assert chi2_survival(1000.0, 4) < 1e-100


def test_spam_probability_extremes_and_no_evidence() -> None:
    spammy = {f"s{n}": (0, 10) for n in range(20)}
    hammy = {f"h{n}": (10, 0) for n in range(20)}
    assert spam_probability(spammy, 10, 10) > 0.99
    assert spam_probability(hammy, 10, 10) < 0.01
    assert spam_probability({}, 10, 10) == 0.5
    assert spam_probability({"x": (5, 5)}, 10, 10) == 0.5  # no clue: too close to 0.5
    mixed = spam_probability({**spammy, **hammy}, 10, 10)
    assert 0.3 < mixed < 0.7


def test_the_rfc_5235_scale() -> None:
    probabilities = (0.0, 0.1, 0.2, 0.5, 0.8999, 0.9, 0.95, 0.97, 0.99, 1.0)
    assert [spamtest(p) for p in probabilities] == [1, 1, 2, 3, 5, 6, 8, 9, 10, 10]
    assert trained_enough(MIN_TRAINED, MIN_TRAINED)
    assert not trained_enough(MIN_TRAINED - 1, 1000)
