"""Ingress policy for one SMTP session: who may send to whom, credentials, and queuing.

Typed decisions only (a `Reply` to refuse, None to accept); the engine owns the wire format.
Policy, as the issue asks and Postfix does by default: mail to local domains is accepted from
anyone but only for existing users/aliases (550 5.1.1); other domains only for authenticated
sessions (554 5.7.1, never an open relay).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from postroom.config import Config
from postroom.config_milter import MilterConfig
from postroom.delivery.local import Delivered, LocalDelivery, deliver_before_queuing
from postroom.mailauth.srs import is_srs
from postroom.model.queue import (
    Envelope,
    QueuedMessage,
    Recipient,
    RecipientState,
    new_queue_id,
)
from postroom.proto.smtp import events as ev
from postroom.proto.smtp import replies
from postroom.proto.smtp.replies import Reply
from postroom.queue.reports import Reporter
from postroom.queue.spool import Spool
from postroom.services import cleanup, dmarc_reporting
from postroom.services.antispam import Defences
from postroom.services.authn import Authenticator
from postroom.services.dmarc_reporting import is_report_address
from postroom.services.dns_records import TLS_REPORTS
from postroom.services.etrn import EtrnGate, Verdict
from postroom.services.junk_filter import JunkFilter
from postroom.services.mail_check import CheckResult, MailChecker
from postroom.services.milter import ClientFacts, MailFacts, MilterSession, Outcome
from postroom.storage.api import Store, Tx
from postroom.storage.buffer import ContentBuffer
from postroom.storage.records import (
    EvaluationRecord,
    Resolution,
    StorageFailure,
    normalize_address,
)

log = logging.getLogger("postroom.smtp")

UNREADABLE_REPORT = replies.reply(
    550, "5.6.0", "This address takes DMARC aggregate reports only, and this one cannot be read"
)
RESOLVE_CACHE_SECONDS = 2.0
RESOLVE_CACHE_SIZE = 10_000


@dataclass
class IngressContext:
    """What every session shares: configuration, the store, the spool, local delivery."""

    config: Config
    store: Store
    spool: Spool
    local: LocalDelivery
    # Called when mail for other domains was queued (or ETRN asked): starts outbound delivery.
    outbound_wakeup: Callable[[], None] = lambda: None
    # SPF, DKIM, DMARC and ARC of port-25 mail ([verify]); None: nothing is checked.
    checker: MailChecker | None = None
    # Each local user's Bayesian junk filter on port-25 mail ([junk]); None: not judged.
    junk: JunkFilter | None = None
    # Reverses SRS addresses of ours (bounces to forwarded mail); None: no SRS.
    srs_reverse: Callable[[str], Awaitable[str | None]] | None = None
    authenticator: Authenticator = field(init=False)
    local_domains: frozenset[str] = field(default_factory=frozenset)
    etrn_gate: EtrnGate = field(default_factory=EtrnGate)
    # DNS lists, greylisting, sending limits, login throttling (services/antispam.py).
    defences: Defences | None = None
    # [[milter]] by SMTP service; a service without milters is absent (nothing to do per session).
    milters: dict[str, tuple[MilterConfig, ...]] = field(default_factory=dict)

    _known: dict[str, tuple[float, Resolution]] = field(default_factory=dict)
    _stamp: int = 0

    def __post_init__(self) -> None:
        self.authenticator = Authenticator(self.store, self.config.auth.cache_ttl)
        self.authenticator.defences = self.defences
        self.local_domains = frozenset(d.lower() for d in self.config.domains)
        for milter in self.config.milters:
            for service in milter.services:
                self.milters[service] = (*self.milters.get(service, ()), milter)

    def milter_session(self, service: str, client_addr: str, client_port: int) -> MilterSession:
        # The service's address of the client's family (IPv4 or IPv6), else its first one.
        endpoints = self.config.listen.enabled().get(service, ())
        family = [e for e in endpoints if (":" in e.host) == (":" in client_addr)] or endpoints
        facts = ClientFacts(
            service=service,
            hostname=self.config.hostname,
            client_addr=client_addr,
            client_port=client_port,
            daemon_addr=family[0].host if family else "",
            local_domains=self.local_domains,
        )
        return MilterSession(self.milters[service], facts, self.config.limits.message_size)

    async def etrn(self, node: str, client: str) -> Reply | None:
        """RFC 1985: start delivery of the mail waiting for `node` (a domain or "@domain";
        "#queue" names no mail of ours, it only wakes the scheduler). None: started (250),
        or already, moments ago; else the 458 to answer (services/etrn.py)."""
        verdict = self.etrn_gate.decide(node, client)
        if verdict is Verdict.STARTED:
            log.debug("etrn client=%s node=%s result=250 (already started)", client, node)
            return None
        if verdict is Verdict.REFUSED:
            log.info("etrn client=%s node=%s result=458 too many requests", client, node)
            return replies.etrn_refused(node)
        if not node.startswith("#"):
            now = time.time()
            try:
                await self.store.write(lambda tx: tx.queue.retry_domain(node, now))
            except StorageFailure as failure:
                self.etrn_gate.forget(node)
                refusal = replies.etrn_failed(node, full=failure.full)
                log.warning(
                    "etrn client=%s node=%s result=458 %s: %s",
                    client,
                    node,
                    refusal.enhanced,
                    failure,
                )
                return refusal
        log.info("etrn client=%s node=%s result=250", client, node)
        self.outbound_wakeup()
        return None

    def accounts_changed(self) -> None:
        """Users or aliases may have changed (SIGHUP): the next RCPT asks the store."""
        self._known.clear()

    async def resolve(self, address: str) -> Resolution:
        """Alias expansion for a local address, with a short-lived cache of positive answers.

        Only addresses that exist are cached (for RESOLVE_CACHE_SECONDS), and the CLI's accounts
        stamp (one stat) drops the cache: a user or alias change applies to the next RCPT.
        """
        key = normalize_address(address)
        stamp = self.store.signals.version("accounts")
        if stamp != self._stamp:
            self._stamp = stamp
            self._known.clear()
        now = time.monotonic()
        cached = self._known.get(key)
        if cached is not None and now - cached[0] < RESOLVE_CACHE_SECONDS:
            return cached[1]
        resolution: Resolution = await self.store.read(
            lambda tx: tx.accounts.resolve(key, self.local_domains)
        )
        if not resolution.empty:
            if len(self._known) >= RESOLVE_CACHE_SIZE:
                self._known.clear()
            self._known[key] = (now, resolution)
        return resolution


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the driver knows about the connection when the transaction completes."""

    helo: str
    extended: bool
    tls: str
    identity: str | None


