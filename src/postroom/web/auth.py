"""Logins for the web admin and account pages: sessions, the login form, CSRF checks.

- HTTPS only: over plain HTTP a GET or HEAD of a page is redirected to the same path on the
  `[listen] https` port (308, RFC 9110 §15.4.9); any other method is refused with 403 and
  never read, so a password is not sent twice in the clear.
- The password is checked by `services.authn.Authenticator`, as IMAP, SMTP and POP3 check it:
  blocked clients are refused before any check, failures are logged in the fail2ban format
  (`service=web`), counted and slowed down.
- A session's ID is 256 random bits in the cookie `__Host-postroom` (`Secure; HttpOnly;
  SameSite=Strict; Path=/`, no Domain: RFC 6265bis §4.1.3.2); the store keeps its SHA-256,
  the user, a CSRF token, and when it began and was last used. It ends after `IDLE` unused,
  `ABSOLUTE` after the login, at logout, and when the user's password changes elsewhere.
- Every POST carries the session's CSRF token in a hidden field (the API: the X-CSRF-Token
  header), compared in constant time, and an Origin (or Referer) naming another site is
  refused (RFC 6454 §7). The login form, before any session, uses a token that must match
  the `__Host-postroom-login` cookie set with the form (double submit).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any
from urllib.parse import quote, urlsplit

from jinja2 import Environment, PackageLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from postroom.config import Config
from postroom.proto.sasl import CheckPassword
from postroom.proto.sasl.exchange import Unavailable
from postroom.services.accounts import PasswordError, normalize_password, secret_hash
from postroom.services.activity import ActivityCache
from postroom.services.authn import Authenticator
from postroom.storage.api import Store, Tx
from postroom.storage.records import UserRecord

log = logging.getLogger("postroom.web")

COOKIE = "__Host-postroom"
LOGIN_COOKIE = "__Host-postroom-login"
IDLE = 30 * 60.0  # seconds a session may go unused
ABSOLUTE = 12 * 3600.0  # seconds a session lasts at most after its login
TOUCH_EVERY = 60.0  # last use is written at most this often (durable=False)
LOGIN_FORM_TTL = 3600  # seconds the login form's token stays valid
MAX_SECRET = 100  # characters of a cookie or token worth looking up
SAFE_METHODS = frozenset({"GET", "HEAD"})


@pass_context
def invalid(context: Context, field_id: str) -> Markup:
    """The attributes of a form field the page's error is about (its `error_for`: one id or
    several): marked invalid and described by the error (base.html's #form-error, a
    role=alert), so a screen reader reads the error with the field (WCAG 3.3.1)."""
    wanted = context.get("error_for") or ()
    if context.get("error") and field_id in ((wanted,) if isinstance(wanted, str) else wanted):
        return Markup(' aria-invalid="true" aria-describedby="form-error"')
    return Markup("")


@dataclass(frozen=True)
class WebContext:
    """What the pages need: the store, the password checker, a way to wake the queue."""

    config: Config
    store: Store
    authenticator: Authenticator
    wake_queue: Callable[[], None]
    templates: Jinja2Templates
    activity: ActivityCache = field(default_factory=ActivityCache)  # the dashboard's

    @classmethod
    def build(
        cls,
        config: Config,
        store: Store,
        authenticator: Authenticator,
        wake_queue: Callable[[], None],
    ) -> WebContext:
        env = Environment(
            loader=PackageLoader("postroom.web", "templates"),
            autoescape=select_autoescape(default=True),
        )
        env.globals["invalid"] = invalid
        return cls(config, store, authenticator, wake_queue, Jinja2Templates(env=env))

    def render(self, request: Request, name: str, status: int = 200, **values: Any) -> Response:
        values.setdefault("login", None)
        values["hostname"] = self.config.hostname
        response = self.templates.TemplateResponse(request, name, values, status_code=status)
        response.headers["Cache-Control"] = "no-store"  # tokens and personal data: never cached
        return response

    def accounts_changed(self) -> None:
        """Users or passwords changed: SMTP's recipient cache is dropped at the next RCPT."""
        self.store.signals.mark("accounts")


