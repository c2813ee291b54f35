"""`/account/filters` and `/account/vacation`: a user's own Sieve scripts and vacation reply.

Filters: the user's scripts (the active one marked), each viewed and edited in a textarea,
created, activated or deactivated, and deleted — by the same script operations ManageSieve
and the CLI use (`services.sieve_scripts.perform`), so the same limits and log lines apply.
A script is compiled before it is stored: an invalid one is shown again with the compiler's
`line:column: message` and nothing is saved (RFC 5804 §2.6 asks the same of PUTSCRIPT).

Vacation: a form whose settings become a managed script (`services.vacation`); turning it
on makes that script active and names the script it replaced, turning it off re-activates
that one. Every change is a POST carrying the session's CSRF token.
"""

from __future__ import annotations

from dataclasses import asdict
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from postroom.proto.managesieve import events as ev
from postroom.proto.managesieve import valid_name
from postroom.proto.managesieve.engine import compile_problem
from postroom.services import sieve_scripts, vacation
from postroom.web.auth import Login, WebContext, page_login, posted_form

NOTICES = {
    "saved": "The script was saved.",
    "activated": "The script is now active.",
    "deactivated": "No script is active now: mail goes to your inbox.",
    "deleted": "The script was deleted.",
}
STATUS = {"NONEXISTENT": 404, "ACTIVE": 409, "ALREADYEXISTS": 409, "TRYLATER": 503}


def _refusal_status(refused: ev.Refused) -> int:
    if refused.code and refused.code.startswith("QUOTA"):
        return 413
    return STATUS.get(refused.code or "", 400)


async def _form(ctx: WebContext, request: Request) -> tuple[Login, FormData] | Response:
    posted = await posted_form(ctx, request)
    if isinstance(posted, Response):
        return posted
    login, form = posted
    return login, form


