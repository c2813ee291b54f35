"""`/admin/`: the admins' pages — dashboard, users, aliases, domains with their DKIM keys,
the queue, the delivery trace.

Pages read through the store's repositories and change accounts and aliases through
`services.accounts`, the functions `postroom user ...` and `postroom alias ...` use; the
queue actions are those of `postroom queue ...`, the trace is `services.trace`'s.
Every change is a POST with the session's CSRF token (web/auth.py) answered by a redirect to
the page (303, RFC 9110 §15.4.4), so a reload never repeats it. A plain user gets 403 on every
page here. An admin cannot delete themself or drop their own admin flag (no lock-out).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from postroom.services import accounts, dkim_keys, trace
from postroom.services.queue_view import next_attempt
from postroom.storage.api import Tx
from postroom.storage.records import (
    HistoryEvent,
    HourActivity,
    QueueEntry,
    StoreError,
)
from postroom.web.auth import Login, WebContext, page_login, posted_form

QueueAction = Literal["retry", "hold", "release", "delete"]
QUEUE_ACTIONS: tuple[QueueAction, ...] = ("retry", "hold", "release", "delete")
DASHBOARD_HOURS = 24  # hours of mail the dashboard counts
RECENT_FAILURES = 20  # failed recipients the dashboard lists
ACTIVITY_FIELDS = ("received", "delivered_local", "delivered_remote", "failed")
MAX_QUERY = 500  # characters of a trace query worth looking up
NOTICES = {
    "created": "The user was created.",
    "password": "The password was set; the user's web sessions ended.",
    "admin": "The admin flag was changed.",
    "deleted": "The user and their mail were deleted.",
    "retry": "The message is due now.",
    "hold": "The message is held.",
    "release": "The message was released.",
    "delete": "The message was deleted from the queue.",
    "alias": "The alias was saved.",
    "unalias": "The alias was deleted.",
}


USER_PATHS = {
    "created": "/admin/users",
    "password": "/admin/users/password",
    "admin": "/admin/users/admin",
    "deleted": "/admin/users/delete",
}


class Refused(Exception):
    """An operation refused for the request's data; the message is for the admin, `field`
    the id of the form field it is about ("" for none)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def hour_text(moment: float) -> str:
    """The local time an hour of activity starts at, as "2026-12-07 13:00"."""
    return datetime.datetime.fromtimestamp(moment).astimezone().strftime("%Y-%m-%d %H:%M")


def clock(moment: float) -> str:
    """Local time in RFC 3339, as `postroom queue list` prints it."""
    return datetime.datetime.fromtimestamp(moment).astimezone().isoformat(timespec="seconds")


async def create_user(ctx: WebContext, address: str, password: str, admin: bool) -> str:
    try:
        address = accounts.new_address(address, ctx.config.domains)
        hashed = await asyncio.to_thread(accounts.hash_password, password)
        await ctx.store.write(lambda tx: accounts.add_user(tx, address, hashed, admin=admin))
    except (accounts.AccountError, StoreError) as error:
        field = "new-password" if isinstance(error, accounts.PasswordError) else "new-address"
        raise Refused(str(error), field) from None
    ctx.accounts_changed()
    return address


async def set_password(ctx: WebContext, address: str, password: str) -> None:
    try:
        hashed = await asyncio.to_thread(accounts.hash_password, password)
        await ctx.store.write(lambda tx: accounts.set_password(tx, address, hashed))
    except (accounts.AccountError, StoreError) as error:
        raise Refused(str(error), f"pw-{address}") from None
    ctx.accounts_changed()


async def set_admin(ctx: WebContext, login: Login, address: str, admin: bool) -> None:
    if not admin and address.strip().lower() == login.user.address:
        raise Refused("You cannot take your own admin flag; another admin can.")
    try:
        await ctx.store.write(lambda tx: accounts.set_admin(tx, address, admin))
    except StoreError as error:
        raise Refused(str(error)) from None


