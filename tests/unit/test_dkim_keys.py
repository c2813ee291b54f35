"""The DKIM key service on a real store: a domain's first keys sign at once, a rotation is
announced and waits for DNS (or not, with now_active), promotion follows what DNS shows, a
retired key is published for a week and then deleted, and the keys sign what their records
verify (dkimpy)."""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Callable
from typing import TypeVar

import dkim
import pytest

from postroom.dns.lookup import StaticLookup
from postroom.mailauth.keys import SIGNATURE_ALGORITHM, SigningKey, generate, record_text
from postroom.services import dkim_keys as service
from postroom.services.dkim_keys import KeyChange
from postroom.storage.api import Store, Tx
from postroom.storage.records import DkimKey

DOMAIN = "example.test"
NOW = datetime.datetime(2026, 12, 7, 14, 5, tzinfo=datetime.UTC).timestamp()
DAY = 86400.0
MESSAGE = (
    b"From: a@example.test\r\nTo: b@example.net\r\nSubject: hi\r\n"
    b"Date: Mon, 7 Dec 2026 00:00:00 +0000\r\n\r\nbody\r\n"
)
T = TypeVar("T")
LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def write(store: Store, fn: Callable[[Tx], T]) -> T:
    return asyncio.run(store.write(fn))


def read(store: Store, fn: Callable[[Tx], T]) -> T:
    return asyncio.run(store.read(fn))


def keys(store: Store) -> dict[str, str]:
    """selector → state of every key of DOMAIN."""
    found: list[DkimKey] = read(store, lambda tx: tx.dkim_keys.keys(DOMAIN))
    return {k.selector: k.state for k in found}


def actions(changes: list[KeyChange]) -> list[tuple[str, str]]:
    return [(c.action, c.key.selector) for c in changes]


def verifies(key: SigningKey, record: str) -> bool:
    signature = dkim.sign(
        MESSAGE,
        key.selector.encode(),
        key.domain.encode(),
        key.private,
        signature_algorithm=SIGNATURE_ALGORITHM[key.algorithm].encode(),
    )
    return bool(dkim.verify(signature + MESSAGE, dnsfunc=lambda name, timeout=5: record.encode()))


def published(store: Store, now: float) -> StaticLookup:
    """DNS as `dns records` would have it published at `now`."""
    found: list[DkimKey] = read(store, lambda tx: service.published_keys(tx, DOMAIN, now))
    return StaticLookup({(service.record_name(k), "TXT"): [service.key_record(k)] for k in found})


def test_a_new_domain_gets_two_active_keys_that_sign_what_their_records_verify(
    store: Store,
) -> None:
    created: list[DkimKey] = write(store, lambda tx: service.ensure_keys(tx, DOMAIN, NOW))
    assert [(k.selector, k.algorithm, k.state) for k in created] == [
        ("pr20261207e", "ed25519", "active"),
        ("pr20261207r", "rsa", "active"),
    ]
    assert all(LABEL.fullmatch(k.selector) for k in created)
    assert write(store, lambda tx: service.ensure_keys(tx, DOMAIN, NOW + 5)) == []
    signing: list[SigningKey] = read(store, lambda tx: service.signing_keys(tx, DOMAIN))
    assert [(k.selector, k.algorithm) for k in signing] == [
        ("pr20261207e", "ed25519"),
        ("pr20261207r", "rsa"),
    ]
    assert read(store, lambda tx: service.signing_keys(tx, DOMAIN.upper())) == signing
    by_selector = {k.selector: k for k in created}
    for key in signing:
        assert verifies(key, service.key_record(by_selector[key.selector]))
        assert key.private.decode() not in repr(key) + repr(by_selector[key.selector])
    # The other algorithm's record (another key) does not verify it.
    assert not verifies(signing[1], record_text("rsa", generate("rsa").public))


def test_pairs_made_beforehand_are_used_and_a_missing_algorithm_is_made(store: Store) -> None:
    pairs = service.generate_pairs(["ed25519"])
    created: list[DkimKey] = write(store, lambda tx: service.ensure_keys(tx, DOMAIN, NOW, pairs))
    assert created[0].public == pairs["ed25519"].public
    assert created[1].algorithm == "rsa"
    assert read(store, lambda tx: service.signing_keys(tx, "other.test")) == []


