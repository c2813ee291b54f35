"""The DMARC reports pages in a real headless Chromium (as test_web_admin_browser.py drives it)
against a real `postroom serve` that received two reports over SMTP: reach the page from the
navigation, see the summary and the listing, filter by domain from the form, open a report
from its link; screenshots of each step, the console free of errors.
"""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from .conftest import ALICE, DOMAIN, Factory, Postroom
from .test_dmarc_cli import row
from .test_web_admin_reports import DAY, HOSTILE, TODAY, report_mail

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from . import test_web_admin_browser
from .test_web_admin_browser import Steps

browser = test_web_admin_browser.browser


@pytest.fixture
def server(postroom_factory: Factory) -> Postroom:
    server = postroom_factory(services=("smtp", "http", "https"), start=False)
    server.run_cli("user", "admin", ALICE)
    server.start()
    with smtplib.SMTP(server.host, server.smtp_port, timeout=30) as client:
        for reporter, back, rows in (
            ("google.com", 2, row("192.0.2.25", 12, "pass", "pass")),
            (HOSTILE, 1, row("203.0.113.9", 5, "fail", "fail", "reject")),
        ):
            mail = report_mail(reporter, DOMAIN, TODAY - back * DAY, rows)
            client.sendmail("reports@pass.test", [f"dmarc-reports@{DOMAIN}"], mail)
    return server


def test_reports_pages_in_chromium(server: Postroom, browser: WebDriver, tmp_path: Path) -> None:
    steps = Steps(browser, server, tmp_path / "screenshots")
    steps.log_in(ALICE, server.passwords[ALICE])
    steps.wait_for("Messages in the queue")
    browser.find_element(By.LINK_TEXT, "DMARC reports").click()
    steps.wait_for("Sources failing DMARC most")
    assert browser.current_url == steps.base + "/admin/reports"
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "2 reports, 17 messages" in text and HOSTILE in text  # shown as text, not run
    steps.shot("reports")
    steps.assert_clean_console()

    Select(steps.labelled("Domain")).select_by_visible_text(DOMAIN)
    assert steps.labelled("Period from (UTC date)").get_attribute("type") == "date"
    steps.press("Show")
    steps.wait_for("Newest period first")
    assert browser.current_url.startswith(f"{steps.base}/admin/reports?domain={DOMAIN}")
    browser.find_element(By.LINK_TEXT, "google.com").click()
    steps.wait_for("DMARC report from google.com")
    assert "192.0.2.25" in browser.find_element(By.TAG_NAME, "body").text
    steps.shot("report")
    steps.assert_clean_console()
