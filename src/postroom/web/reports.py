"""`/admin/reports`: the DMARC aggregate reports other receivers sent about our domains, and
the counts our own reports will carry; `GET /api/v1/dmarc/reports` and `/{id}` (mounted by
web/api.py) give the same as JSON.

The listing is a page of `dmarc_view.PAGE_SIZE` reports, newest period first, filtered by
domain and by UTC dates (a report shows when its period overlaps them); above it, per domain
of ours, what the last 30 days of reports say and the source IPs failing most. One report's
page lists its rows (at most `SHOWN_ROWS`; the API gives them all). Below, the evaluations of
inbound mail not reported yet, per Policy Domain and UTC day: once a day's reports are sent
they are forgotten, the report itself then shows in the queue and the trace. Everything a
reporter wrote is hostile text: Jinja2 escapes it. Admins only; a plain user gets 403.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from postroom.services import dmarc_view
from postroom.services.dmarc_view import DomainSummary, FilterError, ReportFilter, ReportPage
from postroom.storage.api import Tx
from postroom.storage.records import EvaluationDay, ReceivedReport
from postroom.web.auth import WebContext, page_login

SHOWN_ROWS = 1000  # rows of one report its page lists
MAX_ID = 18  # digits of a report's id worth looking up
# The filter form's field of each name a FilterError starts with ("page" has none).
FILTER_FIELDS = {"domain": "reports-domain", "from": "reports-from", "to": "reports-to"}


def report_filter(request: Request) -> ReportFilter:
    """The listing's filter from the query string; FilterError names the bad field."""
    params = request.query_params
    return ReportFilter.parse(
        params.get("domain", "")[:300],
        params.get("from", "")[:40],
        params.get("to", "")[:40],
        params.get("page", "")[:40],
    )


def report_id(request: Request) -> int | None:
    """The path's report id; None when it cannot name one."""
    text = str(request.path_params["id"])
    return int(text) if text.isascii() and text.isdigit() and len(text) <= MAX_ID else None


def listing_row(report: ReceivedReport) -> dict[str, Any]:
    passed, failed = dmarc_view.dmarc_counts(report)
    return {
        "id": report.id,
        "reporter": report.reporter,
        "period": dmarc_view.period(report),
        "domain": report.domain,
        "messages": report.messages,
        "passed": passed,
        "failed": failed,
    }


async def api_list(ctx: WebContext, request: Request) -> Response:
    """`GET /api/v1/dmarc/reports[?domain=&from=&to=&page=]`: one page, without rows; a `Link`
    to the next (older) page when there is one (RFC 8288 §3)."""
    wanted = report_filter(request)  # FilterError is a ValueError: 400
    found = await ctx.store.read(lambda tx: dmarc_view.report_page(tx, wanted))
    headers = {}
    if found.more:
        following = urlencode(wanted.query(wanted.page + 1))
        headers["Link"] = f'</api/v1/dmarc/reports?{following}>; rel="next"'
    body = [dmarc_view.report_json(report, rows=False) for report in found.reports]
    return JSONResponse(body, headers=headers)


async def api_report(ctx: WebContext, request: Request) -> Response:
    """`GET /api/v1/dmarc/reports/{id}`: the report with every row; 404 when none."""
    wanted = report_id(request)
    found = None if wanted is None else await ctx.store.read(lambda tx: tx.dmarc.report(wanted))
    if found is None:
        return JSONResponse({"error": "no such report"}, status_code=404)
    return JSONResponse(dmarc_view.report_json(found))


def routes(ctx: WebContext) -> list[BaseRoute]:
    async def reports(request: Request) -> Response:
        login = await page_login(ctx, request, admin=True)
        if isinstance(login, Response):
            return login
        domains = list(ctx.config.domains)
        # A refused filter is a 400 showing the form with the error and the page's other
        # parts, the listing empty.
        refused = ""
        try:
            wanted = report_filter(request)
        except FilterError as error:
            refused, wanted = str(error), ReportFilter()
        now = time.time()

        def read(tx: Tx) -> tuple[ReportPage, list[DomainSummary], list[EvaluationDay]]:
            return (
                ReportPage([], False) if refused else dmarc_view.report_page(tx, wanted),
                dmarc_view.summaries(tx, domains, now),
                dmarc_view.evaluation_days(tx),
            )

        found, summaries, ours = await ctx.store.read(read)
        pages = {
            "newer": urlencode(wanted.query(wanted.page - 1)) if wanted.page > 1 else None,
            "older": urlencode(wanted.query(wanted.page + 1)) if found.more else None,
        }
        if wanted.domain and wanted.domain not in domains:
            domains.append(wanted.domain)
        return ctx.render(
            request,
            "admin_reports.html",
            400 if refused else 200,
            login=login,
            error=refused,
            error_for=FILTER_FIELDS.get(refused.split(":", 1)[0], ()),
            wanted=wanted,
            domains=domains,
            reports=[listing_row(report) for report in found.reports],
            pages=pages,
            summary_days=dmarc_view.SUMMARY_DAYS,
            summary_cap=dmarc_view.SUMMARY_REPORTS,
            summaries=summaries,
            ours=[
                {
                    "domain": day.policy_domain,
                    "day": dmarc_view.utc_date(day.day),
                    "messages": day.messages,
                    "results": day.results,
                    "sources": day.sources,
                    "wants_reports": day.wants_reports,
                }
                for day in ours
            ],
        )

    async def report(request: Request) -> Response:
        login = await page_login(ctx, request, admin=True)
        if isinstance(login, Response):
            return login
        wanted = report_id(request)
        found = None if wanted is None else await ctx.store.read(lambda tx: tx.dmarc.report(wanted))
        if found is None:
            return ctx.render(
                request, "admin_report.html", 404, login=login, report=None, error="No such report."
            )
        return ctx.render(
            request,
            "admin_report.html",
            login=login,
            report=dmarc_view.report_json(found, rows=False),
            period=dmarc_view.period(found),
            received=dmarc_view.utc_time(found.received),
            rows=[dmarc_view.row_json(row) for row in found.rows[:SHOWN_ROWS]],
            hidden=max(0, len(found.rows) - SHOWN_ROWS),
        )

    return [
        Route("/admin/reports", reports, methods=["GET", "HEAD"]),
        Route("/admin/reports/{id}", report, methods=["GET", "HEAD"]),
    ]