def test_concurrent_first_uses_make_one_pair(store: Store) -> None:
    async def both() -> list[list[DkimKey]]:
        return list(
            await asyncio.gather(
                service.ensure_keys_in(store, DOMAIN, NOW),
                service.ensure_keys_in(store, DOMAIN, NOW),
            )
        )

    first, second = asyncio.run(both())
    assert sorted(len(made) for made in (first, second)) == [0, 2]
    assert keys(store) == {"pr20261207e": "active", "pr20261207r": "active"}


def test_selectors_are_dated_labels_with_a_counter_on_collision() -> None:
    assert service.selectors_for(set(), NOW) == {"ed25519": "pr20261207e", "rsa": "pr20261207r"}
    taken = {"pr20261207r", "pr20261207e2"}
    assert service.selectors_for(taken, NOW) == {"ed25519": "pr20261207e3", "rsa": "pr20261207r3"}
    assert service.selectors_for(taken, NOW + DAY)["rsa"] == "pr20261208r"


def test_a_rotation_is_announced_and_signing_stays_until_dns_shows_it(store: Store) -> None:
    write(store, lambda tx: service.ensure_keys(tx, DOMAIN, NOW))
    before: list[SigningKey] = read(store, lambda tx: service.signing_keys(tx, DOMAIN))
    changes = write(store, lambda tx: service.rotate(tx, DOMAIN, NOW + DAY, now_active=False))
    assert actions(changes) == [("announced", "pr20261208e"), ("announced", "pr20261208r")]
    assert read(store, lambda tx: service.signing_keys(tx, DOMAIN)) == before
    shown: list[DkimKey] = read(store, lambda tx: service.published_keys(tx, DOMAIN, NOW + DAY))
    assert [(k.selector, k.state) for k in shown] == [
        ("pr20261207e", "active"),
        ("pr20261207r", "active"),
        ("pr20261208e", "announced"),
        ("pr20261208r", "announced"),
    ]
    # Not in DNS yet: nothing happens, and nothing is written.
    old_dns = StaticLookup(
        {(service.record_name(k), "TXT"): [service.key_record(k)] for k in shown[:2]}
    )
    assert asyncio.run(service.promote(store, old_dns, NOW + DAY + 60)) == []
    # A second rotation replaces the pair that never signed (same day: the next counter).
    again = write(store, lambda tx: service.rotate(tx, DOMAIN, NOW + DAY, now_active=False))
    assert actions(again) == [
        ("dropped", "pr20261208e"),
        ("dropped", "pr20261208r"),
        ("announced", "pr20261208e2"),
        ("announced", "pr20261208r2"),
    ]


def test_promotion_follows_dns_per_key_and_retired_keys_go_after_a_week(store: Store) -> None:
    write(store, lambda tx: service.ensure_keys(tx, DOMAIN, NOW))
    write(store, lambda tx: service.rotate(tx, DOMAIN, NOW + DAY, now_active=False))
    dns = published(store, NOW + DAY)
    # Only the new ed25519 record is out, written with other spacing (blanks even inside the
    # base64 of p=, RFC 6376 §3.6.1) and a final ";": it moves alone.
    (ed_name,) = [n for n, _ in dns.records if n.startswith("pr20261208e.")]
    (rsa_name,) = [n for n, _ in dns.records if n.startswith("pr20261208r.")]
    partial = dict(dns.records)
    partial[(rsa_name, "TXT")] = []
    partial[(ed_name, "TXT")] = [
        " v=DKIM1 ;k=ed25519;  p="
        + " ".join(str(partial[(ed_name, "TXT")][0]).split("p=")[1])
        + ";"
    ]
    at = NOW + 2 * DAY
    changes = asyncio.run(service.promote(store, StaticLookup(partial), at))
    assert actions(changes) == [("retired", "pr20261207e"), ("activated", "pr20261208e")]
    signing: list[SigningKey] = read(store, lambda tx: service.signing_keys(tx, DOMAIN))
    assert [k.selector for k in signing] == ["pr20261208e", "pr20261207r"]
    # Now the RSA record too; the retired ed25519 key is still published within its week.
    changes = asyncio.run(service.promote(store, dns, at + 3600))
    assert actions(changes) == [("retired", "pr20261207r"), ("activated", "pr20261208r")]
    shown: list[DkimKey] = read(store, lambda tx: service.published_keys(tx, DOMAIN, at + 6 * DAY))
    assert [(k.selector, k.state) for k in shown][2:] == [
        ("pr20261207e", "retired"),
        ("pr20261207r", "retired"),
    ]
    # A week after its retirement a key is no longer published, and the next round deletes it.
    week = at + service.RETIRED_KEPT
    shown = read(store, lambda tx: service.published_keys(tx, DOMAIN, week))
    assert [k.selector for k in shown] == ["pr20261208e", "pr20261208r", "pr20261207r"]
    assert actions(asyncio.run(service.promote(store, dns, week))) == [("deleted", "pr20261207e")]
    assert keys(store) == {
        "pr20261207r": "retired",
        "pr20261208e": "active",
        "pr20261208r": "active",
    }


