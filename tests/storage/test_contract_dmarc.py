"""Storage contract, DMARC: received aggregate reports kept whole and once per (reporter, report
ID); our evaluations counted per UTC day, source IP, Author Domain and results (a flood of alike
messages is one row), listed by domain and period, and forgotten once reported."""

from __future__ import annotations

from dataclasses import replace

from postroom.storage.api import Store, Tx
from postroom.storage.records import EvaluationRecord, ReceivedReport, ReceivedRow

from .conftest import Backend, read, write

DAY = 86400
MONDAY = 1_714_953_600  # 2024-05-06T00:00:00Z


def report(
    report_id: str = "r-1",
    *,
    domain: str = "example.org",
    begin: int = MONDAY,
    reporter: str = "google.com",
) -> ReceivedReport:
    return ReceivedReport(
        reporter=reporter,
        email="noreply-dmarc-support@google.com",
        report_id=report_id,
        begin=begin,
        end=begin + DAY - 1,
        domain=domain,
        policy="p=reject; adkim=r; aspf=r",
        rows=(
            ReceivedRow(
                "192.0.2.1",
                10,
                "none",
                "pass",
                "pass",
                "example.org",
                envelope_from="example.org",
                dkim_results=(("example.org", "s1", "pass"),),
                spf_results=(("example.org", "pass"),),
            ),
            ReceivedRow("2001:db8::7", 3, "reject", "fail", "fail", "example.org"),
        ),
        received=MONDAY + DAY + 60.5,
        message_id="<abc@google.com>",
        schema="dmarcbis",
        errors=("one error",),
    )


def test_a_report_is_kept_whole_and_once(backend: Backend, store: Store) -> None:
    first = report()
    assert write(store, lambda tx: tx.dmarc.add_report(first)) is True
    # The same reporter and report ID again (a resent report) changes nothing.
    again = replace(first, rows=first.rows[:1], received=first.received + 99)
    assert write(store, lambda tx: tx.dmarc.add_report(again)) is False
    kept = read(store, lambda tx: tx.dmarc.reports())
    assert kept == [first]
    assert kept[0].messages == 13
    assert [row.dmarc for row in kept[0].rows] == ["pass", "fail"]
    # Another reporter may use the same ID.
    other = report(reporter="Yahoo")
    assert write(store, lambda tx: tx.dmarc.add_report(other)) is True
    store.close()
    reopened = backend.server()
    try:
        assert len(read(reopened, lambda tx: tx.dmarc.reports())) == 2
    finally:
        reopened.close()


def test_reports_by_domain_in_period_order(store: Store) -> None:
    late = report("late", begin=MONDAY + DAY)
    early = report("early", begin=MONDAY)
    elsewhere = report("sub", domain="Mail.Example.org")
    for item in (late, early, elsewhere):
        write(store, lambda tx, item=item: tx.dmarc.add_report(item))
    ids = [r.report_id for r in read(store, lambda tx: tx.dmarc.reports("example.org"))]
    assert ids == ["early", "late"]
    sub = read(store, lambda tx: tx.dmarc.reports("mail.example.org."))
    assert [r.report_id for r in sub] == ["sub"]
    assert len(read(store, lambda tx: tx.dmarc.reports(None))) == 3
    assert read(store, lambda tx: tx.dmarc.reports("example.net")) == []


def test_old_reports_are_forgotten(store: Store) -> None:
    write(store, lambda tx: tx.dmarc.add_report(report("old", begin=MONDAY)))
    write(store, lambda tx: tx.dmarc.add_report(report("new", begin=MONDAY + 10 * DAY)))
    assert write(store, lambda tx: tx.dmarc.forget_reports(MONDAY + 5 * DAY)) == 1
    assert [r.report_id for r in read(store, lambda tx: tx.dmarc.reports())] == ["new"]


