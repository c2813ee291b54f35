"""The DKIM keys of the local domains: made when first needed, rotated without ever making a
signature fail, promoted once their record is seen in DNS.

A key's life (`storage.records.DkimKey.state`):
- A domain's first keys, one ed25519 (RFC 8463) and one RSA 2048 (RFC 6376 §3.3.3), are
  **active** at once (`ensure_keys`): no signature depends on an older key, nothing to wait for.
- `rotate` makes a new pair **announced**: `dns records` prints its records beside the active
  ones, and it does not sign yet. `promote` (the server, periodically; `postroom dkim promote`)
  activates an announced key once its record is seen in DNS at SELECTOR._domainkey.DOMAIN and
  retires the active key of the same algorithm. With `now_active` the new pair is active at once.
- A **retired** key signs no more; its record stays published for RETIRED_KEPT (a week), so
  that what it signed still verifies for mail in transit, then the key is deleted.

At most one key per algorithm signs a domain's mail. Promotion is per key: the new ed25519 key
may sign beside the old RSA one while only its record is visible; each algorithm moves when its
own record can be verified, so no signature is made with a key receivers cannot find.

Selectors are "pr" + the UTC date (YYYYMMDD) + the algorithm's letter (e: ed25519, r: rsa),
`pr20261207e` and `pr20261207r`; another pair made the same day gets a counter,
`pr20261207e2`. A key made on day D is deleted a week after it was retired, so never before
D+7, and a selector never names two keys whose records could both be in DNS.

Whoever changes keys marks the "dkim" signal (storage/signals.py): the server that signs reads
its keys again at once (services/outbound_auth.py), and so does every node sharing a
PostgreSQL store, which hears it through NOTIFY.

Generating an RSA key costs about 100 ms of CPU. Whoever holds the event loop or a transaction
generates first (`generate_pairs`, on a worker thread) and hands the pairs in; the functions
taking a `Tx` generate only what they were not given (`ensure_keys_in` does it right for the
server's store).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from postroom.dns.lookup import DnsLookup
from postroom.dns.resolver import DnsTemporaryError
from postroom.mailauth.keys import (
    ALGORITHMS,
    Algorithm,
    KeyPair,
    SigningKey,
    generate,
    record_text,
)
from postroom.storage.api import Store, Tx
from postroom.storage.records import DkimKey, DkimKeyState

RETIRED_KEPT = 7 * 86400.0  # a retired key's record stays published (and the key kept) this long
SELECTOR_PREFIX = "pr"
LETTERS: dict[Algorithm, str] = {"ed25519": "e", "rsa": "r"}
MAX_RECORD = 8192  # longer TXT texts are not a record of ours (RSA 2048: about 420 octets)

Action = Literal["created", "announced", "activated", "retired", "dropped", "deleted"]


@dataclass(frozen=True, slots=True)
class KeyChange:
    """One thing done to a key: `created` (new and active), `announced` (new, not signing
    yet), `activated`, `retired`, `dropped` (an announced key replaced before it signed),
    `deleted` (a retired key past its week). `key` is the key as it is afterwards."""

    action: Action
    key: DkimKey


def _algorithm(key: DkimKey) -> Algorithm:
    return "rsa" if key.algorithm == "rsa" else "ed25519"


def record_name(key: DkimKey) -> str:
    """Where its record lives (RFC 6376 §3.6.2.1), without the final dot."""
    return f"{key.selector}._domainkey.{key.domain}"


def key_record(key: DkimKey) -> str:
    """The text of its TXT record (RFC 6376 §3.6.1)."""
    return record_text(_algorithm(key), key.public)


def selectors_for(taken: Collection[str], now: float) -> dict[Algorithm, str]:
    """A selector per algorithm for a pair made at `now`, none of them in `taken`; the pair
    shares its date and counter. Each is a DNS label (RFC 1035 §2.3.1: letters and digits)."""
    day = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y%m%d")
    counter = 1
    while True:
        suffix = "" if counter == 1 else str(counter)
        names = {a: f"{SELECTOR_PREFIX}{day}{LETTERS[a]}{suffix}" for a in ALGORITHMS}
        if not set(names.values()) & set(taken):
            return names
        counter += 1


def generate_pairs(algorithms: Iterable[Algorithm] = ALGORITHMS) -> dict[Algorithm, KeyPair]:
    """New key pairs (CPU work: run it off the event loop and outside transactions)."""
    return {algorithm: generate(algorithm) for algorithm in algorithms}


def _pairs(
    needed: Iterable[Algorithm], given: Mapping[Algorithm, KeyPair] | None
) -> dict[Algorithm, KeyPair]:
    given = given or {}
    return {a: given[a] if a in given else generate(a) for a in needed}


def missing_algorithms(tx: Tx, domain: str) -> tuple[Algorithm, ...]:
    """The algorithms for which `domain` has no active key (what `ensure_keys` would make)."""
    active = {key.algorithm for key in tx.dkim_keys.keys(domain) if key.state == "active"}
    return tuple(a for a in ALGORITHMS if a not in active)


def ensure_keys(
    tx: Tx, domain: str, now: float, pairs: Mapping[Algorithm, KeyPair] | None = None
) -> list[DkimKey]:
    """Give `domain` an active key of each algorithm it lacks one of (a new domain: an ed25519
    and an RSA key), signing at once; the keys made. `pairs` made beforehand are used (and the
    ones no longer needed dropped), whatever is missing from them is generated here."""
    missing = missing_algorithms(tx, domain)
    if not missing:
        return []
    made = _pairs(missing, pairs)
    selectors = selectors_for({key.selector for key in tx.dkim_keys.keys(domain)}, now)
    created = [
        DkimKey(domain, selectors[a], a, made[a].private, made[a].public, now, "active", now)
        for a in missing
    ]
    for key in created:
        tx.dkim_keys.add(key)
    return created


async def ensure_keys_in(store: Store, domain: str, now: float) -> list[DkimKey]:
    """`ensure_keys` for the server: what is missing is read, generated on a worker thread,
    then inserted if still missing (a concurrent caller may have been first)."""
    missing = await store.read(lambda tx: missing_algorithms(tx, domain))
    if not missing:
        return []
    pairs = await asyncio.to_thread(generate_pairs, missing)
    made = await store.write(lambda tx: ensure_keys(tx, domain, now, pairs))
    if made:
        store.signals.mark("dkim")  # the other nodes sharing the store read keys again
    return made


def _move(tx: Tx, key: DkimKey, state: DkimKeyState, now: float) -> DkimKey:
    tx.dkim_keys.set_state(key.domain, key.selector, state, now)
    return replace(key, state=state, state_changed=now)


def _newest_first(keys: Iterable[DkimKey]) -> list[DkimKey]:
    return sorted(keys, key=lambda k: (k.created, k.selector), reverse=True)


def signing_keys(tx: Tx, domain: str) -> list[SigningKey]:
    """The keys that sign `domain`'s mail now: its active ed25519 key, then its RSA key.
    `domain` as the config spells its domains (an A-label); case does not matter."""
    domain = domain.lower()
    active = _newest_first(k for k in tx.dkim_keys.keys(domain) if k.state == "active")
    result = []
    for algorithm in ALGORITHMS:
        of_kind = [k for k in active if k.algorithm == algorithm]
        if of_kind:  # one by construction; if a store holds more, the newest signs
            key = of_kind[0]
            result.append(SigningKey(domain, key.selector, algorithm, key.private))
    return result


_STATE_ORDER: dict[DkimKeyState, int] = {"active": 0, "announced": 1, "retired": 2}


def published_keys(tx: Tx, domain: str, now: float) -> list[DkimKey]:
    """The keys whose records `domain` must publish now: active and announced ones, and the
    retired ones still within their week; active first, then announced, then retired, each
    ed25519 before RSA."""
    keys = [
        k
        for k in tx.dkim_keys.keys(domain)
        if k.state != "retired" or k.state_changed + RETIRED_KEPT > now
    ]
    return sorted(
        keys,
        key=lambda k: (_STATE_ORDER[k.state], ALGORITHMS.index(_algorithm(k)), k.created),
    )


def rotate(
    tx: Tx,
    domain: str,
    now: float,
    *,
    now_active: bool,
    pairs: Mapping[Algorithm, KeyPair] | None = None,
) -> list[KeyChange]:
    """A new pair for `domain`: announced (it signs once `promote` sees its record in DNS), or
    with `now_active` active at once, the active keys then retired. Announced keys of an
    earlier rotation, which never signed, are dropped. An algorithm with no active key gets
    its new key active at once (a domain's first keys never wait). What was done, in order."""
    keys = tx.dkim_keys.keys(domain)
    selectors = selectors_for({key.selector for key in keys}, now)
    changes: list[KeyChange] = []
    for key in keys:
        if key.state == "announced":
            tx.dkim_keys.delete(domain, key.selector)
            changes.append(KeyChange("dropped", key))
    active = [key for key in keys if key.state == "active"]
    made = _pairs(ALGORITHMS, pairs)
    for algorithm in ALGORITHMS:
        current = [key for key in active if key.algorithm == algorithm]
        at_once = now_active or not current
        if at_once:
            for old in current:
                changes.append(KeyChange("retired", _move(tx, old, "retired", now)))
        pair = made[algorithm]
        state: DkimKeyState = "active" if at_once else "announced"
        new = DkimKey(
            domain, selectors[algorithm], algorithm, pair.private, pair.public, now, state, now
        )
        tx.dkim_keys.add(new)
        changes.append(KeyChange("created" if at_once else "announced", new))
    return changes


# --- promotion ---------------------------------------------------------------------------------


def _tags(text: str) -> dict[str, str] | None:
    """A tag list (RFC 6376 §3.2) as {name: value}, whitespace (FWS) dropped from both, which
    base64 values may contain (§3.6.1 p=); None when it is not one (a tag without "=", a
    duplicate tag). Linear in the text."""
    tags: dict[str, str] = {}
    for spec in text.split(";"):
        if not spec.strip():
            continue  # §3.2: a trailing ";" is allowed
        name, equals, value = spec.partition("=")
        name = name.strip()
        if not equals or not name or name in tags:
            return None
        tags[name] = "".join(value.split())
    return tags


def shows_key(text: str, key: DkimKey) -> bool:
    """True when a TXT text found at the key's name is its record: the tags `key_record`
    prints, with the same values, spacing aside."""
    if len(text) > MAX_RECORD:
        return False
    return _tags(text) == _tags(key_record(key))


async def in_dns(lookup: DnsLookup, key: DkimKey) -> bool:
    """Whether the key's record is published: one of the TXT records at its name is it.
    DnsTemporaryError when DNS gave no answer."""
    answer = await lookup.query(record_name(key), "TXT")
    return any(shows_key(text, key) for text in answer.records)


@dataclass(frozen=True, slots=True)
class Sighting:
    """What DNS showed of some keys: those whose record is there, those it gave no answer for
    (a server failure, a timeout: not seen, the next round asks again)."""

    seen: list[DkimKey]
    unanswered: list[DkimKey]


async def seen_in_dns(lookup: DnsLookup, keys: Sequence[DkimKey]) -> Sighting:
    """Ask DNS for the records of `keys`, all at once."""
    results = await asyncio.gather(*(in_dns(lookup, k) for k in keys), return_exceptions=True)
    sighting = Sighting([], [])
    for key, result in zip(keys, results, strict=True):
        if isinstance(result, DnsTemporaryError):
            sighting.unanswered.append(key)
        elif isinstance(result, BaseException):
            raise result
        elif result:
            sighting.seen.append(key)
    return sighting


@dataclass(frozen=True, slots=True)
class PromotionWork:
    """What a promotion round must look at: the announced keys, and whether a retired key's
    week is up (otherwise, with nothing seen, the round writes nothing)."""

    announced: list[DkimKey]
    expired: bool


def promotion_work(tx: Tx, now: float) -> PromotionWork:
    keys = tx.dkim_keys.keys()
    return PromotionWork(
        [k for k in keys if k.state == "announced"],
        any(k.state == "retired" and k.state_changed + RETIRED_KEPT <= now for k in keys),
    )


def apply_promotions(tx: Tx, seen: Iterable[DkimKey], now: float) -> list[KeyChange]:
    """Activate the `seen` keys that are still announced with the same public key (a rotation
    meanwhile may have dropped one), retiring the active key of the same domain and algorithm;
    then delete the keys retired a week ago or more. What was done, in order."""
    changes: list[KeyChange] = []
    for key in sorted(seen, key=lambda k: (k.domain, k.created, k.selector)):
        current = {k.selector: k for k in tx.dkim_keys.keys(key.domain)}
        stored = current.get(key.selector)
        if stored is None or stored.state != "announced" or stored.public != key.public:
            continue
        for old in current.values():
            if old.state == "active" and old.algorithm == key.algorithm:
                changes.append(KeyChange("retired", _move(tx, old, "retired", now)))
        changes.append(KeyChange("activated", _move(tx, stored, "active", now)))
    for gone in tx.dkim_keys.delete_retired(now - RETIRED_KEPT):
        changes.append(KeyChange("deleted", gone))
    return changes


async def promote(store: Store, lookup: DnsLookup, now: float) -> list[KeyChange]:
    """One round, for the server's timer: announced keys whose record is seen in DNS become
    active (the key of the same algorithm they replace retired), retired keys past their week
    are deleted. Nothing is written when there is nothing to do; what was done."""
    work = await store.read(lambda tx: promotion_work(tx, now))
    seen = (await seen_in_dns(lookup, work.announced)).seen if work.announced else []
    if not seen and not work.expired:
        return []
    changes = await store.write(lambda tx: apply_promotions(tx, seen, now))
    if changes:
        store.signals.mark("dkim")  # this node and the others sign with what changed
    return changes
