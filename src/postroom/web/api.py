"""`/api/v1/`: the web admin's operations as JSON, for scripts.

Authentication: `Authorization: Bearer TOKEN` (RFC 6750 §2.1) with a token from `postroom user
token ADDR`, or the browser session's cookie — then every request that changes something
carries the session's CSRF token in `X-CSRF-Token` (`GET /api/v1/me` tells it) and no foreign
Origin. HTTPS only. Users, aliases, the queue, traces and DNS checks need an admin;
`/api/v1/me` is every user's.

    GET    /api/v1/me                      {"address", "admin", "aliases", "csrf"}
    POST   /api/v1/me/password             {"current", "new"}                 → 204
    GET    /api/v1/users                   [{"address", "created", "admin"}]
    POST   /api/v1/users                   {"address", "password", "admin"?}  → 201
    PUT    /api/v1/users/{address}/password {"password"}                      → 204
    PUT    /api/v1/users/{address}/admin   {"admin": true|false}              → 204
    DELETE /api/v1/users/{address}                                            → 204
    GET    /api/v1/aliases                 [{"address", "targets": [...]}]
    POST   /api/v1/aliases                 {"address", "targets": [...]}      → 201
    DELETE /api/v1/aliases/{address}                                          → 204
    GET    /api/v1/queue                   as `postroom queue list --json`
    POST   /api/v1/queue/{id}/{retry|hold|release|delete}  {"recipients": N}
    GET    /api/v1/trace?q=QUERY           as `postroom trace QUERY --json` ([] for none)
    GET    /api/v1/domains/{domain}/dns    the DNS check (web/domain_check.py)
    GET    /api/v1/dmarc/reports[?domain=&from=&to=&page=]  the DMARC aggregate reports
                                           received, newest first, without rows; Link: rel=next
    GET    /api/v1/dmarc/reports/{id}      one, as `postroom dmarc reports --json` gives it

Errors are `{"error": "..."}` with 400 (bad request), 401 (no or unknown credentials, with
`WWW-Authenticate: Bearer`), 403 (not an admin, CSRF), 404 (unknown path).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from postroom.services import accounts, trace
from postroom.services.queue_view import entry_json
from postroom.web import admin, reports
from postroom.web.auth import (
    MAX_SECRET,
    SAFE_METHODS,
    Login,
    WebContext,
    password_ok,
    same_origin,
    session_of,
)

Handler = Callable[[Request, Login], Awaitable[Response]]


def error(status: int, text: str, challenge: str = "") -> JSONResponse:
    """An error answer; `challenge`: its WWW-Authenticate (RFC 6750 §3)."""
    headers = {"WWW-Authenticate": challenge} if challenge else None
    return JSONResponse({"error": text}, status_code=status, headers=headers)


async def body_of(request: Request) -> dict[str, Any]:
    """The request's JSON object; ValueError when it is not one."""
    value = json.loads(await request.body() or b"{}")
    if not isinstance(value, dict):
        raise ValueError("the body must be a JSON object")
    return value


async def api_login(ctx: WebContext, request: Request) -> Login | Response:
    if request.url.scheme != "https":
        return error(403, "the API is served over HTTPS only")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        token = token.strip()
        user = None
        if token and len(token) <= MAX_SECRET:
            id_hash = accounts.secret_hash(token)
            user = await ctx.store.read(lambda tx: tx.web.token_user(id_hash))
        if user is None:
            return error(401, "unknown token", challenge='Bearer error="invalid_token"')
        return Login(user, "", None)
    login = await session_of(ctx, request)
    if login is None:
        return error(401, "log in or send a bearer token", challenge="Bearer")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(sent.encode(), login.csrf.encode()) or not same_origin(request):
            return error(403, "missing or wrong X-CSRF-Token, or a foreign Origin")
    return login


