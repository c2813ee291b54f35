"""A user's Sieve filters and vacation reply on the account pages of a real `postroom serve`
over real HTTPS (http.client): scripts compiled before they are saved, the same store as
ManageSieve and `postroom sieve`, CSRF on every change, one user never seeing another's
scripts, and a vacation set on the page answering a real message sent by smtplib."""

from __future__ import annotations

import time

import pytest

from .conftest import ALICE, BOB, Factory, Postroom
from .web_client import WebClient

SERVICES = ("smtp", "submission", "imap", "http", "https")
FOREIGN = {"Origin": "https://evil.example.net"}
VACATION = "postroom-vacation"
GOOD = (
    'require ["fileinto"];\r\nif header :contains "subject" "report" {\r\n'
    '  fileinto "Reports";\r\n}\r\n'
)


@pytest.fixture
def server(postroom_factory: Factory) -> Postroom:
    return postroom_factory(services=SERVICES)


def logged_in(server: Postroom, address: str) -> WebClient:
    client = WebClient(server)
    client.login(address, server.passwords[address])
    return client


def stored(server: Postroom, address: str, name: str) -> str:
    """The script as `postroom sieve get` prints it (run_cli reads text: CRLF becomes LF)."""
    return server.run_cli("sieve", "get", address, name).stdout


def lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def scripts(server: Postroom, address: str) -> str:
    return server.run_cli("sieve", "list", address).stdout


def test_create_edit_activate_delete_a_script(server: Postroom) -> None:
    client = logged_in(server, BOB)
    assert "You have no scripts" in client.get("/account/filters").body
    token = client.csrf_of("/account/filters/edit")
    form = {"csrf": token, "new": "1", "name": "work", "source": GOOD}
    saved = client.post("/account/filters/save", form)
    assert (saved.status, saved.location) == (303, "/account/filters/edit?name=work&done=saved")
    assert stored(server, BOB, "work") == lf(GOOD)
    # The same name again as a new script: refused, the stored one unchanged.
    again = client.post("/account/filters/save", {**form, "source": "keep;\r\n"})
    assert again.status == 409 and "exists already" in again.body
    page = client.get("/account/filters/edit?name=work")
    assert "fileinto &#34;Reports&#34;" in page.body or "fileinto &quot;Reports&quot;" in page.body
    # Activate; the list marks it; the active script cannot be deleted.
    done = client.post("/account/filters/activate", {"csrf": token, "name": "work"})
    assert (done.status, done.location) == (303, "/account/filters?done=activated")
    assert "<strong>active</strong>" in client.get("/account/filters").body
    assert "work\t" in scripts(server, BOB) and "\tactive" in scripts(server, BOB)
    refused = client.post("/account/filters/delete", {"csrf": token, "name": "work"})
    assert refused.status == 409 and stored(server, BOB, "work") == lf(GOOD)
    # Edit and save in place; deactivate; delete.
    edited = client.post(
        "/account/filters/save", {"csrf": token, "name": "work", "source": "discard;\r\n"}
    )
    assert edited.status == 303
    assert stored(server, BOB, "work") == "discard;\n"
    assert client.post("/account/filters/activate", {"csrf": token, "name": ""}).status == 303
    assert "\tactive" not in scripts(server, BOB)
    gone = client.post("/account/filters/delete", {"csrf": token, "name": "work"})
    assert (gone.status, gone.location) == (303, "/account/filters?done=deleted")
    assert "has no scripts" in scripts(server, BOB)
    missing = client.post("/account/filters/delete", {"csrf": token, "name": "work"})
    assert missing.status == 404
    server.wait_for_log(r"sieve delete user=bob@example\.test script=<work>")


def test_a_script_that_does_not_compile_is_shown_with_its_position_and_not_saved(
    server: Postroom,
) -> None:
    client = logged_in(server, BOB)
    token = client.csrf_of("/account/filters/edit")
    broken = (
        'require ["fileinto"];\r\nif header :contains "subject" "x" {\r\n  filein "A";\r\n}\r\n'
    )
    answer = client.post(
        "/account/filters/save", {"csrf": token, "new": "1", "name": "bad", "source": broken}
    )
    assert answer.status == 400
    assert "Not saved: line 3:3:" in answer.body, answer.body
    assert "filein &#34;A&#34;" in answer.body or "filein &quot;A&quot;" in answer.body
    assert "has no scripts" in scripts(server, BOB)
    bad_name = client.post(
        "/account/filters/save", {"csrf": token, "new": "1", "name": "", "source": GOOD}
    )
    assert bad_name.status == 400 and "has no scripts" in scripts(server, BOB)


