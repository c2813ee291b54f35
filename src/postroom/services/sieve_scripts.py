"""Each user's Sieve scripts as ManageSieve (RFC 5804) and the CLI manage them.

`perform(store, identity, op)` carries out one of the engine's script operations
(proto/managesieve/events.py) in one store transaction and returns its typed result; the
per-user limits are the engine's (`space_refusal`), applied here against what is stored, so a
limit holds however many sessions upload at once. Every change is one log line:

    sieve put user=alice@example.test script=<vacation> size=211
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from postroom.proto.managesieve import events as ev
from postroom.proto.managesieve import space_refusal
from postroom.services.authn import Authenticator
from postroom.storage.api import Store, Tx
from postroom.storage.records import StorageFailure

log = logging.getLogger("postroom.sieve")


@dataclass
class ManageSieveContext:
    """What every ManageSieve session shares: the store and the credential checks."""

    store: Store
    authenticator: Authenticator


def shown(name: str) -> str:
    """A script name fit for one log field (names are the client's)."""
    return "".join(c if c.isprintable() and c != ">" else "?" for c in name[:200])


def sizes(tx: Tx, user_id: int) -> dict[str, int]:
    """Each of the user's scripts by name → its size in octets."""
    return {
        name: len((tx.sieve.get(user_id, name) or "").encode("utf-8"))
        for name, _active in tx.sieve.scripts(user_id)
    }


def _apply(tx: Tx, identity: str, op: ev.ScriptOp, now: float) -> ev.OpResult:
    user = tx.accounts.get_user(identity)
    if user is None:
        return ev.Refused("TRYLATER", "The account is gone")
    uid = user.id
    if isinstance(op, ev.ListScripts):
        return ev.Listing(tuple(tx.sieve.scripts(uid)))
    if isinstance(op, ev.GetScript):
        source = tx.sieve.get(uid, op.name)
        return _missing(op.name) if source is None else ev.Source(source)
    if isinstance(op, ev.HaveSpace):
        return space_refusal(sizes(tx, uid), op.name, op.size) or ev.Done()
    if isinstance(op, ev.PutScript):
        refusal = space_refusal(sizes(tx, uid), op.name, len(op.source.encode("utf-8")))
        if refusal is not None:
            return refusal
        tx.sieve.put(uid, op.name, op.source, now)
        return ev.Done()
    listed = dict(tx.sieve.scripts(uid))
    if isinstance(op, ev.SetActive):
        if op.name is not None and op.name not in listed:
            return _missing(op.name)
        tx.sieve.activate(uid, op.name)
        return ev.Done()
    if isinstance(op, ev.DeleteScript):
        if op.name not in listed:
            return _missing(op.name)
        if listed[op.name]:
            # RFC 5804 §2.10: the active script cannot be deleted.
            return ev.Refused("ACTIVE", "You may not delete an active script")
        tx.sieve.delete(uid, op.name)
        return ev.Done()
    if op.old not in listed:
        return _missing(op.old)
    if op.new in listed and op.new != op.old:
        # RFC 5804 §2.11.1: the new name must not be taken.
        return ev.Refused("ALREADYEXISTS", f"A script called {op.new} exists already")
    tx.sieve.rename(uid, op.old, op.new)
    return ev.Done()


def _missing(name: str) -> ev.Refused:
    return ev.Refused("NONEXISTENT", f"There is no script called {name}")


_CHANGES = (ev.PutScript, ev.SetActive, ev.DeleteScript, ev.RenameScript)


async def perform(store: Store, identity: str, op: ev.ScriptOp) -> ev.OpResult:
    """Carry out `op` for `identity`; a store that fails is NO (TRYLATER), one log line."""
    now = time.time()
    try:
        if isinstance(op, _CHANGES):
            result = await store.write(lambda tx: _apply(tx, identity, op, now))
        else:
            result = await store.read(lambda tx: _apply(tx, identity, op, now))
    except StorageFailure as failure:
        log.warning("sieve %s failed user=%s: %s", type(op).__name__, identity, failure)
        return ev.Refused("TRYLATER", "Script storage temporarily unavailable")
    if isinstance(result, ev.Done) and isinstance(op, _CHANGES):
        log.info("sieve %s user=%s %s", *_change(op, identity))
    return result


def _change(op: ev.ScriptOp, identity: str) -> tuple[str, str, str]:
    if isinstance(op, ev.PutScript):
        size = len(op.source.encode("utf-8"))
        return "put", identity, f"script=<{shown(op.name)}> size={size}"
    if isinstance(op, ev.SetActive):
        if op.name is None:
            return "deactivate", identity, "script=<>"
        return "activate", identity, f"script=<{shown(op.name)}>"
    if isinstance(op, ev.DeleteScript):
        return "delete", identity, f"script=<{shown(op.name)}>"
    assert isinstance(op, ev.RenameScript)
    return "rename", identity, f"script=<{shown(op.old)}> to=<{shown(op.new)}>"