def routes(ctx: WebContext) -> list[BaseRoute]:
    def endpoint(path: str, method: str, handler: Handler, *, admin_only: bool) -> Route:
        async def run(request: Request) -> Response:
            login = await api_login(ctx, request)
            if isinstance(login, Response):
                return login
            if admin_only and not login.user.admin:
                return error(403, "admins only")
            try:
                return await handler(request, login)
            except (ValueError, admin.Refused) as refused:  # JSONDecodeError is a ValueError
                return error(400, str(refused))

        return Route(path, run, methods=[method])

    async def me(request: Request, login: Login) -> Response:
        address = login.user.address
        aliases = await ctx.store.read(lambda tx: accounts.aliases_of(tx, address))
        return JSONResponse(
            {"address": address, "admin": login.user.admin, "aliases": aliases, "csrf": login.csrf}
        )

    async def my_password(request: Request, login: Login) -> Response:
        body = await body_of(request)
        address = login.user.address
        verdict = await password_ok(ctx, request, address, str(body.get("current", "")))
        if verdict is None:
            return error(503, "passwords cannot be checked now; try again later")
        if not verdict:
            return error(403, "the current password is wrong")
        hashed = await asyncio.to_thread(accounts.hash_password, str(body.get("new", "")))
        keep = login.session
        await ctx.store.write(lambda tx: accounts.set_password(tx, address, hashed, keep))
        ctx.accounts_changed()
        return Response(status_code=204)

    async def users(request: Request, login: Login) -> Response:
        summaries = await ctx.store.read(accounts.users)
        return JSONResponse(
            [{"address": u.address, "created": int(u.created), "admin": u.admin} for u in summaries]
        )

    async def add_user(request: Request, login: Login) -> Response:
        body = await body_of(request)
        address = await admin.create_user(
            ctx,
            str(body.get("address", "")),
            str(body.get("password", "")),
            bool(body.get("admin")),
        )
        return JSONResponse({"address": address}, status_code=201)

    async def user_password(request: Request, login: Login) -> Response:
        body = await body_of(request)
        address = request.path_params["address"]
        await admin.set_password(ctx, address, str(body.get("password", "")))
        return Response(status_code=204)

    async def user_admin(request: Request, login: Login) -> Response:
        body = await body_of(request)
        if not isinstance(body.get("admin"), bool):
            raise ValueError('"admin" must be true or false')
        await admin.set_admin(ctx, login, request.path_params["address"], body["admin"])
        return Response(status_code=204)

    async def delete_user(request: Request, login: Login) -> Response:
        await admin.delete_user(ctx, login, request.path_params["address"])
        return Response(status_code=204)

    async def aliases(request: Request, login: Login) -> Response:
        listing = await ctx.store.read(accounts.aliases)
        return JSONResponse([{"address": a, "targets": t} for a, t in sorted(listing.items())])

    async def add_alias(request: Request, login: Login) -> Response:
        body = await body_of(request)
        targets = body.get("targets")
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise ValueError('"targets" must be a list of addresses')
        address = await admin.add_alias(ctx, str(body.get("address", "")), targets)
        return JSONResponse({"address": address}, status_code=201)

    async def delete_alias(request: Request, login: Login) -> Response:
        await admin.delete_alias(ctx, request.path_params["address"])
        return Response(status_code=204)

    async def queue(request: Request, login: Login) -> Response:
        entries = await ctx.store.read(lambda tx: tx.queue.entries())
        return JSONResponse([entry_json(entry) for entry in entries])

    async def queue_change(request: Request, login: Login) -> Response:
        params = request.path_params
        count = await admin.queue_action(ctx, params["action"], params["message_id"])
        return JSONResponse({"recipients": count})

    async def trace_of(request: Request, login: Login) -> Response:
        query = request.query_params.get("q", "").strip()
        if not query or len(query) > admin.MAX_QUERY:
            raise ValueError(f"q must be 1 to {admin.MAX_QUERY} characters")
        found = await trace.trace(ctx.store, query)
        return JSONResponse([t.to_json() for t in found])

    async def dmarc_reports(request: Request, login: Login) -> Response:
        return await reports.api_list(ctx, request)

    async def dmarc_report(request: Request, login: Login) -> Response:
        return await reports.api_report(ctx, request)

    return [
        endpoint("/api/v1/me", "GET", me, admin_only=False),
        endpoint("/api/v1/me/password", "POST", my_password, admin_only=False),
        endpoint("/api/v1/users", "GET", users, admin_only=True),
        endpoint("/api/v1/users", "POST", add_user, admin_only=True),
        endpoint("/api/v1/users/{address}/password", "PUT", user_password, admin_only=True),
        endpoint("/api/v1/users/{address}/admin", "PUT", user_admin, admin_only=True),
        endpoint("/api/v1/users/{address}", "DELETE", delete_user, admin_only=True),
        endpoint("/api/v1/aliases", "GET", aliases, admin_only=True),
        endpoint("/api/v1/aliases", "POST", add_alias, admin_only=True),
        endpoint("/api/v1/aliases/{address}", "DELETE", delete_alias, admin_only=True),
        endpoint("/api/v1/queue", "GET", queue, admin_only=True),
        endpoint("/api/v1/queue/{message_id}/{action}", "POST", queue_change, admin_only=True),
        endpoint("/api/v1/trace", "GET", trace_of, admin_only=True),
        endpoint("/api/v1/dmarc/reports", "GET", dmarc_reports, admin_only=True),
        endpoint("/api/v1/dmarc/reports/{id}", "GET", dmarc_report, admin_only=True),
    ]
