"""The [verify] and [dkim] tables: defaults, values, and one-line errors naming key and fix."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from postroom.config import ConfigError, load_config
from postroom.config_verify import VerifyConfig


def load(tmp_path: Path, text: str) -> VerifyConfig:
    path = tmp_path / "postroom.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path).verify


def test_defaults_check_everyone_and_reject_what_dmarc_says_to(tmp_path: Path) -> None:
    verify = load(tmp_path, "")
    assert verify.enabled and verify.dmarc_reject == "reject" and verify.own_domains == "reject"
    assert verify.dmarc_quarantine == "junk" and verify.spf_fail == "junk"
    assert verify.trusted_networks == () and verify.arc_trusted == ()
    path = tmp_path / "postroom.toml"
    assert load_config(path).dkim.sign


def test_values_are_read(tmp_path: Path) -> None:
    verify = load(
        tmp_path,
        '[verify]\nenabled = false\ndmarc_reject = "junk"\nspf_fail = "mark"\n'
        'trusted_networks = ["192.0.2.0/24", "2001:db8::1"]\narc_trusted = ["Fwd.Example"]\n'
        "max_signatures = 3\n[dkim]\nsign = false\n",
    )
    assert not verify.enabled and verify.dmarc_reject == "junk" and verify.spf_fail == "mark"
    assert verify.trusted_networks == (
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("2001:db8::1/128"),
    )
    assert verify.arc_trusted == ("fwd.example",) and verify.max_signatures == 3
    assert not load_config(tmp_path / "postroom.toml").dkim.sign


@pytest.mark.parametrize(
    ("text", "key", "needle"),
    [
        ('[verify]\ndmarc_reject = "drop"\n', "verify.dmarc_reject", "reject, junk, mark"),
        ('[verify]\ntrusted_networks = ["10.0.0.0/33"]\n', "verify.trusted_networks", "entry 1"),
        ('[verify]\ntrusted_networks = "10.0.0.0/8"\n', "verify.trusted_networks", "array"),
        ('[verify]\narc_trusted = ["not a domain"]\n', "verify.arc_trusted", "entry 1"),
        ("[verify]\nmax_signatures = 0\n", "verify.max_signatures", ""),
        ("[verify]\nspf = 1\n", "verify.spf", ""),
        ('[dkim]\nsign = "yes"\n', "dkim.sign", ""),
    ],
)
def test_bad_values_are_one_line_naming_key_and_fix(
    tmp_path: Path, text: str, key: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message and f": {key}" in message and needle in message, message
    assert info.value.fix
