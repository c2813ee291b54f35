"""`postroom dmarc reports [DOMAIN] [--json]`: the DMARC aggregate reports other receivers sent
about our domains (collected at `dmarc-reports@DOMAIN`).

Each report is a line (reporter, report ID, period as ISO 8601 UTC dates, policy domain,
messages) followed by its source IPs, one line each, with the messages counted by DMARC result
and by the aligned SPF and DKIM results the reporter found, and by what it did with them.
`--json` gives every field (`services.dmarc_view.report_json`, as the web admin's API), the
raw SPF and DKIM results of each row included.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence

import click

from postroom.cli.common import load, open_store
from postroom.services.dmarc_view import period, report_json
from postroom.storage.records import ReceivedReport, ReceivedRow


def _counts(values: Iterable[tuple[str, int]]) -> str:
    counter: Counter[str] = Counter()
    for value, count in values:
        counter[value or "-"] += count
    return ",".join(f"{value}={count}" for value, count in counter.most_common())


def _one_word(text: str) -> str:
    """A cell: what a reporter wrote, blanks folded, never empty (columns stay columns)."""
    return "_".join(text.split()) or "-"


def _aligned(lines: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return [
        indent
        + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]


def _sources(rows: Sequence[ReceivedRow]) -> list[list[str]]:
    """One line per source IP, in order of first appearance, its rows added up."""
    by_ip: dict[str, list[ReceivedRow]] = {}
    for row in rows:
        by_ip.setdefault(row.source_ip, []).append(row)
    lines = [["SOURCE IP", "MESSAGES", "DMARC", "SPF", "DKIM", "DISPOSITION"]]
    for ip, group in by_ip.items():
        lines.append(
            [
                ip,
                str(sum(row.count for row in group)),
                _counts((row.dmarc, row.count) for row in group),
                _counts((_one_word(row.spf), row.count) for row in group),
                _counts((_one_word(row.dkim), row.count) for row in group),
                _counts((_one_word(row.disposition), row.count) for row in group),
            ]
        )
    return lines


def _print(reports: Sequence[ReceivedReport]) -> None:
    head = ["REPORTER", "REPORT ID", "PERIOD", "DOMAIN", "MESSAGES"]
    lines = [head] + [
        [
            _one_word(report.reporter),
            _one_word(report.report_id),
            period(report),
            _one_word(report.domain),
            str(report.messages),
        ]
        for report in reports
    ]
    formatted = _aligned(lines)
    click.echo(formatted[0])
    for report, line in zip(reports, formatted[1:], strict=True):
        click.echo(line)
        if report.rows:
            for source in _aligned(_sources(report.rows), indent="    "):
                click.echo(source)


@click.group()
def dmarc() -> None:
    """DMARC aggregate reports."""


@dmarc.command("reports")
@click.argument("domain", required=False)
@click.option("--json", "as_json", is_flag=True, help="A JSON array, one object per report.")
@click.pass_context
def dmarc_reports(ctx: click.Context, domain: str | None, as_json: bool) -> None:
    """List the aggregate reports received (about DOMAIN only, when given), by period.

    Under each report, one line per source IP: messages, and their counts by DMARC result,
    aligned SPF and DKIM result, and disposition, as the reporter saw them.
    """
    config = load(ctx)
    wanted = domain.strip().rstrip(".").lower() if domain else None
    with open_store(config) as store:
        reports = store.reader().dmarc.reports(wanted)
    if as_json:
        click.echo(json.dumps([report_json(report) for report in reports], indent=2))
    elif reports:
        _print(reports)
    else:
        click.echo(f"no DMARC reports about {wanted}" if wanted else "no DMARC reports")
