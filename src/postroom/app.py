"""Composition root: builds the store, spool, delivery and listeners from a Config, and runs them.

Nothing here is global: everything a component needs is handed to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from starlette.routing import BaseRoute

from postroom.config import Config, ConfigError, load_config
from postroom.delivery.local import LocalDelivery, deliver_before_queuing
from postroom.delivery.smtp import (
    OutboundMessage,
    OutboundRecipient,
    OutboundSettings,
    Route,
    deliver_to_domain,
)
from postroom.dns import DnsResolver
from postroom.dns.lookup import CachingLookup, ResolverLookup
from postroom.model.queue import RecipientOutcome
from postroom.net import tls
from postroom.net.alpn import AlpnChallenges
from postroom.net.certificates import (
    AcmeFiles,
    AcmeSettings,
    CertificateManager,
    certificate_files,
    served_pair,
)
from postroom.net.imap_session import ImapService
from postroom.net.listener import Handler, Listener, ListenError, ShutdownFlag, drain_sessions
from postroom.net.managesieve_session import ManageSieveService
from postroom.net.pop3_session import Pop3Service
from postroom.net.proxy_protocol import ProxyGate
from postroom.net.smtp_session import SmtpService
from postroom.proto.managesieve import ManageSieveSettings
from postroom.proto.pop3.engine import Pop3Settings
from postroom.proto.smtp import replies
from postroom.proto.smtp.server import ServerSettings
from postroom.queue.backoff import RetryPolicy
from postroom.queue.reports import Reporter
from postroom.queue.scheduler import Scheduler
from postroom.queue.spool import Spool
from postroom.services import dmarc_reporting
from postroom.services.antispam import Defences
from postroom.services.authn import Authenticator
from postroom.services.dkim_keys import promote
from postroom.services.imap.session import ImapContext
from postroom.services.ingress import IngressContext
from postroom.services.junk_filter import JunkFilter
from postroom.services.mail_check import MailChecker
from postroom.services.mailbox_events import MailboxEvents
from postroom.services.maildrop import MailboxLocks, MaildropContext
from postroom.services.metrics import Metrics
from postroom.services.outbound_auth import OutboundAuth
from postroom.services.sieve_scripts import ManageSieveContext
from postroom.storage.backend import server_store
from postroom.storage.node import node_name
from postroom.storage.records import ClaimedMessage, StorageFailure
from postroom.web import (
    account,
    acme,
    admin,
    api,
    auth,
    autoconfig,
    domain_check,
    filters,
    reports,
)
from postroom.web import metrics as web_metrics
from postroom.web.server import HttpListener
from postroom.web.site import build_app

log = logging.getLogger("postroom")

SHUTDOWN_GRACE = 30.0
KEY_PROMOTION_EVERY = 600.0  # seconds between looks at DNS for rotated DKIM keys
TASK_STOP_WAIT = 2.0  # seconds for a cancelled background task to end before it is named
# Listeners whose connections start with the TLS handshake (RFC 8314).
IMPLICIT_TLS = frozenset({"submissions", "imaps", "pop3s"})
WEB_SERVICES = frozenset({"http", "https"})
# What a reloaded config (SIGHUP) changes in the running server; the other tables (listen
# addresses, data_dir, hostname, domains, ...) take effect at the next start.
LIVE_TABLES = ("limits", "antispam", "relay", "tls")


@dataclass(frozen=True)
class ServiceKind:
    """How one listener serves: its session handler and its answer past the connection limits."""

    handler: Handler
    refuse: Callable[[str], bytes]
    # Applies the server's (reloaded) config to the service and its sessions to come.
    reconfigure: Callable[[], None] = lambda: None


class MailServer:
    """The running server: one store, one local delivery worker, the configured listeners."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = server_store(
            config.data_dir,
            batch_max=config.queue.group_commit_max,
            batch_wait=config.queue.group_commit_ms / 1000.0,
            database=config.storage.database,
            password=config.storage.password,
            lock_timeout=config.storage.lock_timeout,
            statement_timeout=config.storage.statement_timeout,
            start_wait=config.storage.start_wait,
        )
        self.metrics = Metrics(self.store)  # this server's registry, served at /metrics
        self.store.on_commit = self.metrics.commit_batch.observe
        reporter = Reporter(
            hostname=config.hostname,
            local_domains=tuple(d.lower() for d in config.domains),
            deliver_local=deliver_before_queuing,
        )
        self.local = LocalDelivery(self.store, reporter)
        junk = config.junk
        self.junk_filter = (
            JunkFilter(self.store, junk.junk_above, junk.refuse_above) if junk.enabled else None
        )
        queue = config.queue
        self.resolver = DnsResolver(nameservers=config.dns.nameservers)
        # SPF, DKIM, DMARC and ARC ask through one cache, with the same nameservers.
        self.lookup = CachingLookup(ResolverLookup(config.dns.nameservers))
        self.outbound = OutboundSettings(hostname=config.hostname, port=config.delivery.port)
        self.scheduler = Scheduler(
            self.store,
            self._deliver,
            policy=RetryPolicy(queue.retry, queue.warn_after, queue.give_up_after),
            reporter=reporter,
            concurrency=config.delivery.concurrency,
            node=config.storage.node,  # "" until start(): the made name once the store opened
            keep_history=queue.keep_history,
        )
        self.shutdown_flag = ShutdownFlag()
        self.mailbox_events = MailboxEvents()  # wakes IMAP sessions on committed changes
        self.store.on_mailbox_change = self.mailbox_events.publish
        self.store.on_missed = self.mailbox_events.wake_all  # other nodes' news may be lost
        self.mailbox_locks = MailboxLocks()  # RFC 1939 §8: one POP3 session per maildrop
        self.listeners: list[Listener] = []
        self.acme_files = AcmeFiles(config.data_dir)  # its challenges: answered even when off
        self.certificates: CertificateManager | None = None  # when [acme] is on
        self.web_listeners: list[HttpListener] = []
        self.outbound_auth: OutboundAuth | None = None
        self.defences: Defences | None = None
        self.context: ssl.SSLContext | None = None  # every TLS listener's, kept across reloads
        self.ingress: IngressContext | None = None
        self.authenticator: Authenticator | None = None  # logins on every service
        self.web: auth.WebContext | None = None  # the web admin's, once logins can be checked
        self._kinds: list[ServiceKind] = []
        self._reload_lock = asyncio.Lock()  # one SIGHUP at a time
        self._tasks: list[asyncio.Task[None]] = []

    async def _deliver(
        self, domain: str, claimed: Sequence[ClaimedMessage], contents: Sequence[bytes]
    ) -> list[list[RecipientOutcome]]:
        auth = self.outbound_auth
        messages = []
        for item, content in zip(claimed, contents, strict=True):
            envelope = item.message.envelope
            sender = await auth.envelope_sender(envelope.sender) if auth else envelope.sender
            recipients = tuple(
                OutboundRecipient(r.address, r.notify, r.orcpt) for r in item.recipients
            )
            messages.append(
                OutboundMessage(sender, envelope.params, recipients, content, auth=envelope.auth)
            )
        results = await deliver_to_domain(
            domain,
            messages,
            resolver=self.resolver,
            settings=self.outbound,
            route=self._route(domain),
        )
        attempts = self.metrics.delivery_attempts
        for outcomes in results:
            for outcome in outcomes:
                attempts[outcome.result].inc()
        return results

    async def _promote_keys(self) -> None:
        """Rotated DKIM keys start signing once DNS shows their records; retired ones go."""
        while True:
            try:
                for change in await promote(self.store, self.lookup, time.time()):
                    key = change.key
                    log.info(
                        "dkim key %s domain=%s selector=%s algorithm=%s",
                        change.action,
                        key.domain,
                        key.selector,
                        key.algorithm,
                    )
            except StorageFailure as failure:
                log.warning("dkim key promotion failed: %s", failure)
            await asyncio.sleep(KEY_PROMOTION_EVERY)

    def _route(self, domain: str) -> Route | None:
        """A [routes] entry for the domain wins; then the [relay] smarthost; else MX (None)."""
        relay = self.config.relay
        for name, endpoint in relay.routes:
            if name == domain:
                return Route(endpoint.host, endpoint.port, "opportunistic")
        if relay.host is None:
            return None
        tls = cast(Literal["starttls", "implicit", "opportunistic"], relay.tls)
        ca_file = str(relay.ca_file) if relay.ca_file else None
        return Route(relay.host.host, relay.host.port, tls, relay.username, relay.password, ca_file)

    def _settings(self, service: str) -> ServerSettings:
        limits = self.config.limits
        return ServerSettings(
            hostname=self.config.hostname,
            max_message_size=limits.message_size,
            max_recipients=limits.recipients,
            max_line_length=limits.line_length,
            max_errors=limits.errors_per_session,
            tls_available=service not in IMPLICIT_TLS,
            require_auth=service != "smtp",
            allow_insecure_auth=self.config.auth.plaintext,
        )

    async def start(self) -> None:
        self.store.open()
        # After the store opened: a server that cannot start leaves data_dir as it was.
        self.scheduler.node = node_name(self.config.data_dir, self.config.storage.node)
        acme_pair = self.acme_files.usable_pair() if self.config.acme.enabled else None
        context = tls.server_context(*(acme_pair or certificate_files(self.config)))
        self.context = context
        outbound_auth = OutboundAuth(self.config, self.store)
        self.outbound_auth = outbound_auth
        self.outbound = dataclasses.replace(self.outbound, finish=outbound_auth.finish)

        defences = Defences(self.config, self.store, self.lookup)
        await defences.load()
        self.defences = defences
        ingress = IngressContext(
            self.config,
            self.store,
            Spool(self.store),
            self.local,
            self.scheduler.wake,
            checker=(
                MailChecker(self.config, self.lookup, self.metrics)
                if self.config.verify.enabled
                else None
            ),
            srs_reverse=outbound_auth.reverse,
            junk=self.junk_filter,
            defences=defences,
        )
        self.ingress = ingress
        self.authenticator = ingress.authenticator
        await self.local.recover()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.local.run()))
        self._tasks.append(loop.create_task(self.scheduler.run()))
        self._tasks.append(loop.create_task(self._promote_keys()))
        if self.config.verify.enabled:
            # DMARC aggregate reports of what the checks saw, once a day (missed days at once).
            self._tasks.append(
                loop.create_task(
                    dmarc_reporting.run_daily(
                        self.store, self.lookup, self.config, wake=self.scheduler.wake
                    )
                )
            )
        kinds = self._service_kinds(context, ingress)
        for name, endpoints in self.config.listen.enabled().items():
            if name in WEB_SERVICES:
                continue
            if name not in kinds:
                log.warning("service %s is not implemented yet; not started", name)
                continue
            kind = kinds[name](name)
            self._kinds.append(kind)
            for endpoint in endpoints:  # one socket per address: IPv4 and IPv6 side by side
                listener = Listener(
                    name,
                    endpoint.host,
                    endpoint.port,
                    kind.handler,
                    ssl_context=context if name in IMPLICIT_TLS else None,
                    max_per_ip=self.config.limits.connections_per_ip,
                    max_total=self.config.limits.connections,
                    refuse=kind.refuse,
                    proxy=self._proxy_gate(name),
                )
                await listener.start()
                self.listeners.append(listener)
        self.web = auth.WebContext.build(
            self.config, self.store, ingress.authenticator, self.scheduler.wake
        )
        await self._start_web(context)
        if self.config.acme.enabled:  # once the HTTP listener can answer http-01
            alpn = AlpnChallenges()
            alpn.attach(context)  # tls-alpn-01 answers on the HTTPS listener (RFC 8737)
            self.certificates = CertificateManager(
                AcmeSettings.of(self.config), self.acme_files, [context], alpn
            )
            self.certificates.loaded_initially(acme_pair is not None)
            self._tasks.append(loop.create_task(self.certificates.run()))

    async def _start_web(self, context: ssl.SSLContext) -> None:
        """The HTTP(S) listeners, sharing the mail listeners' TLS context (and certificate)."""
        enabled = self.config.listen.enabled()
        if not WEB_SERVICES & enabled.keys():
            return
        app = build_app(self.config, self._web_routes())
        for name in sorted(WEB_SERVICES & enabled.keys()):
            for endpoint in enabled[name]:
                listener = HttpListener(
                    name,
                    endpoint.host,
                    endpoint.port,
                    app,
                    ssl_context=context if name == "https" else None,
                    max_connections=self.config.limits.connections,
                    proxy=self._proxy_gate(name),
                )
                try:
                    await listener.start()
                except OSError as error:
                    raise ListenError(name, endpoint.host, endpoint.port, error) from None
                self.web_listeners.append(listener)

    def _proxy_gate(self, name: str) -> ProxyGate | None:
        """The PROXY protocol reader of a listener named in `[listen] proxy_protocol`."""
        proxy = self.config.proxy
        return ProxyGate(name, proxy.trusted) if name in proxy.protocol else None

    def _web_routes(self) -> list[BaseRoute]:
        """What each part of the HTTP surface serves; a new part adds its routes here."""
        assert self.context is not None and self.authenticator is not None
        ports: dict[str, int] = {}
        for listener in self.listeners:  # a service's first address gives the port told
            ports.setdefault(listener.name, listener.port)
        web = self.web
        admin_site = (auth, account, filters, admin, reports, api) if web is not None else ()
        return [
            *acme.routes(self.acme_files.challenges),
            # Before the account pages: /account/mobileconfig is autoconfig's.
            *autoconfig.routes(self.config, ports, self.context, self.authenticator),
            *(route for part in admin_site for route in part.routes(web)),
            *(domain_check.routes(web, self.context) if web is not None else ()),
            *web_metrics.routes(self.metrics, self.config.web.metrics_allow),
        ]

    def _service_kinds(
        self, context: ssl.SSLContext, ingress: IngressContext
    ) -> dict[str, Callable[[str], ServiceKind]]:
        """Listener name → how to build its service; a new protocol adds its names here."""
        hostname = self.config.hostname

        def smtp(name: str) -> ServiceKind:
            service = SmtpService(
                name,
                ingress,
                self._settings(name),
                context,
                self.shutdown_flag,
                self.metrics.smtp(name),
            )

            def reconfigure() -> None:
                service.settings = self._settings(name)

            return ServiceKind(
                service.handle,
                lambda why: replies.service_unavailable(hostname, why).to_bytes(),
                reconfigure,
            )

        maildrops = MaildropContext(self.store, ingress.authenticator, self.mailbox_locks)

        def pop3_settings(name: str) -> Pop3Settings:
            return Pop3Settings(
                hostname,
                tls_available=name not in IMPLICIT_TLS,
                max_errors=self.config.limits.errors_per_session,
                allow_plaintext_auth=self.config.auth.plaintext,
            )

        def pop3(name: str) -> ServiceKind:
            timeout = self.config.limits.pop3_timeout
            service = Pop3Service(
                name,
                maildrops,
                pop3_settings(name),
                context,
                self.shutdown_flag,
                timeout,
                self.metrics.sessions("pop3"),
            )

            def reconfigure() -> None:
                service.settings = pop3_settings(name)
                service.timeout = self.config.limits.pop3_timeout

            return ServiceKind(service.handle, service.refuse, reconfigure)

        mailboxes = ImapContext(
            store=self.store,
            events=self.mailbox_events,
            authenticator=ingress.authenticator,
            hostname=hostname,
            tls_available=True,
            max_sessions_per_user=self.config.limits.imap_sessions_per_user,
            plaintext_auth=self.config.auth.plaintext,
            junk=self.junk_filter,
        )

        def imap(name: str) -> ServiceKind:
            timeout = self.config.limits.imap_timeout
            service = ImapService(
                name,
                mailboxes,
                context,
                self.shutdown_flag,
                timeout,
                self.metrics.sessions("imap"),
            )

            def reconfigure() -> None:
                service.timeout = self.config.limits.imap_timeout
                mailboxes.max_sessions_per_user = self.config.limits.imap_sessions_per_user

            return ServiceKind(service.handle, service.refuse, reconfigure)

        sieve_scripts = ManageSieveContext(self.store, ingress.authenticator)

        def managesieve_settings() -> ManageSieveSettings:
            return ManageSieveSettings(
                hostname,
                tls_available=True,
                allow_plaintext_auth=self.config.auth.plaintext,
                max_errors=self.config.limits.errors_per_session,
            )

        def managesieve(name: str) -> ServiceKind:
            timeout = self.config.limits.managesieve_timeout
            service = ManageSieveService(
                name, sieve_scripts, managesieve_settings(), context, self.shutdown_flag, timeout
            )

            def reconfigure() -> None:
                service.settings = managesieve_settings()
                service.timeout = self.config.limits.managesieve_timeout

            return ServiceKind(service.handle, service.refuse, reconfigure)

        return {
            "smtp": smtp,
            "submission": smtp,
            "submissions": smtp,
            "imap": imap,
            "imaps": imap,
            "pop3": pop3,
            "pop3s": pop3,
            "managesieve": managesieve,
        }

    async def reload(self) -> None:
        """SIGHUP: read the config file again and apply the LIVE_TABLES to the running server,
        without closing a session: limits (to sessions and connections from now on), the
        antispam settings, the relay, the TLS certificate (new handshakes). Users and aliases
        are asked of the store again. An invalid file is one logged line; the server goes on
        with the config it has. Changes to the other tables are named: they need a restart."""
        async with self._reload_lock:
            await self._reload()

    async def _reload(self) -> None:
        old = self.config
        try:
            new = await asyncio.to_thread(load_config, old.path)
            cert, key = await asyncio.to_thread(served_pair, new, self.acme_files)
            if self.context is not None:
                tls.reload_certificate(self.context, cert, key)
        except (ConfigError, tls.TlsSetupError, OSError) as error:  # OSError: self-signed pair
            log.error("reload failed, going on with the running config: %s", error)
            return
        live = {name: getattr(new, name) for name in LIVE_TABLES}
        self.config = dataclasses.replace(old, **live)
        if self.ingress is not None:
            self.ingress.config = self.config
            self.ingress.accounts_changed()
        if self.defences is not None:
            self.defences.reconfigure(self.config)
        limits = self.config.limits
        for listener in self.listeners:
            listener.set_limits(limits.connections_per_ip, limits.connections)
        for kind in self._kinds:
            kind.reconfigure()
        if self.certificates is not None and new.acme.enabled and new.acme != old.acme:
            # [acme] directory, email, ca_file: the next order's, the account's contact now
            self.config = dataclasses.replace(self.config, acme=new.acme)
            self.certificates.reconfigure(AcmeSettings.of(self.config))
        restart = [
            f.name
            for f in dataclasses.fields(new)
            if f.name not in LIVE_TABLES and getattr(new, f.name) != getattr(self.config, f.name)
        ]
        if restart:
            log.warning(
                "reload: %s changed in %s; that takes effect after a restart",
                ", ".join(restart),
                old.path,
            )
        log.info("reloaded %s", old.path)

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        log.info("shutting down")
        await self.close(grace)
        log.info("stopped; %s", self.store.stats.summary())

    async def close(self, grace: float = 0.0) -> None:
        """Stop whatever runs (sessions get `grace` seconds) and close the store, silently."""
        self.shutdown_flag.active = True
        await asyncio.gather(
            drain_sessions(self.listeners, grace),
            *(listener.stop(grace) for listener in self.web_listeners),
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.local.wait_idle(), grace)
        await stop_tasks(self._tasks)
        if self.defences is not None:
            await self.defences.close()  # what was written behind
        self.store.close()


