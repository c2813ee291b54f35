"""SQL conditions selecting a set of UIDs: ranges for runs, bounded IN lists for the rest."""

from __future__ import annotations

from collections.abc import Iterator, Sequence


def uid_filters(uids: Sequence[int], column: str = "uid") -> Iterator[tuple[str, tuple[int, ...]]]:
    """SQL conditions on `uid` covering `uids`: contiguous runs become BETWEEN ranges (one query
    for 1:*), scattered UIDs go in IN lists of at most 500."""
    if len(uids) == 1:
        yield f"{column} = ?", (uids[0],)  # FETCH n: the commonest case, made quickly
        return
    ordered = sorted(set(uids))
    runs: list[tuple[int, int]] = []
    if ordered and ordered[-1] - ordered[0] + 1 == len(ordered):
        runs.append((ordered[0], ordered[-1]))  # one run (1:* of a mailbox without gaps)
        ordered = []
    for uid in ordered:
        if runs and uid == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], uid)
        else:
            runs.append((uid, uid))
    singles = [a for a, b in runs if a == b]
    ranges = [(a, b) for a, b in runs if a != b]
    for start in range(0, len(ranges), 200):
        spans = ranges[start : start + 200]
        yield (
            "(" + " OR ".join(f"{column} BETWEEN ? AND ?" for _ in spans) + ")",
            tuple(v for pair in spans for v in pair),
        )
    for start in range(0, len(singles), 500):
        some = singles[start : start + 500]
        yield f"{column} IN ({','.join('?' * len(some))})", tuple(some)
