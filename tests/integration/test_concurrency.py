"""Many concurrent sessions against the real server: every accepted message is delivered once."""

from __future__ import annotations

import smtplib
import threading

from .conftest import ALICE, BOB, Postroom
from .wire import header_value, new_token, simple_message

THREADS = 10
PER_THREAD = 20


def test_10_threads_x_20_messages_all_delivered(postroom: Postroom) -> None:
    tokens = [[new_token(f"t{t}m{m}") for m in range(PER_THREAD)] for t in range(THREADS)]
    errors: list[str] = []
    start = threading.Barrier(THREADS)

    def worker(mine: list[str]) -> None:
        try:
            start.wait(timeout=30)
            with postroom.smtp(timeout=30) as client:
                for index, token in enumerate(mine):
                    # Every fifth message also goes to bob: multi-recipient under load.
                    recipients = [ALICE, BOB] if index % 5 == 0 else [ALICE]
                    refused = client.sendmail("x@y.test", recipients, simple_message(token))
                    assert refused == {}, refused
        except (smtplib.SMTPException, OSError, AssertionError, threading.BrokenBarrierError) as e:
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(mine,), daemon=True) for mine in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)
        assert not thread.is_alive(), "a client thread hung"
    assert not errors, errors

    total = THREADS * PER_THREAD
    to_bob = THREADS * len(range(0, PER_THREAD, 5))
    postroom.wait_for_messages(ALICE, total, timeout=60)
    postroom.wait_for_messages(BOB, to_bob, timeout=60)
    for user, expected in (
        (ALICE, [t for mine in tokens for t in mine]),
        (BOB, [t for mine in tokens for t in mine[::5]]),
    ):
        subjects = [s.decode() for m in postroom.export(user) for s in header_value(m, "subject")]
        assert sorted(subjects) == sorted(expected), f"{user}: wrong set of messages"
    status = postroom.mailbox_status(ALICE)
    assert status["messages"] == total
    assert postroom.queue_list() == ""