@dataclass(frozen=True)
class Login:
    """Who is asking: a session's user (with its CSRF token), or an API token's (csrf "")."""

    user: UserRecord
    csrf: str
    session: bytes | None  # the session's ID hash; None for a bearer token


def _secure_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def client_of(request: Request) -> str:
    return request.client.host if request.client else ""


def https_only(ctx: WebContext, request: Request) -> Response | None:
    """None over HTTPS; else the redirect (GET/HEAD) or refusal (anything else)."""
    if request.url.scheme == "https":
        return None
    https = ctx.config.listen.first("https")
    if request.method in SAFE_METHODS and https is not None:
        host = urlsplit(f"//{request.headers.get('host', ctx.config.hostname)}").hostname
        host = host or ctx.config.hostname
        netloc = f"[{host}]" if ":" in host else host
        if https.port != 443:
            netloc += f":{https.port}"
        target = f"https://{netloc}{quote(request.url.path)}"
        return RedirectResponse(target, status_code=308)
    return ctx.render(request, "error.html", 403, message="This page is served over HTTPS only.")


def same_origin(request: Request) -> bool:
    """No Origin/Referer (a script), or one naming this very host over https."""
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == f"https://{host}"  # not a secret: a plain comparison
    referer = request.headers.get("referer")
    if referer is not None:
        return referer.startswith(f"https://{host}/")
    return True


async def session_of(ctx: WebContext, request: Request) -> Login | None:
    """The request's session, when its cookie names one still in force."""
    cookie = request.cookies.get(COOKIE, "")
    if not cookie or len(cookie) > MAX_SECRET:
        return None
    id_hash = secret_hash(cookie)
    found = await ctx.store.read(lambda tx: tx.web.session(id_hash))
    if found is None:
        return None
    now = time.time()
    if now - found.last_seen > IDLE or now - found.created > ABSOLUTE:
        await ctx.store.write(lambda tx: tx.web.delete_session(id_hash), durable=False)
        return None
    if now - found.last_seen > TOUCH_EVERY:
        await ctx.store.write(lambda tx: tx.web.touch_session(id_hash, now), durable=False)
    return Login(found.user, found.csrf, id_hash)


async def page_login(ctx: WebContext, request: Request, *, admin: bool = False) -> Login | Response:
    """The logged-in user for a page, or the response instead of it: the HTTPS redirect, the
    login form (303 to /login), or 403 for a plain user on an admin page."""
    refusal = https_only(ctx, request)
    if refusal is not None:
        return refusal
    login = await session_of(ctx, request)
    if login is None:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    if admin and not login.user.admin:
        return ctx.render(request, "error.html", 403, login=login, message="Admins only.")
    return login


async def checked_form(ctx: WebContext, request: Request, login: Login) -> FormData | Response:
    """A POST's form once its CSRF token and origin are right; else the 403 page."""
    form = await request.form()
    token = form.get("csrf")
    if (
        not isinstance(token, str)
        or not hmac.compare_digest(token.encode(), login.csrf.encode())
        or not same_origin(request)
    ):
        return ctx.render(
            request, "error.html", 403, login=login, message="The form was stale or forged."
        )
    return form


async def posted_form(
    ctx: WebContext, request: Request, *, admin: bool = False
) -> tuple[Login, FormData] | Response:
    """A page's POST: the logged-in user (`page_login`) and the form once its CSRF token and
    origin are right (`checked_form`); else the response to give instead."""
    login = await page_login(ctx, request, admin=admin)
    if isinstance(login, Response):
        return login
    form = await checked_form(ctx, request, login)
    if isinstance(form, Response):
        return form
    return login, form