async def stop_tasks(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel the background tasks and wait until they have ended. A task that goes on after
    its cancellation (one swallowed by a library) is named in the log with where it runs, and
    cancelled again, so shutdown never hangs on it."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=TASK_STOP_WAIT)
        for task in pending:
            frames = task.get_stack(limit=1)
            where = f"{frames[0].f_code.co_filename}:{frames[0].f_lineno}" if frames else "?"
            log.warning(
                "task %s still running after cancel at %s; cancelling again", task.get_name(), where
            )


async def serve(config: Config, after_bind: Callable[[], None] = lambda: None) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully; SIGHUP reloads the config.
    `after_bind` runs once every listener is open (the CLI drops root there)."""
    server = MailServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[None]] = set()
    ready = asyncio.Event()

    async def reload_when_ready() -> None:
        await ready.wait()  # a SIGHUP during start is applied once it is done
        await server.reload()

    def reload() -> None:
        task = loop.create_task(reload_when_ready())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await server.start()
        after_bind()
    except BaseException:
        await server.close()  # e.g. a port in use: close what was opened, then report
        raise
    ready.set()
    log.info("postroom ready hostname=%s domains=%s", config.hostname, ",".join(config.domains))
    await stop.wait()
    await stop_tasks(list(reloads))
    await server.stop()
