"""ValiMail's ARC test suite (written against draft-ietf-dmarc-arc-protocol-18, MIT licence
beside it) against mailauth.arc: every validation scenario and every signing scenario.

The suite lives in ../shared/conformance/arc/ and is read in place. Each YAML document is a
scenario: messages, the TXT records (`txt-records`, served through a StaticLookup; a value
folded over several YAML lines is one record whose lines are joined without separator, as
DNS character-strings are), and for validation the expected chain status `cv`, for signing the
key (`domain`, `sel`, `privatekey`), the time `t`, the fields to sign (`sig-headers`), the
authserv-id (`srv-id`) and the expected ARC-Seal, ARC-Message-Signature and
ARC-Authentication-Results.

Signing: the suite's README fixes how its driver gathers the verdict: every Authentication-Results
field of `srv-id`, in order, each result once, joined with "; " into the AAR, and the chain
status (cv=) is that verdict's arc= result. `seal` takes the verdict and chain status as
arguments, so this driver gathers them that way and passes them. The seals are compared in the
suite's standard layout (sorted tags, no folding: `standard_layout=True`), white space ignored,
b= included: the signatures are deterministic (RSASSA-PKCS1-v1_5) and must match exactly. Each
produced set must also validate.

Where the suite contradicts RFC 8617 the RFC wins and the case is a strict xfail naming the
section: the draft suite expects *no* result for a chain whose seal reports cv=fail, where RFC
8617 §5.2 steps 2 and 3 make it "fail".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from postroom.dns.lookup import StaticLookup
from postroom.mailauth.arc import ChainStatus, seal, validate
from postroom.mailauth.dkim import header_fields
from postroom.mailauth.keys import SigningKey
from postroom.mailauth.taglist import parse_tag_list

SUITE = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "arc"
VALIDATION = SUITE / "arc-draft-validation-tests.yml"
SIGNING = SUITE / "arc-draft-sign-tests.yml"

RFC_8617_CV_FAIL = (
    "RFC 8617 §5.2 steps 2-3: a chain whose ARC-Seal says cv=fail has status fail; the draft "
    "suite expects no status at all"
)
XFAIL: dict[str, str] = {
    "Chain Validation/cv_fail_i1_as_cv_fail": RFC_8617_CV_FAIL,
    "Chain Validation/cv_fail_i2_as2_fail": RFC_8617_CV_FAIL,
    "Chain Validation/cv_fail_i2_as1_fail": RFC_8617_CV_FAIL,
}


def scenarios(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        yield from (doc for doc in yaml.safe_load_all(stream) if doc)


def zone(scenario: dict[str, Any]) -> StaticLookup:
    return StaticLookup(
        {(name, "TXT"): [text.replace("\n", "")] for name, text in scenario["txt-records"].items()}
    )


def wire(text: str) -> bytes:
    """The suite's messages are YAML text with LF line ends; mail has CRLF."""
    return text.replace("\n", "\r\n").encode()


def cases(path: Path) -> list[Any]:
    if not path.exists():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"{path} is missing"))]
    params = []
    for scenario in scenarios(path):
        for name, test in scenario["tests"].items():
            case_id = f"{scenario['description']}/{name}"
            marks = []
            if case_id in XFAIL:
                marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[case_id]))
            params.append(pytest.param(scenario, test, id=case_id, marks=marks))
    return params


@pytest.mark.parametrize(("scenario", "test"), cases(VALIDATION))
def test_validation(scenario: dict[str, Any], test: dict[str, Any]) -> None:
    outcome = asyncio.run(validate(wire(test["message"]), zone(scenario)))
    expected = str(test["cv"]).lower() if test["cv"] else ""
    assert outcome.result == expected, outcome.reason
    assert not outcome.temporary
    if outcome.result == "pass":
        seals = sorted(
            (int(tags["i"]), tags["d"].lower())
            for name, value in header_fields(wire(test["message"]))
            if name == b"arc-seal"
            for tags in [parse_tag_list(value)]
        )
        assert outcome.sealers == tuple(domain for _instance, domain in seals)
        assert outcome.instance == len(seals)
        # 0 when every AMS validates, else the oldest instance from which on all do.
        assert outcome.oldest_pass == 0 or 1 < (outcome.oldest_pass or 0) <= outcome.instance


def verdict(message: bytes, authserv_id: str) -> tuple[str, ChainStatus]:
    """The suite's consolidation (its README, "AR Consolidation"): the results of every A-R of
    `authserv_id`, in order, and the arc= result among them as the chain status."""
    results: list[str] = []
    for name, value in header_fields(message):
        if name != b"authentication-results":
            continue
        parts = [" ".join(part.split()) for part in value.split(";")]
        if parts[0].lower() == authserv_id.lower():
            results += [part for part in parts[1:] if part]
    chain = "none"
    for result in results:
        if result.startswith("arc="):
            chain = result.removeprefix("arc=").split()[0]
    assert chain in ("none", "pass", "fail")
    return "; ".join(results), chain  # type: ignore[return-value]


def compact(text: str | None) -> str:
    return "".join((text or "").split())


@pytest.mark.parametrize(("scenario", "test"), cases(SIGNING))
def test_signing(scenario: dict[str, Any], test: dict[str, Any]) -> None:
    message = wire(test["message"])
    key = SigningKey(scenario["domain"], scenario["sel"], "rsa", scenario["privatekey"].encode())
    results, chain = verdict(message, test["srv-id"])
    produced = seal(
        message,
        key,
        authserv_id=test["srv-id"],
        results=results.encode(),
        chain=chain,
        now=test["t"],
        headers=test["sig-headers"].split(":"),
        standard_layout=True,
    )
    fields = dict(header_fields(produced + message)[:3]) if produced else {}
    assert compact(fields.get(b"arc-seal")) == compact(test["AS"])
    assert compact(fields.get(b"arc-message-signature")) == compact(test["AMS"])
    assert " ".join(fields.get(b"arc-authentication-results", "").split()) == " ".join(
        (test["AAR"] or "").split()
    )
    if produced:
        outcome = asyncio.run(validate(produced + message, zone(scenario)))
        # A set sealed with cv=fail ends the chain (RFC 8617 §5.2 step 2); any other validates.
        assert outcome.result == ("fail" if chain == "fail" else "pass"), outcome.reason
