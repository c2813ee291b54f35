"""`GET /metrics`: the server's metrics in the Prometheus text format (services/metrics.py),
answered to loopback clients and to the `[web] metrics_allow` networks, 403 to anyone else.

The client is the TCP peer (the HTTP listener never trusts X-Forwarded-For), so a reverse proxy
on this host makes every request a loopback one: such a proxy must not pass /metrics on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from postroom.config_checks import IPNetwork
from postroom.services.metrics import Metrics


def allowed(client: str | None, networks: Sequence[IPNetwork]) -> bool:
    """Whether a client address may read the metrics: loopback, or in one of `networks`."""
    if client is None:
        return False
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])
    except ValueError:
        return False  # not an IP peer (a Unix socket): never served here
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return True
    return any(address.version == net.version and address in net for net in networks)


def routes(metrics: Metrics, networks: Sequence[IPNetwork]) -> list[BaseRoute]:
    async def scrape(request: Request) -> Response:
        if not allowed(request.client.host if request.client else None, networks):
            return PlainTextResponse(
                "The metrics are served to loopback and the [web] metrics_allow networks.\n",
                status_code=403,
            )
        return Response(await metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", scrape, methods=["GET", "HEAD"])]
