"""The checks of a message arriving on port 25 from a client that did not log in: SPF of the
envelope sender, every DKIM signature and the ARC chain at once, then DMARC over their results,
then what the policy makes of them (services/auth_policy.py).

The outcome is one Authentication-Results header for the top of the message (RFC 8601 §5: any
claiming our host name is removed from the message first, so a sender cannot forge our
verdict), a one-line summary kept with the message and logged, and the decision. The checks
ask DNS through the server's caching `DnsLookup`; DKIM and ARC do their hashing on a worker
thread (mailauth/dkim.py, mailauth/arc.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from postroom.config import Config
from postroom.dns.lookup import DnsLookup
from postroom.dns.resolver import DnsTemporaryError
from postroom.mailauth import arc, authres, dkim, dmarc, spf
from postroom.services import dmarc_reporting
from postroom.services.auth_policy import Decision, Findings, decide
from postroom.services.metrics import Metrics
from postroom.storage.records import EvaluationRecord

log = logging.getLogger("postroom.smtp")

T = TypeVar("T")

MAX_FROM_DOMAINS = 5  # From domains evaluated; a From naming more is judged by the first five
# DMARC results from best to worst, for a message with several From domains.
_WORSE = {"pass": 0, "none": 1, "permerror": 2, "fail": 3, "temperror": 4}


def _badness(outcome: dmarc.DmarcOutcome | None) -> int:
    return _WORSE["temperror"] if outcome is None else _WORSE.get(outcome.result, 0)


@dataclass(frozen=True, slots=True)
class CheckResult:
    decision: Decision
    header: bytes  # the Authentication-Results header to prepend
    summary: str  # "spf=pass dkim=pass dmarc=pass arc=none": the log line and the trace
    cleaned: bytes | None  # the message without headers forging our verdict, when it had some
    evaluation: EvaluationRecord | None = None  # for DMARC aggregate reports, when one is owed


def aligned(one: str, other: str) -> bool:
    """Relaxed alignment between two domains of ours: the same, or one below the other."""
    one, other = one.lower(), other.lower()
    return one == other or one.endswith("." + other) or other.endswith("." + one)


class MailChecker:
    """The inbound checks with the server's settings and DNS."""

    def __init__(self, config: Config, lookup: DnsLookup, metrics: Metrics) -> None:
        self.metrics = metrics  # postroom_auth_results_total: each method's result per message
        self.settings = config.verify
        self.hostname = config.hostname
        self.lookup = lookup
        self.local_domains = tuple(d.lower() for d in config.domains)

    def applies(self, service: str, client_ip: str, authenticated: bool) -> bool:
        """Port 25 mail from clients that did not log in and are not in trusted_networks."""
        if not self.settings.enabled or service != "smtp" or authenticated:
            return False
        try:
            address = ipaddress.ip_address(client_ip.split("%", 1)[0])
        except ValueError:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return not any(address in network for network in self.settings.trusted_networks)

    async def check(self, *, client_ip: str, helo: str, sender: str, message: bytes) -> CheckResult:
        header_end = message.find(b"\r\n\r\n")
        header_block = message if header_end < 0 else message[: header_end + 2]
        spf_outcome, dkim_outcomes, arc_outcome = await asyncio.gather(
            _guarded(
                spf.verify_sender(self.lookup, client_ip, sender, helo, receiver=self.hostname),
                "spf",
                None,
            ),
            _guarded(
                dkim.verify(message, self.lookup, max_signatures=self.settings.max_signatures),
                "dkim",
                [],
            ),
            _guarded(arc.validate(message, self.lookup), "arc", None),
        )
        spf_result = spf_outcome.result if spf_outcome is not None else "permerror"
        spf_domain = spf_outcome.domain if spf_outcome is not None else ""
        passing: list[tuple[str, str]] = [(o.result, o.domain) for o in dkim_outcomes]
        domains = dmarc.from_domains(header_block)
        from_problem: str | None = None
        from_domain = ""
        dmarc_result, dmarc_policy = "none", "none"
        dmarc_outcome: dmarc.DmarcOutcome | None = None
        if isinstance(domains, dmarc.FromError):
            from_problem = domains.detail
        else:
            # Several From domains (DMARCbis §4.9.1): each is evaluated, the worst one counts.
            # DMARC uses the MAIL FROM identity only; none for the null sender (DMARCbis).
            spf_identity = (spf_result, spf_domain) if sender else None
            verdicts = [
                (await self._dmarc(domain, spf_identity, passing), domain)
                for domain in domains[:MAX_FROM_DOMAINS]
            ]
            dmarc_outcome, from_domain = max(verdicts, key=lambda verdict: _badness(verdict[0]))
            if dmarc_outcome is None:
                dmarc_result = "temperror"
            else:
                dmarc_result, dmarc_policy = dmarc_outcome.result, dmarc_outcome.policy
        own = any(from_domain == d or from_domain.endswith("." + d) for d in self.local_domains)
        own_aligned = own and (
            any(r == "pass" and aligned(d, from_domain) for r, d in passing)
            or (spf_result == "pass" and aligned(spf_domain, from_domain))
        )
        arc_result = arc_outcome.result if arc_outcome is not None else "none"
        sealer = arc_outcome.sealers[-1] if arc_outcome and arc_outcome.sealers else None
        findings = Findings(
            spf=spf_result,
            dkim=tuple(r for r, _ in passing),
            dmarc=dmarc_result,
            dmarc_policy=dmarc_policy,
            own_domain=own,
            own_aligned=own_aligned,
            arc=arc_result,
            arc_sealer=sealer,
            from_problem=from_problem,
        )
        decision = decide(findings, self.settings)
        results = [
            self._spf_result(spf_result, sender, helo),
            *self._dkim_results(dkim_outcomes),
            authres.MethodResult(
                "dmarc", dmarc_result, None, (("header.from", from_domain),) if from_domain else ()
            ),
            authres.MethodResult("arc", arc_result, None, ()),
        ]
        self.metrics.auth_results((result.method, result.result) for result in results)
        dkim_summary = ",".join(r for r, _ in passing) or "none"
        summary = f"spf={spf_result} dkim={dkim_summary} dmarc={dmarc_result} arc={arc_result}"
        cleaned = authres.remove_ours(message, self.hostname)
        evaluation = None
        if dmarc_outcome is not None and decision.action != "defer":
            # What the aggregate report to the From domain will count (DMARCbis reporting).
            disposition, override = dmarc_reporting.applied(
                dmarc_outcome,
                decision.action,
                trusted_forwarder=decision.reason.startswith("dmarc fail overridden by arc"),
            )
            evaluation = dmarc_reporting.evaluation_record(
                dmarc_outcome,
                time=time.time(),
                source_ip=client_ip,
                header_from=from_domain,
                spf=(spf_domain, spf_result) if sender else None,
                dkim=[(o.domain, o.selector, o.result) for o in dkim_outcomes],
                disposition=disposition,
                override=override,
            )
        return CheckResult(
            decision,
            authres.format_header(self.hostname, results),
            summary,
            cleaned if cleaned != message else None,
            evaluation,
        )

    async def _dmarc(
        self,
        from_domain: str,
        spf_found: tuple[str, str] | None,
        dkim_found: list[tuple[str, str]],
    ) -> dmarc.DmarcOutcome | None:
        """The DMARC outcome for one From domain; None for a temporary DNS failure."""
        try:
            return await dmarc.evaluate(self.lookup, from_domain, spf=spf_found, dkim=dkim_found)
        except DnsTemporaryError:
            return None

    @staticmethod
    def _spf_result(result: str, sender: str, helo: str) -> authres.MethodResult:
        if sender:
            return authres.MethodResult("spf", result, None, (("smtp.mailfrom", sender),))
        return authres.MethodResult("spf", result, None, (("smtp.helo", helo),))

    @staticmethod
    def _dkim_results(outcomes: Sequence[dkim.DkimOutcome]) -> list[authres.MethodResult]:
        if not outcomes:
            return [authres.MethodResult("dkim", "none", None, ())]
        return [
            authres.MethodResult(
                "dkim",
                o.result,
                o.reason or None,
                (("header.d", o.domain), ("header.s", o.selector), ("header.b", o.b_prefix)),
            )
            for o in outcomes
        ]


async def _guarded(check: Awaitable[T], name: str, failed: T) -> T:
    """A check that crashed (a bug of ours) counts as no verdict, never as lost mail: logged."""
    try:
        return await check
    except Exception:
        log.exception("%s check crashed; treated as no result", name)
        return failed
