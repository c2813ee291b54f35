"""`postroom send -v` never shows a SASL exchange's credentials (RFC 4954 §4)."""

from __future__ import annotations

import base64

from postroom.cli.send import HIDDEN, AuthMask


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_plain_initial_response_is_hidden() -> None:
    mask = AuthMask()
    mask.start()
    assert mask.sent("AUTH PLAIN " + b64(b"\0me\0secret")) == f"AUTH PLAIN {HIDDEN}"
    mask.received("235 2.7.0 Authentication successful")
    assert mask.sent("MAIL FROM:<me@example.test>") == "MAIL FROM:<me@example.test>"


def test_every_answer_to_a_challenge_is_hidden_until_the_final_reply() -> None:
    mask = AuthMask()
    mask.start()
    assert mask.sent("AUTH LOGIN") == "AUTH LOGIN"
    mask.received("334 VXNlcm5hbWU6")
    assert mask.sent(b64(b"me")) == HIDDEN
    mask.received("334 UGFzc3dvcmQ6")
    assert mask.sent(b64(b"secret")) == HIDDEN
    mask.received("535 5.7.8 Authentication credentials invalid")
    assert mask.sent("QUIT") == "QUIT"


def test_lines_outside_an_exchange_print_as_they_are() -> None:
    mask = AuthMask()
    body = "AUTH PLAIN is what a message may well say"
    assert mask.sent(body) == body
    mask.received("354 End data with <CR><LF>.<CR><LF>")
    assert mask.sent(body) == body
