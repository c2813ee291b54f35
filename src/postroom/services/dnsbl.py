"""DNS block and allow lists (RFC 5782): the question for a client address, the meaning of
the answer, and one round of questions to several lists at once.

IPv4 addresses are asked as their octets reversed, IPv6 ones as 32 nibbles reversed (RFC 5782
§2.1, §2.4), under each list's zone, for an A record. Only answers inside 127.0.0.0/8 mean
"listed" (§2.1; anything else is a broken or hijacked zone). 127.0.0.1 must never be an entry
(§5), and the 127.255.255.252-255 codes (and dnswl.org's 127.0.255.255) are lists refusing the
question — asked through a public resolver, or too often — not listings: both are logged and
read as "not listed". A lookup that fails or times out is "not listed" too, and logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from postroom.dns.lookup import DnsLookup
from postroom.dns.resolver import DnsTemporaryError

log = logging.getLogger("postroom.antispam")

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# Not listings: the list refused to answer (Spamhaus: typo, open resolver, too many queries;
# dnswl.org: too many queries), or the forbidden 127.0.0.1 (RFC 5782 §5).
REFUSED = frozenset(
    ipaddress.ip_address(a)
    for a in ("127.255.255.252", "127.255.255.254", "127.255.255.255", "127.0.255.255")
)
NOT_AN_ENTRY = ipaddress.ip_address("127.0.0.1")
MAX_CODES = 16  # answer records looked at; a list never has a reason for more


def query_name(address: str, zone: str) -> str | None:
    """The name to ask for `address` under `zone` (RFC 5782 §2.1, §2.4); None when `address`
    is not an IP address. An IPv4-mapped IPv6 address is asked as IPv4."""
    try:
        ip = ipaddress.ip_address(address.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        labels = str(ip).split(".")
    else:
        labels = list(ip.exploded.replace(":", ""))  # 32 nibbles, leading zeros kept
    return ".".join(reversed(labels)) + "." + zone.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class Listing:
    """One list's verdict: `listed`, with the codes it answered; `problem` says why an answer
    was not taken as a listing (logged by `check`), "" when none."""

    zone: str
    listed: bool
    codes: tuple[str, ...] = ()
    problem: str = ""


def interpret(zone: str, records: Sequence[str]) -> Listing:
    """What a list's A records mean (RFC 5782 §2.1): listed when one of them is in 127/8 and
    is neither 127.0.0.1 nor a refusal code."""
    codes: list[str] = []
    problems: list[str] = []
    for text in records[:MAX_CODES]:
        try:
            ip = ipaddress.ip_address(text.strip())
        except ValueError:
            problems.append(f"not an address: {text[:64]!r}")
            continue
        if not isinstance(ip, ipaddress.IPv4Address) or ip not in LOOPBACK:
            problems.append(f"answer {ip} outside 127.0.0.0/8 ignored")
        elif ip in REFUSED:
            problems.append(f"answer {ip}: the list refused the query")
        elif ip == NOT_AN_ENTRY:
            problems.append("answer 127.0.0.1 is not a valid entry (RFC 5782 §5)")
        else:
            codes.append(str(ip))
    return Listing(zone, bool(codes), tuple(codes), "; ".join(problems))


async def ask(lookup: DnsLookup, address: str, zone: str) -> Listing:
    """One list's verdict on `address`; a failed lookup is "not listed", with its problem."""
    name = query_name(address, zone)
    if name is None:
        return Listing(zone, False, problem=f"{address!r} is not an IP address")
    try:
        answer = await lookup.query(name, "A")
    except DnsTemporaryError as error:
        return Listing(zone, False, problem=f"lookup failed: {error}")
    return interpret(zone, answer.records)


async def check(
    lookup: DnsLookup, address: str, zones: Sequence[str], timeout: float
) -> list[Listing]:
    """Every list's verdict on `address`, asked at once; a list that has not answered within
    `timeout` seconds is "not listed". Problems are logged, one line each."""
    tasks = [asyncio.ensure_future(ask(lookup, address, zone)) for zone in zones]
    if not tasks:
        return []
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    results: list[Listing] = []
    for zone, task in zip(zones, tasks, strict=True):
        if task in pending:
            task.cancel()
            listing = Listing(zone, False, problem=f"no answer within {timeout:g}s")
        else:
            listing = task.result()
        if listing.problem:
            log.warning(
                "dns list zone=%s client=%s taken as not listed: %s",
                zone,
                address,
                listing.problem,
            )
        results.append(listing)
    return results