async def password_ok(
    ctx: WebContext, request: Request, address: str, password: str
) -> bool | None:
    """The authenticator's verdict on a password (None: the store is unavailable, or the
    client is blocked); a failure is logged, counted and slowed down like IMAP's."""
    try:
        prepared = normalize_password(password)
    except PasswordError:
        prepared = None
    client = client_of(request)
    verdict: object = False
    if prepared is not None:
        need = CheckPassword(address, "", prepared)
        # App passwords are for mail clients; the web pages take the main password only.
        verdict = await ctx.authenticator.answer(need, client, app_passwords=False)
    if isinstance(verdict, Unavailable):
        return None
    if verdict is not True:
        await ctx.authenticator.failed("web", client, address, "PASSWORD")
        return False
    return True


def landing_page(value: str, user: UserRecord) -> str:
    """Where to go after the login: a local path only (never //host or a scheme)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin/" if user.admin else "/account/"


def routes(ctx: WebContext) -> list[BaseRoute]:
    style_sheet = (files("postroom.web") / "static" / "admin.css").read_bytes()

    async def style(request: Request) -> Response:
        return Response(style_sheet, media_type="text/css", headers={"Cache-Control": "no-cache"})

    async def login_form(request: Request) -> Response:
        refusal = https_only(ctx, request)
        if refusal is not None:
            return refusal
        if request.method == "POST":
            return await login_post(request)
        current = await session_of(ctx, request)
        if current is not None:
            return RedirectResponse(landing_page("", current.user), status_code=303)
        return _login_page(request, 200, "")

    def _login_page(
        request: Request, status: int, error: str, error_for: tuple[str, ...] = ()
    ) -> Response:
        token = secrets.token_urlsafe(32)
        next_page = request.query_params.get("next", "")
        response = ctx.render(
            request,
            "login.html",
            status,
            csrf=token,
            error=error,
            error_for=error_for,
            next_page=next_page,
        )
        _secure_cookie(response, LOGIN_COOKIE, token, LOGIN_FORM_TTL)
        return response

    async def login_post(request: Request) -> Response:
        form = await request.form()
        token, cookie = form.get("csrf"), request.cookies.get(LOGIN_COOKIE, "")
        if (
            not isinstance(token, str)
            or not cookie
            or not hmac.compare_digest(token.encode(), cookie.encode())
            or not same_origin(request)
        ):
            return ctx.render(request, "error.html", 403, message="The form was stale or forged.")
        address = str(form.get("address", "")).strip()
        password = str(form.get("password", ""))
        verdict = await password_ok(ctx, request, address, password)
        if verdict is None:
            return _login_page(request, 503, "Logins are not possible now; try again later.")
        user = await ctx.store.read(lambda tx: tx.accounts.get_user(address)) if verdict else None
        if user is None:
            return _login_page(request, 403, "Wrong address or password.", ("address", "password"))
        session_id = secrets.token_urlsafe(32)  # 256 random bits
        id_hash, csrf, now = secret_hash(session_id), secrets.token_urlsafe(32), time.time()
        previous = request.cookies.get(COOKIE, "")[:MAX_SECRET]

        def begin(tx: Tx) -> None:
            tx.web.prune_sessions(now - IDLE, now - ABSOLUTE)
            if previous:  # a new login replaces the browser's old session, never reuses it
                tx.web.delete_session(secret_hash(previous))
            tx.web.add_session(id_hash, user.id, csrf, now)

        await ctx.store.write(begin)
        log.info("web login user=<%s> client=%s", user.address, client_of(request))
        response = RedirectResponse(landing_page(str(form.get("next", "")), user), 303)
        _secure_cookie(response, COOKIE, session_id, None)
        response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True)
        return response

    async def logout(request: Request) -> Response:
        posted = await posted_form(ctx, request)
        if isinstance(posted, Response):
            return posted
        login, _ = posted
        session = login.session
        if session is not None:
            await ctx.store.write(lambda tx: tx.web.delete_session(session))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    return [
        Route("/static/admin.css", style, methods=["GET", "HEAD"]),
        Route("/login", login_form, methods=["GET", "HEAD", "POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