def test_changes_without_the_csrf_token_are_refused(server: Postroom) -> None:
    client = logged_in(server, BOB)
    token = client.csrf_of("/account/filters")
    assert (
        client.post(
            "/account/filters/save", {"csrf": token, "new": "1", "name": "keep", "source": "keep;"}
        ).status
        == 303
    )
    before = scripts(server, BOB)
    for path, form in (
        ("/account/filters/save", {"new": "1", "name": "other", "source": "discard;"}),
        ("/account/filters/activate", {"name": "keep"}),
        ("/account/filters/delete", {"name": "keep"}),
        ("/account/vacation", {"enabled": "on", "message": "away", "days": "1"}),
    ):
        for token_value, headers in ((None, {}), ("wrong", {}), (token, FOREIGN)):
            sent = dict(form) if token_value is None else {**form, "csrf": token_value}
            assert client.post(path, sent, headers).status == 403, (path, token_value)
    assert scripts(server, BOB) == before


def test_another_users_scripts_are_never_visible(server: Postroom) -> None:
    secret = 'require ["fileinto"];\r\n# alice-secret-rule\r\nfileinto "Secret";\r\n'
    source_file = server.data_dir.parent / "alice.sieve"
    source_file.write_text(secret)
    server.run_cli("sieve", "put", ALICE, "private", str(source_file), "--activate")
    client = logged_in(server, BOB)
    listing = client.get("/account/filters")
    assert "private" not in listing.body
    page = client.get("/account/filters/edit?name=private")
    assert page.status == 404 and "alice-secret-rule" not in page.body
    token = listing.csrf()
    assert client.post("/account/filters/delete", {"csrf": token, "name": "private"}).status == 404
    assert (
        client.post("/account/filters/activate", {"csrf": token, "name": "private"}).status == 404
    )
    # Saving under that name makes Bob's own script; Alice's is untouched.
    assert (
        client.post(
            "/account/filters/save",
            {"csrf": token, "new": "1", "name": "private", "source": "keep;"},
        ).status
        == 303
    )
    assert stored(server, ALICE, "private") == lf(secret)
    assert "\tactive" in scripts(server, ALICE)


def test_vacation_replaces_the_active_script_and_answers_a_real_message(
    server: Postroom,
) -> None:
    client = logged_in(server, BOB)
    token = client.csrf_of("/account/vacation")
    assert (
        client.post(
            "/account/filters/save",
            {"csrf": token, "new": "1", "name": "mine", "source": "keep;\r\n"},
        ).status
        == 303
    )
    assert client.post("/account/filters/activate", {"csrf": token, "name": "mine"}).status == 303
    message = 'Away until "Monday" \\ back soon.\r\n.\r\nBob'
    bad = {"csrf": token, "enabled": "on", "message": message, "days": "0"}
    refused = client.post("/account/vacation", bad)
    assert refused.status == 400 and "Days must be between 1" in refused.body
    assert "Away until &#34;Monday&#34;" in refused.body  # the form comes back as typed
    assert VACATION not in scripts(server, BOB)
    form = {**bad, "days": "2", "subject": 'Out "of" office', "addresses": ""}
    done = client.post("/account/vacation", form)
    assert (done.status, done.location) == (303, "/account/vacation?done=on")
    server.wait_for_log(r"sieve vacation on user=bob@example\.test replaced=<mine>")
    page = client.get("/account/vacation?done=on")
    assert "Vacation replies are on" in page.body and "<strong>mine</strong>" in page.body
    listed = scripts(server, BOB)
    assert f"{VACATION}\t" in listed and "mine\t" in listed
    assert next(line for line in listed.splitlines() if "\tactive" in line).startswith(VACATION)
    # A real message from a remote sender: the reply is queued from <> to them.
    with server.smtp() as smtp:
        smtp.sendmail(
            "friend@remote.example",
            [BOB],
            b"From: friend@remote.example\r\nTo: bob@example.test\r\nSubject: lunch?\r\n"
            b"Message-ID: <lunch@remote.example>\r\n\r\nLunch on Friday?\r\n",
        )
    server.wait_for_messages(BOB, 1)
    deadline = time.monotonic() + 30
    queued = ""
    while time.monotonic() < deadline:
        queued = server.queue_list()
        if "friend@remote.example" in queued:
            break
        time.sleep(0.1)
    row = next(line for line in queued.splitlines() if "friend@remote.example" in line)
    assert row.split("\t")[3] == "<>", row
    shown = server.run_cli("queue", "show", row.split("\t")[0]).stdout
    assert 'Subject: Out "of" office' in shown, shown
    assert "In-Reply-To: <lunch@remote.example>" in shown, shown
    # (the body as typed, quotes, backslash and "." line included, is checked against
    # Pigeonhole in tests/conformance/test_vacation_script.py)
    # Off: the script it replaced is active again; the settings stay.
    off = client.post("/account/vacation", {**form, "enabled": ""})
    assert (off.status, off.location) == (303, "/account/vacation?done=off")
    listed = scripts(server, BOB)
    assert next(line for line in listed.splitlines() if "\tactive" in line).startswith("mine")
    server.wait_for_log(r"sieve vacation off user=bob@example\.test active=<mine>")
    page = client.get("/account/vacation")
    assert "Vacation replies are <strong>off</strong>" in page.body
    assert "Out &#34;of&#34; office" in page.body or "Out &quot;of&quot; office" in page.body
