"""[listen] with IPv4 and IPv6: a key takes one "host:port" or a list of them; an IPv6 address
is written in brackets; the same IP and port twice, or a wildcard and another address of its
family on one port, is one line naming both keys. (That [::] takes IPv6 only is shown by
tests/integration/test_ipv6_listen.py, in a network namespace.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config import ConfigError, load_config
from postroom.config_checks import Endpoint
from postroom.config_listen import ListenConfig


def load(tmp_path: Path, text: str) -> ListenConfig:
    path = tmp_path / "postroom.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path).listen


def error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'postroom.toml'}: ")
    return info.value


def test_a_list_of_addresses_per_service(tmp_path: Path) -> None:
    listen = load(
        tmp_path,
        '[listen]\nsmtp = ["0.0.0.0:25", "[::]:25"]\nimaps = "[2001:db8::1]:993"\n'
        'https = ["127.0.0.1:443", "[::1]:443", "192.0.2.7:443"]\n',
    )
    assert listen.smtp == (Endpoint("0.0.0.0", 25), Endpoint("::", 25))
    assert listen.imaps == (Endpoint("2001:db8::1", 993),)
    assert [str(e) for e in listen.https] == ["127.0.0.1:443", "[::1]:443", "192.0.2.7:443"]
    assert list(listen.enabled()) == ["smtp", "imaps", "https"]
    first = listen.first("smtp")
    assert first is not None and first.port == 25
    assert listen.first("imap") is None and listen.imap == ()


def test_ipv4_and_ipv6_wildcards_share_a_port(tmp_path: Path) -> None:
    listen = load(tmp_path, '[listen]\nsmtp = "0.0.0.0:25"\nsubmission = "[::]:25"\n')
    assert listen.submission == (Endpoint("::", 25),)
    # A wildcard of one family does not cover the other's addresses.
    load(tmp_path, '[listen]\nsmtp = "[::]:25"\nsubmission = "127.0.0.1:25"\n')
    load(tmp_path, '[listen]\nsmtp = "0.0.0.0:25"\nsubmission = "[::1]:25"\n')


@pytest.mark.parametrize(
    ("text", "key", "needles"),
    [
        # The same IP and port twice: both keys named.
        (
            'smtp = ["0.0.0.0:25", "[::]:25"]\nsubmission = "[::]:25"',
            "listen.submission",
            ["[::]:25 is already used by listen.smtp", "its own port"],
        ),
        ('smtp = ["[::1]:25", "[0:0::1]:25"]', "listen.smtp", ["already used by listen.smtp"]),
        (
            'smtp = "127.0.0.1:2525"\nimap = ["[::1]:143", "127.0.0.1:2525"]',
            "listen.imap",
            ["127.0.0.1:2525 is already used by listen.smtp"],
        ),
        # A wildcard takes its port on every address of its family.
        (
            'smtp = "0.0.0.0:25"\nsubmission = "127.0.0.1:25"',
            "listen.submission",
            ["127.0.0.1:25 overlaps 0.0.0.0:25 of listen.smtp"],
        ),
        (
            'smtp = "[::1]:25"\nsubmission = "[::]:25"',
            "listen.submission",
            ["[::]:25 overlaps [::1]:25 of listen.smtp"],
        ),
        # IPv6 without brackets: the fix says how to write it.
        ('smtp = "::1:25"', "listen.smtp", ["'::1:25' is ambiguous", '"[::1]:25"']),
        ('smtp = ["0.0.0.0:25", "::25"]', "listen.smtp", ["entry 2", "brackets", '"[::]:25"']),
        ('smtp = "2001:db8::1:25"', "listen.smtp", ['"[2001:db8::1]:25"']),
        ('imap = "[::1]"', "listen.imap", ["not a valid [ipv6]:port", '"[::1]:2525"']),
        ('imap = "[::1:143"', "listen.imap", ["[ipv6]:port"]),
        ('imap = "[127.0.0.1]:143"', "listen.imap", ["not an IPv6 address"]),
        ('imap = "[::1]:70000"', "listen.imap", ["out of range"]),
        ("smtp = []", "listen.smtp", ["a list of them", '["0.0.0.0:2525", "[::]:2525"]']),
        ("smtp = 25", "listen.smtp", ['"host:port" string or a list', '"127.0.0.1:2525"']),
        ('http = ["127.0.0.1:80", 80]', "listen.http", ["entry 2", "must be"]),
    ],
)
def test_bad_listen_values(tmp_path: Path, text: str, key: str, needles: list[str]) -> None:
    err = error(tmp_path, f"[listen]\n{text}\n")
    assert err.key == key, str(err)
    for needle in needles:
        assert needle in str(err), str(err)


def test_port_zero_repeats_freely(tmp_path: Path) -> None:
    listen = load(tmp_path, '[listen]\nsmtp = ["127.0.0.1:0", "[::1]:0"]\nimap = "127.0.0.1:0"\n')
    assert len(listen.smtp) == 2 and listen.imap == (Endpoint("127.0.0.1", 0),)
