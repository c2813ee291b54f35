"""Per-request deadlines: what the drivers wait for, and the engines' "part of a request is in"."""

from __future__ import annotations

from postroom.net.deadline import MIN_DATA_RATE, RequestDeadline
from postroom.proto.imap.reader import NEED_DATA, CommandReader, NeedContinuation
from postroom.proto.pop3.engine import Pop3Server, Pop3Settings
from postroom.proto.smtp import events as ev
from postroom.proto.smtp.server import ServerSettings, SmtpServer


def test_between_requests_the_idle_timeout_applies() -> None:
    deadline = RequestDeadline()
    assert deadline.wait_for(mid_request=False, received=0, timeout=300, now=1000) == 300
    assert deadline.wait_for(mid_request=False, received=9, timeout=300, now=5000) == 300


def test_a_trickle_runs_out_of_time() -> None:
    """One byte every 100 s: an idle timeout of 300 s alone would never fire."""
    deadline = RequestDeadline()
    now = 0.0
    wait = deadline.wait_for(mid_request=True, received=1, timeout=300, now=now)
    assert wait == 300
    sent = 1
    while wait >= 100:  # the next byte comes before the read gives up
        now += 100
        sent += 1
        wait = deadline.wait_for(mid_request=True, received=1, timeout=300, now=now)
    cut_at = now + wait
    assert sent == 4 and abs(cut_at - (300 + 3 / MIN_DATA_RATE)) < 1e-9


def test_a_request_arriving_at_the_minimum_rate_never_runs_out() -> None:
    deadline = RequestDeadline()
    deadline.wait_for(mid_request=True, received=0, timeout=60, now=0)
    for second in range(1, 10_000):
        wait = deadline.wait_for(
            mid_request=True, received=int(MIN_DATA_RATE), timeout=60, now=float(second)
        )
        assert 0 < wait <= 60
    # Credit never runs more than the timeout ahead, and a new request starts afresh.
    assert deadline.wait_for(mid_request=True, received=10**9, timeout=60, now=20_000) == 60
    assert deadline.wait_for(mid_request=False, received=5, timeout=60, now=20_001) == 60
    assert deadline.wait_for(mid_request=True, received=5, timeout=60, now=30_000) == 60


def _smtp() -> SmtpServer:
    engine = SmtpServer(ServerSettings(hostname="mx.example.test", max_line_length=512))
    engine.greet()
    return engine


def _drain(engine: SmtpServer) -> None:
    while True:
        event = engine.next_event()
        if isinstance(event, ev.MailFrom | ev.RcptTo):
            engine.accept()
        elif isinstance(event, ev.NeedData):
            return


def test_smtp_engine_says_when_a_request_is_under_way() -> None:
    engine = _smtp()
    assert not engine.mid_request
    engine.receive_data(b"EHLO cli")
    _drain(engine)
    assert engine.mid_request
    engine.receive_data(b"ent.example\r\n")
    _drain(engine)
    assert not engine.mid_request
    engine.receive_data(b"NOOP " + b"x" * 600)  # overlong: dropped, its end still to come
    _drain(engine)
    assert engine.mid_request and engine.buffered == 0
    engine.receive_data(b"\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
    _drain(engine)
    assert engine.mid_request  # the message is the request now
    engine.receive_data(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    event = engine.next_event()
    assert isinstance(event, ev.MessageData | ev.MessageComplete)


def test_pop3_engine_says_when_a_command_line_is_under_way() -> None:
    engine = Pop3Server(Pop3Settings(hostname="pop.example.test"))
    engine.greet()
    assert not engine.mid_request
    engine.receive_data(b"CA")
    assert engine.next_event() is not None and engine.mid_request
    engine.receive_data(b"PA\r\n")
    engine.next_event()
    assert not engine.mid_request


def test_imap_reader_says_when_a_command_is_under_way() -> None:
    reader = CommandReader()
    assert not reader.mid_command
    reader.feed(b"a LOGIN {3}\r\n")
    event = reader.next_event()
    assert isinstance(event, NeedContinuation) and reader.mid_command
    reader.accept_literal()
    reader.feed(b"ab")
    assert reader.next_event() is NEED_DATA and reader.mid_command
    reader.feed(b"c pw\r\n")
    reader.next_event()
    assert reader.next_event() is NEED_DATA and not reader.mid_command
    reader.feed(b"b NO")
    assert reader.next_event() is NEED_DATA and reader.mid_command