async def delete_user(ctx: WebContext, login: Login, address: str) -> None:
    if address.strip().lower() == login.user.address:
        raise Refused("You cannot delete yourself; another admin can.")
    try:
        await ctx.store.write(lambda tx: accounts.delete_user(tx, address))
    except StoreError as error:
        raise Refused(str(error)) from None
    ctx.accounts_changed()


async def add_alias(ctx: WebContext, address: str, targets: list[str]) -> str:
    """What `postroom alias add ADDRESS TARGET...` does; the alias, normalised."""
    try:
        address, wanted = accounts.alias_request(address, targets, ctx.config.domains)
        await ctx.store.write(lambda tx: accounts.add_alias(tx, address, wanted))
    except (accounts.AccountError, StoreError) as error:
        raise Refused(str(error)) from None
    ctx.accounts_changed()
    return address


async def delete_alias(ctx: WebContext, address: str) -> None:
    """What `postroom alias delete ADDRESS` does."""
    try:
        await ctx.store.write(lambda tx: accounts.delete_alias(tx, address))
    except StoreError as error:
        raise Refused(str(error)) from None
    ctx.accounts_changed()


async def queue_action(ctx: WebContext, action: str, message_id: str) -> int:
    """What `postroom queue retry|hold|release|delete ID` does; recipients affected."""
    message_id = message_id.strip().upper()
    now = time.time()

    def run(tx: Tx) -> int:
        if action == "retry":
            return tx.queue.retry(message_id, now)
        if action == "hold":
            return tx.queue.hold(message_id)
        if action == "release":
            return tx.queue.release(message_id, now)
        tx.queue.delete(message_id)
        return 0

    if action not in QUEUE_ACTIONS or not message_id:
        raise Refused(f"no queue action {action!r} for {message_id!r}")
    try:
        count = await ctx.store.write(run)
    except StoreError as error:
        raise Refused(str(error)) from None
    if action in ("retry", "release"):
        ctx.wake_queue()
    return count


def trace_view(found: trace.MessageTrace) -> dict[str, Any]:
    """A trace as the page shows it: `to_json()` plus each time as local clock text."""
    view = cast(dict[str, Any], found.to_json())
    view["arrival_text"] = clock(found.arrival)
    for rcpt in view["recipients"]:
        rcpt["kind"] = {True: "local", False: "remote"}.get(rcpt["local"], "local or remote")
        rcpt["next_text"] = clock(rcpt["next_attempt"]) if rcpt["next_attempt"] else ""
        for step in rcpt["steps"]:
            step["time_text"] = clock(step["time"])
            step["next_text"] = clock(step["next_attempt"]) if step["next_attempt"] else ""
    for report in view["reports"]:
        report["time_text"] = clock(report["time"])
    return view


@dataclass(frozen=True)
class Counts:
    users: int
    messages: int
    held: int
    states: list[tuple[str, int]]  # recipients in the queue by state
    hours: list[HourActivity]  # the last DASHBOARD_HOURS, oldest first, each one there
    failures: tuple[HistoryEvent, ...]  # the newest failed recipients