class IngressSession:
    """Policy and queuing for one connection (the engine's decisions go through here)."""

    def __init__(
        self, ctx: IngressContext, *, service: str, client_addr: str, client_port: int = 0
    ) -> None:
        self.ctx = ctx
        self.service = service
        self.client_addr = client_addr
        # The session's milters ([[milter]]), None when this service has none.
        self.milter: MilterSession | None = None
        if service in ctx.milters:
            self.milter = ctx.milter_session(service, client_addr, client_port)
        self._milter_id: str | None = None  # the queue ID milters were told ({i})
        self._rcpt_mark = 0
        self._sender: str | None = None
        self._mail: ev.MailFrom | None = None
        self._recipients: list[Recipient] = []
        self._rcpt_addresses: list[str] = []
        self._content: ContentBuffer | None = None
        self._report = False  # the transaction includes our DMARC report address
        defences = ctx.defences
        self.screen = None if defences is None else defences.screen(client_addr, service)

    async def connect_refusal(self) -> Reply | None:
        """At connect: the 421 for a client network blocked (services/antispam.py)."""
        return None if self.screen is None else await self.screen.connect_refusal()

    # --- envelope ------------------------------------------------------------------------------

    async def mail(self, event: ev.MailFrom, identity: str | None = None) -> Reply | None:
        self._reset()
        if identity is not None and self.ctx.defences is not None:
            refusal = await self.ctx.defences.message(identity)  # [limits] messages_per_hour
            if refusal is not None:
                return refusal
        self._mail = event
        return None

    async def rcpt(self, event: ev.RcptTo, identity: str | None) -> Reply | None:
        try:
            return await self._rcpt(event, identity)
        except StorageFailure as failure:
            # The database or the disk failed (PostgreSQL restarting): try again later, one line.
            log.warning(
                "rcpt failed client=%s to=<%s> result=451 %s",
                self.client_addr,
                event.address,
                failure,
            )
            return replies.LOCAL_ERROR  # RFC 5321 §4.2.2: 451, local error in processing

    async def _rcpt(self, event: ev.RcptTo, identity: str | None) -> Reply | None:
        self._rcpt_mark = len(self._recipients)
        address = event.address
        if address == "postmaster":
            # RFC 5321 §4.5.1: the bare <Postmaster> goes to postmaster of our first domain.
            address = f"postmaster@{self.ctx.config.domains[0]}"
        screen = self.screen
        if screen is not None and screen.rcpt_checks:
            refusal = await screen.listed(address, identity)  # DNSBL (postmaster@ passes)
            if refusal is not None:
                return refusal
        domain = address.rpartition("@")[2].lower()
        original = None
        if domain in self.ctx.local_domains:
            original = await self._srs_original(address)
        if original is not None:
            # A reply or bounce to mail we forwarded with SRS: back to its original sender.
            if not original:
                return replies.NO_SUCH_USER  # forged, damaged or too old (more than 21 days)
            resolution = Resolution((), (original,))
        elif domain in self.ctx.local_domains:
            resolution = await self.ctx.resolve(address)
            if resolution.empty and is_report_address(address, self.ctx.local_domains):
                # The rua address `dns records` publishes: the report is kept, not delivered.
                self._report = True
                self._rcpt_addresses.append(event.address)
                return None
            if resolution.empty and address.rpartition("@")[0].lower() == TLS_REPORTS:
                # The TLS-RPT address `dns records` publishes (RFC 8460 §3): to the postmaster.
                resolution = await self.ctx.resolve(f"postmaster@{domain}")
            if resolution.empty:
                if screen is not None:
                    await screen.unknown_recipient(identity)  # slower after a few (guessing)
                return replies.NO_SUCH_USER
            if screen is not None and screen.rcpt_checks and self._mail is not None:
                refusal = await screen.greylisted(self._mail.address, address, identity)
                if refusal is not None:
                    return refusal
            # An alias may point outside: its owner configured that forwarding, so it is no relay.
        else:
            if identity is None:
                return replies.RELAY_DENIED
            resolution = Resolution((), (address,))
        if identity is not None and self.ctx.defences is not None:
            refusal = await self.ctx.defences.recipient(identity)  # [limits] recipients_per_hour
            if refusal is not None:
                return refusal
        for target, user_id in resolution.local_users:
            self._add_recipient(Recipient(target, event.address, user_id), event)
        for target in resolution.remote:
            self._add_recipient(Recipient(target, event.address, None), event)
        self._rcpt_addresses.append(event.address)
        return None

    # --- milters (services/milter.py), called by the driver when `self.milter` is set ---------

    async def milter_mail(self, event: ev.MailFrom, info: SessionInfo) -> Reply | None:
        assert self.milter is not None
        self._milter_id = new_queue_id()
        facts = MailFacts(info.helo, info.tls, info.identity, self._milter_id)
        refusal = await self.milter.mail(event.address, event.params, facts)
        if refusal is not None:
            self._reset()
        return refusal

    async def milter_rcpt(self, event: ev.RcptTo) -> Reply | None:
        assert self.milter is not None
        refusal = await self.milter.rcpt(event.address, event.params)
        if refusal is not None:
            # Refused by a milter: the recipients this RCPT added go again.
            del self._recipients[self._rcpt_mark :]
            if self._rcpt_addresses and self._rcpt_addresses[-1] == event.address:
                self._rcpt_addresses.pop()
        return refusal

    async def _run_milters(
        self, queue_id: str, prefix: bytes, content: ContentBuffer
    ) -> tuple[Outcome, ContentBuffer]:
        """The message (our trace headers on top) through the milters; with changes, a new
        buffer holding the whole new message (the old one is discarded)."""
        assert self.milter is not None
        message = prefix + await asyncio.to_thread(content.contents)
        outcome = await self.milter.end_of_message(queue_id, message)
        if outcome.message is None:
            return outcome, content
        changed = self.ctx.spool.new_buffer(f"{time.monotonic_ns()}-{id(self)}-milter")
        try:
            await asyncio.to_thread(changed.write, outcome.message)
        except BaseException:
            changed.discard()
            raise
        content.discard()
        return outcome, changed

    async def _milter_recipients(self, outcome: Outcome) -> None:
        """Recipients deleted and added by milters (added ones resolved like RCPT TO)."""
        if outcome.deleted:
            gone = {normalize_address(a) for a in outcome.deleted}
            self._recipients = [
                r
                for r in self._recipients
                if normalize_address(r.original) not in gone
                and normalize_address(r.address) not in gone
            ]
        for address, _args in outcome.added:
            domain = address.rpartition("@")[2].lower()
            if domain in self.ctx.local_domains:
                resolution = await self.ctx.resolve(address)
                if resolution.empty:
                    log.info("milter added unknown recipient <%s>: ignored", address)
                    continue
            else:
                resolution = Resolution((), (address,))
            for target, user_id in resolution.local_users:
                self._add_recipient(Recipient(target, address, user_id), None)
            for target in resolution.remote:
                self._add_recipient(Recipient(target, address, None), None)

    async def _srs_original(self, address: str) -> str | None:
        """For an SRS address: the original sender ("" when the address is not a valid SRS
        address of ours); None for any other address."""
        if self.ctx.srs_reverse is None or not is_srs(address.rpartition("@")[0]):
            return None
        return await self.ctx.srs_reverse(address) or ""

    def _add_recipient(self, rcpt: Recipient, event: ev.RcptTo | None) -> None:
        if any(r.address == rcpt.address for r in self._recipients):
            return
        if event is not None:
            rcpt.orcpt = event.params.orcpt
            rcpt.notify = event.params.notify
        self._recipients.append(rcpt)

    # --- content -------------------------------------------------------------------------------

    def data(self, chunk: bytes) -> None:
        if self._content is None:
            self._content = self.ctx.spool.new_buffer(f"{time.monotonic_ns()}-{id(self)}")
        self._content.write(chunk)

    async def complete(self, info: SessionInfo) -> Reply:
        assert self._mail is not None
        content = self._content or self.ctx.spool.new_buffer(f"empty-{id(self)}")
        self._content = None
        mail = self._mail
        arrival = time.time()
        queue_id = self._milter_id or new_queue_id(arrival)
        self._milter_id = None
        checked: CheckResult | None = None
        milter_junk = False
        try:
            if cleanup.received_count(content.head) > self.ctx.config.limits.received_headers:
                self._log_reject(mail, replies.MAIL_LOOP)
                return replies.MAIL_LOOP
            checker = self.ctx.checker
            if checker is not None and checker.applies(
                self.service, self.client_addr, info.identity is not None
            ):
                checked, content = await self._check(checker, mail, info, content)
                refusal = checked.decision.reply
                if refusal is not None:
                    self._log_checked_reject(mail, checked, refusal)
                    if checked.decision.action == "reject" and checked.evaluation is not None:
                        evaluation = checked.evaluation
                        await self.ctx.store.write(
                            lambda tx: tx.dmarc.record_evaluation(evaluation), durable=False
                        )
                    return refusal
            if self._report:
                kept = await self._take_report(content, arrival)
                if not self._recipients:
                    # Only the report: kept, or unreadable with nobody to show it to.
                    return replies.queued(queue_id) if kept else UNREADABLE_REPORT
            protocol = cleanup.protocol_name(
                info.extended, bool(info.tls), info.identity is not None
            )
            prefix = cleanup.received_header(
                cleanup.TraceInfo(
                    hostname=self.ctx.config.hostname,
                    queue_id=queue_id,
                    client_helo=info.helo,
                    client_addr=self.client_addr,
                    protocol=protocol,
                    tls=info.tls,
                    recipients=tuple(self._rcpt_addresses),
                    arrival=arrival,
                )
            )
            if self.service != "smtp":
                prefix += cleanup.submission_headers(
                    content.head, queue_id, self.ctx.config.hostname, arrival
                )
            if checked is not None:
                prefix = checked.header + prefix  # RFC 8601 §5: above the trace we add
            if self.milter is not None and self.milter.wants_message:
                outcome, content = await self._run_milters(queue_id, prefix, content)
                if outcome.message is not None:
                    prefix = b""  # the new message holds our headers too
                if outcome.reply is not None:
                    self._log_reject(mail, outcome.reply)
                    return outcome.reply
                if outcome.sender is not None:
                    mail = dataclasses.replace(mail, address=outcome.sender)
                await self._milter_recipients(outcome)
                if outcome.discard or not self._recipients:
                    log.info(
                        "discarded id=%s client=%s from=<%s> by milter%s",
                        queue_id,
                        self.client_addr,
                        mail.address,
                        "" if outcome.discard else " (no recipient left)",
                    )
                    return replies.queued(queue_id)
                milter_junk = outcome.junk
            # After the milters: it judges the message and recipients they leave.
            junk = self.ctx.junk
            if junk is not None and self.service == "smtp" and info.identity is None:
                auth = checked.summary if checked is not None else ""
                await junk.judge(self._recipients, content.contents, content.size, auth)
                if junk.refuses(self._recipients):
                    self._log_junk_reject(mail)
                    return replies.SPAM_REFUSED
            envelope = Envelope(
                sender=mail.address,
                params=mail.params,
                client_addr=self.client_addr,
                client_helo=info.helo,
                protocol=protocol,
                tls=info.tls,
                auth_user=info.identity or "",
                arrival=arrival,
                auth=checked.summary if checked is not None else "",
                junk=milter_junk or (checked is not None and checked.decision.action == "junk"),
                message_id=cleanup.message_id_of(prefix + content.head),
                verdict=_verdict(checked, milter_junk),
            )
            message = QueuedMessage(queue_id, envelope, prefix, 0, content.size, self._recipients)
            deliver = functools.partial(
                _deliver_and_count,
                reporter=self.ctx.local.reporter,
                evaluation=checked.evaluation if checked is not None else None,
            )
            delivered = await self.ctx.spool.accept(message, content, deliver)
        except StorageFailure as failure:
            # The disk or the database failed: a temporary failure, one line, no traceback.
            response = replies.INSUFFICIENT_STORAGE if failure.full else replies.LOCAL_ERROR
            log.warning(
                "queueing failed client=%s from=<%s> size=%d result=%d %s: %s",
                self.client_addr,
                mail.address,
                content.size,
                response.code,
                response.enhanced,
                failure,
            )
            return response
        except Exception:
            log.exception("queueing failed client=%s", self.client_addr)
            return replies.LOCAL_ERROR
        finally:
            content.discard()  # its spill file, whatever happened (a mail loop too)
            self._reset()
        if any(
            r.user_id is not None and r.state is RecipientState.QUEUED for r in message.recipients
        ):
            self.ctx.local.notify(queue_id)  # immediate delivery failed: the worker retries
        if message.queued_more or any(r.user_id is None for r in message.recipients):
            self.ctx.outbound_wakeup()
        scored = ",".join(
            f"<{r.address}>={r.spam_score}" for r in message.recipients if r.spam_score
        )
        log.info(
            "queued id=%s client=%s from=<%s> to=%s size=%d result=250 delivered=%d%s%s",
            queue_id,
            self.client_addr,
            mail.address,
            ",".join(f"<{r.address}>" for r in message.recipients),
            message.size,
            len(delivered),
            "" if checked is None else f" {checked.summary} action={checked.decision.action}",
            f" spam={scored}" if scored else "",
        )
        return replies.queued(queue_id)

    async def _take_report(self, content: ContentBuffer, arrival: float) -> bool:
        """Keep a DMARC aggregate report sent to our rua address (True). One that cannot be
        read (False, logged) goes to the postmaster as a normal message, when there is one."""
        if await dmarc_reporting.take_report(
            self.ctx.store, content, arrival, domains=self.ctx.local_domains
        ):
            return True
        postmaster = await self.ctx.resolve(f"postmaster@{self.ctx.config.domains[0]}")
        for target, user_id in postmaster.local_users:
            self._add_recipient(Recipient(target, target, user_id), None)
        return False

    async def _check(
        self, checker: MailChecker, mail: ev.MailFrom, info: SessionInfo, content: ContentBuffer
    ) -> tuple[CheckResult, ContentBuffer]:
        """The inbound checks; the content to keep (without forged verdicts of ours)."""
        message = await asyncio.to_thread(content.contents)
        checked = await checker.check(
            client_ip=self.client_addr, helo=info.helo, sender=mail.address, message=message
        )
        if checked.cleaned is None:
            return checked, content
        cleaned = self.ctx.spool.new_buffer(f"{time.monotonic_ns()}-{id(self)}-clean")
        try:
            await asyncio.to_thread(cleaned.write, checked.cleaned)
        except BaseException:
            cleaned.discard()
            raise
        content.discard()
        return checked, cleaned

    def _log_junk_reject(self, mail: ev.MailFrom) -> None:
        scores = ",".join(f"<{r.address}>={r.spam_score}" for r in self._recipients)
        log.info(
            "rejected client=%s from=<%s> result=550 5.7.1 junk filter scores %s",
            self.client_addr,
            mail.address,
            scores,
        )

    def _log_checked_reject(self, mail: ev.MailFrom, checked: CheckResult, refusal: Reply) -> None:
        log.info(
            "rejected client=%s from=<%s> result=%d %s %s (%s)",
            self.client_addr,
            mail.address,
            refusal.code,
            refusal.enhanced or "",
            checked.summary,
            checked.decision.reason,
        )

    def abort(self) -> None:
        self._reset()
        if self.milter is not None:
            self.milter.abort()

    def close(self) -> None:
        """The connection ended."""
        self._reset()
        if self.screen is not None:
            self.screen.close()
        if self.milter is not None:
            self.milter.close()

    def _reset(self) -> None:
        if self._content is not None:
            self._content.discard()
            self._content = None
        self._mail = None
        self._recipients = []
        self._rcpt_addresses = []
        self._report = False

    def rejected(self, what: str, address: str, response: Reply) -> None:
        log.info(
            "rejected client=%s %s=<%s> result=%d %s",
            self.client_addr,
            what,
            address,
            response.code,
            response.enhanced or "",
        )

    def _log_reject(self, mail: ev.MailFrom, response: Reply) -> None:
        self.rejected("from", mail.address, response)


def _deliver_and_count(
    tx: Tx,
    message: QueuedMessage,
    reporter: Reporter,
    evaluation: EvaluationRecord | None,
) -> list[Delivered]:
    """Local delivery in the accepting transaction, and the DMARC evaluation counted for the
    aggregate report in the same commit (no write of its own)."""
    if evaluation is not None:
        tx.dmarc.record_evaluation(evaluation)
    return deliver_before_queuing(tx, message, reporter)


def _verdict(checked: CheckResult | None, milter_junk: bool) -> str:
    """What the inbound checks (and milters) decided, for the delivery trace."""
    parts = [] if checked is None else [f"{checked.decision.action} ({checked.decision.reason})"]
    if milter_junk:
        parts.append("junk (milter)")
    return "; ".join(parts)
