"""A small HTTPS client for the web admin's tests: http.client, cookies kept per client, the
CSRF token read from the page's hidden field, no redirects followed (tests look at them)."""

from __future__ import annotations

import http.client
import json
import re
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from .conftest import HOSTNAME, Postroom

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read().decode("utf-8", "replace")

    @property
    def location(self) -> str:
        return self.headers.get("location", "")

    def csrf(self) -> str:
        match = CSRF.search(self.body)
        assert match, f"no CSRF field in the page:\n{self.body[:2000]}"
        return match[1]

    def json(self) -> object:
        return json.loads(self.body)


class WebClient:
    """One browser-like client of one server: its cookies, over HTTPS unless `tls=False`."""

    def __init__(self, server: Postroom, *, tls: bool = True) -> None:
        self.server = server
        self.tls = tls
        self.cookies: dict[str, str] = {}
        self.set_cookie: list[str] = []  # every Set-Cookie value received, as sent

    @property
    def origin(self) -> str:
        return f"https://{HOSTNAME}:{self.server.ports['https']}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        server = self.server
        connection: http.client.HTTPConnection
        if self.tls:
            connection = http.client.HTTPSConnection(
                server.host, server.ports["https"], context=server.tls_context(), timeout=30
            )
        else:
            connection = http.client.HTTPConnection(server.host, server.ports["http"], timeout=30)
        port = server.ports["https" if self.tls else "http"]
        sent = {"Host": f"{HOSTNAME}:{port}", **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            connection.request(method, path, body=body, headers=sent)
            answer = Answer(connection.getresponse())
        finally:
            connection.close()
        for value in answer.headers.get_all("set-cookie") or []:
            self.set_cookie.append(value)
            for name, morsel in SimpleCookie(value).items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return answer

    def get(self, path: str, **headers: str) -> Answer:
        return self.request("GET", path, headers=headers)

    def post(
        self, path: str, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> Answer:
        body = urlencode(form).encode()
        sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return self.request("POST", path, body, sent)

    def api(self, method: str, path: str, value: object = None, **headers: str) -> Answer:
        body = None if value is None else json.dumps(value).encode()
        return self.request(method, path, body, {"Content-Type": "application/json", **headers})

    def login(self, address: str, password: str, expect: int = 303) -> Answer:
        form = self.get("/login")
        assert form.status == 200, form.body
        answer = self.post(
            "/login", {"csrf": form.csrf(), "address": address, "password": password}
        )
        assert answer.status == expect, (answer.status, answer.body[:2000])
        return answer

    def csrf_of(self, path: str) -> str:
        page = self.get(path)
        assert page.status == 200, (page.status, page.location, page.body[:2000])
        return page.csrf()
