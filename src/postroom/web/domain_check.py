"""A local domain's DNS check in the web admin and the JSON API:

    GET  /admin/domains/{domain}        the table: each record `postroom dns records` prints,
                                        what DNS publishes, a status cell (its text and colour)
                                        and the fix
    POST /admin/domains/{domain}/check  check again now (the session's CSRF token), then 303
                                        back to the page
    GET  /api/v1/domains/{domain}/dns   the same check as JSON (`DomainCheck.to_json`)

Admins only (a plain user gets 403); an unknown domain is 404. The check is
services/dns_check.py's, asked through the server's own `[dns] nameservers` (not the mail
checks' cache, so a record just published shows once its TTL has passed at the resolver);
each domain's result is kept a minute (`dns_check.KEEP`) so reloads do not ask DNS again.
The expected records are those the CLI prints: the domain's published DKIM keys (none are
made here), the configured ports, the relay, and the MTA-STS policy the HTTPS listener
serves with the certificate it has.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from postroom.dns.lookup import ResolverLookup
from postroom.services import dkim_keys
from postroom.services.dns_check import DnsChecks, DomainCheck, DomainRecords, domain_records
from postroom.web import api
from postroom.web.auth import WebContext, page_login, posted_form
from postroom.web.autoconfig import PolicyCache


class DomainDns:
    """The checks of the local domains, kept per domain, and what they compare against."""

    def __init__(self, ctx: WebContext, server_tls: ssl.SSLContext) -> None:
        config = ctx.config
        self.ctx = ctx
        self.checks = DnsChecks(ResolverLookup(config.dns.nameservers), str(config.path))
        self.policies = PolicyCache(config.hostname, server_tls, config.acme.ca_file)

    def local(self, domain: str) -> str | None:
        """The local domain the path names, or None."""
        wanted = domain.strip().lower().rstrip(".")
        return next((d.lower() for d in self.ctx.config.domains if d.lower() == wanted), None)

    async def facts(self, domain: str) -> DomainRecords:
        config = self.ctx.config
        now = time.time()
        keys = await self.ctx.store.read(lambda tx: dkim_keys.published_keys(tx, domain, now))
        ports = {service: ends[0].port for service, ends in config.listen.enabled().items()}
        relay = config.relay.host.host if config.relay.host is not None else None
        policy = await self.policies.policy(domain) if ports.get("https") else None
        # Reading the private keys (RSA) is CPU work: off the event loop.
        return await asyncio.to_thread(
            domain_records, domain, config.hostname, ports, keys, relay=relay, mta_sts=policy
        )

    async def check(self, domain: str, *, fresh: bool = False) -> DomainCheck:
        return await self.checks.check(domain, lambda: self.facts(domain), fresh=fresh)


def _local_time(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment).astimezone().isoformat(timespec="seconds")


def routes(ctx: WebContext, server_tls: ssl.SSLContext) -> list[BaseRoute]:
    dns = DomainDns(ctx, server_tls)

    async def page(request: Request) -> Response:
        login = await page_login(ctx, request, admin=True)
        if isinstance(login, Response):
            return login
        domain = dns.local(request.path_params["domain"])
        if domain is None:
            message = "No such local domain."
            return ctx.render(request, "error.html", 404, login=login, message=message)
        found = await dns.check(domain)
        return ctx.render(
            request,
            "admin_domain_dns.html",
            login=login,
            domain=domain,
            check=found,
            checked=_local_time(found.checked),
            bad=sum(1 for r in found.records if r.status != "ok"),
        )

    async def check_again(request: Request) -> Response:
        posted = await posted_form(ctx, request, admin=True)
        if isinstance(posted, Response):
            return posted
        login, _ = posted
        domain = dns.local(request.path_params["domain"])
        if domain is None:
            message = "No such local domain."
            return ctx.render(request, "error.html", 404, login=login, message=message)
        await dns.check(domain, fresh=True)
        return RedirectResponse(f"/admin/domains/{domain}", status_code=303)

    async def api_check(request: Request) -> Response:
        login = await api.api_login(ctx, request)
        if isinstance(login, Response):
            return login
        if not login.user.admin:
            return api.error(403, "admins only")
        domain = dns.local(request.path_params["domain"])
        if domain is None:
            return api.error(404, "no such local domain")
        return JSONResponse((await dns.check(domain)).to_json())

    return [
        Route("/admin/domains/{domain}", page, methods=["GET", "HEAD"]),
        Route("/admin/domains/{domain}/check", check_again, methods=["POST"]),
        Route("/api/v1/domains/{domain}/dns", api_check, methods=["GET"]),
    ]
