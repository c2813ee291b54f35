"""Human-friendly durations: parse "1h30m" / "250ms" / 300 into seconds and format them back."""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["DURATION_FORMS", "format_duration", "parse_duration"]

#: One-line description of what :func:`parse_duration` accepts, for error messages.
DURATION_FORMS = (
    'a number of seconds (300, 0.5) or a string such as "30s", "5m", "1h", "5d", "1h30m", "250ms"'
)

# Largest unit first: strings must use units in this order, each at most once.
_UNITS: dict[str, Fraction] = {
    "d": Fraction(86400),
    "h": Fraction(3600),
    "m": Fraction(60),
    "s": Fraction(1),
    "ms": Fraction(1, 1000),
}
_RANK = {unit: rank for rank, unit in enumerate(_UNITS)}

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUMBER})\s*(ms|[dhms])\s*", re.IGNORECASE)
_PLAIN = re.compile(rf"{_NUMBER}")


def parse_duration(text: str | int | float) -> float:
    """Return the duration *text* in seconds.

    Numbers are seconds. Strings are either a plain number of seconds ("300") or
    one or more ``<number><unit>`` parts with units ``d``, ``h``, ``m``, ``s``, ``ms``
    from largest to smallest ("1h30m", "2.5s", "250ms"). Negative, infinite and NaN
    durations are rejected with :class:`ValueError`.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise TypeError(f"duration must be a string or a number, got {type(text).__name__}")
    if not isinstance(text, str):
        if not math.isfinite(text):
            raise ValueError(f"invalid duration {text!r}: must be finite; use {DURATION_FORMS}")
        if text < 0:
            raise ValueError(
                f"invalid duration {text!r}: must not be negative; use {DURATION_FORMS}"
            )
        return float(text)

    body = text.strip()
    if _PLAIN.fullmatch(body):
        return float(Fraction(body))
    if not body:
        raise ValueError(f"invalid duration {text!r}: empty; use {DURATION_FORMS}")

    total = Fraction(0)
    pos = 0
    last_rank = -1
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}; use {DURATION_FORMS}")
        number, unit = match.group(1), match.group(2).lower()
        rank = _RANK[unit]
        if rank <= last_rank:
            raise ValueError(
                f"invalid duration {text!r}: units must go from largest to smallest, "
                f"each at most once; use {DURATION_FORMS}"
            )
        last_rank = rank
        total += Fraction(number) * _UNITS[unit]
        pos = match.end()
    return float(total)


def format_duration(seconds: float) -> str:
    """Format *seconds* compactly, to the millisecond: 5400 → "1h30m", 45 → "45s", 0.25 → "250ms".

    The result is accepted by :func:`parse_duration`.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"seconds must be a number, got {type(seconds).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration {seconds!r}: must be finite and not negative")
    remaining = round(Fraction(seconds) * 1000)  # whole milliseconds
    if remaining == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in _UNITS.items():
        unit_ms = int(size * 1000)
        count, remaining = divmod(remaining, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
