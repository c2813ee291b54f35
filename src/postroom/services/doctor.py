"""`postroom doctor`: what stands between this server and mail that arrives and is trusted,
each finding with the one thing to do about it.

Every check is an async function returning `Check`s (name, status ok/warn/fail/skip, detail,
fix). The DNS checks ask only the `DnsLookup` they are given (the CLI's is `[dns]
nameservers`): the MX of each domain names `hostname`; the host name has A/AAAA records and
each address's PTR names it back (FCrDNS); each domain's SPF passes for every address (the
SPF evaluator, `mailauth.spf.check_host`); each DKIM key's published record carries the public
half of the stored private key; DMARC, TLS-RPT and MTA-STS records are there and parse, and
the MTA-STS policy is served and names the MX; the addresses are on no common DNS block list.
The local checks (certificate, listeners, open relay, disk, queue) are in
`services/doctor_local.py`. The expected records come from `services/dns_records.py`, the
text `postroom dns records` prints, so a fix names the exact line to publish.

Everything is bounded in time: each check gets `CHECK_LIMIT` seconds (a DNS failure or a
timeout is a warning: the answer is unknown, not wrong), network probes have their own
timeouts, and all checks run at once. `run` gives them in a fixed order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from postroom.config import Config
from postroom.dns.lookup import DnsLookup, reverse_name
from postroom.dns.resolver import DnsTemporaryError
from postroom.mailauth import dmarc, mta_sts, spf, tlsrpt
from postroom.mailauth.keys import Algorithm, public_of
from postroom.services import dkim_keys, dnsbl
from postroom.services import dns_records as records
from postroom.services import doctor_local as local
from postroom.services.dns_answers import dkim_public, is_global, mx_host
from postroom.services.doctor_report import Check, Status
from postroom.storage.api import Tx
from postroom.storage.records import DkimKey, QueueEntry

CHECK_LIMIT = 30.0  # seconds one check may take, its DNS questions and probes included
SPF_LIMIT = 15.0  # seconds for one SPF evaluation (RFC 7208 §4.6.4 asks for at least 20 in
# a receiver; here a slower answer is reported as unknown instead)

# The DNS block lists asked for each address (RFC 5782), whether they list IPv6 addresses,
# and where a listed address asks to be removed.
DNSBLS: tuple[tuple[str, bool, str], ...] = (
    ("zen.spamhaus.org", True, "https://check.spamhaus.org/"),
    ("bl.spamcop.net", False, "https://www.spamcop.net/bl.shtml"),
    ("b.barracudacentral.org", False, "https://www.barracudacentral.org/rbl/removal-request"),
)

PolicyFetch = Callable[[str], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class StoreFacts:
    """What the checks need from the store: each domain's DKIM keys to publish, the queue."""

    keys: Mapping[str, Sequence[DkimKey]]
    queue: Sequence[QueueEntry]


def read_facts(tx: Tx, domains: Sequence[str], now: float) -> StoreFacts:
    """Read in one transaction (the CLI's reader, or `Store.read` in the server)."""
    keys = {domain: dkim_keys.published_keys(tx, domain, now) for domain in domains}
    return StoreFacts(keys, tx.queue.entries())


