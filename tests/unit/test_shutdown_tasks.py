"""Stopping the background tasks: a cancellation that arrives as the scheduler is woken is not
lost (Python 3.11's wait_for returned normally then, and shutdown waited forever), and a task
that swallows its cancellation is cancelled again and named in the log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from postroom.app import stop_tasks
from postroom.queue.scheduler import Scheduler


class _Signals:
    def version(self, name: str) -> float:
        return 0.0


class _Store:
    signals = _Signals()


def _scheduler() -> Scheduler:
    store: Any = _Store()
    return Scheduler(store, None, policy=None, reporter=None, concurrency=1, node="n1")  # type: ignore[arg-type]


def test_a_wakeup_in_the_same_turn_as_the_cancel_does_not_keep_the_scheduler_idling() -> None:
    async def scenario() -> None:
        scheduler = _scheduler()
        idling = asyncio.create_task(scheduler._idle(60.0))
        await asyncio.sleep(0)  # now waiting for the wakeup
        scheduler.wake()
        idling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(idling, 5)

    asyncio.run(scenario())


def test_a_task_that_swallows_one_cancel_is_cancelled_again_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # as a buggy library would
            await asyncio.Event().wait()
        await asyncio.Event().wait()

    async def scenario() -> None:
        task = asyncio.create_task(stubborn(), name="stubborn")
        await asyncio.sleep(0)
        await asyncio.wait_for(stop_tasks([task]), 10)
        assert task.cancelled()

    with caplog.at_level(logging.WARNING, logger="postroom.app"):
        asyncio.run(scenario())
    assert "task stubborn still running after cancel" in caplog.text
