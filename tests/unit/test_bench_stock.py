"""The stock-clients benchmark's pure parts: the mail smtplib sends, and the reference table."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import sys_stock


def test_small_messages_have_crlf_lines_only() -> None:
    # postroom refuses a bare CR or LF (550 5.6.0): a cut inside CRLF would fail the run.
    for i in range(300):
        message = sys_stock.small_message(i)
        assert message.count(b"\r") == message.count(b"\n") == message.count(b"\r\n")
        assert message.endswith(b"\r\n") and 1500 < len(message) < 2600


def test_each_operation_is_compared_with_its_reference() -> None:
    results = {
        "postfix": {"smtp_send": {"median_ms": 2.0}},
        "dovecot": {"pop3_retr": {"median_ms": 3.0}},
        "postroom": {"smtp_send": {"median_ms": 1.0}, "pop3_retr": {"median_ms": 1.5}},
    }
    view = sys_stock.reference_view(results)
    assert view["reference"] == {"smtp_send": {"median_ms": 2.0}, "pop3_retr": {"median_ms": 3.0}}
    assert view["postroom"] is results["postroom"]