@dataclass
class Doctor:
    """The checks of one run. `fetch_policy(domain)` returns the MTA-STS policy body
    (`doctor_local.HttpsPolicyFetch` by default; tests point it at their own server);
    `dnsbls` the block lists asked."""

    config: Config
    lookup: DnsLookup
    facts: StoreFacts
    domains: Sequence[str]
    fetch_policy: PolicyFetch
    now: float = field(default_factory=time.time)
    dnsbls: Sequence[tuple[str, bool, str]] = DNSBLS
    probe_timeout: float = local.PROBE_TIMEOUT
    check_limit: float = CHECK_LIMIT
    certificate: local.CertificateSource | None = None  # None: the [tls] files, unprobed

    @property
    def hostname(self) -> str:
        return self.config.hostname

    async def run(self) -> list[Check]:
        """Every check, in a fixed order: the host, then each domain, then the local ones."""
        address_check, addresses = await self.bounded(
            "addresses", self.hostname, self.host_addresses()
        )
        jobs: list[tuple[str, str, Awaitable[list[Check]]]] = []
        for address in addresses:
            jobs.append(("ptr", address, self.ptr(address)))
        if self.hostname not in self.domains:
            jobs.append(("spf", self.hostname, self.spf_helo(addresses)))
        for domain in self.domains:
            jobs += [
                ("mx", domain, self.mx(domain)),
                ("spf", domain, self.spf(domain, addresses)),
                ("dkim", domain, self.dkim(domain)),
                ("dmarc", domain, self.dmarc(domain)),
                ("tls-rpt", domain, self.tlsrpt(domain)),
                ("mta-sts", domain, self.mta_sts(domain)),
            ]
        served = local.certificate(self.config, self.now, self.certificate)
        jobs.append(("certificate", self.hostname, served))
        for service, endpoints in self.config.listen.enabled().items():
            probe = local.port(service, endpoints, addresses, self.probe_timeout, self.config)
            jobs.append(("port", service, probe))
        jobs.append(
            ("open-relay", "", local.open_relay(self.config, addresses, self.probe_timeout))
        )
        for address in addresses:
            for zone, ipv6, removal in self.dnsbls:
                if ipv6 or ":" not in address:
                    jobs.append(("dnsbl", f"{address} {zone}", self.dnsbl(address, zone, removal)))
        jobs.append(("disk", str(self.config.data_dir), local.disk(self.config.data_dir)))
        jobs.append(("queue", "", local.queue(self.facts.queue, self.now)))
        results = await asyncio.gather(
            *(self.bounded_list(kind, subject, job) for kind, subject, job in jobs)
        )
        checks = [address_check]
        for found in results:
            checks += found
        return checks

    # --- bounds ----------------------------------------------------------------------------

    async def bounded(
        self, kind: str, subject: str, job: Awaitable[tuple[Check, list[str]]]
    ) -> tuple[Check, list[str]]:
        try:
            async with asyncio.timeout(self.check_limit):
                return await job
        except TimeoutError:
            return self._late(kind, subject), []
        except DnsTemporaryError as error:
            return self._unanswered(kind, subject, error), []

    async def bounded_list(
        self, kind: str, subject: str, job: Awaitable[list[Check]]
    ) -> list[Check]:
        try:
            async with asyncio.timeout(self.check_limit):
                return await job
        except TimeoutError:
            return [self._late(kind, subject)]
        except DnsTemporaryError as error:
            return [self._unanswered(kind, subject, error)]

    def _late(self, kind: str, subject: str) -> Check:
        return Check(
            kind,
            subject,
            "warn",
            f"no result within {self.check_limit:g} s",
            f"check that [dns] nameservers in {self.config.path} answer, then run it again",
        )

    def _unanswered(self, kind: str, subject: str, error: DnsTemporaryError) -> Check:
        return Check(
            kind,
            subject,
            "warn",
            f"DNS gave no answer: {error}",
            f"check that [dns] nameservers in {self.config.path} answer, then run it again",
        )

    # --- the host --------------------------------------------------------------------------

    async def host_addresses(self) -> tuple[Check, list[str]]:
        """The host name's A and AAAA records: other servers connect there, and FCrDNS, SPF
        and the block lists are about them."""
        host = self.hostname
        v4, v6 = await asyncio.gather(self.lookup.query(host, "A"), self.lookup.query(host, "AAAA"))
        addresses = [*v4.records, *v6.records]
        if not addresses:
            why = "does not exist in DNS" if v4.nxdomain else "has no A or AAAA record"
            return (
                Check(
                    "addresses",
                    host,
                    "fail",
                    f"{host} {why}: no server can connect to it",
                    f"publish {records.address_line(host, '<public IPv4 address>')} (and AAAA "
                    "for IPv6)",
                ),
                [],
            )
        private = [a for a in addresses if not is_global(a)]
        detail = f"{host} has {', '.join(addresses)}"
        if private:
            return (
                Check(
                    "addresses",
                    host,
                    "warn",
                    f"{detail}; {', '.join(private)} is not a public address: other servers "
                    "cannot reach it",
                    f"publish the server's public address: {records.address_line(host, '...')}",
                ),
                addresses,
            )
        return Check("addresses", host, "ok", detail), addresses

    async def ptr(self, address: str) -> list[Check]:
        """FCrDNS: the address's PTR names the host name (whose A/AAAA has the address)."""
        host = self.hostname
        name = reverse_name(address)
        answer = await self.lookup.query(name, "PTR")
        want = f"{name}. IN PTR {records.absolute(host)}"
        fix = f"ask whoever owns {address} (the hosting provider) to set its PTR: {want}"
        if not answer.records:
            return [Check("ptr", address, "fail", f"{address} has no PTR record", fix)]
        names = [n.lower().rstrip(".") for n in answer.records]
        if host.lower() in names:
            return [Check("ptr", address, "ok", f"{address} points back to {host}")]
        shown = ", ".join(names[:4])
        return [
            Check(
                "ptr",
                address,
                "fail",
                f"{address} points to {shown}, not to {host}: receivers that check forward-"
                "confirmed reverse DNS refuse or distrust the mail",
                fix,
            )
        ]

    # --- SPF -------------------------------------------------------------------------------

    async def spf(self, domain: str, addresses: Sequence[str]) -> list[Check]:
        """The domain's SPF gives pass for every address mail leaves from."""
        fix = f"publish {records.txt_line(domain, records.SPF_DOMAIN)}"
        return [await self._spf("spf", domain, addresses, fix, missing="fail")]

    async def spf_helo(self, addresses: Sequence[str]) -> list[Check]:
        """The host name's SPF (RFC 7208 §2.3): what receivers check for bounces (MAIL FROM
        <>). Its absence is a warning: bounces are signed with the first domain's keys."""
        host = self.hostname
        fix = f"publish {records.txt_line(host, records.SPF_HOST)}"
        return [await self._spf("spf", host, addresses, fix, missing="warn")]

    async def _spf(
        self, kind: str, domain: str, addresses: Sequence[str], fix: str, *, missing: Status
    ) -> Check:
        if self.config.relay.host is not None:
            fix += f" and authorise {self.config.relay.host.host}'s senders as its provider says"
        answer = await self.lookup.query(domain, "TXT")
        found = [text for text in answer.records if spf.is_spf_record(text)]
        if not found:
            return Check(kind, domain, missing, f"{domain} publishes no SPF record", fix)
        if len(found) > 1:
            # RFC 7208 §4.5: more than one record is a permerror.
            return Check(kind, domain, "fail", f"{domain} has {len(found)} SPF records", fix)
        if not addresses:
            return Check(kind, domain, "skip", f"{found[0]!r}; no host address to check it for")
        outcomes = await asyncio.gather(
            *(
                spf.check_host(
                    self.lookup,
                    address,
                    domain,
                    f"postmaster@{domain}",
                    helo=self.hostname,
                    receiver=self.hostname,
                    now=self.now,
                    time_limit=SPF_LIMIT,
                )
                for address in addresses
            )
        )
        bad = [(a, o) for a, o in zip(addresses, outcomes, strict=True) if o.result != "pass"]
        if not bad:
            return Check(kind, domain, "ok", f"{found[0]!r} passes for {', '.join(addresses)}")
        unknown = all(o.result == "temperror" for _, o in bad)
        said = "; ".join(f"{a}: {o.result} ({o.reason})" for a, o in bad)
        status: Status = "warn" if unknown else "fail"
        if not unknown:
            cover = " ".join(("ip6:" if ":" in a else "ip4:") + a for a, _ in bad)
            fix += f", or add {cover} before the last mechanism of {found[0]!r}"
        return Check(kind, domain, status, f"{found[0]!r} does not pass: {said}", fix)

    # --- MX --------------------------------------------------------------------------------

    async def mx(self, domain: str) -> list[Check]:
        host = self.hostname.lower()
        fix = f"publish {records.mx_line(domain, self.hostname)}"
        answer = await self.lookup.query(domain, "MX")
        if answer.nxdomain:
            return [Check("mx", domain, "fail", f"{domain} does not exist in DNS", fix)]
        hosts = [mx_host(text) for text in answer.records]
        if not hosts:
            return [Check("mx", domain, "fail", f"{domain} has no MX record", fix)]
        if any(name == "." for _, name in hosts):
            # RFC 7505: "MX 0 ." says the domain accepts no mail.
            return [
                Check(
                    "mx",
                    domain,
                    "fail",
                    f"{domain} publishes a null MX: it accepts no mail",
                    f"replace it: {fix.removeprefix('publish ')}",
                )
            ]
        shown = ", ".join(f"{pref} {name}" for pref, name in sorted(hosts))
        if any(name == host for _, name in hosts):
            return [Check("mx", domain, "ok", f"MX {shown}")]
        return [
            Check(
                "mx",
                domain,
                "fail",
                f"MX {shown}: none is {self.hostname}, so mail for {domain} goes elsewhere",
                f"replace the MX records with {records.mx_line(domain, self.hostname)}",
            )
        ]

    # --- DKIM ------------------------------------------------------------------------------

    async def dkim(self, domain: str) -> list[Check]:
        keys = self.facts.keys.get(domain, ())
        if not keys:
            return [
                Check(
                    "dkim",
                    domain,
                    "fail",
                    f"{domain} has no DKIM keys: its mail goes out unsigned",
                    f"run `postroom dns records {domain}` (it makes them) and publish its DKIM "
                    "lines",
                )
            ]
        return list(await asyncio.gather(*(self._dkim_key(key) for key in keys)))

    async def _dkim_key(self, key: DkimKey) -> Check:
        name = dkim_keys.record_name(key)
        algorithm: Algorithm = "rsa" if key.algorithm == "rsa" else "ed25519"
        expected_line = records.dkim_line(key)
        try:
            public = public_of(algorithm, key.private)
        except ValueError as error:
            return Check(
                "dkim",
                name,
                "fail",
                f"the stored private key cannot be read ({error})",
                f"make a new pair: postroom dkim rotate {key.domain} --now",
            )
        if public != key.public:
            return Check(
                "dkim",
                name,
                "fail",
                "the stored public key is not the private key's: signatures would not verify",
                f"make a new pair: postroom dkim rotate {key.domain} --now",
            )
        # An active key signs now: its record missing or wrong fails DKIM for every message.
        # An announced one signs once seen; a retired one only verifies mail in transit.
        serious: Status = "fail" if key.state == "active" else "warn"
        state = f"{key.state} {key.algorithm} key"
        answer = await self.lookup.query(name, "TXT")
        published = [dkim_public(text) for text in answer.records]
        keyed = [p for p in published if p is not None]
        if not keyed:
            what = "no DKIM record" if not answer.records else "no parseable DKIM record"
            return Check(
                "dkim", name, serious, f"{state}: {what} at {name}", f"publish {expected_line}"
            )
        if public in keyed:
            if len(answer.records) > 1:
                return Check(
                    "dkim",
                    name,
                    "warn",
                    f"{state}: {len(answer.records)} TXT records at {name}; verifiers may read "
                    "another one (RFC 6376 §3.6.2.2)",
                    f"keep only {expected_line}",
                )
            return Check("dkim", name, "ok", f"{state}: the published key is the stored one")
        if keyed == [""]:
            detail = f"{state}: the record at {name} is revoked (empty p=)"
        else:
            detail = (
                f"{state}: the published key (p={_short(keyed[0])}) is not the stored one "
                f"(p={_short(public)})"
            )
        return Check("dkim", name, serious, detail, f"replace it with {expected_line}")

    # --- DMARC, TLS-RPT, MTA-STS -----------------------------------------------------------

    async def dmarc(self, domain: str) -> list[Check]:
        name = records.dmarc_name(domain)
        fix = f"publish {records.txt_line(name, records.dmarc_text(domain))}"
        answer = await self.lookup.query(name, "TXT")
        found = [text for text in answer.records if dmarc.is_dmarc_record(text)]
        if len(found) > 1:
            # DMARCbis §4.10: several records at one name are all discarded.
            return [
                Check(
                    "dmarc",
                    domain,
                    "fail",
                    f"{len(found)} DMARC records at {name}",
                    f"keep one: {fix.removeprefix('publish ')}",
                )
            ]
        if found:
            try:
                record = dmarc.parse_record(found[0])
            except dmarc.DmarcRecordError as error:
                return [Check("dmarc", domain, "fail", f"{found[0]!r}: {error}", fix)]
            return [Check("dmarc", domain, "ok", f"p={record.p}: {found[0]!r}")]
        try:
            policy = await dmarc.discover(self.lookup, domain)
        except dmarc.DmarcRecordError as error:
            return [Check("dmarc", domain, "fail", f"the DMARC record that applies: {error}", fix)]
        except ValueError:
            policy = None
        if policy is not None:
            return [
                Check(
                    "dmarc",
                    domain,
                    "ok",
                    f"no record at {name}; the one of {policy.domain} applies "
                    f"({policy.applies}={policy.requested})",
                )
            ]
        return [
            Check(
                "dmarc",
                domain,
                "fail",
                f"no DMARC record at {name}: large mailbox providers refuse or junk bulk mail "
                "without one",
                fix,
            )
        ]

    async def tlsrpt(self, domain: str) -> list[Check]:
        name = records.tlsrpt_name(domain)
        fix = f"publish {records.txt_line(name, records.tlsrpt_text(domain))}"
        answer = await self.lookup.query(name, "TXT")
        if not any(tlsrpt.is_tlsrpt_record(text) for text in answer.records):
            return [
                Check(
                    "tls-rpt",
                    domain,
                    "warn",
                    f"no TLS-RPT record at {name}: nobody tells you when TLS to your MX fails",
                    fix,
                )
            ]
        try:
            record = tlsrpt.select_record(answer.records)
        except tlsrpt.TlsRptError as error:
            return [Check("tls-rpt", domain, "fail", f"{name}: {error}", fix)]
        return [Check("tls-rpt", domain, "ok", f"reports go to {', '.join(record.rua)}")]

    async def mta_sts(self, domain: str) -> list[Check]:
        """RFC 8461: the `_mta-sts` record, and when there is one the policy it announces,
        fetched over HTTPS, naming the MX."""
        name = f"_mta-sts.{domain}"
        answer = await self.lookup.query(name, "TXT")
        if not any(mta_sts.is_sts_record(text) for text in answer.records):
            return [
                Check(
                    "mta-sts",
                    domain,
                    "warn",
                    f"no MTA-STS record at {name}: senders may deliver without TLS; the "
                    "policy check is skipped",
                    f"serve a policy at https://mta-sts.{domain}{mta_sts.POLICY_PATH} and "
                    f'publish {records.absolute(name)} {records.TTL} IN TXT "v=STSv1; id=..."',
                )
            ]
        try:
            mta_sts.select_record(answer.records)
        except mta_sts.MtaStsError as error:
            return [
                Check(
                    "mta-sts",
                    domain,
                    "fail",
                    f"{name}: {error}; senders ignore MTA-STS",
                    f'keep one record: {records.absolute(name)} IN TXT "v=STSv1; id=<1 to '
                    '32 letters and digits, changed with the policy>"',
                )
            ]
        url = f"https://mta-sts.{domain}{mta_sts.POLICY_PATH}"
        try:
            body = await self.fetch_policy(domain)
        except local.PolicyFetchError as error:
            return [
                Check(
                    "mta-sts",
                    domain,
                    "fail",
                    f"{url}: {error}; senders in enforce mode may stop delivering",
                    f"serve the policy at {url} with a certificate valid for mta-sts.{domain}, "
                    f"or remove {name}",
                )
            ]
        try:
            policy = mta_sts.parse_policy(body)
        except mta_sts.MtaStsError as error:
            return [
                Check(
                    "mta-sts",
                    domain,
                    "fail",
                    f"{url}: {error}",
                    f"serve a valid policy at {url} (RFC 8461 §3.2)",
                )
            ]
        mx_answer = await self.lookup.query(domain, "MX")
        hosts = {self.hostname.lower()} | {
            name for _, name in (mx_host(t) for t in mx_answer.records) if name != "."
        }
        uncovered = sorted(h for h in hosts if not mta_sts.mx_matches(h, policy.mx))
        if uncovered and policy.mode != "none":
            return [
                Check(
                    "mta-sts",
                    domain,
                    "fail",
                    f"mode {policy.mode}, mx {', '.join(policy.mx)}: does not name "
                    f"{', '.join(uncovered)}, where mail for {domain} goes",
                    f"add 'mx: {uncovered[0]}' to the policy at {url} and change the id in {name}",
                )
            ]
        if policy.mode == "none":
            return [
                Check(
                    "mta-sts",
                    domain,
                    "warn",
                    f"{url}: mode none: the policy is withdrawn",
                    f"set 'mode: enforce' at {url} and change the id in {name}",
                )
            ]
        return [
            Check(
                "mta-sts",
                domain,
                "ok",
                f"mode {policy.mode}, max_age {policy.max_age}, mx {', '.join(policy.mx)}",
            )
        ]

    # --- block lists -----------------------------------------------------------------------

    async def dnsbl(self, address: str, zone: str, removal: str) -> list[Check]:
        subject = f"{address} {zone}"
        name = dnsbl.query_name(address, zone)
        if name is None:
            return [Check("dnsbl", subject, "skip", f"{address!r} is not an IP address")]
        try:
            answer = await asyncio.wait_for(self.lookup.query(name, "A"), self.probe_timeout)
        except (TimeoutError, DnsTemporaryError) as error:
            return [
                Check(
                    "dnsbl",
                    subject,
                    "warn",
                    f"{zone} did not answer ({error or 'timeout'})",
                    "run it again later",
                )
            ]
        listing = dnsbl.interpret(zone, answer.records)
        if listing.listed:
            return [
                Check(
                    "dnsbl",
                    subject,
                    "fail",
                    f"{address} is listed on {zone} ({', '.join(listing.codes)}): receivers "
                    "using it refuse its mail",
                    f"find and stop what sent spam from {address}, then ask for removal at "
                    f"{removal}",
                )
            ]
        if listing.problem:
            return [
                Check(
                    "dnsbl",
                    subject,
                    "warn",
                    f"{zone}: {listing.problem}",
                    f"lists refuse public resolvers: set [dns] nameservers in "
                    f"{self.config.path} to a resolver of your own",
                )
            ]
        return [Check("dnsbl", subject, "ok", f"{address} is not listed on {zone}")]


def _short(public: str) -> str:
    return public if len(public) <= 24 else f"{public[:12]}...{public[-8:]}"
