"""What the HTTP surface serves so that senders and mail clients find this server by
themselves:

- the MTA-STS policy of each local domain at https://mta-sts.DOMAIN/.well-known/mta-sts.txt
  (RFC 8461 §3.3), over HTTPS only (over HTTP: 404; senders follow no redirect, §3.3);
- Thunderbird's autoconfig file at /mail/config-v1.1.xml and
  /.well-known/autoconfig/mail/config-v1.1.xml (`emailaddress` optional), over HTTP and HTTPS
  (Thunderbird asks both; it holds no secret);
- Outlook's POX Autodiscover: POST /autodiscover/autodiscover.xml (and the capitalised path);
- an Apple .mobileconfig for the user who logs in with HTTP Basic (RFC 7617) over HTTPS at
  /account/mobileconfig; over HTTP: 403 before any credential is looked at.

The documents come from services/autoconfig.py; logins go through the same Authenticator (and
login throttling) as IMAP, SMTP and POP3.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from postroom.config import Config
from postroom.net.tls_trust import client_context, served_policy
from postroom.proto.sasl import CheckPassword
from postroom.proto.sasl.exchange import Unavailable
from postroom.proto.sasl.saslprep import prepare_login
from postroom.services import autoconfig
from postroom.services.authn import Authenticator
from postroom.services.mta_sts_policy import ServedPolicy
from postroom.web.guard import host_name

log = logging.getLogger("postroom.web")

POLICY_CHECKED_FOR = 60.0  # seconds a verdict on the served certificate is kept
XML = "application/xml; charset=utf-8"
REALM = 'Basic realm="postroom", charset="UTF-8"'  # RFC 7617 §2, §2.1


class PolicyCache:
    """Each domain's policy, the served certificate checked again at most once a minute (a
    renewed certificate turns testing into enforce without a restart)."""

    def __init__(
        self,
        hostname: str,
        server: ssl.SSLContext,
        ca_file: Path | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hostname = hostname
        self.server = server
        self.ca_file = ca_file
        self.clock = clock
        self._kept: dict[str, tuple[float, ServedPolicy]] = {}

    async def policy(self, domain: str) -> ServedPolicy:
        now = self.clock()
        kept = self._kept.get(domain)
        if kept is not None and kept[0] > now:
            return kept[1]
        # Loading the system's CA store takes tens of milliseconds: off the mail loop.
        policy, why = await asyncio.to_thread(self._check, domain)
        if kept is None or kept[1] != policy:
            log.info(
                "mta-sts policy domain=%s mode=%s id=%s%s",
                domain,
                policy.mode,
                policy.id,
                f" ({why})" if why else "",
            )
        self._kept[domain] = (now + POLICY_CHECKED_FOR, policy)
        return policy

    def _check(self, domain: str) -> tuple[ServedPolicy, str | None]:
        client = client_context(self.ca_file)
        return served_policy(self.server, self.hostname, domain, client)


def _host(request: Request) -> str:
    return host_name(request.headers.get("host", "").encode("latin-1")) or ""


def _not_found(text: str) -> Response:
    return PlainTextResponse(text + "\n", status_code=404)


def routes(
    config: Config,
    ports: Mapping[str, int],
    server_tls: ssl.SSLContext,
    authenticator: Authenticator,
) -> list[BaseRoute]:
    """The routes above, for the listeners on `ports` ([listen] service → bound port)."""
    hostname = config.hostname
    domains: Sequence[str] = tuple(d.lower() for d in config.domains)
    policies = PolicyCache(hostname, server_tls, config.acme.ca_file)

    async def mta_sts(request: Request) -> Response:
        if request.url.scheme != "https":
            return _not_found("The MTA-STS policy is served over HTTPS only (RFC 8461 §3.3).")
        prefix, _, domain = _host(request).partition(".")
        if prefix != "mta-sts" or domain not in domains:
            return _not_found("No MTA-STS policy under this host name.")
        # RFC 8461 §3.3: text/plain; senders must not use HTTP caching.
        return Response(
            (await policies.policy(domain)).text,
            media_type="text/plain",
            headers={"cache-control": "no-store"},
        )

    async def thunderbird(request: Request) -> Response:
        given = request.query_params.get("emailaddress")
        if given is not None:
            try:
                _, domain = autoconfig.split_address(given)
            except autoconfig.AutoconfigError as error:
                return PlainTextResponse(f"{error}\n", status_code=400)
            chosen = [domain]
        else:
            host = _host(request).removeprefix("autoconfig.")
            chosen = [host] if host in domains else list(domains)
        if chosen[0] not in domains:
            return _not_found(f"{chosen[0]} is not a domain of this server.")
        document = autoconfig.thunderbird(hostname, chosen, ports)
        return Response(document, media_type=XML)

    async def autodiscover(request: Request) -> Response:
        try:
            address = autoconfig.autodiscover_request(await request.body())
        except autoconfig.AutoconfigError as error:
            return PlainTextResponse(f"{error}\n", status_code=400)
        domain = address.rpartition("@")[2]
        if domain not in domains:
            return _not_found(f"{domain} is not a domain of this server.")
        return Response(autoconfig.autodiscover_response(hostname, address, ports), media_type=XML)

    async def mobileconfig(request: Request) -> Response:
        if request.url.scheme != "https":
            # A password is never asked for, nor read, over plain HTTP.
            return PlainTextResponse("Use https:// for this page.\n", status_code=403)
        address = await _basic_login(request, authenticator)
        if isinstance(address, Response):
            return address
        try:
            profile = autoconfig.mobileconfig(hostname, address, ports)
        except autoconfig.AutoconfigError as error:
            return _not_found(str(error))
        filename = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in address)
        return Response(
            profile,
            media_type=autoconfig.PROFILE_TYPE,
            headers={
                "content-disposition": f'attachment; filename="{filename}.mobileconfig"',
                "cache-control": "no-store",
            },
        )

    return [
        Route("/.well-known/mta-sts.txt", mta_sts, methods=["GET", "HEAD"]),
        Route("/mail/config-v1.1.xml", thunderbird, methods=["GET", "HEAD"]),
        Route("/.well-known/autoconfig/mail/config-v1.1.xml", thunderbird, methods=["GET", "HEAD"]),
        Route("/autodiscover/autodiscover.xml", autodiscover, methods=["POST"]),
        Route("/Autodiscover/Autodiscover.xml", autodiscover, methods=["POST"]),
        Route("/account/mobileconfig", mobileconfig, methods=["GET"]),
    ]


def _unauthorized(text: str) -> Response:
    return PlainTextResponse(text + "\n", status_code=401, headers={"www-authenticate": REALM})


async def _basic_login(request: Request, authenticator: Authenticator) -> str | Response:
    """The address of the user whose HTTP Basic credentials (RFC 7617 §2) verify, or the
    answer to send: 401 (none, malformed or wrong), 503 (blocked for guessing, or the store
    failed: a temporary failure, as on the mail ports)."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return _unauthorized("Log in with your address and password.")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return _unauthorized("Malformed credentials.")
    user, colon, password = decoded.partition(":")  # RFC 7617 §2: no colon in the user-id
    prepared = prepare_login(user, password) if colon else None
    if prepared is None:
        return _unauthorized("Log in with your address and password.")
    username, secret = prepared
    client = request.client.host if request.client else ""
    verdict = await authenticator.answer(CheckPassword(username, "", secret), client)
    if isinstance(verdict, Unavailable):
        return PlainTextResponse(
            "Logging in is not possible now; try again later.\n",
            status_code=503,
            headers={"retry-after": "60"},
        )
    if verdict is not True:
        await authenticator.failed("https", client, username, "basic")
        return _unauthorized("Wrong address or password.")
    try:
        address, _ = autoconfig.split_address(username)
    except autoconfig.AutoconfigError:
        return _unauthorized("Log in with your full address.")
    return address