@pytest.mark.parametrize(
    "text",
    [
        "v=DKIM1; k=ed25519; p=AAAA",  # another key
        "v=DKIM1; k=rsa; p={p}",  # another key type
        "v=DKIM1; k=ed25519; p={p}; t=y",  # a tag we did not print
        "v=DKIM1; k=ed25519; k=ed25519; p={p}",  # RFC 6376 §3.2: a tag twice is no tag list
        "v=DKIM1; k=ed25519; p",  # a tag without a value
    ],
)
def test_only_the_keys_own_record_promotes_it(store: Store, text: str) -> None:
    write(store, lambda tx: service.ensure_keys(tx, DOMAIN, NOW))
    write(store, lambda tx: service.rotate(tx, DOMAIN, NOW, now_active=False))
    announced = [
        k for k in read(store, lambda tx: tx.dkim_keys.keys(DOMAIN)) if k.state == "announced"
    ]
    ed = announced[0]
    assert ed.algorithm == "ed25519"
    assert service.shows_key(service.key_record(ed), ed)
    lookup = StaticLookup({(service.record_name(ed), "TXT"): [text.format(p=ed.public)]})
    assert asyncio.run(service.promote(store, lookup, NOW + 60)) == []
    assert keys(store)[ed.selector] == "announced"


def test_a_dns_failure_is_not_a_record_seen(store: Store) -> None:
    write(store, lambda tx: service.ensure_keys(tx, DOMAIN, NOW))
    write(store, lambda tx: service.rotate(tx, DOMAIN, NOW, now_active=False))
    dns = published(store, NOW)
    failing = frozenset(name for name, _ in dns.records if "pr20261207e2" in name)
    lookup = StaticLookup(dns.records, failing=failing)
    announced = read(store, lambda tx: service.promotion_work(tx, NOW).announced)
    sighting = asyncio.run(service.seen_in_dns(lookup, announced))
    assert [k.selector for k in sighting.unanswered] == ["pr20261207e2"]
    assert [k.selector for k in sighting.seen] == ["pr20261207r2"]
    changes = asyncio.run(service.promote(store, lookup, NOW + 60))
    assert actions(changes) == [("retired", "pr20261207r"), ("activated", "pr20261207r2")]
    assert keys(store)["pr20261207e2"] == "announced"


def test_rotating_now_retires_at_once_and_a_first_rotation_is_active(store: Store) -> None:
    changes = write(store, lambda tx: service.rotate(tx, DOMAIN, NOW, now_active=False))
    assert actions(changes) == [("created", "pr20261207e"), ("created", "pr20261207r")]
    write(store, lambda tx: service.rotate(tx, DOMAIN, NOW + DAY, now_active=False))
    changes = write(store, lambda tx: service.rotate(tx, DOMAIN, NOW + DAY, now_active=True))
    assert actions(changes) == [
        ("dropped", "pr20261208e"),
        ("dropped", "pr20261208r"),
        ("retired", "pr20261207e"),
        ("created", "pr20261208e2"),
        ("retired", "pr20261207r"),
        ("created", "pr20261208r2"),
    ]
    assert [k.selector for k in read(store, lambda tx: service.signing_keys(tx, DOMAIN))] == [
        "pr20261208e2",
        "pr20261208r2",
    ]
    retired = [c.key for c in changes if c.action == "retired"]
    assert all(k.state == "retired" and k.state_changed == NOW + DAY for k in retired)


def test_an_announced_key_dropped_meanwhile_is_not_activated(store: Store) -> None:
    write(store, lambda tx: service.ensure_keys(tx, DOMAIN, NOW))
    write(store, lambda tx: service.rotate(tx, DOMAIN, NOW, now_active=False))
    seen_then: list[DkimKey] = read(
        store, lambda tx: [k for k in tx.dkim_keys.keys(DOMAIN) if k.state == "announced"]
    )
    write(store, lambda tx: service.rotate(tx, DOMAIN, NOW, now_active=False))

    def late(tx: Tx) -> list[KeyChange]:
        return service.apply_promotions(tx, seen_then, NOW + 60)

    assert write(store, late) == []
    assert sorted(keys(store).values()) == ["active", "active", "announced", "announced"]
