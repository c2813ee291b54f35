"""How the scheduler spreads one destination's backlog over parallel sessions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postroom.queue.scheduler import SESSION_MIN_MESSAGES, split_batches


def test_nothing_gives_no_batch() -> None:
    assert split_batches([], 10) == []


def test_a_small_backlog_keeps_to_one_session() -> None:
    items = list(range(2 * SESSION_MIN_MESSAGES - 1))
    assert split_batches(items, 10) == [items]


def test_a_large_backlog_uses_every_session_in_queue_order() -> None:
    items = list(range(450))
    batches = split_batches(items, 10)
    assert len(batches) == 10
    assert [len(b) for b in batches] == [45] * 10
    assert [x for b in batches for x in b] == items


def test_concurrency_one_means_one_session() -> None:
    items = list(range(500))
    assert split_batches(items, 1) == [items]


@given(
    n=st.integers(min_value=0, max_value=2000),
    sessions=st.integers(min_value=1, max_value=50),
    minimum=st.integers(min_value=1, max_value=100),
)
def test_batches_keep_order_and_limits(n: int, sessions: int, minimum: int) -> None:
    items = list(range(n))
    batches = split_batches(items, sessions, minimum)
    assert [x for b in batches for x in b] == items
    assert len(batches) <= sessions
    if len(batches) > 1:
        assert min(len(b) for b in batches) >= minimum
        assert max(len(b) for b in batches) - min(len(b) for b in batches) <= 1
