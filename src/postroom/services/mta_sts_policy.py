"""The MTA-STS policy this server publishes for its local domains (RFC 8461 §3.2) and the id
of the `_mta-sts` TXT record that announces it (§3.1).

The policy names the host name as the only MX. Its mode is `enforce` once the certificate the
server presents is valid for the names a sender checks (the MX host name and the policy host),
`testing` before (a self-signed or otherwise unverifiable certificate): in testing, senders
report failures (TLS-RPT) but still deliver. `max_age` is a day in testing, so the switch to
enforce is picked up soon even by a sender that missed the id change, and a week in enforce
(RFC 8461 §3.2 allows up to a year; a week bounds how long a mistake lasts). The id is a
digest of the policy text, so it changes whenever the text does (§3.1: "id" changes with the
policy) and nothing has to be stored. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

ServedMode = Literal["enforce", "testing"]

TESTING_MAX_AGE = 86_400  # seconds: one day
ENFORCE_MAX_AGE = 604_800  # seconds: one week
ID_LENGTH = 20  # hex digits of the digest; RFC 8461 §3.1: sts-id is 1 to 32 letters/digits


@dataclass(frozen=True, slots=True)
class ServedPolicy:
    """The policy file of one domain, as served, and the id announcing it."""

    mode: ServedMode
    text: bytes

    @property
    def id(self) -> str:
        return hashlib.sha256(self.text).hexdigest()[:ID_LENGTH]

    @property
    def record(self) -> str:
        """The `_mta-sts.DOMAIN` TXT text (RFC 8461 §3.1)."""
        return f"v=STSv1; id={self.id}"


def policy_for(hostname: str, certificate_valid: bool) -> ServedPolicy:
    """The policy naming `hostname` as MX; enforce only when the certificate verifies."""
    mode: ServedMode = "enforce" if certificate_valid else "testing"
    max_age = ENFORCE_MAX_AGE if certificate_valid else TESTING_MAX_AGE
    lines = (
        "version: STSv1",  # RFC 8461 §3.2: the first field
        f"mode: {mode}",
        f"mx: {hostname.lower().rstrip('.')}",
        f"max_age: {max_age}",
    )
    # RFC 8461 §3.2: each field ends in CRLF.
    return ServedPolicy(mode, "".join(line + "\r\n" for line in lines).encode("utf-8"))


def policy_name(domain: str) -> str:
    """The host a sender fetches the domain's policy from (RFC 8461 §3.3)."""
    return f"mta-sts.{domain.lower()}"


def record_name(domain: str) -> str:
    """Where the policy's TXT record is published (RFC 8461 §3.1)."""
    return f"_mta-sts.{domain.lower()}"