def last_hours(
    tx: Tx, now: float, give_up_after: float
) -> tuple[list[HourActivity], tuple[HistoryEvent, ...]]:
    """The history's activity in the last `DASHBOARD_HOURS` hours (this one included), an
    entry for every hour, and the newest failures in them; messages that may still have
    failed in them (arrived up to `give_up_after` earlier) are read."""
    first = (int(now) // 3600 - DASHBOARD_HOURS + 1) * 3600
    found = tx.history.activity(first, first - give_up_after, RECENT_FAILURES)
    known = {hour.hour: hour for hour in found.hours}
    hours = [
        known.get(hour, HourActivity(hour, 0, 0, 0, 0))
        for hour in range(first, first + DASHBOARD_HOURS * 3600, 3600)
    ]
    return hours, found.failures


def queue_counts(
    entries: list[QueueEntry],
    users: int,
    hours: list[HourActivity],
    failures: tuple[HistoryEvent, ...],
) -> Counts:
    states = collections.Counter(rcpt.state for entry in entries for rcpt in entry.recipients)
    held = sum(1 for entry in entries if entry.held)
    return Counts(users, len(entries), held, sorted(states.items()), hours, failures)


def routes(ctx: WebContext) -> list[BaseRoute]:
    async def dashboard(request: Request) -> Response:
        login = await page_login(ctx, request, admin=True)
        if isinstance(login, Response):
            return login

        now, give_up_after = time.time(), ctx.config.queue.give_up_after

        def read(tx: Tx) -> Counts:
            hours, failures = last_hours(tx, now, give_up_after)
            return queue_counts(tx.queue.entries(), len(accounts.users(tx)), hours, failures)

        counts = await ctx.store.read(read)
        return ctx.render(
            request,
            "admin_dashboard.html",
            login=login,
            users=counts.users,
            domains=len(ctx.config.domains),
            messages=counts.messages,
            held=counts.held,
            states=counts.states,
            hours=[{**dataclasses.asdict(h), "hour": hour_text(h.hour)} for h in counts.hours],
            totals=[sum(getattr(h, f) for h in counts.hours) for f in ACTIVITY_FIELDS],
            failures=[
                {
                    "time": clock(f.time),
                    "message_id": f.message_id,
                    "recipient": f.recipient,
                    "reply": f.reply,
                }
                for f in counts.failures
            ],
        )

    async def users(request: Request) -> Response:
        login = await page_login(ctx, request, admin=True)
        if isinstance(login, Response):
            return login
        return await _users_page(request, login, 200, "")

    async def _users_page(
        request: Request, login: Login, status: int, error: str, **typed: str
    ) -> Response:
        summaries = await ctx.store.read(accounts.users)
        rows = [
            {"address": u.address, "admin": u.admin, "created_text": clock(u.created)}
            for u in summaries
        ]
        notice = NOTICES.get(request.query_params.get("done", ""))
        return ctx.render(
            request,
            "admin_users.html",
            status,
            login=login,
            users=rows,
            error=error,
            notice=notice,
            **typed,
        )

    def user_change(action: str) -> Route:
        async def handle(request: Request) -> Response:
            posted = await posted_form(ctx, request, admin=True)
            if isinstance(posted, Response):
                return posted
            login, form = posted
            try:
                await _change_user(action, login, form)
            except Refused as error:
                typed = str(form.get("address", "")) if action == "created" else ""
                return await _users_page(
                    request, login, 400, str(error), error_for=error.field, typed_address=typed
                )
            return RedirectResponse(f"/admin/users?done={action}", status_code=303)

        return Route(USER_PATHS[action], handle, methods=["POST"])

    async def _change_user(action: str, login: Login, form: FormData) -> None:
        address = str(form.get("address", ""))
        if action == "created":
            await create_user(ctx, address, str(form.get("password", "")), "admin" in form)
        elif action == "password":
            await set_password(ctx, address, str(form.get("password", "")))
        elif action == "admin":
            await set_admin(ctx, login, address, form.get("admin") == "on")
        elif form.get("confirm") != "yes":
            raise Refused("Tick the box to confirm the deletion.", f"confirm-{address}")
        else:
            await delete_user(ctx, login, address)

    async def domains(request: Request) -> Response:
        login = await page_login(ctx, request, admin=True)
        if isinstance(login, Response):
            return login
        now = time.time()

        def read(tx: Tx) -> list[tuple[str, list[dict[str, str]]]]:
            return [
                (
                    domain,
                    [
                        {
                            "selector": key.selector,
                            "algorithm": key.algorithm,
                            "state": key.state,
                            "since": clock(key.state_changed),
                            "name": dkim_keys.record_name(key),
                        }
                        for key in dkim_keys.published_keys(tx, domain, now)
                    ],
                )
                for domain in ctx.config.domains
            ]

        listing = await ctx.store.read(read)
        return ctx.render(request, "admin_domains.html", login=login, domains=listing)

    async def aliases(request: Request) -> Response:
        login = await page_login(ctx, request, admin=True)
        if isinstance(login, Response):
            return login
        return await _aliases_page(request, login, 200, "")

    async def _aliases_page(
        request: Request, login: Login, status: int, error: str, **typed: object
    ) -> Response:
        listing = await ctx.store.read(accounts.aliases)
        notice = NOTICES.get(request.query_params.get("done", ""))
        return ctx.render(
            request,
            "admin_aliases.html",
            status,
            login=login,
            aliases=sorted(listing.items()),
            error=error,
            notice=notice,
            **typed,
        )

    async def alias_change(request: Request) -> Response:
        posted = await posted_form(ctx, request, admin=True)
        if isinstance(posted, Response):
            return posted
        login, form = posted
        address = str(form.get("address", ""))
        deleting = request.url.path.endswith("/delete")
        try:
            if deleting:
                await delete_alias(ctx, address)
            else:
                # Targets one per line, or separated by commas or spaces.
                targets = str(form.get("targets", "")).replace(",", " ").split()
                await add_alias(ctx, address, targets)
        except Refused as error:
            if deleting:
                return await _aliases_page(request, login, 400, str(error))
            # The alias and its targets as typed, the error tied to both fields.
            return await _aliases_page(
                request,
                login,
                400,
                str(error),
                error_for=("alias-address", "alias-targets"),
                typed_address=address,
                typed_targets=str(form.get("targets", "")),
            )
        done = "unalias" if deleting else "alias"
        return RedirectResponse(f"/admin/aliases?done={done}", status_code=303)

    async def queue(request: Request) -> Response:
        login = await page_login(ctx, request, admin=True)
        if isinstance(login, Response):
            return login
        return await _queue_page(request, login, 200, "")

    async def _queue_page(request: Request, login: Login, status: int, error: str) -> Response:
        entries = await ctx.store.read(lambda tx: tx.queue.entries())
        shown = [
            {
                "id": e.id,
                "held": e.held,
                "sender": e.sender,
                "size": e.size,
                "arrival": clock(e.arrival),
                "recipients": [
                    {
                        "address": r.address,
                        "state": r.state,
                        "attempts": r.attempts,
                        "next": "-" if (t := next_attempt(r)) is None else clock(t),
                        "last_reply": r.last_reply,
                    }
                    for r in e.recipients
                ],
            }
            for e in entries
        ]
        notice = NOTICES.get(request.query_params.get("done", ""))
        return ctx.render(
            request,
            "admin_queue.html",
            status,
            login=login,
            entries=shown,
            error=error,
            notice=notice,
        )

    async def queue_change(request: Request) -> Response:
        posted = await posted_form(ctx, request, admin=True)
        if isinstance(posted, Response):
            return posted
        login, form = posted
        action = request.path_params["action"]
        try:
            await queue_action(ctx, action, str(form.get("id", "")))
        except Refused as error:
            return await _queue_page(request, login, 400, str(error))
        return RedirectResponse(f"/admin/queue?done={action}", status_code=303)

    async def trace_page(request: Request) -> Response:
        login = await page_login(ctx, request, admin=True)
        if isinstance(login, Response):
            return login
        query = request.query_params.get("q", "").strip()
        if len(query) > MAX_QUERY:
            error = f"A query has at most {MAX_QUERY} characters."
            return ctx.render(
                request,
                "admin_trace.html",
                400,
                login=login,
                query="",
                traces=[],
                error=error,
                error_for="trace-q",
            )
        found = await trace.trace(ctx.store, query) if query else []
        return ctx.render(
            request,
            "admin_trace.html",
            200 if found or not query else 404,
            login=login,
            query=query,
            traces=[trace_view(t) for t in found],
        )

    return [
        Route("/admin/", dashboard, methods=["GET", "HEAD"]),
        Route("/admin/trace", trace_page, methods=["GET", "HEAD"]),
        Route("/admin/users", users, methods=["GET", "HEAD"]),
        *(user_change(action) for action in USER_PATHS),
        Route("/admin/domains", domains, methods=["GET", "HEAD"]),
        Route("/admin/aliases", aliases, methods=["GET", "HEAD"]),
        Route("/admin/aliases", alias_change, methods=["POST"]),
        Route("/admin/aliases/delete", alias_change, methods=["POST"]),
        Route("/admin/queue", queue, methods=["GET", "HEAD"]),
        Route("/admin/queue/{action}", queue_change, methods=["POST"]),
    ]
