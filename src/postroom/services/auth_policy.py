"""What the results of SPF, DKIM, DMARC and ARC cost a message arriving on port 25: delivered,
filed in Junk, refused, or deferred so its sender retries. Pure logic over `Findings`; the
checks themselves run in services/mail_check.py.

The order of the rules (each a `[verify]` setting, README):
1. A temporary DNS failure that could change the verdict answers 451: never a silent pass. A
   DMARC pass stands whatever else failed to resolve.
2. A message without exactly one From: domain cannot be judged by DMARC: 550 (DMARCbis
   §4.4: the RFC5322.From domain is what the policy is about).
3. From: in one of our own domains and DMARC does not pass (alignment judged as if we published
   p=reject, whatever DNS says): `own_domains` — all our own mail is signed.
4. DMARC fail: a passing ARC chain sealed last by a trusted forwarder lets it through
   (RFC 8617 §7.2); otherwise the domain's policy: p=reject → `dmarc_reject`,
   p=quarantine → `dmarc_quarantine`, p=none → delivered.
5. No DMARC verdict (no record, or a broken one) and SPF fail: `spf_fail`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from postroom.config_verify import VerifyConfig
from postroom.proto.smtp.replies import Reply, reply

Action = Literal["deliver", "junk", "reject", "defer"]
SETTING_ACTION: dict[str, Action] = {"reject": "reject", "junk": "junk", "mark": "deliver"}

# RFC 7372 §3.2: X.7.26 "multiple authentication checks failed" (what DMARC fail is);
# X.7.23 SPF validation failed; X.7.24 SPF validation error (its temporary form too).
DMARC_REJECTED = reply(550, "5.7.26", "Message rejected: DMARC policy of the sender's domain")
OWN_DOMAIN_FORGED = reply(
    550, "5.7.26", "Message rejected: From: is one of our domains but not authenticated"
)
SPF_REJECTED = reply(550, "5.7.23", "Message rejected: SPF fail")
NO_SINGLE_FROM = reply(550, "5.7.1", "Message rejected: it must have exactly one From: domain")
SPF_TEMPORARY = reply(451, "4.7.24", "SPF check failed temporarily (DNS), try again later")
AUTH_TEMPORARY = reply(451, "4.7.0", "Authentication checks failed temporarily (DNS), try later")


@dataclass(frozen=True, slots=True)
class Findings:
    """What the checks found, reduced to what the policy needs."""

    spf: str  # pass fail softfail neutral none temperror permerror
    dkim: tuple[str, ...]  # each signature's result
    dmarc: str  # pass fail none temperror permerror
    dmarc_policy: str  # none quarantine reject: what the From domain asks for a fail
    own_domain: bool  # the From domain is one of ours (or below one)
    own_aligned: bool  # for our own domains: SPF or DKIM passed for a domain of ours aligned
    arc: str  # none pass fail
    arc_sealer: str | None  # d= of the newest ARC-Seal
    from_problem: str | None = None  # why there is not exactly one From domain


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reply: Reply | None  # the refusal (reject/defer), None when the message is taken
    reason: str  # for the log line


def decide(found: Findings, settings: VerifyConfig) -> Decision:
    if found.dmarc != "pass" and "temperror" in (found.spf, found.dmarc, *found.dkim):
        temporary = AUTH_TEMPORARY if found.spf != "temperror" else SPF_TEMPORARY
        return Decision("defer", temporary, "temporary DNS failure")
    if found.from_problem is not None:
        return Decision("reject", NO_SINGLE_FROM, found.from_problem)
    if found.own_domain and found.dmarc != "pass" and not found.own_aligned:
        return _apply(settings.own_domains, OWN_DOMAIN_FORGED, "own domain not authenticated")
    if found.dmarc == "fail":
        if found.arc == "pass" and found.arc_sealer in settings.arc_trusted:
            return Decision("deliver", None, f"dmarc fail overridden by arc={found.arc_sealer}")
        if found.dmarc_policy == "reject":
            return _apply(settings.dmarc_reject, DMARC_REJECTED, "dmarc fail, p=reject")
        if found.dmarc_policy == "quarantine":
            return _apply(settings.dmarc_quarantine, DMARC_REJECTED, "dmarc fail, p=quarantine")
        return Decision("deliver", None, "dmarc fail, p=none")
    if found.dmarc in ("none", "permerror") and found.spf == "fail":
        return _apply(settings.spf_fail, SPF_REJECTED, "spf fail without dmarc")
    return Decision("deliver", None, "")


def _apply(setting: str, refusal: Reply, reason: str) -> Decision:
    action = SETTING_ACTION[setting]
    return Decision(action, refusal if action == "reject" else None, reason)
