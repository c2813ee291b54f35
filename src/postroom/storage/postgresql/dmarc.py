"""DMARC aggregate reports in PostgreSQL (storage.api.Dmarc): the reports other receivers send
us (a row each, its records as JSON), and the evaluations of our inbound checks, counted by UTC
day, source IP, Author Domain and results (an upsert: a thousand alike messages make one row).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from postroom.storage.dmarc_format import evaluation_of as _evaluation
from postroom.storage.dmarc_format import report_of as _report
from postroom.storage.dmarc_format import results_text, rows_text, utc_day
from postroom.storage.records import EvaluationDay, EvaluationRecord, ReceivedReport

if TYPE_CHECKING:
    from postroom.storage.postgresql.connection import PgTx

_REPORT_COLUMNS = (
    "reporter, email, report_id, begin_time, end_time, domain, policy, schema, errors,"
    " received, message_id, rows"
)
_REPORT_SELECT = f"SELECT {_REPORT_COLUMNS}, id FROM dmarc_reports"
_EVALUATION_COLUMNS = (
    "policy_domain, day, source_ip, header_from, results, count, last_seen, record, rua,"
    " wants_reports"
)


class PgDmarc:
    def __init__(self, tx: PgTx) -> None:
        self.conn = tx.conn

    # -- received reports ---------------------------------------------------------------------

    def add_report(self, report: ReceivedReport) -> bool:
        cursor = self.conn.execute(
            f"INSERT INTO dmarc_reports({_REPORT_COLUMNS}, messages)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            (
                report.reporter,
                report.email,
                report.report_id,
                report.begin,
                report.end,
                report.domain.lower(),
                report.policy,
                report.schema,
                json.dumps(list(report.errors)),
                report.received,
                report.message_id,
                rows_text(report),
                report.messages,
            ),
        )
        return cursor.rowcount == 1

    def reports(self, domain: str | None = None) -> list[ReceivedReport]:
        query = _REPORT_SELECT
        args: tuple[object, ...] = ()
        if domain is not None:
            query += " WHERE domain = %s"
            args = (domain.lower().rstrip("."),)
        query += " ORDER BY begin_time, reporter, report_id"
        return [_report(row) for row in self.conn.execute(query, args)]

    def report_page(
        self, domain: str | None, begin: int | None, end: int | None, limit: int, offset: int = 0
    ) -> list[ReceivedReport]:
        where: list[str] = ["true"]
        args: list[object] = []
        if domain is not None:
            where.append("domain = %s")  # the index (domain, begin_time) gives the order too
            args.append(domain.lower().rstrip("."))
        if begin is not None:
            where.append("end_time >= %s")
            args.append(begin)
        if end is not None:
            where.append("begin_time < %s")
            args.append(end)
        # The page's ids first: sorting reads no rows column (a report's rows may be megabytes).
        query = (
            f"{_REPORT_SELECT} WHERE id IN (SELECT id FROM dmarc_reports"
            f" WHERE {' AND '.join(where)} ORDER BY begin_time DESC, id DESC LIMIT %s OFFSET %s)"
            " ORDER BY begin_time DESC, id DESC"
        )
        rows = self.conn.execute(query, (*args, limit, offset))
        return [_report(row) for row in rows]

    def report(self, report_id: int) -> ReceivedReport | None:
        row = self.conn.execute(f"{_REPORT_SELECT} WHERE id = %s", (report_id,)).fetchone()
        return None if row is None else _report(row)

    def forget_reports(self, before: float) -> int:
        cursor = self.conn.execute("DELETE FROM dmarc_reports WHERE end_time < %s", (before,))
        return cursor.rowcount

    # -- our evaluations ----------------------------------------------------------------------

    def record_evaluation(self, evaluation: EvaluationRecord) -> None:
        results = results_text(evaluation)
        self.conn.execute(
            f"INSERT INTO dmarc_evaluations({_EVALUATION_COLUMNS})"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (policy_domain, day, source_ip, header_from, results) DO UPDATE SET"
            " count = dmarc_evaluations.count + excluded.count,"
            " last_seen = greatest(dmarc_evaluations.last_seen, excluded.last_seen),"
            " record = excluded.record, rua = excluded.rua,"
            " wants_reports = excluded.wants_reports",
            (
                evaluation.policy_domain.lower(),
                utc_day(evaluation.time),
                evaluation.source_ip,
                evaluation.header_from.lower(),
                results,
                evaluation.count,
                evaluation.time,
                evaluation.record,
                json.dumps(list(evaluation.rua)),
                evaluation.wants_reports,
            ),
        )

    def pending_report_domains(self, before: float) -> list[str]:
        rows = self.conn.execute(
            "SELECT DISTINCT policy_domain FROM dmarc_evaluations"
            " WHERE wants_reports AND day < %s ORDER BY policy_domain",
            (before,),
        )
        return [str(row[0]) for row in rows]

    def evaluations(self, policy_domain: str, begin: float, end: float) -> list[EvaluationRecord]:
        rows = self.conn.execute(
            "SELECT policy_domain, day, source_ip, header_from, results, count, last_seen,"
            " record, rua, wants_reports FROM dmarc_evaluations"
            " WHERE policy_domain = %s AND day >= %s AND day < %s"
            " ORDER BY day, source_ip, header_from, results",
            (policy_domain.lower(), begin, end),
        )
        return [_evaluation(row) for row in rows]

    def evaluation_days(self, limit: int) -> list[EvaluationDay]:
        # The table holds a few days at most (reported daily, dropped after a week).
        results: dict[tuple[str, int], dict[str, int]] = {}
        wants: dict[tuple[str, int], bool] = {}
        for domain, day, result, count, asked in self.conn.execute(
            "SELECT policy_domain, day, results::jsonb ->> 0, sum(count),"
            " bool_or(wants_reports) FROM dmarc_evaluations GROUP BY 1, 2, 3"
        ):
            key = (str(domain), int(day))
            results.setdefault(key, {})[str(result)] = int(count)
            wants[key] = wants.get(key, False) or bool(asked)
        sources = {
            (str(domain), int(day)): int(count)
            for domain, day, count in self.conn.execute(
                "SELECT policy_domain, day, count(DISTINCT source_ip) FROM dmarc_evaluations"
                " GROUP BY 1, 2"
            )
        }
        found = [
            EvaluationDay(
                policy_domain=key[0],
                day=key[1],
                results=tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0]))),
                sources=sources[key],
                wants_reports=wants[key],
            )
            for key, counts in results.items()
        ]
        found.sort(key=lambda d: (-d.day, -d.messages, d.policy_domain))
        return found[:limit]

    def forget_evaluations(self, policy_domain: str | None, end: float) -> int:
        if policy_domain is None:
            cursor = self.conn.execute("DELETE FROM dmarc_evaluations WHERE day < %s", (end,))
        else:
            cursor = self.conn.execute(
                "DELETE FROM dmarc_evaluations WHERE policy_domain = %s AND day < %s",
                (policy_domain.lower(), end),
            )
        return cursor.rowcount