def routes(ctx: WebContext) -> list[BaseRoute]:
    async def listing(
        request: Request, login: Login, status: int = 200, error: str | None = None
    ) -> Response:
        address = login.user.address
        found = await sieve_scripts.perform(ctx.store, address, ev.ListScripts())
        scripts = found.scripts if isinstance(found, ev.Listing) else ()
        notice = NOTICES.get(request.query_params.get("done", ""))
        return ctx.render(
            request,
            "account_filters.html",
            status,
            login=login,
            scripts=scripts,
            managed=vacation.SCRIPT,
            notice=notice,
            error=error or (None if isinstance(found, ev.Listing) else "Scripts unavailable."),
        )

    async def filters(request: Request) -> Response:
        login = await page_login(ctx, request)
        if isinstance(login, Response):
            return login
        return await listing(request, login)

    def editor(
        request: Request, login: Login, name: str, source: str, status: int = 200, **more: object
    ) -> Response:
        notice = NOTICES.get(request.query_params.get("done", ""))
        return ctx.render(
            request,
            "account_filter.html",
            status,
            login=login,
            script_name=name,
            source=source,
            notice=notice,
            **more,
        )

    async def edit(request: Request) -> Response:
        login = await page_login(ctx, request)
        if isinstance(login, Response):
            return login
        name = request.query_params.get("name", "")
        if not name:
            return editor(request, login, "", "", new=True)
        found = await sieve_scripts.perform(ctx.store, login.user.address, ev.GetScript(name))
        if not isinstance(found, ev.Source):
            return await listing(request, login, 404, f"There is no script called {name}.")
        return editor(request, login, name, found.text)

    async def save(request: Request) -> Response:
        got = await _form(ctx, request)
        if isinstance(got, Response):
            return got
        login, form = got
        name, source = str(form.get("name", "")), str(form.get("source", ""))
        new = form.get("new") == "1"
        if not valid_name(name):
            error = "A script name is 1 to 128 characters, without control characters."
            return editor(request, login, name, source, 400, new=new, error=error, error_for="name")
        problem = compile_problem(source, name)
        if problem is not None:
            error = f"Not saved: line {problem}"
            return editor(
                request, login, name, source, 400, new=new, error=error, error_for="source"
            )
        address = login.user.address
        if new:
            exists = await sieve_scripts.perform(ctx.store, address, ev.GetScript(name))
            if isinstance(exists, ev.Source):
                error = f"A script called {name} exists already; pick another name."
                return editor(
                    request, login, name, source, 409, new=new, error=error, error_for="name"
                )
        done = await sieve_scripts.perform(ctx.store, address, ev.PutScript(name, source))
        if isinstance(done, ev.Refused):
            status = _refusal_status(done)
            return editor(
                request, login, name, source, status, new=new, error=done.text, error_for="source"
            )
        return RedirectResponse(f"/account/filters/edit?name={quote(name)}&done=saved", 303)

    async def change(
        request: Request, make: type[ev.SetActive] | type[ev.DeleteScript]
    ) -> Response:
        got = await _form(ctx, request)
        if isinstance(got, Response):
            return got
        login, form = got
        name = str(form.get("name", ""))
        op: ev.ScriptOp
        if make is ev.DeleteScript:
            op, done_key = ev.DeleteScript(name), "deleted"
        elif name:
            op, done_key = ev.SetActive(name), "activated"
        else:
            op, done_key = ev.SetActive(None), "deactivated"
        done = await sieve_scripts.perform(ctx.store, login.user.address, op)
        if isinstance(done, ev.Refused):
            return await listing(request, login, _refusal_status(done), done.text)
        return RedirectResponse(f"/account/filters?done={done_key}", 303)

    async def activate(request: Request) -> Response:
        return await change(request, ev.SetActive)

    async def delete(request: Request) -> Response:
        return await change(request, ev.DeleteScript)

    async def vacation_page(request: Request) -> Response:
        login = await page_login(ctx, request)
        if isinstance(login, Response):
            return login
        return await vacation_form(request, login)

    async def vacation_form(
        request: Request,
        login: Login,
        status: int = 200,
        error: str | None = None,
        typed: dict[str, object] | None = None,
        error_for: str = "",
    ) -> Response:
        address = login.user.address
        user = await ctx.store.read(lambda tx: tx.accounts.get_user(address))
        if user is None:
            return ctx.render(request, "error.html", 404, login=login, message="No account.")
        now = await ctx.store.read(lambda tx: vacation.state(tx, user.id))
        listed = await sieve_scripts.perform(ctx.store, address, ev.ListScripts())
        scripts = listed.scripts if isinstance(listed, ev.Listing) else ()
        active = next((name for name, on in scripts if on), None)
        done = request.query_params.get("done")
        return ctx.render(
            request,
            "account_vacation.html",
            status,
            login=login,
            vacation={**asdict(now.settings), **(typed or {})},  # a refused form as typed
            enabled=now.enabled,
            active=active,
            notice=VACATION_NOTICES.get(done or ""),
            error=error,
            error_for=error_for,
            max_days=vacation.MAX_DAYS,
        )

    async def vacation_save(request: Request) -> Response:
        got = await _form(ctx, request)
        if isinstance(got, Response):
            return got
        login, form = got
        values = [str(form.get(k, "")) for k in ("subject", "message", "days", "addresses")]
        try:
            settings = vacation.checked(*values)
            if form.get("enabled") == "on":
                await vacation.turn_on(ctx.store, login.user.address, settings)
                done = "on"
            else:
                await vacation.turn_off(ctx.store, login.user.address, settings)
                done = "off"
        except vacation.VacationError as error:
            subject, message, days, addresses = values
            typed: dict[str, object] = {"subject": subject, "message": message, "days": days}
            typed["addresses"] = addresses.replace(",", " ").split()
            return await vacation_form(request, login, 400, str(error), typed, error.field)
        return RedirectResponse(f"/account/vacation?done={done}", 303)

    return [
        Route("/account/filters", filters, methods=["GET", "HEAD"]),
        Route("/account/filters/edit", edit, methods=["GET", "HEAD"]),
        Route("/account/filters/save", save, methods=["POST"]),
        Route("/account/filters/activate", activate, methods=["POST"]),
        Route("/account/filters/delete", delete, methods=["POST"]),
        Route("/account/vacation", vacation_page, methods=["GET", "HEAD"]),
        Route("/account/vacation", vacation_save, methods=["POST"]),
    ]


VACATION_NOTICES = {"on": "Vacation replies are on.", "off": "Vacation replies are off."}
