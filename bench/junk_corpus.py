"""Precision and recall of the built-in junk filter on a labelled corpus.

usage: .venv/bin/python bench/junk_corpus.py HAM_DIR SPAM_DIR [--folds 5] [--small 50]

HAM_DIR and SPAM_DIR hold one RFC 5322 message per file (subdirectories are walked). The
filter's own code does the work (postroom.junk: the tokens and the verdict the server uses;
the counts are kept in memory instead of the store). Two measurements:

* k-fold cross-validation: each fold is judged by a filter trained on all the others;
* a user who trained little: `--small` ham and as many spam messages, the rest judged.

A message counts as junk when its RFC 5235 score is above 5 (`[junk] junk_above`). Printed:
precision (of what went to Junk, how much was spam), recall (of the spam, how much went to
Junk), the ham sent to Junk (false positives), and the scores' spread. The SpamAssassin public
corpus (easy_ham, easy_ham_2, hard_ham, spam, spam_2) is what the issue-14 note reports.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from postroom.junk.bayes import spam_probability, spamtest
from postroom.junk.tokens import message_tokens

JUNK_ABOVE = 5


def load(directory: Path) -> list[frozenset[str]]:
    return [
        message_tokens(path.read_bytes())
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    ]


class Trained:
    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}
        self.totals = [0, 0]

    def learn(self, tokens: frozenset[str], spam: bool) -> None:
        self.totals[spam] += 1
        for token in tokens:
            self.counts.setdefault(token, [0, 0])[spam] += 1

    def score(self, tokens: frozenset[str]) -> int:
        known = {t: (self.counts[t][0], self.counts[t][1]) for t in tokens if t in self.counts}
        return spamtest(spam_probability(known, self.totals[0], self.totals[1]))


def judge(
    train: Sequence[tuple[frozenset[str], bool]], test: Sequence[tuple[frozenset[str], bool]]
) -> list[tuple[int, bool]]:
    filter_ = Trained()
    for tokens, spam in train:
        filter_.learn(tokens, spam)
    return [(filter_.score(tokens), spam) for tokens, spam in test]


def report(title: str, results: list[tuple[int, bool]]) -> None:
    caught = sum(1 for score, spam in results if spam and score > JUNK_ABOVE)
    false = sum(1 for score, spam in results if not spam and score > JUNK_ABOVE)
    spam_total = sum(1 for _, spam in results if spam)
    ham_total = len(results) - spam_total
    precision = caught / (caught + false) if caught + false else 1.0
    recall = caught / spam_total if spam_total else 1.0
    print(f"{title}: {ham_total} ham, {spam_total} spam judged")
    print(
        f"  precision {precision:.4f}  recall {recall:.4f}  "
        f"ham in Junk {false} ({false / ham_total:.2%})  spam missed {spam_total - caught}"
    )
    for label, wanted in (("ham", False), ("spam", True)):
        spread = Counter(score for score, spam in results if spam == wanted)
        print(f"  {label:4} scores: " + " ".join(f"{s}:{spread[s]}" for s in range(1, 11)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ham", type=Path)
    parser.add_argument("spam", type=Path)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.monotonic()
    messages = [(t, False) for t in load(args.ham)] + [(t, True) for t in load(args.spam)]
    print(f"tokenised {len(messages)} messages in {time.monotonic() - started:.1f} s")
    random.Random(args.seed).shuffle(messages)
    results: list[tuple[int, bool]] = []
    for fold in range(args.folds):
        test = messages[fold :: args.folds]
        train = [m for i, m in enumerate(messages) if i % args.folds != fold]
        results += judge(train, test)
    report(f"{args.folds}-fold cross-validation", results)
    ham = [m for m in messages if not m[1]]
    spam = [m for m in messages if m[1]]
    small = ham[: args.small] + spam[: args.small]
    rest = ham[args.small :] + spam[args.small :]
    report(f"trained with {args.small} ham and {args.small} spam", judge(small, rest))


if __name__ == "__main__":
    main()
