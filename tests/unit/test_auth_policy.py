"""What SPF/DKIM/DMARC/ARC results cost a message on port 25 (services/auth_policy.py)."""

from __future__ import annotations

import dataclasses

import pytest

from postroom.config_verify import VerifyConfig
from postroom.services.auth_policy import Findings, decide

CLEAN = Findings(
    spf="pass",
    dkim=("pass",),
    dmarc="pass",
    dmarc_policy="reject",
    own_domain=False,
    own_aligned=False,
    arc="none",
    arc_sealer=None,
)
DEFAULTS = VerifyConfig()


def found(**changes: object) -> Findings:
    return dataclasses.replace(CLEAN, **changes)  # type: ignore[arg-type]


def test_a_passing_message_is_delivered() -> None:
    assert decide(CLEAN, DEFAULTS).action == "deliver"


@pytest.mark.parametrize(
    ("policy", "action", "code"),
    [("reject", "reject", "5.7.26"), ("quarantine", "junk", None), ("none", "deliver", None)],
)
def test_dmarc_fail_follows_the_published_policy(
    policy: str, action: str, code: str | None
) -> None:
    decision = decide(found(dmarc="fail", dmarc_policy=policy, spf="fail", dkim=()), DEFAULTS)
    assert decision.action == action
    assert (decision.reply.enhanced if decision.reply else None) == code


def test_each_action_is_a_setting() -> None:
    failing = found(dmarc="fail", dmarc_policy="reject", dkim=("fail",))
    assert decide(failing, VerifyConfig(dmarc_reject="junk")).action == "junk"
    assert decide(failing, VerifyConfig(dmarc_reject="mark")).action == "deliver"
    quarantined = dataclasses.replace(failing, dmarc_policy="quarantine")
    assert decide(quarantined, VerifyConfig(dmarc_quarantine="reject")).reply is not None


def test_temporary_failures_defer_unless_dmarc_passed() -> None:
    assert decide(found(spf="temperror", dmarc="fail"), DEFAULTS).reply.code == 451  # type: ignore[union-attr]
    assert decide(found(dmarc="temperror"), DEFAULTS).action == "defer"
    assert decide(found(dkim=("pass", "temperror")), DEFAULTS).action == "deliver"
    deferred = decide(found(spf="temperror", dmarc="none"), DEFAULTS)
    assert deferred.reply is not None and deferred.reply.enhanced == "4.7.24"


def test_our_own_domain_must_pass_whatever_dns_says() -> None:
    forged = found(own_domain=True, dmarc="none", dmarc_policy="none", spf="none", dkim=())
    decision = decide(forged, DEFAULTS)
    assert decision.action == "reject" and decision.reply is not None
    assert decision.reply.enhanced == "5.7.26"
    assert decide(dataclasses.replace(forged, own_aligned=True), DEFAULTS).action == "deliver"
    assert decide(forged, VerifyConfig(own_domains="junk")).action == "junk"


def test_a_trusted_arc_sealer_overrides_dmarc_fail_only_with_a_passing_chain() -> None:
    forwarded = found(
        dmarc="fail", dkim=("fail",), spf="fail", arc="pass", arc_sealer="fwd.example"
    )
    trusting = VerifyConfig(arc_trusted=("fwd.example",))
    assert decide(forwarded, trusting).action == "deliver"
    assert decide(forwarded, DEFAULTS).action == "reject"
    broken = dataclasses.replace(forwarded, arc="fail")
    assert decide(broken, trusting).action == "reject"


def test_spf_fail_without_dmarc_goes_to_junk() -> None:
    assert decide(found(spf="fail", dmarc="none"), DEFAULTS).action == "junk"
    assert decide(found(spf="fail", dmarc="permerror"), DEFAULTS).action == "junk"
    assert decide(found(spf="softfail", dmarc="none"), DEFAULTS).action == "deliver"


def test_no_single_from_domain_is_refused() -> None:
    decision = decide(found(from_problem="no From: header"), DEFAULTS)
    assert decision.action == "reject" and decision.reply is not None
