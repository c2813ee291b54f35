"""The ASGI application: the routes each part of the HTTP surface contributes, behind the
request guard (web/guard.py).

Each part (metrics, ACME challenges, MTA-STS and autoconfig, admin and account pages, the
API) is a module with a `routes(...)` function; `build_app` mounts what app.py hands it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from postroom.config import Config
from postroom.web.guard import RequestGuard, served_names


def build_app(config: Config, routes: Sequence[BaseRoute]) -> RequestGuard:
    """The application for the HTTP(S) listeners of this configuration."""

    async def home(request: Request) -> Response:
        name = html.escape(config.hostname)
        return HTMLResponse(
            "<!doctype html><html lang=en><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>{name}</title><h1>{name}</h1><p>A postroom mail server.</p></html>"
        )

    app = Starlette(routes=[Route("/", home, methods=["GET", "HEAD"]), *routes])
    return RequestGuard(app, served_names(config.hostname, config.domains), config.web.max_body)
