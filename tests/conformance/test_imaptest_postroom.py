"""Dovecot's imaptest scripts against postroom itself, over implicit TLS.

Every script whose capabilities postroom advertises must pass (the same driver passes them all
on Dovecot, test_imaptest_dovecot.py). Scripts that need an extension postroom does not offer
are left out (NOT_OFFERED names them with what they lack), computed from the capabilities
postroom announces: advertising an extension later makes its scripts run here.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.conftest import ALICE, BOB, PASSWORDS, Postroom
from postroom.services.imap.session import BASE_CAPABILITIES

from .imaptest_driver import ServerInfo, Status, required_capabilities, run_script
from .test_imaptest_dovecot import SCRIPTS

OFFERED = {c.upper() for c in BASE_CAPABILITIES}
TIMEOUT = 5.0


def _runnable(path: Path) -> bool:
    return required_capabilities(path) <= OFFERED


RUNNABLE = [p for p in SCRIPTS if _runnable(p)]
# Script → the capabilities it needs that postroom does not advertise (yet).
NOT_OFFERED = {
    p.name: sorted(required_capabilities(p) - OFFERED) for p in SCRIPTS if p not in RUNNABLE
}


@pytest.fixture(scope="module")
def postroom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postroom]:
    server = Postroom(tmp_path_factory.mktemp("imaptest"), services=("smtp", "imaps"))
    for address in (ALICE, BOB):
        server.run_cli("user", "add", address, "--password", PASSWORDS[address])
    server.start()
    yield server
    server.stop()


def _server(postroom: Postroom) -> ServerInfo:
    context = ssl.create_default_context(cafile=None)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return ServerInfo(
        postroom.host,
        postroom.ports["imaps"],
        ALICE,
        PASSWORDS[ALICE],
        BOB,
        PASSWORDS[BOB],
        timeout=TIMEOUT,
        tls=context,
    )


def test_most_scripts_run_against_postroom() -> None:
    assert len(RUNNABLE) >= 50, NOT_OFFERED


@pytest.mark.parametrize("script", RUNNABLE, ids=[p.name for p in RUNNABLE])
def test_imaptest_script_passes_on_postroom(postroom: Postroom, script: Path) -> None:
    result = run_script(script, _server(postroom))
    assert result.status is Status.PASSED, f"{result.report()}\n{postroom.log_tail()}"
