"""SRS, the Sender Rewriting Scheme: envelope senders for mail we forward, so SPF passes at the
next hop, and the way back for bounces to them (libsrs2 / postsrsd / Mox conventions).

`Srs(secret, domain).forward("alice@origin.example")` gives
`SRS0=HHHH=TT=origin.example=alice@OURDOMAIN`: TT is the day (days since the epoch mod 1024, two
base32 characters), HHHH the first four base32 characters of HMAC-SHA1(secret, lower-cased
TT + domain + local part). Forwarding an `SRS0=...@hop.example` address again gives
`SRS1=HHHH=hop.example==HHHH=TT=origin.example=alice@OURDOMAIN`, keeping the first hop's part
with a new hash over it; an SRS1 address is re-wrapped keeping its first-hop part, so a chain of
forwarders never grows the address. Addresses in our own domain and the empty reverse path are
left alone.

`reverse(...)` takes a bounce recipient in our domain back: SRS0 to the original address after
checking its hash (case-insensitively: MTAs on the way may change the case of a local part, and
the hash is over the lower-cased data) and its age; SRS1 to the SRS0 address at the first hop,
after checking our hash. Anything wrong raises `SrsError` with the reason; the caller answers
`550 5.1.1`. Quoted local parts are unquoted to rewrite them and quoted again where needed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

DAY = 86400
TIME_SLOTS = 1024  # the timestamp wraps after 1024 days (two base32 characters)
HASH_LENGTH = 4
FUTURE_GRACE_DAYS = 1  # a timestamp up to a day ahead is clock skew, not forgery
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648 §6
SEPARATORS = "=+-"  # what may follow SRS0/SRS1 (libsrs2 accepts all three; we write "=")
# RFC 5322 §3.2.3 atext (plus any non-ASCII character, RFC 6532 §3.2): what a dot-atom may hold.
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)


class SrsError(ValueError):
    """An address that is not a valid SRS address of ours; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_srs(local_part: str) -> bool:
    """Whether a local part is an SRS0 or SRS1 rewrite (any case, any separator)."""
    local = _unquote(local_part)
    return len(local) > 4 and local[:4].upper() in ("SRS0", "SRS1") and local[4] in SEPARATORS


