"""The junk filter's verdict: Robinson's token probabilities combined with Fisher's chi-square
method (the combination SpamBayes uses), mapped onto the RFC 5235 spamtest scale.

A token seen in `spam` of the user's `spam_total` spam messages and `ham` of `ham_total` ham
messages has the smoothed probability f = (S·X + n·p) / (S + n), where p is its spam ratio over
the sum of its spam and ham ratios, n = ham + spam, S = 0.45 and X = 0.5 (an unseen token says
nothing). The up to MAX_CLUES tokens farthest from 0.5 (at least MIN_STRENGTH away) are
combined: H = 1 - C(-2 Σ ln f), Sp = 1 - C(-2 Σ ln(1 - f)) with C the chi-square survival
function for 2n degrees of freedom, and the spam probability is (1 + Sp - H) / 2: near 1 for
spam, near 0 for ham, near 0.5 when the evidence is mixed or absent.

On the spamtest scale, 1 to 5 cover probabilities below SPAM_CUTOFF and 6 to 10 those above,
so "above 5" (the Junk threshold) means "at least 0.9", SpamBayes' spam cutoff. A user's mail
is judged once they trained MIN_TRAINED messages of each kind (rspamd's default too): on the
SpamAssassin public corpus a filter trained on 200 of each sends 1.0% of ham to Junk at that
cutoff (3.9% at 0.5), one trained on 100 of each 3.5%, on 50 of each 5.8%
(bench/junk_corpus.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

STRENGTH = 0.45  # S: how much an unseen token's prior counts
PRIOR = 0.5  # X: an unseen token's probability
MIN_STRENGTH = 0.1  # tokens within this of 0.5 are no clue
MAX_CLUES = 150
MIN_TRAINED = 200  # messages of each kind a user must have trained before mail is judged
SPAM_CUTOFF = 0.9  # the spam probability from which scores are above 5


def trained_enough(ham_total: int, spam_total: int) -> bool:
    return ham_total >= MIN_TRAINED and spam_total >= MIN_TRAINED


def token_probability(ham: int, spam: int, ham_total: int, spam_total: int) -> float:
    """Robinson's smoothed spam probability of one token."""
    ham_ratio = ham / ham_total if ham_total else 0.0
    spam_ratio = spam / spam_total if spam_total else 0.0
    if ham_ratio + spam_ratio == 0:
        return PRIOR
    p = spam_ratio / (ham_ratio + spam_ratio)
    n = ham + spam
    return (STRENGTH * PRIOR + n * p) / (STRENGTH + n)


def chi2_survival(x2: float, degrees: int) -> float:
    """P(χ² ≥ x2) for an even number of degrees of freedom (the closed series)."""
    m = x2 / 2.0
    term = math.exp(-m)
    total = term
    for i in range(1, degrees // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def spam_probability(
    counts: Mapping[str, tuple[int, int]], ham_total: int, spam_total: int
) -> float:
    """The message's spam probability from its tokens' (ham, spam) counts."""
    clues = []
    for ham, spam in counts.values():
        f = token_probability(ham, spam, ham_total, spam_total)
        if abs(f - 0.5) >= MIN_STRENGTH:
            clues.append(f)
    if not clues:
        return 0.5
    clues.sort(key=lambda f: abs(f - 0.5), reverse=True)
    clues = clues[:MAX_CLUES]
    # f never reaches 0 or 1 (smoothing), so the logarithms are finite.
    hamminess = 1.0 - chi2_survival(-2.0 * sum(math.log(f) for f in clues), 2 * len(clues))
    spamminess = 1.0 - chi2_survival(-2.0 * sum(math.log(1.0 - f) for f in clues), 2 * len(clues))
    return (1.0 + spamminess - hamminess) / 2.0


def spamtest(probability: float) -> int:
    """RFC 5235 §3.2 scale: 1 (certainly not spam) to 10 (certainly spam), above 5 from
    SPAM_CUTOFF on; 0 means the message was not tested, which this function never returns."""
    p = min(max(probability, 0.0), 1.0)
    if p < SPAM_CUTOFF:
        return 1 + min(4, int(p / SPAM_CUTOFF * 5))
    return 6 + min(4, int((p - SPAM_CUTOFF) / (1.0 - SPAM_CUTOFF) * 5))
