"""The ACME account's contact against a real pebble: when `[acme] email` changes, by a config
edit and SIGHUP or by a restart, the running server updates the existing account's contact
(RFC 8555 §7.3.2) — the same account URL, no new order — as pebble's own answer to a
POST-as-GET of the account URL (§7.3.3) shows."""

from __future__ import annotations

import json
import re
import signal
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from postroom.net.acme import public_jwk, signed

from . import dns_server as dns_server_module
from .conftest import DOMAIN, Factory, Postroom, wait_until
from .pebble import Pebble
from .test_acme import ISSUE_TIMEOUT, ZONE, acme_table, acme_world, served_leaf

dns_server = dns_server_module.dns_server
BAD_NONCE = "urn:ietf:params:acme:error:badNonce"


class AccountReader:
    """Reads the server's account at pebble the way any ACME client would: newAccount with
    `onlyReturnExisting` (§7.3.1) for its URL, then a POST-as-GET of it, signed with the
    account key in data_dir/acme (pebble turns down 20 % of nonces: retried)."""

    def __init__(self, pebble: Pebble, data_dir: Path) -> None:
        key = serialization.load_pem_private_key(
            (data_dir / "acme" / "account.key").read_bytes(), password=None
        )
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self.key = key
        context = ssl.create_default_context(cafile=str(pebble.ca_file))
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
        with self.opener.open(pebble.directory_url, timeout=10) as answer:
            self.directory = json.load(answer)

    def _post(self, url: str, payload: object | None, kid: str | None) -> tuple[Any, str]:
        for _ in range(20):
            head = urllib.request.Request(self.directory["newNonce"], method="HEAD")
            with self.opener.open(head, timeout=10) as answer:
                nonce = answer.headers["Replay-Nonce"]
            protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
            protected.update({"kid": kid} if kid else {"jwk": public_jwk(self.key)})
            request = urllib.request.Request(
                url,
                data=signed(self.key, protected, payload),
                headers={"Content-Type": "application/jose+json"},
                method="POST",
            )
            try:
                with self.opener.open(request, timeout=10) as answer:
                    return json.load(answer), answer.headers.get("Location", "")
            except urllib.error.HTTPError as error:
                with error:
                    problem = json.load(error)
                if problem.get("type") != BAD_NONCE:
                    raise AssertionError(f"pebble refused {url}: {problem}") from None
        raise AssertionError("pebble turned down 20 nonces in a row")

    def account(self) -> tuple[str, list[str]]:
        """The account's URL and its contact, as pebble keeps them."""
        _, url = self._post(self.directory["newAccount"], {"onlyReturnExisting": True}, None)
        found, _ = self._post(url, None, url)  # §7.3.3: POST-as-GET of the account URL
        return url, list(found.get("contact") or [])


def set_email(server: Postroom, pebble: Pebble, email: str | None) -> None:
    """[acme] email set to `email`, or left out (None)."""
    table = acme_table(pebble.directory_url, pebble.ca_file)
    line = f'email = "postmaster@{DOMAIN}"\n'
    assert line in table
    server.extra = table.replace(line, "" if email is None else f'email = "{email}"\n')
    server.write_config()


@pytest.fixture
def world(
    postroom_factory: Factory, dns_server: dns_server_module.DnsServerFactory, tmp_path: Path
) -> Iterator[tuple[Postroom, Pebble]]:
    with acme_world(postroom_factory, dns_server, tmp_path, ZONE) as both:
        yield both


@pytest.mark.timeout(300)
def test_a_new_email_updates_the_accounts_contact_on_reload_and_restart(
    world: tuple[Postroom, Pebble],
) -> None:
    server, pebble = world
    intermediate = x509.load_pem_x509_certificate(pebble.intermediate_pem())

    def issued() -> bool:
        server.check_alive()
        return served_leaf(server, "imaps").issuer == intermediate.subject

    wait_until(issued, ISSUE_TIMEOUT, "the pebble certificate on IMAPS", interval=0.2)
    serial = served_leaf(server, "imaps").serial_number
    reader = AccountReader(pebble, server.data_dir)
    url, contact = reader.account()
    assert contact == [f"mailto:postmaster@{DOMAIN}"]
    record = json.loads((server.data_dir / "acme" / "account.json").read_text())
    assert record["url"] == url and record["contact"] == contact
    status = server.run_cli("acme", "status").stdout
    assert f"account: {url} (contact mailto:postmaster@{DOMAIN})" in status

    # Config edit + SIGHUP: the contact is updated at once, no restart asked for.
    set_email(server, pebble, f"hostmaster@{DOMAIN}")
    server.signal(signal.SIGHUP)
    server.wait_for_log(re.escape(f"acme: account {url} has contact mailto:hostmaster@{DOMAIN}"))
    assert reader.account() == (url, [f"mailto:hostmaster@{DOMAIN}"])
    assert "takes effect after a restart" not in server.log(current=True)

    # Edited while stopped: the restart updates it.
    server.stop()
    set_email(server, pebble, f"admin@{DOMAIN}")
    server.start()
    server.wait_for_log(re.escape(f"acme: account {url} has contact mailto:admin@{DOMAIN}"))
    assert reader.account() == (url, [f"mailto:admin@{DOMAIN}"])

    # Left out: the contact goes. The same account all along, and no new certificate.
    set_email(server, pebble, None)
    server.signal(signal.SIGHUP)
    server.wait_for_log(re.escape(f"acme: account {url} has contact none"))
    assert reader.account() == (url, [])
    assert served_leaf(server, "imaps").serial_number == serial
    assert server.log(current=True).count("acme: ordering a certificate") == 0
