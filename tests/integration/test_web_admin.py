"""The web admin of a real `postroom serve` over real HTTPS (http.client): logins through the
same authenticator as IMAP, session cookies, CSRF, admins and plain users, the JSON API."""

from __future__ import annotations

import imaplib
import re
import sqlite3

import pytest

from .conftest import ALICE, BOB, HOSTNAME, Factory, Postroom
from .web_client import WebClient

SERVICES = ("smtp", "submission", "imap", "http", "https")
FOREIGN = {"Origin": "https://evil.example.net"}


@pytest.fixture
def server(postroom_factory: Factory) -> Postroom:
    server = postroom_factory(services=SERVICES, start=False)
    server.run_cli("user", "admin", ALICE)
    server.start()
    return server


def users(server: Postroom) -> str:
    return server.run_cli("user", "list").stdout


def queue_remote_message(server: Postroom) -> str:
    """A message to a remote address (deferred: tests' DNS answers nothing); its queue ID."""
    with server.submission(ALICE) as client:
        client.sendmail(ALICE, ["someone@remote.example"], b"Subject: hi\r\n\r\nhello\r\n")
    listing = server.queue_list()
    match = re.search(r"^(\S+)\t", listing, re.MULTILINE)
    assert match, listing
    return match[1]


def imap_login(server: Postroom, address: str, password: str) -> bool:
    with imaplib.IMAP4(server.host, server.ports["imap"], timeout=30) as client:
        client.starttls(server.tls_context())
        try:
            client.login(address, password)
        except imaplib.IMAP4.error:
            return False
        client.logout()
        return True


