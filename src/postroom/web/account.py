"""`/account/`: every user's own page — their aliases, changing their password (the
current one checked like a login; the user's other web sessions end), and their app
passwords (services/app_passwords.py: made, shown once, listed, revoked)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from postroom.services import accounts, app_passwords
from postroom.web.auth import Login, WebContext, page_login, password_ok, posted_form

NOTICES = {
    "password": "Your password was changed.",
    "revoked": "The app password was revoked: it logs in nowhere now.",
}


def routes(ctx: WebContext) -> list[BaseRoute]:
    async def show(request: Request, login: Login, status: int = 200, **values: object) -> Response:
        address = login.user.address
        aliases = await ctx.store.read(lambda tx: accounts.aliases_of(tx, address))
        apps = await ctx.store.read(lambda tx: app_passwords.listing(tx, address))
        values.setdefault("notice", NOTICES.get(request.query_params.get("done", "")))
        return ctx.render(
            request, "account.html", status, login=login, aliases=aliases, apps=apps, **values
        )

    async def page(request: Request) -> Response:
        login = await page_login(ctx, request)
        if isinstance(login, Response):
            return login
        return await show(request, login)

    async def new_app_password(request: Request) -> Response:
        posted = await posted_form(ctx, request)
        if isinstance(posted, Response):
            return posted
        login, form = posted
        name = str(form.get("name", ""))
        try:
            made = await app_passwords.create(ctx.store, login.user.address, name)
        except app_passwords.AppPasswordError as error:
            return await show(request, login, 400, error=str(error), error_for="app-name")
        # Shown in this answer only (never cached: no-store); the store keeps its hash.
        return await show(request, login, 201, new_app=(name.strip(), made))

    async def revoke_app_password(request: Request) -> Response:
        posted = await posted_form(ctx, request)
        if isinstance(posted, Response):
            return posted
        login, form = posted
        try:
            await app_passwords.revoke(ctx.store, login.user.address, str(form.get("name", "")))
        except app_passwords.AppPasswordError as error:
            return await show(request, login, 404, error=str(error))
        return RedirectResponse("/account/?done=revoked", status_code=303)

    async def change_password(request: Request) -> Response:
        posted = await posted_form(ctx, request)
        if isinstance(posted, Response):
            return posted
        login, form = posted
        address = login.user.address
        current, new, again = (str(form.get(key, "")) for key in ("current", "new", "again"))

        async def refused(status: int, error: str, field: str = "") -> Response:
            return await show(request, login, status, error=error, error_for=field)

        if new != again:
            return await refused(400, "The new password and its repetition differ.", "again")
        verdict = await password_ok(ctx, request, address, current)
        if verdict is None:
            return await refused(503, "Passwords cannot be checked now; try again later.")
        if not verdict:
            return await refused(403, "The current password is wrong.", "current")
        try:
            hashed = await asyncio.to_thread(accounts.hash_password, new)
        except accounts.PasswordError as error:
            return await refused(400, str(error), "new")
        keep = login.session
        await ctx.store.write(lambda tx: accounts.set_password(tx, address, hashed, keep))
        ctx.accounts_changed()
        return RedirectResponse("/account/?done=password", status_code=303)

    return [
        Route("/account/", page, methods=["GET", "HEAD"]),
        Route("/account/password", change_password, methods=["POST"]),
        Route("/account/app-passwords", new_app_password, methods=["POST"]),
        Route("/account/app-passwords/revoke", revoke_app_password, methods=["POST"]),
    ]
