"""Hostile probes against the IMAP listener over real sockets: patterns that would make a regex
backtrack, literals that would fill memory before login, numbers too long to convert."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import ALICE, PASSWORDS, Postroom
from .wire import Wire

SERVICES = ("smtp", "imap")
PLAINTEXT = "[auth]\nplaintext = true\n"  # LOGIN on the plaintext port, as the probes did


@pytest.fixture
def server(postroom_factory: Callable[..., Postroom]) -> Postroom:
    return postroom_factory(services=SERVICES, extra=PLAINTEXT)


def imap(server: Postroom, *, login: bool = False, timeout: float = 15.0) -> Wire:
    wire = Wire(server.ports["imap"], timeout=timeout)
    assert wire.read_line().startswith(b"* OK ")
    if login:
        assert tagged(wire, "l0", f"LOGIN {ALICE} {PASSWORDS[ALICE]}")[-1].startswith(b"l0 OK")
    return wire


def until_tagged(wire: Wire, tag: str) -> list[bytes]:
    """Response lines up to and including the tagged one."""
    lines = [wire.read_line()]
    while not lines[-1].startswith(tag.encode() + b" "):
        lines.append(wire.read_line())
    return lines


def tagged(wire: Wire, tag: str, command: str) -> list[bytes]:
    wire.send(f"{tag} {command}\r\n")
    return until_tagged(wire, tag)


# --- LIST patterns -------------------------------------------------------------------------------


def test_backtracking_list_pattern_does_not_freeze_the_server(server: Postroom) -> None:
    """The probe: after CREATE xxxxxxxxxxxxxxxxxxxx, LIST "" "**************Q" took 8.2 s and
    an SMTP greeting on another port waited 7.9 s. Here the pattern is longer still."""
    with imap(server, login=True) as wire:
        assert tagged(wire, "a", "CREATE " + "x" * 200)[-1].startswith(b"a OK")
        wire.send(b'b LIST "" "' + b"*" * 1000 + b'Q"\r\n')
        # Meanwhile another service still answers (Wire's reads time out after 15 s).
        with Wire(server.smtp_port) as probe:
            assert probe.reply().code == 220
        assert until_tagged(wire, "b") == [b"b OK List completed."]
        listed = tagged(wire, "c", 'LIST "" "*%x"')
        assert listed[0] == b'* LIST (\\HasNoChildren) "/" ' + b"x" * 200, listed
        assert tagged(wire, "d", 'LIST "" "' + "*" * 1100 + '"')[-1].startswith(b"d BAD")


# --- literals ------------------------------------------------------------------------------------


def test_large_non_synchronising_literal_before_login_closes_the_connection(
    server: Postroom,
) -> None:
    """The probe: LOGIN {65536+} and 1,499 more such literals grew the server by 100 MiB."""
    with imap(server) as wire:
        wire.send(b"a LOGIN {65536+}\r\n")
        assert wire.read_line() == b"a BAD [TOOBIG] Literal too large"
        assert wire.read_line() == b"* BYE Literal too large before login"
        assert wire.read_until_closed() == b""


def test_too_many_literals_before_login_close_the_connection(server: Postroom) -> None:
    with imap(server) as wire:
        wire.send(b"a ID (" + b'"k" {1+}\r\nv ' * 8 + b'"k" {1+}\r\n')
        assert wire.read_line() == b"a BAD [TOOBIG] Too many literals"
        assert wire.read_line() == b"* BYE Too many literals before login"
        assert wire.read_until_closed() == b""


def test_large_synchronising_literal_before_login_is_bad_and_the_session_goes_on(
    server: Postroom,
) -> None:
    with imap(server) as wire:
        wire.send(b"a LOGIN {9000}\r\n")
        assert wire.read_line() == b"a BAD [TOOBIG] Literal too large"
        # Logins with literals, as some clients send them, still work.
        user, password = ALICE.encode(), PASSWORDS[ALICE].encode()
        wire.send(b"b LOGIN {%d}\r\n" % len(user))
        assert wire.read_line() == b"+ OK"
        wire.send(user + b" {%d+}\r\n" % len(password) + password + b"\r\n")
        assert until_tagged(wire, "b")[-1].startswith(b"b OK [CAPABILITY ")


def test_literals_of_a_command_are_bounded_after_login(server: Postroom) -> None:
    """64 KiB of literals per command outside APPEND; the rest is skipped, the session lives."""
    with imap(server, login=True) as wire:
        assert tagged(wire, "s", "SELECT INBOX")[-1].startswith(b"s OK")
        text = b"x" * 40000
        wire.send(b"a SEARCH TEXT {40000+}\r\n" + text + b" TEXT {40000+}\r\n" + text + b"\r\n")
        assert until_tagged(wire, "a") == [b"a BAD [TOOBIG] Literal too large"]
        assert tagged(wire, "b", "NOOP") == [b"b OK NOOP completed."]
        wire.send(b"c SEARCH TEXT {40000+}\r\n" + text + b"\r\n")
        assert until_tagged(wire, "c") == [b"* SEARCH", b"c OK Search completed."]


# --- numbers -------------------------------------------------------------------------------------


def test_a_number_of_thousands_of_digits_is_bad_before_login(server: Postroom) -> None:
    """The probe: `a FETCH <5,000 × "1"> FLAGS` closed the connection with a traceback
    (Python's int() refuses more than 4,300 digits). The fixture fails on any traceback."""
    with imap(server) as wire:
        reply = tagged(wire, "a", "FETCH " + "1" * 5000 + " FLAGS")
        assert reply == [b"a BAD number out of range: " + b"1" * 24 + b"..."]
        assert tagged(wire, "b", "NOOP") == [b"b OK NOOP completed."]
