"""An accessibility audit of every web admin and account page, in a real headless Chromium
(Debian's chromium + chromium-driver, driven by Selenium) against a real `postroom serve`
over HTTPS, each page also with a form error shown. Its DNS is a real nsd publishing the
domain's records (the DNS check page), a DMARC report arrives over SMTP (the reports pages).

On each page of `PAGES`, WCAG 2.1 AA essentials are checked in the page (a11y_checks.js, run
through Selenium; written for this project, axe-core is not available offline): html lang, a
title unique to the page, one h1 and no skipped heading level, header/nav/main landmarks and a
skip link to main, a name for every form field (required ones marked so in it), button and
link, tables with a caption and scoped header cells, errors in a role=alert that the invalid
fields point to (aria-invalid + aria-describedby), no status shown by colour alone, a :focus
style, text contrast of at least 4.5:1. From here: no horizontal scrolling at 320 CSS px
(WCAG 1.4.10, what 400% zoom of a 1280 px window gives), Tab reaching every control in DOM
order (through each part of a date field) with a visible outline of 3:1 against its
background, the skip link moving the focus to main, and a browser console without errors
(a refused form's own 4xx status excepted).

Every problem of every page is collected and reported at once. To audit a new page, add a
`Page` to `PAGES` (and what it needs to show content to `populate`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .conftest import ALICE, BOB, DOMAIN, HOSTNAME, Factory, Postroom

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from . import dns_server as dns_server_module
from .chromium import chromium
from .dns_server import DnsServerFactory
from .test_dmarc_cli import row
from .test_web_admin_reports import DAY, TODAY, cli_reports, report_mail
from .test_web_domain_dns import soa

dns_server = dns_server_module.dns_server
SERVICES = ("smtp", "submission", "http", "https")
WAIT = 30.0
CHECKS = (Path(__file__).parent / "a11y_checks.js").read_text()
NARROW = 320  # CSS px: 1280 px at 400% zoom (WCAG 1.4.10 Reflow)
REMOTE = "someone@remote.example"
DATE_TYPES = ("date", "time", "datetime-local", "month", "week")
DATE_PARTS = 6  # Tab stops inside one such field at most (datetime-local: 5 or 6)


@dataclass(frozen=True)
class Page:
    """One page to audit: opened by GET as `user` ("": logged out); with `fill`, those fields
    (by id) are typed into and the button named `submit` pressed, and the answer audited."""

    name: str
    path: str
    user: str = ALICE
    fill: dict[str, str] = field(default_factory=dict)
    submit: str = ""
    status: int = 200  # the answer's status: a 4xx is the one console error allowed
    invalid: tuple[str, ...] = ()  # ids of the fields the error must be tied to
    nav: bool = True  # a navigation landmark is required (every page after the login)


TOO_LONG = "x" * 501
PAGES: tuple[Page, ...] = (
    Page("login", "/login", user="", nav=False),
    Page(
        "login, wrong password",
        "/login",
        user="",
        fill={"address": ALICE, "password": "wrong"},
        submit="Log in",
        status=403,
        invalid=("address", "password"),
        nav=False,
    ),
    Page("dashboard", "/admin/"),
    Page("users", "/admin/users"),
    Page(
        "users, bad new user",
        "/admin/users",
        fill={"new-address": "carol@elsewhere.test", "new-password": "carol-secret"},
        submit="Create user",
        status=400,
        invalid=("new-address",),
    ),
    Page("aliases", "/admin/aliases"),
    Page(
        "aliases, bad alias",
        "/admin/aliases",
        fill={"alias-address": "sales@elsewhere.test", "alias-targets": BOB},
        submit="Save alias",
        status=400,
        invalid=("alias-address", "alias-targets"),
    ),
    Page("domains", "/admin/domains"),
    Page("DNS check of a domain", f"/admin/domains/{DOMAIN}"),  # the server fixture's nsd
    Page("queue", "/admin/queue"),
    Page("trace form", "/admin/trace"),
    Page("trace of a message", "/admin/trace?q=" + REMOTE),
    Page("trace, nothing found", "/admin/trace?q=nobody@example.test", status=404),
    Page("trace, query too long", "/admin/trace?q=" + TOO_LONG, status=400, invalid=("trace-q",)),
    Page("DMARC reports", "/admin/reports"),
    Page(
        "DMARC reports, bad filter",
        "/admin/reports?from=yesterday",
        status=400,
        invalid=("reports-from",),
    ),
    Page("a DMARC report", "/admin/reports/1"),  # populate() checks it is report 1
    Page("no such DMARC report", "/admin/reports/999", status=404),
    Page("account", "/account/"),
    Page(
        "account, wrong current password",
        "/account/",
        fill={"current": "wrong", "new": "alice-new", "again": "alice-new"},
        submit="Change password",
        status=403,
        invalid=("current",),
    ),
    Page(
        "account, new app password",
        "/account/",
        fill={"app-name": "phone"},
        submit="Make an app password",
        status=201,
    ),
    Page(
        "account, app password twice",
        "/account/",
        fill={"app-name": "phone"},
        submit="Make an app password",
        status=400,
        invalid=("app-name",),
    ),
    Page("filters", "/account/filters"),
    Page("new filter", "/account/filters/edit"),
    Page("a filter", "/account/filters/edit?name=lists"),
    Page(
        "filter with a syntax error",
        "/account/filters/edit",
        fill={"name": "broken", "source": 'fileinto "Lists"'},
        submit="Check and save",
        status=400,
        invalid=("source",),
    ),
    Page("vacation", "/account/vacation"),
    Page(
        "vacation, bad addresses",
        "/account/vacation",
        fill={"message": "Away.", "addresses": "not-an-address"},
        submit="Save",
        status=400,
        invalid=("addresses",),
    ),
    Page("account of a plain user", "/account/", user=BOB),
    Page("admin page refused to a plain user", "/admin/", user=BOB, status=403),
)

# In the page: the focused element, its outline, and the outline's contrast with what is
# behind the element (WCAG 1.4.11 asks 3:1 of a focus indicator).
FOCUS = """
const el = document.activeElement;
const style = getComputedStyle(el);
return [el, style.outlineStyle, parseFloat(style.outlineWidth) || 0, style.outlineColor,
        style.boxShadow];
