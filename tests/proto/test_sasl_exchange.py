"""The SASL exchange every protocol runs (proto/sasl/exchange.py): client lines decoded, the
store's answers applied, and each way it can end named with the user the client gave."""

from __future__ import annotations

import base64

from postroom.proto import sasl
from postroom.proto.sasl.exchange import UNAVAILABLE, Finished, SaslExchange
from postroom.proto.smtp import events as smtp_events
from postroom.proto.smtp.server import ServerSettings, SmtpServer

USER, PASSWORD = "alice@example.test", "correct horse"
PLAIN = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()


def exchange(name: str = "PLAIN") -> SaslExchange:
    mechanism = sasl.new_mechanism(name)
    assert mechanism is not None
    return SaslExchange(mechanism)


def test_a_password_check_then_success_or_failure() -> None:
    for verdict, result in ((True, "success"), (False, "failed")):
        plain = exchange()
        need = plain.start(base64.b64decode(PLAIN))
        assert need == sasl.CheckPassword(USER, "", PASSWORD)
        assert plain.answered(verdict) == Finished(result, "PLAIN", USER)


def test_the_store_failing_ends_it_as_unavailable() -> None:
    plain = exchange()
    plain.start(base64.b64decode(PLAIN))
    assert plain.answered(UNAVAILABLE) == Finished("unavailable", "PLAIN", USER)


def test_challenges_cancel_and_bad_base64() -> None:
    login = exchange("LOGIN")
    assert isinstance(login.start(None), sasl.Challenge)  # "Username:"
    assert login.client_line("*") == Finished("cancelled", "LOGIN", "")
    login = exchange("LOGIN")
    login.start(None)
    assert login.client_line("not base64!") == Finished("malformed", "LOGIN", "")
    login = exchange("LOGIN")
    login.start(None)
    assert isinstance(login.client_line(base64.b64encode(USER.encode()).decode()), sasl.Challenge)
    need = login.client_line(base64.b64encode(b"wrong").decode())
    assert need == sasl.CheckPassword(USER, "", "wrong")
    assert login.answered(False) == Finished("failed", "LOGIN", USER)


def test_scram_with_an_unknown_user_fails_naming_the_user() -> None:
    scram = exchange("SCRAM-SHA-256")
    need = scram.start(b"n,,n=" + USER.encode() + b",r=clientnonce")
    assert need == sasl.NeedScramCredentials(USER, "")
    challenge = scram.answered(None)  # no such user: the exchange goes on to the proof
    assert isinstance(challenge, sasl.Challenge)
    final = scram.client_line(
        base64.b64encode(
            b"c=biws,r="
            + challenge.data.split(b"r=")[1].split(b",")[0]
            + b",p="
            + base64.b64encode(bytes(32))
        ).decode()
    )
    assert final == Finished("failed", "SCRAM-SHA-256", USER)


def test_the_smtp_engine_reports_a_failed_login_with_its_user() -> None:
    engine = SmtpServer(ServerSettings(hostname="mx.example.test"), tls_active=True)
    engine.greet()
    engine.receive_data(b"EHLO c\r\nAUTH PLAIN " + PLAIN.encode() + b"\r\n")
    events = []
    while True:
        event = engine.next_event()
        if isinstance(event, smtp_events.Verify):
            engine.answered(False)
        elif isinstance(event, smtp_events.NeedData | smtp_events.Paused):
            break
        events.append(event)
    assert smtp_events.AuthFailed("PLAIN", USER) in events
    assert engine.data_to_send().endswith(b"535 5.7.8 Authentication credentials invalid\r\n")
