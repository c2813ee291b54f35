"""The WAL syncer answers committed batches in commit order, only after a sync, and fails the
durable ones when the sync fails (storage/sqlite/wal_sync.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from postroom.storage.sqlite.wal_sync import Answers, WalSyncer


def _answers(
    loop: asyncio.AbstractEventLoop, value: object, *, durable: bool, unlink: list[Path]
) -> tuple[Answers, asyncio.Future[Any]]:
    future: asyncio.Future[Any] = loop.create_future()
    return Answers({loop: [(future, value, None)]}, loop, None, durable, unlink), future


async def _run(wal: Path, freed: Path) -> tuple[list[object], list[BaseException]]:
    loop = asyncio.get_running_loop()
    seen: list[BaseException] = []

    def failure(error: OSError) -> BaseException:
        seen.append(error)
        return RuntimeError(f"sync failed: {error}")

    syncer = WalSyncer(wal, failure)
    syncer.start()
    first, f1 = _answers(loop, 1, durable=True, unlink=[freed])
    flags, f2 = _answers(loop, 2, durable=False, unlink=[])
    second, f3 = _answers(loop, 3, durable=True, unlink=[])
    order: list[object] = []
    for future in (f1, f2, f3):
        future.add_done_callback(lambda done: order.append(done.exception() or done.result()))
    for answers in (first, flags, second):
        syncer.hand(answers)
    await asyncio.wait_for(asyncio.gather(f1, f2, f3, return_exceptions=True), 10)
    await asyncio.to_thread(syncer.stop)
    return order, seen


def test_answers_in_commit_order_after_the_sync(tmp_path: Path) -> None:
    wal = tmp_path / "db-wal"
    wal.write_bytes(b"frames")
    freed = tmp_path / "blob"
    freed.write_bytes(b"released by the batch")
    order, failures = asyncio.run(_run(wal, freed))
    assert order == [1, 2, 3]
    assert failures == []
    assert not freed.exists()  # removed once the batch that released it was durable


def test_a_failed_sync_fails_the_durable_batches_and_keeps_released_files(
    tmp_path: Path,
) -> None:
    freed = tmp_path / "blob"
    freed.write_bytes(b"released by the batch")
    # fdatasync on /dev/null fails (EINVAL): a disk that refuses the sync.
    order, failures = asyncio.run(_run(Path("/dev/null"), freed))
    assert len(failures) >= 1
    assert isinstance(order[0], RuntimeError) and isinstance(order[2], RuntimeError)
    assert order[1] == 2  # the flag-only batch promised no durability
    assert freed.exists()  # its commit may be lost: its bytes must stay


@pytest.mark.parametrize("durable", [True, False])
def test_stop_answers_what_was_handed(tmp_path: Path, durable: bool) -> None:
    wal = tmp_path / "db-wal"
    wal.write_bytes(b"frames")

    async def main() -> object:
        loop = asyncio.get_running_loop()
        syncer = WalSyncer(wal, lambda error: error)
        syncer.start()
        answers, future = _answers(loop, "done", durable=durable, unlink=[])
        syncer.hand(answers)
        await asyncio.to_thread(syncer.stop)
        return await asyncio.wait_for(future, 10)

    assert asyncio.run(main()) == "done"