def test_login_sets_a_secure_session_cookie_and_shows_the_dashboard(server: Postroom) -> None:
    client = WebClient(server)
    assert client.get("/admin/").location == "/login?next=/admin/"
    answer = client.login(ALICE, server.passwords[ALICE])
    assert answer.location == "/admin/"
    session = [c for c in client.set_cookie if c.startswith("__Host-postroom=")]
    assert len(session) == 1, client.set_cookie
    flags = {part.strip().lower() for part in session[0].split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= flags, flags
    assert not any(flag.startswith("domain") for flag in flags)
    assert len(client.cookies["__Host-postroom"]) >= 43  # 256 bits, base64
    dashboard = client.get("/admin/")
    assert dashboard.status == 200 and "Dashboard" in dashboard.body
    assert '<th scope="row">Users</th><td>2</td>' in dashboard.body
    assert dashboard.headers["cache-control"] == "no-store"
    # The store keeps the ID's hash, never the ID; a new login replaces the old session.
    again = WebClient(server)
    token = again.get("/login").csrf()
    again.cookies["__Host-postroom"] = old = client.cookies["__Host-postroom"]
    form = {"csrf": token, "address": ALICE, "password": server.passwords[ALICE]}
    assert again.post("/login", form).status == 303
    assert again.cookies["__Host-postroom"] != old
    assert client.get("/admin/").status == 303  # the old session is gone
    with sqlite3.connect(server.data_dir / "postroom.db") as db:
        stored = [bytes(row[0]) for row in db.execute("SELECT id_hash FROM web_sessions")]
    assert len(stored) == 1 and again.cookies["__Host-postroom"].encode() not in stored[0]
    server.wait_for_log(r"web login user=<alice@example\.test> client=127\.0\.0\.1")


def test_wrong_password_is_refused_and_logged_for_fail2ban(server: Postroom) -> None:
    client = WebClient(server)
    answer = client.login(ALICE, "not-the-password", expect=403)
    assert "Wrong address or password" in answer.body
    assert "__Host-postroom" not in client.cookies
    server.wait_for_log(
        r"postroom\.auth WARNING login failed service=web client=127\.0\.0\.1"
        r" user=<alice@example\.test> method=PASSWORD$"
    )


def test_plain_http_redirects_to_https_and_refuses_posts(server: Postroom) -> None:
    plain = WebClient(server, tls=False)
    answer = plain.get("/login")
    assert answer.status == 308
    assert answer.location == f"https://{HOSTNAME}:{server.ports['https']}/login"
    refused = plain.post("/login", {"address": ALICE, "password": server.passwords[ALICE]})
    assert refused.status == 403
    assert not plain.cookies
    assert plain.api("GET", "/api/v1/me").status in (308, 403)


def test_login_form_needs_its_own_token(server: Postroom) -> None:
    client = WebClient(server)
    password = server.passwords[ALICE]
    assert client.post("/login", {"address": ALICE, "password": password}).status == 403
    token = client.get("/login").csrf()
    form = {"csrf": token, "address": ALICE, "password": password}
    assert client.post("/login", form, FOREIGN).status == 403
    assert client.post("/login", {**form, "csrf": token[:-2] + "xx"}).status == 403
    assert "__Host-postroom" not in client.cookies


def test_posts_without_the_right_csrf_token_change_nothing(server: Postroom) -> None:
    message_id = queue_remote_message(server)
    client = WebClient(server)
    client.login(ALICE, server.passwords[ALICE])
    token = client.csrf_of("/admin/users")
    new_user = {"address": "carol@example.test", "password": "carol-secret"}
    before_users, before_queue = users(server), server.queue_list()
    for form, headers in (
        (new_user, {}),
        ({**new_user, "csrf": "wrong"}, {}),
        ({**new_user, "csrf": token}, FOREIGN),
    ):
        answer = client.post("/admin/users", form, headers)
        assert answer.status == 403, answer.body
        deleted = client.post("/admin/queue/delete", {**form, "id": message_id}, headers)
        assert deleted.status == 403
    assert users(server) == before_users and server.queue_list() == before_queue
    # With the token, from this origin: done.
    done = client.post("/admin/users", {**new_user, "csrf": token}, {"Origin": client.origin})
    assert (done.status, done.location) == (303, "/admin/users?done=created")
    assert "carol@example.test" in users(server)
    assert imap_login(server, "carol@example.test", "carol-secret")


def test_a_plain_user_gets_403_on_every_admin_page(server: Postroom) -> None:
    client = WebClient(server)
    assert client.login(BOB, server.passwords[BOB]).location == "/account/"
    for path in ("/admin/", "/admin/users", "/admin/domains", "/admin/queue"):
        answer = client.get(path)
        assert answer.status == 403, path
        assert ALICE not in answer.body
    token = client.csrf_of("/account/")
    form = {"csrf": token, "address": "mallory@example.test", "password": "x"}
    assert client.post("/admin/users", form).status == 403
    assert client.post("/admin/users/admin", {**form, "address": BOB, "admin": "on"}).status == 403
    assert client.api("GET", "/api/v1/users").status == 403
    assert "mallory" not in users(server) and "\tadmin" not in users(server).split(BOB)[1]
    own = client.get("/account/")
    assert BOB in own.body and ALICE not in own.body


def test_account_page_lists_the_users_aliases(server: Postroom) -> None:
    server.run_cli("alias", "add", "postmaster@example.test", BOB)
    client = WebClient(server)
    client.login(BOB, server.passwords[BOB])
    assert "postmaster@example.test" in client.get("/account/").body


def test_password_change_works_for_imap_and_ends_the_other_sessions(server: Postroom) -> None:
    first, second = WebClient(server), WebClient(server)
    old = server.passwords[BOB]
    first.login(BOB, old)
    second.login(BOB, old)
    token = first.csrf_of("/account/")
    mismatch = {"csrf": token, "current": old, "new": "bob-new-1", "again": "bob-new-2"}
    assert first.post("/account/password", mismatch).status == 400
    wrong = {"csrf": token, "current": "guess", "new": "bob-new-1", "again": "bob-new-1"}
    assert first.post("/account/password", wrong).status == 403
    assert imap_login(server, BOB, old)
    change = {"csrf": token, "current": old, "new": "bob-new-1", "again": "bob-new-1"}
    answer = first.post("/account/password", change)
    assert (answer.status, answer.location) == (303, "/account/?done=password")
    assert "Your password was changed" in first.get("/account/?done=password").body
    assert second.get("/account/").location == "/login?next=/account/"
    assert imap_login(server, BOB, "bob-new-1")
    assert not imap_login(server, BOB, old)


def test_admin_sets_a_password_and_toggles_admin(server: Postroom) -> None:
    bob = WebClient(server)
    bob.login(BOB, server.passwords[BOB])
    admin = WebClient(server)
    admin.login(ALICE, server.passwords[ALICE])
    token = admin.csrf_of("/admin/users")
    answer = admin.post("/admin/users/password", {"csrf": token, "address": BOB, "password": "p2"})
    assert answer.location == "/admin/users?done=password"
    assert bob.get("/account/").status == 303  # bob's session ended with his password
    assert imap_login(server, BOB, "p2")
    promote = {"csrf": token, "address": BOB, "admin": "on"}
    assert admin.post("/admin/users/admin", promote).status == 303
    assert re.search(r"^bob@example\.test\t.*\tadmin$", users(server), re.MULTILINE)
    myself = {"csrf": token, "address": ALICE, "admin": "off"}
    assert admin.post("/admin/users/admin", myself).status == 400
    delete = {"csrf": token, "address": BOB}
    assert admin.post("/admin/users/delete", delete).status == 400  # not confirmed
    assert admin.post("/admin/users/delete", {**delete, "confirm": "yes"}).status == 303
    assert BOB not in users(server)


def test_queue_page_shows_and_steers_a_message(server: Postroom) -> None:
    message_id = queue_remote_message(server)
    client = WebClient(server)
    client.login(ALICE, server.passwords[ALICE])
    page = client.get("/admin/queue")
    assert message_id in page.body and "someone@remote.example" in page.body
    token = page.csrf()
    dashboard = client.get("/admin/").body
    assert '<th scope="row">Messages in the queue</th><td>1</td>' in dashboard
    assert client.post("/admin/queue/hold", {"csrf": token, "id": message_id}).status == 303
    assert "\theld\t" in server.queue_list()
    assert client.post("/admin/queue/release", {"csrf": token, "id": message_id}).status == 303
    assert "\theld\t" not in server.queue_list()
    answer = client.post("/admin/queue/retry", {"csrf": token, "id": message_id})
    assert answer.location == "/admin/queue?done=retry"
    unknown = client.post("/admin/queue/retry", {"csrf": token, "id": "NOSUCHID"})
    assert unknown.status == 400
    assert client.post("/admin/queue/delete", {"csrf": token, "id": message_id}).status == 303
    assert message_id not in server.queue_list()


def test_domains_page_lists_dkim_selectors(server: Postroom) -> None:
    listing = server.run_cli("dkim", "list", "example.test").stdout
    selectors = [line.split("\t")[1] for line in listing.splitlines()]
    client = WebClient(server)
    client.login(ALICE, server.passwords[ALICE])
    page = client.get("/admin/domains").body
    assert "example.test" in page
    assert selectors and all(selector in page for selector in selectors), selectors


def test_sessions_end_when_idle_or_old(server: Postroom) -> None:
    client = WebClient(server)
    client.login(BOB, server.passwords[BOB])
    assert client.get("/account/").status == 200
    database = server.data_dir / "postroom.db"
    for column, back in (("last_seen", 31 * 60), ("created", 13 * 3600)):
        with sqlite3.connect(database) as db:
            db.execute(f"UPDATE web_sessions SET {column} = {column} - ?", (back,))
        assert client.get("/account/").location == "/login?next=/account/", column
        client.login(BOB, server.passwords[BOB])
    logout = client.post("/logout", {"csrf": client.csrf_of("/account/")})
    assert logout.location == "/login"
    assert client.get("/account/").status == 303


def test_api_with_tokens_and_sessions(server: Postroom) -> None:
    message_id = queue_remote_message(server)
    admin_token = server.run_cli("user", "token", ALICE).stdout.strip()
    bob_token = server.run_cli("user", "token", BOB).stdout.strip()
    api = WebClient(server)
    assert api.api("GET", "/api/v1/queue").status == 401
    wrong = api.api("GET", "/api/v1/queue", Authorization="Bearer pr_nope")
    assert wrong.status == 401 and "invalid_token" in wrong.headers["www-authenticate"]
    assert api.api("GET", "/api/v1/queue", Authorization=f"Bearer {bob_token}").status == 403
    auth = {"Authorization": f"Bearer {admin_token}"}
    listing = api.api("GET", "/api/v1/queue", **auth).json()
    assert isinstance(listing, list) and listing[0]["id"] == message_id
    held = api.api("POST", f"/api/v1/queue/{message_id}/hold", {}, **auth)
    assert held.status == 200 and held.json() == {"recipients": 1}
    created = api.api(
        "POST", "/api/v1/users", {"address": "dave@example.test", "password": "d"}, **auth
    )
    assert created.status == 201
    bad = api.api(
        "POST", "/api/v1/users", {"address": "dave@elsewhere.test", "password": "d"}, **auth
    )
    assert bad.status == 400 and "not a local domain" in bad.json()["error"]  # type: ignore[index]
    for body in (b"{not json", b"[1, 2]", b"\xff"):
        broken = api.request("POST", "/api/v1/users", body, auth)
        assert broken.status == 400, (body, broken.body)
    people = api.api("GET", "/api/v1/users", **auth).json()
    assert {"address": ALICE, "admin": True} in [
        {"address": p["address"], "admin": p["admin"]}
        for p in people  # type: ignore[union-attr]
    ]
    assert api.api("DELETE", "/api/v1/users/dave%40example.test", **auth).status == 204
    assert "dave" not in users(server)
    # A browser session: the CSRF header is needed for changes.
    browser = WebClient(server)
    browser.login(BOB, server.passwords[BOB])
    me = browser.api("GET", "/api/v1/me").json()
    assert me["address"] == BOB and me["admin"] is False  # type: ignore[index]
    change = {"current": server.passwords[BOB], "new": "bob-api"}
    assert browser.api("POST", "/api/v1/me/password", change).status == 403
    csrf = str(me["csrf"])  # type: ignore[index]
    assert (
        browser.api("POST", "/api/v1/me/password", change, **{"X-CSRF-Token": csrf}).status == 204
    )
    assert imap_login(server, BOB, "bob-api")


def test_cli_admin_flag_and_errors(server: Postroom) -> None:
    server.run_cli("user", "add", "erin@example.test", "--password", "e", "--admin")
    assert re.search(r"^erin@example\.test\t.*\tadmin$", users(server), re.MULTILINE)
    server.run_cli("user", "admin", "erin@example.test", "--off")
    assert not re.search(r"^erin@example\.test\t.*\tadmin$", users(server), re.MULTILINE)
    result = server.run_cli("user", "admin", "nobody@example.test", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "postroom: error: no user nobody@example.test"
    assert server.run_cli("user", "token", "nobody@example.test", check=False).returncode == 1
    client = WebClient(server)
    client.login("erin@example.test", "e")
    assert client.get("/admin/").status == 403


def test_web_logins_share_the_login_throttle_with_imap(postroom_factory: Factory) -> None:
    server = postroom_factory(services=SERVICES, limits={"auth_failures": 3})
    client = WebClient(server)
    for _ in range(3):
        client.login(BOB, "guess", expect=403)
    blocked = client.login(BOB, server.passwords[BOB], expect=503)
    assert "not possible now" in blocked.body
    assert "__Host-postroom" not in client.cookies
    assert not imap_login(server, BOB, server.passwords[BOB])  # the same block, for IMAP too
    assert imap_login(server, ALICE, server.passwords[ALICE])  # another account is not blocked


def test_sessions_outlive_a_restart(server: Postroom) -> None:
    client = WebClient(server)
    client.login(BOB, server.passwords[BOB])
    assert server.stop() == 0
    server.restart()
    assert client.get("/account/").status == 200


def test_aliases_made_on_the_page_deliver_over_smtp(server: Postroom) -> None:
    client = WebClient(server)
    client.login(ALICE, server.passwords[ALICE])
    token = client.csrf_of("/admin/aliases")
    sales = {"csrf": token, "address": "Sales@example.test", "targets": f"{ALICE},\r\n{BOB}"}
    before = server.run_cli("alias", "list").stdout
    # Without the token, with another, or from another site: refused, nothing saved.
    tokenless = {k: v for k, v in sales.items() if k != "csrf"}
    for form, headers in ((tokenless, {}), ({**sales, "csrf": "wrong"}, {}), (sales, FOREIGN)):
        assert client.post("/admin/aliases", form, headers).status == 403
    assert server.run_cli("alias", "list").stdout == before
    # Bad input: a clear 400 on the page, nothing saved.
    for bad, says in (
        ({**sales, "address": "sales@elsewhere.test"}, "not a local domain"),
        ({**sales, "targets": "not an address"}, "is not a valid mail address"),
        ({**sales, "targets": ""}, "at least one target"),
    ):
        refused = client.post("/admin/aliases", bad)
        assert refused.status == 400 and says in refused.body, refused.body
    assert server.run_cli("alias", "list").stdout == before
    saved = client.post("/admin/aliases", sales)
    assert (saved.status, saved.location) == (303, "/admin/aliases?done=alias")
    assert f"sales@example.test -> {ALICE}, {BOB}" in server.run_cli("alias", "list").stdout
    assert f"{ALICE}, {BOB}" in client.get("/admin/aliases").body
    # Real mail to the alias reaches both (the server's recipient cache learns of it).
    with server.smtp() as smtp:
        smtp.sendmail("ann@remote.test", ["sales@example.test"], b"Subject: q\r\n\r\nhello\r\n")
    server.wait_for_messages(ALICE, 1)
    server.wait_for_messages(BOB, 1)
    # The API lists it too; deleting it on the page makes SMTP refuse the address.
    listing = client.api("GET", "/api/v1/aliases").json()
    assert {"address": "sales@example.test", "targets": [ALICE, BOB]} in listing  # type: ignore[operator]
    kept = client.post("/admin/aliases/delete", {"address": "sales@example.test"})
    assert kept.status == 403 and "sales@" in server.run_cli("alias", "list").stdout
    gone = client.post("/admin/aliases/delete", {"csrf": token, "address": "sales@example.test"})
    assert gone.location == "/admin/aliases?done=unalias"
    assert "sales@" not in server.run_cli("alias", "list").stdout
    with server.smtp() as smtp:
        smtp.ehlo()
        code, _ = smtp.docmd("MAIL", "FROM:<ann@remote.test>")
        assert code == 250
        code, text = smtp.docmd("RCPT", "TO:<sales@example.test>")
        assert code == 550, text
    assert client.post("/admin/aliases/delete", {"csrf": token, "address": "sales@x"}).status == 400


def test_alias_api_and_plain_users(server: Postroom) -> None:
    admin_token = server.run_cli("user", "token", ALICE).stdout.strip()
    bob_token = server.run_cli("user", "token", BOB).stdout.strip()
    api = WebClient(server)
    auth = {"Authorization": f"Bearer {admin_token}"}
    body = {"address": "@example.test", "targets": [ALICE]}
    assert (
        api.api("POST", "/api/v1/aliases", body, Authorization=f"Bearer {bob_token}").status == 403
    )
    assert api.api("POST", "/api/v1/aliases", {"address": "x@example.test"}, **auth).status == 400
    created = api.api("POST", "/api/v1/aliases", body, **auth)
    assert created.status == 201 and created.json() == {"address": "@example.test"}
    assert "@example.test -> alice@example.test" in server.run_cli("alias", "list").stdout
    with server.smtp() as smtp:  # the catch-all: an unknown local address reaches alice
        smtp.sendmail("ann@remote.test", ["whoever@example.test"], b"Subject: c\r\n\r\nhi\r\n")
    server.wait_for_messages(ALICE, 1)
    assert api.api("DELETE", "/api/v1/aliases/%40example.test", **auth).status == 204
    assert api.api("DELETE", "/api/v1/aliases/%40example.test", **auth).status == 400
    bob = WebClient(server)
    bob.login(BOB, server.passwords[BOB])
    assert bob.get("/admin/aliases").status == 403
    form = {"csrf": bob.csrf_of("/account/"), "address": "x@example.test", "targets": BOB}
    assert bob.post("/admin/aliases", form).status == 403
    assert server.run_cli("alias", "list").stdout == ""
