"""Storage contract, secrets: made once by the first caller, the same for every later one (and
after a restart), one per name."""

from __future__ import annotations

import itertools

from postroom.storage.api import Store

from .conftest import Backend, read, write


def test_a_secret_is_made_once_and_kept(backend: Backend, store: Store) -> None:
    made = itertools.count(1)

    def make() -> bytes:
        return b"secret-%d" % next(made)

    assert read(store, lambda tx: tx.secrets.get("srs")) is None
    first = write(store, lambda tx: tx.secrets.get_or_create("srs", make))
    assert read(store, lambda tx: tx.secrets.get("srs")) == b"secret-1"
    again = write(store, lambda tx: tx.secrets.get_or_create("srs", make))
    other = write(store, lambda tx: tx.secrets.get_or_create("other", make))
    assert (first, again, other) == (b"secret-1", b"secret-1", b"secret-2")
    store.close()
    reopened = backend.server()
    try:
        kept = read(reopened, lambda tx: tx.secrets.get_or_create("srs", make))
        assert kept == b"secret-1"
    finally:
        reopened.close()
