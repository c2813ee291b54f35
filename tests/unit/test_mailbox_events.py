"""services/mailbox_events.py with news from several nodes: announcements arrive out of order
and twice without lowering what is known, and `wake_all` (a listener that reconnected) makes
every session look again."""

from __future__ import annotations

from postroom.services.mailbox_events import MailboxEvents


def test_late_and_repeated_news_never_lowers_what_is_known() -> None:
    events = MailboxEvents()
    watch = events.watch(1)
    events.publish({1: 9})  # another node's, heard first
    events.publish({1: 7})  # this node's older commit, told later
    events.publish({1: 9})  # and the same twice
    assert watch.changed
    assert events.newer_than(1, 8)
    assert not events.newer_than(1, 9)  # a session that read up to 9 is not woken for 7


def test_a_gone_mailbox_stays_changed() -> None:
    events = MailboxEvents()
    events.publish({2: None})
    events.publish({2: 5})
    assert events.newer_than(2, 1 << 61)


def test_wake_all_makes_every_session_look_again() -> None:
    events = MailboxEvents()
    first, second = events.watch(1), events.watch(2)
    events.publish({1: 4})
    first.changed = False
    events.wake_all()
    assert first.changed and second.changed
    assert events.newer_than(1, 4) and events.newer_than(2, 100)


def test_a_watch_in_idle_is_woken_and_unwatched_ones_are_not() -> None:
    events = MailboxEvents()
    woken: list[int] = []
    idling, other = events.watch(1), events.watch(1)
    idling.wake = lambda: woken.append(1)
    events.publish({2: 3})  # another mailbox: nobody here is told
    assert woken == [] and not idling.changed
    events.unwatch(other)
    events.publish({1: 3})
    assert woken == [1] and idling.changed and not other.changed
