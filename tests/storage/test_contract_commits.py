"""Every backend reports each group commit's number of jobs to `on_commit`, from its writer,
once the commit is done (the metrics' commit batch histogram reads it)."""

from __future__ import annotations

import asyncio
import threading

from postroom.storage.api import Store, Tx


def test_each_commit_reports_its_jobs_once(store: Store) -> None:
    sizes: list[int] = []
    threads: set[int] = set()

    def seen(size: int) -> None:
        sizes.append(size)
        threads.add(threading.get_ident())

    store.on_commit = seen

    def add(tx: Tx, number: int) -> int:
        return tx.accounts.add_user(f"u{number}@example.test", "x", "")

    async def many() -> None:
        await asyncio.gather(*(store.write(lambda tx, n=n: add(tx, n)) for n in range(40)))

    asyncio.run(many())
    assert sum(sizes) == 40
    assert all(size >= 1 for size in sizes)
    assert threading.get_ident() not in threads  # called on the writer thread
