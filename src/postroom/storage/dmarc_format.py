"""How DMARC reports and evaluations are written down, the same in every backend: a received
report's rows as one JSON array, an evaluation's results as another (the key its count is kept
under), and the records they are read back into."""

from __future__ import annotations

import json
from typing import Any

from postroom.storage.records import EvaluationRecord, ReceivedReport, ReceivedRow

DAY = 86400


def utc_day(moment: float) -> int:
    """The start of the UTC day `moment` falls in (Unix time has no leap seconds)."""
    return int(moment // DAY) * DAY


def results_text(evaluation: EvaluationRecord) -> str:
    """The results of an evaluation as kept: the key it is counted under."""
    return json.dumps(
        [
            evaluation.result,
            evaluation.disposition,
            evaluation.override,
            evaluation.spf_aligned,
            evaluation.dkim_aligned,
            list(evaluation.spf) if evaluation.spf is not None else None,
            [list(item) for item in evaluation.dkim],
        ],
        separators=(",", ":"),
    )


def rows_text(report: ReceivedReport) -> str:
    """A received report's rows as kept: one JSON array each."""
    return json.dumps([_row_fields(row) for row in report.rows], separators=(",", ":"))


def _row_fields(row: ReceivedRow) -> list[object]:
    return [
        row.source_ip,
        row.count,
        row.disposition,
        row.dkim,
        row.spf,
        row.header_from,
        row.envelope_from,
        [list(item) for item in row.dkim_results],
        [list(item) for item in row.spf_results],
    ]


def report_of(row: Any) -> ReceivedReport:
    """A report of the columns _REPORT_COLUMNS and id, as both backends select them."""
    rows = tuple(
        ReceivedRow(
            source_ip=str(ip),
            count=int(count),
            disposition=str(disposition),
            dkim=str(dkim),
            spf=str(spf),
            header_from=str(header_from),
            envelope_from=envelope_from,
            dkim_results=tuple((str(d), str(s), str(r)) for d, s, r in dkim_results),
            spf_results=tuple((str(d), str(r)) for d, r in spf_results),
        )
        for (
            ip,
            count,
            disposition,
            dkim,
            spf,
            header_from,
            envelope_from,
            dkim_results,
            spf_results,
        ) in json.loads(row[11])
    )
    return ReceivedReport(
        reporter=str(row[0]),
        email=str(row[1]),
        report_id=str(row[2]),
        begin=int(row[3]),
        end=int(row[4]),
        domain=str(row[5]),
        policy=str(row[6]),
        schema=str(row[7]),
        errors=tuple(str(e) for e in json.loads(row[8])),
        received=float(row[9]),
        message_id=str(row[10]),
        rows=rows,
        id=int(row[12]),
    )


def evaluation_of(row: Any) -> EvaluationRecord:
    """An evaluation of the columns policy_domain, day, source_ip, header_from, results,
    count, last_seen, record, rua, wants_reports."""
    result, disposition, override, spf_aligned, dkim_aligned, spf, dkim = json.loads(row[4])
    return EvaluationRecord(
        time=float(row[6]),
        policy_domain=str(row[0]),
        header_from=str(row[3]),
        source_ip=str(row[2]),
        result=str(result),
        disposition=str(disposition),
        spf_aligned=bool(spf_aligned),
        dkim_aligned=bool(dkim_aligned),
        spf=None if spf is None else (str(spf[0]), str(spf[1])),
        dkim=tuple((str(d), str(s), str(r)) for d, s, r in dkim),
        override=override,
        record=str(row[7]),
        rua=tuple(str(uri) for uri in json.loads(row[8])),
        wants_reports=bool(row[9]),
        count=int(row[5]),
    )
