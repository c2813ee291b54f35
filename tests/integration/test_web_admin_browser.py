"""The web admin in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) against a real `postroom serve`: log in with the keyboard, see a message just sent
in the queue, retry it and open its delivery trace, change a password, and as a plain user
fail to open the admin pages. A screenshot of each step is saved under the test's tmp dir
(paths printed); the browser's console must stay free of errors.

Chromium trusts exactly the server's certificate and reaches it by its host name
(tests/integration/chromium.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ALICE, BOB, HOSTNAME, Factory, Postroom

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from .chromium import chromium

SERVICES = ("smtp", "submission", "http", "https")
WAIT = 30.0


@pytest.fixture
def server(postroom_factory: Factory) -> Postroom:
    server = postroom_factory(services=SERVICES, start=False)
    server.run_cli("user", "admin", ALICE)
    server.start()
    return server


@pytest.fixture
def browser(server: Postroom, tmp_path: Path) -> Iterator[WebDriver]:
    with chromium(server, tmp_path / "chromium-profile") as driver:
        yield driver


class Steps:
    """Visits pages, saves a screenshot of each step, and checks the console after each."""

    def __init__(self, driver: WebDriver, server: Postroom, directory: Path) -> None:
        self.driver = driver
        self.base = f"https://{HOSTNAME}:{server.ports['https']}"
        self.directory = directory
        directory.mkdir()
        self.count = 0

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def wait_for(self, text: str) -> None:
        # A page being replaced makes the old body stale: ask again.
        WebDriverWait(
            self.driver, WAIT, ignored_exceptions=(StaleElementReferenceException,)
        ).until(
            lambda d: text in d.find_element(By.TAG_NAME, "body").text,
            f"{text!r} never showed on {self.driver.current_url}",
        )

    def shot(self, name: str) -> Path:
        self.count += 1
        path = self.directory / f"{self.count:02d}-{name}.png"
        assert self.driver.save_screenshot(str(path)), path
        print(f"screenshot: {path}")
        return path

    def console_errors(self) -> list[str]:
        entries = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return [e["message"] for e in entries if e["level"] in ("SEVERE", "ERROR")]

    def assert_clean_console(self) -> None:
        errors = self.console_errors()
        assert not errors, errors

    def focused(self, element_id: str) -> WebElement:
        """The element with the keyboard focus, once it is `element_id` (autofocus applies
        when the page is next rendered, possibly after the load event)."""
        WebDriverWait(self.driver, WAIT).until(
            lambda d: d.switch_to.active_element.get_attribute("id") == element_id,
            f"the focus never reached #{element_id}",
        )
        return self.driver.switch_to.active_element

    def log_in(self, address: str, password: str) -> None:
        """By keyboard only: the address field has focus, Tab to the password, Enter."""
        self.open("/login")
        self.focused("address").send_keys(address, Keys.TAB)
        self.focused("password").send_keys(password, Keys.ENTER)

    def labelled(self, label: str) -> WebElement:
        """The form field a <label> names (marked "(required)" or not): a field without its
        label is not found."""
        named = f"normalize-space()='{label}' or normalize-space()='{label} (required)'"
        element = self.driver.find_element(By.XPATH, f"//label[{named}]")
        return self.driver.find_element(By.ID, str(element.get_attribute("for")))

    def press(self, name: str) -> None:
        self.driver.find_element(By.XPATH, f"//button[@aria-label='{name}' or .='{name}']").click()


def test_admin_and_account_pages_in_chromium(
    server: Postroom, browser: WebDriver, tmp_path: Path
) -> None:
    with server.submission(ALICE) as client:
        client.sendmail(ALICE, ["someone@remote.example"], b"Subject: hi\r\n\r\nhello\r\n")
    match = re.search(r"^(\S+)\t", server.queue_list(), re.MULTILINE)
    assert match
    message_id = match[1]
    steps = Steps(browser, server, tmp_path / "screenshots")

    steps.log_in(ALICE, server.passwords[ALICE])
    steps.wait_for("Messages in the queue")
    assert browser.current_url == steps.base + "/admin/"
    steps.shot("dashboard")
    steps.assert_clean_console()

    steps.open("/admin/queue")
    steps.wait_for(message_id)
    assert "someone@remote.example" in browser.page_source
    steps.shot("queue")
    steps.press(f"Retry {message_id}")
    steps.wait_for("The message is due now.")
    steps.shot("queue-retried")
    steps.assert_clean_console()
    assert message_id in server.queue_list()
    # The message's delivery trace, from its link on the queue page.
    browser.find_element(By.XPATH, f"//a[@aria-label='Delivery trace of {message_id}']").click()
    steps.wait_for(f"Message {message_id} (in the queue)")
    assert browser.current_url == f"{steps.base}/admin/trace?q={message_id}"
    assert "To <someone@remote.example>: remote" in browser.find_element(By.TAG_NAME, "body").text
    steps.shot("trace")
    steps.assert_clean_console()

    steps.open("/admin/users")
    steps.wait_for(BOB)
    steps.labelled("Address").send_keys("carol@example.test")
    steps.labelled("Password").send_keys("carol-secret")
    steps.press("Create user")
    steps.wait_for("The user was created.")
    assert "carol@example.test" in server.run_cli("user", "list").stdout
    steps.shot("users")
    steps.open("/admin/domains")
    steps.wait_for("DKIM keys of example.test")
    steps.shot("domains")
    steps.assert_clean_console()

    steps.open("/account/")
    steps.labelled("Current password").send_keys(server.passwords[ALICE])
    steps.labelled("New password").send_keys("alice-new")
    steps.labelled("New password again").send_keys("alice-new")
    steps.press("Change password")
    steps.wait_for("Your password was changed.")
    steps.shot("password-changed")
    steps.press(f"Log out {ALICE}")
    steps.wait_for("Log in")
    steps.log_in(ALICE, "alice-new")
    steps.wait_for("Messages in the queue")
    steps.assert_clean_console()
    steps.press(f"Log out {ALICE}")
    steps.wait_for("Log in")

    steps.log_in(BOB, server.passwords[BOB])
    steps.wait_for("You are logged in as bob@example.test")
    assert browser.current_url == steps.base + "/account/"
    assert ALICE not in browser.page_source
    steps.shot("plain-user-account")
    steps.assert_clean_console()
    for path in ("/admin/", "/admin/queue"):
        steps.open(path)
        steps.wait_for("Admins only.")
        assert message_id not in browser.page_source
    steps.shot("plain-user-refused")
    # The only console errors allowed now: the two refused pages' own 403 status.
    errors = steps.console_errors()
    assert len(errors) == 2 and all("403" in error for error in errors), errors


def test_filters_and_vacation_in_chromium(
    server: Postroom, browser: WebDriver, tmp_path: Path
) -> None:
    steps = Steps(browser, server, tmp_path / "screenshots")
    steps.log_in(BOB, server.passwords[BOB])
    steps.wait_for("You are logged in as bob@example.test")
    steps.open("/account/filters")
    steps.wait_for("You have no scripts.")
    steps.open("/account/filters/edit")
    steps.labelled("Name").send_keys("lists")
    steps.labelled("Sieve script").send_keys('require ["fileinto"];\nfileinto "Lists"\n')
    steps.press("Check and save")
    steps.wait_for("Not saved: line 3:1:")
    steps.shot("filter-error")
    # The only console error: the refused script's own 400 status.
    errors = steps.console_errors()
    assert len(errors) == 1 and "400" in errors[0], errors
    assert "has no scripts" in server.run_cli("sieve", "list", BOB).stdout
    source = steps.labelled("Sieve script")
    source.clear()
    source.send_keys('require ["fileinto"];\nfileinto "Lists";\n')
    steps.press("Check and save")
    steps.wait_for("The script was saved.")
    steps.open("/account/filters")
    steps.press("Activate")
    steps.wait_for("The script is now active.")
    steps.shot("filter-active")
    assert "lists\t" in server.run_cli("sieve", "list", BOB).stdout
    steps.open("/account/vacation")
    steps.labelled("Reply to messages while I am away").click()
    steps.labelled("Message").send_keys('Away "till" Monday.\n.\nBob')
    steps.press("Save")
    steps.wait_for("Vacation replies are on.")
    steps.wait_for("They replaced your active script lists")
    steps.shot("vacation-on")
    steps.assert_clean_console()
