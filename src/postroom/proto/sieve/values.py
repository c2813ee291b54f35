"""Values the interpreter derives: flags lists (RFC 5232), quoted match keys (RFC 5229 set
modifiers), header field names and RFC 2047 words (RFC 5293), dates and their parts (RFC 5260).
Pure functions."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_tz

from postroom.proto.sieve.errors import SieveRuntimeError


def quote_wildcards(value: str) -> str:
    return "".join("\\" + c if c in "*?\\" else c for c in value)


def quote_regex(value: str) -> str:
    return "".join("\\" + c if c in "\\^$.[]|()?*+{}" else c for c in value)


def flags_of(values: Iterable[str]) -> list[str]:
    """RFC 5232 §3: flags are space-separated; duplicates (case-insensitively) dropped."""
    result: list[str] = []
    seen: set[str] = set()
    for value in values:
        for flag in value.split():
            if flag.lower() not in seen:
                seen.add(flag.lower())
                result.append(flag)
    return result


def field_ok(name: str) -> bool:
    return bool(name) and all(33 <= ord(c) <= 126 and c != ":" for c in name)


def encode_2047(value: str) -> str:
    """RFC 5293 §4: a value that is not ASCII is sent as an RFC 2047 encoded word."""
    if value.isascii():
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def parse_date(value: str) -> datetime | None:
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    try:
        offset = parsed[9] or 0
        return datetime(*parsed[:6], tzinfo=timezone(timedelta(seconds=offset)))
    except (ValueError, OverflowError, TypeError):
        return None


def date_part(when: datetime, part: str) -> str:
    """RFC 5260 §4.2."""
    offset = when.utcoffset() or timedelta(0)
    total = int(offset.total_seconds()) // 60
    sign = "+" if total >= 0 else "-"
    zone = f"{sign}{abs(total) // 60:02d}{abs(total) % 60:02d}"
    if part == "year":
        return f"{when.year:04d}"
    if part == "month":
        return f"{when.month:02d}"
    if part == "day":
        return f"{when.day:02d}"
    if part == "date":
        return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
    if part == "julian":  # Modified Julian Day: days since 1858-11-17
        return str((when.date() - datetime(1858, 11, 17).date()).days)
    if part == "hour":
        return f"{when.hour:02d}"
    if part == "minute":
        return f"{when.minute:02d}"
    if part == "second":
        return f"{when.second:02d}"
    if part == "time":
        return f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    if part == "iso8601":  # RFC 3339 form; UTC written "Z" as Pigeonhole does
        suffix = "Z" if zone == "+0000" else f"{zone[:3]}:{zone[3:]}"
        return (f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:"
                f"{when.minute:02d}:{when.second:02d}{suffix}")
    if part == "std11":
        days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
        months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                  "Nov", "Dec")
        return (f"{days[when.weekday()]}, {when.day:02d} {months[when.month - 1]} "
                f"{when.year:04d} {when.hour:02d}:{when.minute:02d}:{when.second:02d} {zone}")
    if part == "zone":
        return zone
    if part == "weekday":
        return str((when.weekday() + 1) % 7)  # Sunday is 0
    raise SieveRuntimeError(f"unknown date part '{part}'")
