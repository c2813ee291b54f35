"""`/account/`: every user's own page — their aliases, and changing their password (the
current one checked like a login; the user's other web sessions end)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from postroom.services import accounts
from postroom.web.auth import WebContext, checked_form, page_login, password_ok

NOTICES = {"password": "Your password was changed."}


def routes(ctx: WebContext) -> list[BaseRoute]:
    async def page(request: Request) -> Response:
        login = await page_login(ctx, request)
        if isinstance(login, Response):
            return login
        address = login.user.address
        aliases = await ctx.store.read(lambda tx: accounts.aliases_of(tx, address))
        notice = NOTICES.get(request.query_params.get("done", ""))
        return ctx.render(request, "account.html", login=login, aliases=aliases, notice=notice)

    async def change_password(request: Request) -> Response:
        login = await page_login(ctx, request)
        if isinstance(login, Response):
            return login
        form = await checked_form(ctx, request, login)
        if isinstance(form, Response):
            return form
        address = login.user.address
        current, new, again = (str(form.get(key, "")) for key in ("current", "new", "again"))

        async def refused(status: int, error: str) -> Response:
            aliases = await ctx.store.read(lambda tx: accounts.aliases_of(tx, address))
            return ctx.render(
                request, "account.html", status, login=login, aliases=aliases, error=error
            )

        if new != again:
            return await refused(400, "The new password and its repetition differ.")
        verdict = await password_ok(ctx, request, address, current)
        if verdict is None:
            return await refused(503, "Passwords cannot be checked now; try again later.")
        if not verdict:
            return await refused(403, "The current password is wrong.")
        try:
            hashed = await asyncio.to_thread(accounts.hash_password, new)
        except accounts.PasswordError as error:
            return await refused(400, str(error))
        keep = login.session
        await ctx.store.write(lambda tx: accounts.set_password(tx, address, hashed, keep))
        ctx.accounts_changed()
        return RedirectResponse("/account/?done=password", status_code=303)

    return [
        Route("/account/", page, methods=["GET", "HEAD"]),
        Route("/account/password", change_password, methods=["POST"]),
    ]