"""


@pytest.fixture
def server(postroom_factory: Factory, dns_server: DnsServerFactory) -> Postroom:
    """postroom asking an nsd that publishes the records `postroom dns records` prints, so
    the DNS check page shows rows found as expected and one not (127.0.0.1 is no public
    address). (A closed port would not do: the resolver retries it until the page's 10 s
    limit.) Other names are REFUSED at once: the queued message stays queued."""
    server = postroom_factory(services=SERVICES, start=False)
    server.run_cli("user", "admin", ALICE)
    printed = server.run_cli("dns", "records", DOMAIN).stdout
    records = [line for line in printed.splitlines() if line.strip() and not line.startswith(";")]
    nsd = dns_server({DOMAIN: soa() + "\n".join(records) + "\n"})
    server.extra = f'[dns]\nnameservers = ["{nsd.nameserver}"]\n'
    server.write_config()
    server.start()
    return server


@pytest.fixture
def browser(server: Postroom, tmp_path: Path) -> Iterator[WebDriver]:
    with chromium(server, tmp_path / "chromium-profile") as driver:
        yield driver


def populate(server: Postroom) -> None:
    """Content for every page: a message in the queue (and so in the trace and on the
    dashboard), an alias, a Sieve script, a DMARC report (report 1) with a passing and a
    failing row."""
    with server.submission(ALICE) as client:
        client.sendmail(ALICE, [REMOTE], b"Subject: hi\r\n\r\nhello\r\n")
    assert re.search(r"^\S+\t", server.queue_list(), re.MULTILINE)
    server.run_cli("alias", "add", "postmaster@example.test", ALICE)
    script = server.root / "lists.sieve"
    script.write_text('require ["fileinto"];\nfileinto "Lists";\n')
    server.run_cli("sieve", "put", ALICE, "lists", str(script))
    rows = row("192.0.2.25", 12, "pass", "pass") + row("203.0.113.9", 2, "fail", "fail", "reject")
    report = report_mail("google.com", DOMAIN, TODAY - DAY, rows)
    with server.smtp() as client:
        client.sendmail("reports@pass.test", [f"dmarc-reports@{DOMAIN}"], report)
    assert [kept["id"] for kept in cli_reports(server)] == [1]


class Auditor:
    """Opens each page as its user and collects every problem found on it."""

    def __init__(self, driver: WebDriver, server: Postroom, directory: Path) -> None:
        self.driver = driver
        self.server = server
        self.base = f"https://{HOSTNAME}:{server.ports['https']}"
        self.directory = directory
        directory.mkdir()
        self.user = ""
        self.titles: dict[str, str] = {}  # title -> the path that has it

    def body_text(self) -> str:
        return str(self.driver.execute_script("return document.body.innerText"))

    def log_in(self, user: str) -> None:
        if user == self.user:
            return
        self.driver.delete_all_cookies()
        self.user = user
        if not user:
            return
        self.driver.get(self.base + "/login")
        self.driver.find_element(By.ID, "address").send_keys(user)
        self.driver.find_element(By.ID, "password").send_keys(
            self.server.passwords[user], Keys.ENTER
        )
        WebDriverWait(self.driver, WAIT).until(
            lambda d: "/login" not in d.current_url, f"{user} could not log in"
        )

    def open(self, page: Page) -> str:
        """The page loaded as `page` asks; its URL."""
        self.log_in(page.user)
        self.driver.get(self.base + page.path)
        if not page.fill:
            return self.base + page.path
        for element_id, text in page.fill.items():
            element = self.driver.find_element(By.ID, element_id)
            element.clear()
            element.send_keys(text)
        old = self.driver.find_element(By.TAG_NAME, "html")
        button = f"//button[normalize-space()='{page.submit}']"
        self.driver.find_element(By.XPATH, button).click()
        WebDriverWait(self.driver, WAIT).until(
            lambda d: d.find_element(By.TAG_NAME, "html") != old, f"{page.name}: no answer"
        )
        return str(self.driver.current_url)

    def audit(self, page: Page) -> list[str]:
        self.driver.get_log("browser")  # type: ignore[no-untyped-call]  # forget earlier pages
        return self.inspect(page, self.open(page))

    def inspect(self, page: Page, url: str) -> list[str]:
        """Every problem of the page loaded from `url`."""
        WebDriverWait(self.driver, WAIT).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        found: dict[str, Any] = self.driver.execute_script(CHECKS, {"nav": page.nav})
        problems = list(found["problems"])
        title = found["title"]
        path = page.path.split("?")[0]
        if self.titles.setdefault(title, path) != path:
            problems.append(f"the title {title!r} is also the title of {self.titles[title]}")
        problems += self.errors_tied(page)
        name = re.sub(r"\W+", "-", page.name)
        problems += self.reflow(name)
        problems += self.keyboard(found["focusable"])
        problems += self.skip_link(found["skip"])
        problems += self.console(page, url)
        self.driver.save_screenshot(str(self.directory / f"{name}.png"))
        return problems

    def errors_tied(self, page: Page) -> list[str]:
        problems = []
        for element_id in page.invalid:
            element = self.driver.find_element(By.ID, element_id)
            if element.get_attribute("aria-invalid") != "true":
                problems.append(f"#{element_id}: the error is not tied to it (aria-invalid)")
        if page.status >= 400 and not self.driver.find_elements(
            By.CSS_SELECTOR, '[role="alert"], [role="status"]'
        ):
            problems.append(f"answered {page.status} with no role=alert/status message")
        return problems

    def reflow(self, name: str) -> list[str]:
        """At 320 CSS px wide, nothing scrolls sideways (the page's own scrolling box); a
        screenshot of the narrow page is saved."""
        self.driver.execute_cdp_cmd(  # type: ignore[attr-defined]
            "Emulation.setDeviceMetricsOverride",
            {"width": NARROW, "height": 640, "deviceScaleFactor": 1, "mobile": False},
        )
        try:
            widths = self.driver.execute_script(
                "const e = document.scrollingElement; return [e.scrollWidth, e.clientWidth];"
            )
            self.driver.save_screenshot(str(self.directory / f"{name}-{NARROW}px.png"))
        finally:
            self.driver.execute_cdp_cmd(  # type: ignore[attr-defined]
                "Emulation.clearDeviceMetricsOverride", {}
            )
        if widths[0] > widths[1]:
            return [f"at {NARROW} px the page is {widths[0]} px wide: it scrolls sideways"]
        return []

    def keyboard(self, focusable: list[Any]) -> list[str]:
        """From the first control, Tab reaches each of the others in DOM order, each with a
        visible outline."""
        if not focusable:
            return []
        problems = []
        self.driver.execute_script("arguments[0].focus()", focusable[0])
        for index, expected in enumerate(focusable):
            if index:
                self.tab_past(focusable[index - 1])
            element, style, width, colour, shadow = self.driver.execute_script(FOCUS)
            if element != expected:
                problems.append(
                    f"Tab {index}: focus on {element.tag_name} {element.get_attribute('id')!r}"
                    f" {element.text!r}, not {expected.tag_name} {expected.text!r} "
                    f"{expected.get_attribute('id')!r}"
                )
                break
            if (style == "none" or width < 2) and shadow == "none":
                problems.append(f"Tab {index}: no visible focus outline on {expected.text!r}")
            elif style != "none":
                contrast = self.driver.execute_script(CONTRAST_OF_OUTLINE, element, colour)
                if contrast < 3:
                    problems.append(f"Tab {index}: focus outline contrast {contrast:.2f}:1")
        return problems

    def tab_past(self, control: Any) -> None:
        """Tab once; through each part of a date or time field (Chromium's year, month and day
        are Tab stops of their own, the focus staying on the input)."""
        ActionChains(self.driver).send_keys(Keys.TAB).perform()
        if control.tag_name != "input" or control.get_attribute("type") not in DATE_TYPES:
            return
        for _ in range(DATE_PARTS):
            if self.driver.execute_script("return document.activeElement") != control:
                return
            ActionChains(self.driver).send_keys(Keys.TAB).perform()

    def skip_link(self, skip: Any) -> list[str]:
        """Enter on the skip link puts the focus on main."""
        if skip is None:
            return []
        self.driver.execute_script("arguments[0].focus()", skip)
        ActionChains(self.driver).send_keys(Keys.ENTER).perform()
        script = "return document.activeElement.tagName"
        try:
            WebDriverWait(self.driver, WAIT).until(lambda d: d.execute_script(script) == "MAIN")
        except TimeoutException:
            focused = self.driver.execute_script(script)
            return [f"the skip link left the focus on {focused}, not main"]
        return []

    def console(self, page: Page, url: str) -> list[str]:
        entries = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        severe = [e["message"] for e in entries if e["level"] in ("SEVERE", "ERROR")]
        own = f"status of {page.status}"
        allowed = [m for m in severe if page.status >= 400 and own in m and m.startswith(url)]
        if page.status >= 400 and not allowed:
            return [f"expected the answer's {page.status}, console said {severe}"]
        return [f"console: {m}" for m in severe if m not in allowed]


CONTRAST_OF_OUTLINE = """
const [el, colour] = arguments;
function rgba(text) {
  const p = text.match(/rgba?\\(([^)]+)\\)/)[1].split(/[ ,/]+/).filter((x) => x).map(Number);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
}
function over(t, b) { return [0, 1, 2].map((i) => t[i] * t[3] + b[i] * (1 - t[3])); }
function lum(c) {
  const [r, g, b] = c.map((v) => { const s = v / 255;
    return s <= 0.04045 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
let bg = [255, 255, 255];
const chain = [];
for (let n = el.parentElement; n; n = n.parentElement) chain.unshift(n);
for (const n of chain) bg = over(rgba(getComputedStyle(n).backgroundColor), bg);
const fg = over(rgba(colour), bg);
const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
return (hi + 0.05) / (lo + 0.05);
"""


def test_every_page_passes_the_audit(server: Postroom, browser: WebDriver, tmp_path: Path) -> None:
    populate(server)
    auditor = Auditor(browser, server, tmp_path / "screenshots")
    report = {}
    for page in PAGES:
        problems = auditor.audit(page)
        if problems:
            report[page.name] = problems
    print(f"screenshots: {tmp_path / 'screenshots'}")
    assert not report, "\n".join(
        f"{name}:\n  " + "\n  ".join(problems) for name, problems in report.items()
    )


# A page with one of each problem the audit looks for: the audit must name every one.
BAD_PAGE = """<!doctype html><html><head><title> </title>
<style>:focus { outline: none } .faint { color: #aaa } .dot { background: #c62828; width: 1em;
height: 1em } .wide { width: 1000px }</style></head><body>
<h1>One</h1><h1>Two</h1><h3>Three</h3>
<p id="twice">a</p><p id="twice">b</p>
<input id="nameless"><label for="req">Name</label><input id="req" required>
<nav><a href="bad.html">Here</a></nav>
<label for="pw">Password</label><input id="pw" type="password">
<label for="bad">Bad</label><input id="bad" aria-invalid="true">
<button></button><a href="/x" aria-label="Elsewhere">Queue</a>
<table><tr><th>Head</th></tr><tr><td>cell</td></tr></table>
<p class="error">Wrong.</p><div class="dot"></div><p class="faint">Faint text.</p>
<div class="wide">wide</div><button tabindex="2">Jumps</button>
<script>console.error("broken script")</script></body></html>
"""
BAD_PAGE_PROBLEMS = (
    "html has no lang",
    "the title is empty",
    'no <meta name="viewport"',
    "the id twice is used twice",
    "2 h1 elements",
    "heading level 3 after level 1",
    "0 main elements",
    "0 page headers",
    'aria-current="page" missing on a link to this page',
    "input#pw: a password field without autocomplete",
    "not a skip link",
    "input#nameless: a form field without a label",
    "input#req: required, not marked so",
    "input#bad: aria-invalid without aria-describedby",
    "a button without an accessible name",
    'its name "Elsewhere" does not contain its visible text',
    "a table without a caption",
    "a th without a scope",
    "an error not in a role=alert element",
    "div: shown by colour only",
    "no :focus rule",
    'p "Faint text.": contrast 2.32:1',
    "a positive tabindex",
    "it scrolls sideways",
    ": focus on body",
    "no visible focus outline",
    "console:",
)


def test_the_audit_finds_each_problem(server: Postroom, browser: WebDriver, tmp_path: Path) -> None:
    """The audit can fail: a page made of problems gets each one named."""
    bad = tmp_path / "bad.html"
    bad.write_text(BAD_PAGE)
    auditor = Auditor(browser, server, tmp_path / "screenshots")
    browser.get(bad.as_uri())
    problems = "\n".join(auditor.inspect(Page("bad", "/bad"), bad.as_uri()))
    missed = [wanted for wanted in BAD_PAGE_PROBLEMS if wanted not in problems]
    assert not missed, f"the audit missed {missed}; it said:\n{problems}"
