"""The OpenSPF RFC 7208 test suite (release 2014.04) against mailauth.spf, every scenario.

The suite lives in ../shared/conformance/spf/ (BSD-style licence beside it) and is read in
place. Each YAML document is a scenario: zone data and test cases (client address, HELO, MAIL
FROM, the acceptable results, sometimes the explanation). The zone data is served the way the
suite's own driver (pyspf's testspf.py) serves it, which the suite's header describes:

- type SPF records are never asked for (RFC 7208 §3.1 removed them), but a name whose data has
  SPF records and no TXT entry at all gets them as TXT too ("auto-magic duplication"); an entry
  `TXT: NONE` stops that and gives the name no TXT record;
- a TXT given as a list is several strings of one record, joined without separator (§3.3);
- `TIMEOUT` makes a question fail (DnsTemporaryError) unless records of the asked type come
  before it in the name's list, as in testspf.py;
- CNAMEs are followed, as a recursive resolver does (a loop is a server failure).

Explanations are compared ignoring case: the suite writes %{i}'s IPv6 nibbles in upper case
where RFC 7208 §7.3's example (and we) write lower case; `DEFAULT` means no exp= text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from postroom.dns.lookup import Answer, RecordType, StaticLookup, normal_name
from postroom.dns.resolver import DnsTemporaryError
from postroom.mailauth.spf import verify_sender

SUITE = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "spf" / "rfc7208-tests.yml"
MAX_CNAME_HOPS = 8
# Scenario/test ids whose expected outcome we read differently, with the RFC section: none.
XFAIL: dict[str, str] = {}


@dataclass
class SuiteLookup:
    """Zone data of one scenario: StaticLookup for the records, plus per-type timeouts and CNAME
    chasing (what a recursive resolver does for the evaluator)."""

    zone: StaticLookup
    failing: frozenset[tuple[str, str]]
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def query(self, name: str, rtype: RecordType) -> Answer:
        key = normal_name(name)
        self.asked.append((key, rtype))
        for _ in range(MAX_CNAME_HOPS):
            if (key, rtype) in self.failing:
                raise DnsTemporaryError(f"{key}/{rtype}: timeout (suite data)", name=key)
            answer = await self.zone.query(key, rtype)
            if answer.records or answer.nxdomain or rtype == "CNAME":
                return answer
            alias = await self.zone.query(key, "CNAME")
            if not alias.records:
                return answer
            key = normal_name(alias.records[0])
        raise DnsTemporaryError(f"{name}/{rtype}: CNAME loop (suite data)", name=key)


def _texts(rtype: str, value: Any) -> list[str]:
    if rtype in ("TXT", "SPF"):
        if isinstance(value, list):
            return ["".join(str(part) for part in value)]  # RFC 7208 §3.3
        return [str(value)]
    if rtype == "MX":
        preference, host = value
        return [f"{preference} {host}"]
    return [str(value)]


def build_lookup(zonedata: Mapping[str, list[Any]]) -> SuiteLookup:
    records: dict[tuple[str, str], list[str]] = {}
    failing: set[tuple[str, str]] = set()
    for raw_name, entries in zonedata.items():
        name = normal_name(str(raw_name))
        seen: set[str] = set()
        timeout_after: set[str] | None = None
        spf: list[str] = []
        has_txt = False
        for entry in entries:
            if entry == "TIMEOUT":
                timeout_after = set(seen)
                continue
            ((rtype, value),) = entry.items()
            if rtype == "TXT":
                has_txt = True
                if value == "NONE":
                    continue  # no record, and no TXT copies of the SPF ones either
            seen.add(rtype)
            texts = _texts(rtype, value)
            if rtype == "SPF":
                spf.extend(texts)
            records.setdefault((name, rtype), []).extend(texts)
        if spf and not has_txt:
            records.setdefault((name, "TXT"), []).extend(spf)
        if timeout_after is not None:
            for rtype in ("TXT", "A", "AAAA", "MX", "PTR", "CNAME"):
                if rtype not in timeout_after:
                    failing.add((name, rtype))
        if not any(key[0] == name for key in records):
            # A name with only TIMEOUT (or TXT: NONE) still exists for the data's sake.
            records[(name, "SPF")] = []
    return SuiteLookup(StaticLookup(records), frozenset(failing))


@dataclass(frozen=True)
class Case:
    scenario: str
    name: str
    test: Mapping[str, Any]
    zonedata: Mapping[str, list[Any]]


def load_cases() -> Iterator[Case]:
    if not SUITE.is_file():
        return
    with SUITE.open(encoding="utf-8") as stream:
        for document in yaml.safe_load_all(stream):
            if not document:
                continue
            for name, test in document["tests"].items():
                yield Case(document["description"], name, test, document["zonedata"])


CASES = list(load_cases())


def _params() -> list[Any]:
    return [
        pytest.param(
            case,
            id=f"{case.scenario}/{case.name}",
            marks=[pytest.mark.xfail(strict=True, reason=XFAIL[case.name])]
            if case.name in XFAIL
            else [],
        )
        for case in CASES
    ]


def test_the_suite_is_there() -> None:
    """The suite is part of the shared reference data: its absence is a setup error."""
    assert SUITE.is_file(), f"missing {SUITE}"
    assert len(CASES) > 150


@pytest.mark.parametrize("case", _params())
def test_spf_suite(case: Case) -> None:
    test = case.test
    lookup = build_lookup(case.zonedata)
    outcome = asyncio.run(
        verify_sender(
            lookup,
            str(test["host"]),
            str(test["mailfrom"]),
            str(test["helo"]),
            receiver="receiver.example",
        )
    )
    expected = test["result"] if isinstance(test["result"], list) else [test["result"]]
    assert outcome.result in expected, (
        f"{case.name} (RFC 7208 {test.get('spec')}): got {outcome.result} ({outcome.reason}), "
        f"want {expected}"
    )
    if "explanation" in test and outcome.result == "fail":
        want = test["explanation"]
        if want == "DEFAULT":
            assert outcome.explanation is None, outcome.explanation
        else:
            assert outcome.explanation is not None, f"no explanation, want {want!r}"
            assert outcome.explanation.lower() == str(want).lower()


def test_zone_data_is_served_as_the_suite_means() -> None:
    """The driver itself: SPF duplicated into TXT only without TXT entries, TIMEOUT only for
    types not listed before it, CNAMEs followed, loops a failure."""
    lookup = build_lookup(
        {
            "dup.example": [{"SPF": "v=spf1 -all"}],
            "none.example": [{"SPF": "v=spf1 -all"}, {"TXT": "NONE"}],
            "late.example": [{"TXT": "v=spf1 -all"}, "TIMEOUT"],
            "parts.example": [{"TXT": ["v=spf1 ", "-all"]}],
            "alias.example": [{"CNAME": "dup.example."}],
            "loop.example": [{"CNAME": "loop.example"}],
        }
    )

    def ask(name: str, rtype: RecordType) -> Answer:
        return asyncio.run(lookup.query(name, rtype))

    assert ask("dup.example", "TXT").records == ("v=spf1 -all",)
    assert ask("none.example", "TXT").records == ()
    assert not ask("none.example", "TXT").nxdomain
    assert ask("late.example", "TXT").records == ("v=spf1 -all",)
    with pytest.raises(DnsTemporaryError):
        ask("late.example", "A")
    assert ask("parts.example", "TXT").records == ("v=spf1 -all",)
    assert ask("alias.example", "TXT").records == ("v=spf1 -all",)
    with pytest.raises(DnsTemporaryError):
        ask("loop.example", "A")
