"""Configuration of the checks of arriving mail: the `[verify]` table.

Whether SPF, DKIM, ARC and DMARC are checked on `smtp` for clients that did not log in, what
each kind of failure costs (refused, filed in Junk, or only marked), the networks not
checked, the ARC sealers trusted and how many DKIM signatures are looked at. Read by
:mod:`postroom.config`, which owns the file and the error type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from postroom import config_checks as checks
from postroom.config_checks import IPNetwork
from postroom.config_common import Reader

VERIFY_ACTIONS = ("reject", "junk", "mark")


@dataclass(frozen=True)
class VerifyConfig:
    """Checks of mail arriving on `smtp` from clients that did not log in (SPF, DKIM, DMARC,
    ARC) and what their failures cost: refused (550 5.7.26), filed in Junk, or only marked in
    the Authentication-Results header. A temporary DNS failure always answers 451."""

    enabled: bool = True
    dmarc_reject: str = "reject"  # DMARC fail where the domain publishes p=reject
    dmarc_quarantine: str = "junk"  # DMARC fail where it publishes p=quarantine
    own_domains: str = "reject"  # From: one of our domains, and DMARC does not pass
    spf_fail: str = "junk"  # SPF fail where the From domain publishes no DMARC record
    trusted_networks: tuple[IPNetwork, ...] = ()  # clients not checked (loopback is not)
    arc_trusted: tuple[str, ...] = ()  # ARC sealers whose passing chain overrides DMARC fail
    max_signatures: int = 8  # DKIM signatures checked per message; more are ignored


VERIFY_KEYS = tuple(f.name for f in fields(VerifyConfig))


def read_verify(reader: Reader, doc: Mapping[str, Any]) -> VerifyConfig:
    raw = reader.table(doc, "verify", VERIFY_KEYS)
    defaults = VerifyConfig()
    values: dict[str, Any] = {}
    if "enabled" in raw:
        values["enabled"] = reader.check("verify.enabled", checks.boolean, raw["enabled"], True)
    for name in ("dmarc_reject", "dmarc_quarantine", "own_domains", "spf_fail"):
        if name in raw:
            values[name] = reader.check(f"verify.{name}", checks.choice, raw[name], VERIFY_ACTIONS)
    if "trusted_networks" in raw:
        values["trusted_networks"] = reader.check(
            "verify.trusted_networks", checks.networks, raw["trusted_networks"]
        )
    if "arc_trusted" in raw:
        values["arc_trusted"] = reader.check(
            "verify.arc_trusted", checks.domains, raw["arc_trusted"], True
        )
    if "max_signatures" in raw:
        values["max_signatures"] = reader.check(
            "verify.max_signatures",
            checks.positive_int,
            raw["max_signatures"],
            defaults.max_signatures,
        )
    return VerifyConfig(**values)