def evaluation(moment: float, **changes: object) -> EvaluationRecord:
    base = EvaluationRecord(
        time=moment,
        policy_domain="example.org",
        header_from="example.org",
        source_ip="192.0.2.1",
        result="pass",
        disposition="pass",
        spf_aligned=True,
        dkim_aligned=False,
        spf=("example.org", "pass"),
        dkim=(("example.org", "sel", "fail"), ("other.example", "s2", "pass")),
        record="v=DMARC1; p=reject; rua=mailto:d@example.org",
        rua=("mailto:d@example.org",),
        wants_reports=True,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_alike_evaluations_of_a_day_are_one_counted_row(store: Store) -> None:
    def flood(tx: Tx) -> None:
        for second in range(500):
            tx.dmarc.record_evaluation(evaluation(MONDAY + 3600 + second))

    write(store, flood)
    rows = read(store, lambda tx: tx.dmarc.evaluations("example.org", MONDAY, MONDAY + DAY))
    assert len(rows) == 1
    assert rows[0].count == 500
    assert rows[0].time == MONDAY + 3600 + 499  # the latest one counted
    assert rows[0] == evaluation(MONDAY + 3600 + 499, count=500)


def test_evaluations_differing_in_anything_are_apart(store: Store) -> None:
    variants = [
        evaluation(MONDAY + 10),
        evaluation(MONDAY + 11, source_ip="192.0.2.2"),
        evaluation(MONDAY + 12, header_from="mail.example.org"),
        evaluation(MONDAY + 13, result="fail", disposition="reject", spf_aligned=False),
        evaluation(MONDAY + 14, dkim=()),
        evaluation(MONDAY + 15, spf=None),
        evaluation(MONDAY + 16, override="local_policy", disposition="none"),
        evaluation(MONDAY + DAY + 1),  # the next day
    ]
    for item in variants:
        write(store, lambda tx, item=item: tx.dmarc.record_evaluation(item))
        write(store, lambda tx, item=item: tx.dmarc.record_evaluation(replace(item, count=2)))
    rows = read(store, lambda tx: tx.dmarc.evaluations("example.org", 0, MONDAY + 2 * DAY))
    assert len(rows) == len(variants)
    assert {row.count for row in rows} == {3}
    assert {replace(row, count=1) for row in rows} == set(variants)
    first_day = read(store, lambda tx: tx.dmarc.evaluations("example.org", MONDAY, MONDAY + DAY))
    assert len(first_day) == len(variants) - 1


def test_the_latest_record_and_rua_win(store: Store) -> None:
    write(store, lambda tx: tx.dmarc.record_evaluation(evaluation(MONDAY + 1)))
    changed = evaluation(MONDAY + 2, record="v=DMARC1; p=none", rua=(), wants_reports=False)
    write(store, lambda tx: tx.dmarc.record_evaluation(changed))
    [row] = read(store, lambda tx: tx.dmarc.evaluations("example.org", MONDAY, MONDAY + DAY))
    assert (row.record, row.rua, row.wants_reports, row.count) == ("v=DMARC1; p=none", (), False, 2)


def test_pending_domains_are_those_asking_with_finished_days(store: Store) -> None:
    items = [
        evaluation(MONDAY + 5),  # example.org, Monday, asks
        evaluation(MONDAY + 5, policy_domain="quiet.example", wants_reports=False),
        evaluation(MONDAY + DAY + 5, policy_domain="today.example"),  # Tuesday: not finished
        evaluation(MONDAY + 7, policy_domain="B.example"),
    ]
    for item in items:
        write(store, lambda tx, item=item: tx.dmarc.record_evaluation(item))
    tuesday = MONDAY + DAY
    pending = read(store, lambda tx: tx.dmarc.pending_report_domains(tuesday))
    assert pending == ["b.example", "example.org"]
    later = read(store, lambda tx: tx.dmarc.pending_report_domains(tuesday + DAY))
    assert later == ["b.example", "example.org", "today.example"]


def test_forgetting_evaluations_of_a_domain_or_all(store: Store) -> None:
    items = [
        evaluation(MONDAY + 5),
        evaluation(MONDAY + DAY + 5),
        evaluation(MONDAY + 5, policy_domain="other.example"),
    ]
    for item in items:
        write(store, lambda tx, item=item: tx.dmarc.record_evaluation(item))
    tuesday = MONDAY + DAY
    assert write(store, lambda tx: tx.dmarc.forget_evaluations("Example.org", tuesday)) == 1
    left = read(store, lambda tx: tx.dmarc.evaluations("example.org", 0, tuesday + DAY))
    assert [row.time for row in left] == [MONDAY + DAY + 5]
    assert read(store, lambda tx: tx.dmarc.pending_report_domains(tuesday)) == ["other.example"]
    assert write(store, lambda tx: tx.dmarc.forget_evaluations(None, tuesday + DAY)) == 2
    assert read(store, lambda tx: tx.dmarc.pending_report_domains(tuesday + 9 * DAY)) == []


def test_a_page_of_reports_newest_first_by_domain_and_period(store: Store) -> None:
    for day in range(5):
        for domain in ("example.org", "example.net"):
            item = report(f"{domain}-{day}", domain=domain, begin=MONDAY + day * DAY)
            write(store, lambda tx, item=item: tx.dmarc.add_report(item))

    def page(
        domain: str | None, begin: int | None, end: int | None, limit: int, offset: int = 0
    ) -> list[str]:
        found = read(store, lambda tx: tx.dmarc.report_page(domain, begin, end, limit, offset))
        return [r.report_id for r in found]

    assert page("Example.org.", None, None, 3) == [f"example.org-{d}" for d in (4, 3, 2)]
    assert page("example.org", None, None, 3, 3) == ["example.org-1", "example.org-0"]
    assert len(page(None, None, None, 100)) == 10
    # Periods overlapping [Tuesday noon, Thursday): Tuesday's and Wednesday's.
    tuesday = MONDAY + DAY
    assert page("example.org", tuesday + DAY // 2, tuesday + 2 * DAY, 10) == [
        "example.org-2",
        "example.org-1",
    ]
    assert page("example.com", None, None, 10) == []
    [newest] = read(store, lambda tx: tx.dmarc.report_page(None, None, None, 1))
    assert newest.id > 0
    again = read(store, lambda tx: tx.dmarc.report(newest.id))
    assert again == newest and again is not None and again.id == newest.id
    assert read(store, lambda tx: tx.dmarc.report(newest.id + 1000)) is None
    assert {r.id for r in read(store, lambda tx: tx.dmarc.reports())} == {
        r.id for r in read(store, lambda tx: tx.dmarc.report_page(None, None, None, 10))
    }


def test_evaluation_days_add_up_per_domain_and_day(store: Store) -> None:
    items = [
        evaluation(MONDAY + 5, count=4),
        evaluation(MONDAY + 6, source_ip="192.0.2.9", result="fail", disposition="reject"),
        evaluation(MONDAY + 7, source_ip="192.0.2.9", header_from="mail.example.org", count=2),
        evaluation(MONDAY + DAY + 5, policy_domain="quiet.example", wants_reports=False),
    ]
    for item in items:
        write(store, lambda tx, item=item: tx.dmarc.record_evaluation(item))
    days = read(store, lambda tx: tx.dmarc.evaluation_days(10))
    assert [(d.policy_domain, d.day) for d in days] == [
        ("quiet.example", MONDAY + DAY),
        ("example.org", MONDAY),
    ]
    quiet, org = days
    assert (quiet.results, quiet.sources, quiet.wants_reports) == ((("pass", 1),), 1, False)
    assert (org.results, org.sources, org.wants_reports, org.messages) == (
        (("pass", 6), ("fail", 1)),
        2,
        True,
        7,
    )
    assert len(read(store, lambda tx: tx.dmarc.evaluation_days(1))) == 1