class Srs:
    """Forward and reverse rewriting for one domain with one secret."""

    def __init__(
        self,
        secret: bytes,
        domain: str,
        *,
        max_age_days: int = 21,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("SRS needs a non-empty secret")
        if not 0 < max_age_days < TIME_SLOTS // 2:
            raise ValueError(f"max_age_days must be between 1 and {TIME_SLOTS // 2 - 1}")
        self._secret = secret
        self.domain = domain.strip().rstrip(".").lower()
        if not self.domain:
            raise ValueError("SRS needs a domain")
        self.max_age_days = max_age_days
        self._clock = clock

    def __repr__(self) -> str:
        return f"Srs(domain={self.domain!r}, max_age_days={self.max_age_days})"  # no secret

    # --- forward ---------------------------------------------------------------------------

    def forward(self, address: str) -> str:
        """The envelope sender to use when forwarding mail from `address`."""
        if not address:
            return address  # the null reverse path stays null (a bounce is never forwarded back)
        local, domain = _split(address)
        if domain.rstrip(".").lower() == self.domain:
            return address
        if is_srs(local):
            plain = _unquote(local)
            if plain[:4].upper() == "SRS0":
                # Re-forwarding a first hop's SRS0: keep it whole behind its host, new hash.
                return self._srs1(domain, plain[4:])
            parsed = _parse_srs1(plain)
            if parsed is not None:
                _, first_hop, remainder = parsed
                return self._srs1(first_hop, remainder)
        stamp = self._timestamp()
        digest = self._hash(stamp + domain + _unquote(local))
        return _join(f"SRS0={digest}={stamp}={domain}={_unquote(local)}", self.domain)

    def _srs1(self, first_hop: str, remainder: str) -> str:
        digest = self._hash(first_hop + remainder)
        return _join(f"SRS1={digest}={first_hop}={remainder}", self.domain)

    # --- reverse ---------------------------------------------------------------------------

    def reverse(self, address: str) -> str:
        """Where a bounce to `address` (one of our SRS addresses) goes; SrsError if it is not
        one of ours, its hash is wrong, or it is too old."""
        local, domain = _split(address)
        if domain.rstrip(".").lower() != self.domain:
            raise SrsError(f"not our SRS domain: {domain}")
        if not is_srs(local):
            raise SrsError("not an SRS address")
        plain = _unquote(local)
        if plain[:4].upper() == "SRS1":
            parsed = _parse_srs1(plain)
            if parsed is None:
                raise SrsError("malformed SRS1 address")
            digest, first_hop, remainder = parsed
            self._check_hash(digest, first_hop + remainder)
            return _join("SRS0" + remainder, first_hop)
        fields = plain[5:].split("=", 3)
        if len(fields) != 4 or not all(fields):
            raise SrsError("malformed SRS0 address")
        digest, stamp, orig_domain, orig_local = fields
        self._check_hash(digest, stamp + orig_domain + orig_local)
        self._check_age(stamp)
        return _join(orig_local, orig_domain)

    # --- parts -----------------------------------------------------------------------------

    def _hash(self, data: str) -> str:
        mac = hmac.new(self._secret, data.lower().encode("utf-8"), hashlib.sha1).digest()
        return base64.b32encode(mac)[:HASH_LENGTH].decode("ascii")

    def _check_hash(self, given: str, data: str) -> None:
        expected = self._hash(data).encode("ascii")
        if not hmac.compare_digest(given.upper().encode("utf-8"), expected):
            raise SrsError("bad SRS hash")

    def _today(self) -> int:
        return int(self._clock() // DAY)

    def _timestamp(self) -> str:
        day = self._today() % TIME_SLOTS
        return BASE32[day >> 5] + BASE32[day & 31]

    def _check_age(self, stamp: str) -> None:
        upper = stamp.upper()
        if len(upper) != 2 or upper[0] not in BASE32 or upper[1] not in BASE32:
            raise SrsError("malformed SRS timestamp")
        day = BASE32.index(upper[0]) << 5 | BASE32.index(upper[1])
        age = (self._today() - day) % TIME_SLOTS
        if age <= self.max_age_days or age >= TIME_SLOTS - FUTURE_GRACE_DAYS:
            return
        if age > TIME_SLOTS // 2:
            raise SrsError("SRS timestamp in the future")
        raise SrsError(f"SRS address expired ({age} days old)")


def _parse_srs1(local: str) -> tuple[str, str, str] | None:
    """(hash, first-hop domain, remainder) of an unquoted SRS1 local part; the remainder is
    the first hop's SRS0 local part after its "SRS0" (so it starts with a separator)."""
    fields = local[5:].split("=", 2)
    if len(fields) != 3 or not fields[0] or not fields[1] or len(fields[2]) < 2:
        return None
    if fields[2][0] not in SEPARATORS:
        return None
    return fields[0], fields[1], fields[2]


def _split(address: str) -> tuple[str, str]:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise SrsError(f"not an address: {address[:80]!r}")
    return local, domain


def _unquote(local: str) -> str:
    """RFC 5321 §4.1.2 Quoted-string → its content (backslash pairs resolved)."""
    if len(local) < 2 or local[0] != '"' or local[-1] != '"':
        return local
    out: list[str] = []
    escaped = False
    for c in local[1:-1]:
        if escaped:
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        else:
            out.append(c)
    return "".join(out)


def _is_dot_atom(local: str) -> bool:
    if not local or local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    return all(c in _ATEXT or c == "." or not c.isascii() for c in local)


def _join(local: str, domain: str) -> str:
    """local@domain, the local part quoted (RFC 5321 §4.1.2) when it is not a dot-atom."""
    if not _is_dot_atom(local):
        escaped = local.replace("\\", "\\\\").replace('"', '\\"')
        local = f'"{escaped}"'
    return f"{local}@{domain}"
