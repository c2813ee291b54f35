"""SRS (mailauth/srs.py): the SRS0/SRS1 forms, reversal with hash and age checks, tampering,
expiry on an injected clock, and hypothesis round trips through case-changing MTAs."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.mailauth.srs import DAY, Srs, SrsError, is_srs

SECRET = b"correct horse battery staple"
DAY_19000 = 19000 * DAY + 3600.0  # 19000 % 1024 = 568 = 17 * 32 + 24 → "RY"


class Clock:
    def __init__(self, now: float = DAY_19000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def srs(domain: str = "fwd.example", clock: Clock | None = None, secret: bytes = SECRET) -> Srs:
    return Srs(secret, domain, clock=clock or Clock())


def test_forward_makes_srs0_with_day_stamp_and_hash() -> None:
    address = srs().forward("alice@origin.example")
    assert re.fullmatch(r"SRS0=[A-Z2-7]{4}=RY=origin\.example=alice@fwd\.example", address)
    assert srs().reverse(address) == "alice@origin.example"
    other_secret = srs(secret=b"another secret").forward("alice@origin.example")
    assert other_secret != address  # the hash depends on the secret


def test_own_domain_and_null_sender_are_not_rewritten() -> None:
    rewriter = srs()
    assert rewriter.forward("") == ""
    assert rewriter.forward("bob@FWD.example") == "bob@FWD.example"
    assert rewriter.forward("SRS0=abcd=RY=x.example=y@fwd.example") == (
        "SRS0=abcd=RY=x.example=y@fwd.example"
    )
    with pytest.raises(SrsError):
        rewriter.forward("no-at-sign")


def test_srs1_keeps_the_first_hop_through_a_chain_of_forwarders() -> None:
    clock = Clock()
    first, second, third = (
        srs(name, clock, secret=name.encode()) for name in ("a.example", "b.example", "c.example")
    )
    srs0 = first.forward("alice@origin.example")
    srs1 = second.forward(srs0)
    tail = srs0.split("@")[0][len("SRS0") :]
    assert re.fullmatch(r"SRS1=[A-Z2-7]{4}=a\.example=" + re.escape(tail) + "@b.example", srs1)
    assert srs1.count("==") == 1
    rewrapped = third.forward(srs1)
    assert re.fullmatch(r"SRS1=[A-Z2-7]{4}=a\.example=" + re.escape(tail) + "@c.example", rewrapped)
    # A bounce to the last forwarder goes straight back to the first hop, then home.
    assert third.reverse(rewrapped) == srs0
    assert second.reverse(srs1) == srs0
    assert first.reverse(srs0) == "alice@origin.example"
    with pytest.raises(SrsError, match="hash"):  # c's hash under b's secret
        second.reverse(rewrapped.replace("@c.example", "@b.example"))


def test_tampering_is_detected() -> None:
    rewriter = srs()
    address = rewriter.forward("alice@origin.example")
    local, domain = address.split("@")
    tag, digest, stamp, orig_domain, orig_local = local.split("=")
    flipped = ("B" if digest[0] != "B" else "C") + digest[1:]
    for forged in (
        f"{tag}={flipped}={stamp}={orig_domain}={orig_local}@{domain}",
        f"{tag}={digest}={stamp}=evil.example={orig_local}@{domain}",
        f"{tag}={digest}={stamp}={orig_domain}=mallory@{domain}",
        f"{tag}={digest}=RZ={orig_domain}={orig_local}@{domain}",
    ):
        with pytest.raises(SrsError, match="hash"):
            rewriter.reverse(forged)


def test_expiry_and_future_timestamps_on_an_injected_clock() -> None:
    clock = Clock()
    rewriter = srs(clock=clock)
    address = rewriter.forward("alice@origin.example")
    clock.now = DAY_19000 + 21 * DAY
    assert rewriter.reverse(address) == "alice@origin.example"
    clock.now = DAY_19000 + 22 * DAY
    with pytest.raises(SrsError, match="expired"):
        rewriter.reverse(address)
    clock.now = DAY_19000 - DAY  # made tomorrow: clock skew, accepted
    assert rewriter.reverse(address) == "alice@origin.example"
    clock.now = DAY_19000 - 3 * DAY
    with pytest.raises(SrsError, match="future"):
        rewriter.reverse(address)
    clock.now = DAY_19000 + 1024 * DAY  # the stamp wrapped around: still 1024 days too old
    assert rewriter.reverse(address) == "alice@origin.example"  # indistinguishable, as in libsrs2
    short = Srs(SECRET, "fwd.example", max_age_days=2, clock=clock)
    clock.now = DAY_19000
    fresh = short.forward("alice@origin.example")
    clock.now = DAY_19000 + 3 * DAY
    with pytest.raises(SrsError, match="expired"):
        short.reverse(fresh)


@pytest.mark.parametrize(
    "address",
    [
        "plain@fwd.example",
        "SRS0=abcd@fwd.example",
        "SRS0=abcd=RY=origin.example@fwd.example",
        "SRS0=abcd=RY=origin.example=@fwd.example",
        "SRS0==RY=origin.example=alice@fwd.example",
        "SRS1=abcd=a.example@fwd.example",
        "SRS1=abcd=a.example=x@fwd.example",
        "SRS0=abcd=RY=origin.example=alice@other.example",
        "@fwd.example",
        "SRS0=abcd=R!=origin.example=alice@fwd.example",
    ],
)
def test_malformed_or_foreign_addresses_are_refused(address: str) -> None:
    with pytest.raises(SrsError):
        srs().reverse(address)


def test_is_srs_and_repr() -> None:
    assert is_srs("SRS0=abcd=RY=x.example=y")
    assert is_srs("srs1+abcd=x.example==abcd=RY=y.example=z")
    assert is_srs('"SRS0=abcd=RY=x.example=y z"')
    assert not is_srs("SRS2=abcd")
    assert not is_srs("SRS0")
    assert not is_srs("alice")
    assert "staple" not in repr(srs())
    with pytest.raises(ValueError):
        Srs(b"", "fwd.example")


def test_quoted_local_parts_round_trip() -> None:
    rewriter = srs()
    original = '"john \\"the\\" doe"@origin.example'
    address = rewriter.forward(original)
    assert address.startswith('"SRS0=') and address.endswith('"@fwd.example')
    assert rewriter.reverse(address) == original


# --- hypothesis -------------------------------------------------------------------------------

ATOM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
atoms = st.text(alphabet=ATOM, min_size=1, max_size=12)
dot_atoms = st.lists(atoms, min_size=1, max_size=3).map(".".join)
quoted = st.text(alphabet=ATOM + ' ."\\@,;', min_size=1, max_size=20).map(
    lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
)
labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
domains = st.lists(labels, min_size=2, max_size=4).map(".".join)


def canonical(local: str) -> bool:
    """Quoted strings that hold a dot-atom come back unquoted (the same address)."""
    if not local.startswith('"'):
        return True
    inner = local[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return not (
        inner
        and all(c in ATOM or c == "." for c in inner)
        and ".." not in inner
        and not inner.startswith(".")
        and not inner.endswith(".")
    )


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(dot_atoms, quoted).filter(canonical),
    domains,
    st.binary(min_size=1, max_size=32),
    st.integers(min_value=0, max_value=50_000),
    st.integers(min_value=-1, max_value=21),
    st.sampled_from(["same", "lower", "upper", "swap"]),
)
def test_forward_then_reverse_round_trips(
    local: str, domain: str, secret: bytes, day: int, age: int, case: str
) -> None:
    clock = Clock(day * DAY + 60)
    rewriter = Srs(secret, "fwd.example", clock=clock)
    original = f"{local}@{domain}"
    address = rewriter.forward(original)
    assert address.endswith("@fwd.example")
    srs_local = address.rpartition("@")[0]
    assert is_srs(srs_local)
    changed = {
        "same": srs_local,
        "lower": srs_local.lower(),
        "upper": srs_local.upper(),
        "swap": srs_local.swapcase(),
    }[case]
    clock.now += age * DAY
    back = rewriter.reverse(f"{changed}@fwd.example")
    if case == "same":
        assert back == original
    else:
        assert back.lower() == original.lower()


@settings(max_examples=200, deadline=None)
@given(dot_atoms, domains, st.integers(min_value=0, max_value=3), st.sampled_from("ABCDEFGHIJ"))
def test_any_changed_hash_character_is_refused(
    local: str, domain: str, position: int, replacement: str
) -> None:
    rewriter = srs()
    address = rewriter.forward(f"{local}@{domain}")
    digest = address[5:9]
    if digest[position] == replacement:
        replacement = "K"
    forged = address[: 5 + position] + replacement + address[6 + position :]
    with pytest.raises(SrsError):
        rewriter.reverse(forged)
