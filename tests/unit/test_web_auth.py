"""The web admin's pure checks: where a login may send the browser, which origins a POST
may come from, and which addresses can be new users."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from postroom.services.accounts import AccountError, new_address
from postroom.storage.records import UserRecord
from postroom.web.auth import landing_page, same_origin

ADMIN = UserRecord(1, "alice@example.test", "h", "s", admin=True)
PLAIN = UserRecord(2, "bob@example.test", "h", "s")


def request(**headers: str) -> Request:
    fields = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": fields})


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x", ""]
)
def test_login_never_sends_the_browser_elsewhere(target: str) -> None:
    assert landing_page(target, ADMIN) == "/admin/"
    assert landing_page(target, PLAIN) == "/account/"


def test_login_returns_to_a_local_page() -> None:
    assert landing_page("/admin/queue", ADMIN) == "/admin/queue"


def test_same_origin() -> None:
    host = "mx.example.test:8443"
    assert same_origin(request(host=host))  # a script: no Origin, no Referer
    assert same_origin(request(host=host, origin=f"https://{host}"))
    assert same_origin(request(host=host, referer=f"https://{host}/admin/users"))
    for origin in ("https://evil.example", "null", f"http://{host}", f"https://{host}.evil", "é"):
        assert not same_origin(request(host=host, origin=origin)), origin
    assert not same_origin(request(host=host, referer=f"https://{host}.evil/"))


def test_new_address_must_be_a_mailbox_at_a_local_domain() -> None:
    assert new_address("Carol@Example.test", ("example.test",)) == "carol@example.test"
    with pytest.raises(AccountError, match="not a valid mail address"):
        new_address("carol", ("example.test",))
    with pytest.raises(AccountError, match="not a local domain"):
        new_address("carol@elsewhere.test", ("example.test",))
