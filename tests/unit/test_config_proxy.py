"""[listen] proxy_protocol and proxy_trusted: off by default; the listeners named must be mail
listeners that are started, the trusted list must be networks and cannot be empty while a
listener takes the header; every error is one line naming the file, the key and the fix."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from postroom.config import Config, ConfigError, load_config
from postroom.config_listen import ProxyConfig


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "postroom.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


LISTEN = '[listen]\nsmtp = "127.0.0.1:2525"\nimaps = "127.0.0.1:1993"\n'


def test_off_by_default(tmp_path: Path) -> None:
    assert load(tmp_path, "").proxy == ProxyConfig()
    assert load(tmp_path, LISTEN).proxy == ProxyConfig()


def test_listeners_and_networks(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        LISTEN + 'proxy_protocol = ["smtp", "imaps", "smtp"]\n'
        'proxy_trusted = ["127.0.0.66", "10.0.0.0/8", "::1/128"]\n',
    )
    assert config.proxy.protocol == ("smtp", "imaps")
    assert config.proxy.trusted == (
        ipaddress.ip_network("127.0.0.66/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert set(config.listen.enabled()) == {"smtp", "imaps"}


@pytest.mark.parametrize(
    ("text", "key", "needles"),
    [
        (
            'proxy_protocol = ["smtp"]\n',
            "listen.proxy_trusted",
            ["empty while listen.proxy_protocol names smtp", '["127.0.0.66", "10.0.0.0/8"]'],
        ),
        (
            'proxy_protocol = ["smtp"]\nproxy_trusted = []\n',
            "listen.proxy_trusted",
            ["missing or empty"],
        ),
        (
            'proxy_protocol = ["smtpd"]\nproxy_trusted = ["10.0.0.1"]\n',
            "listen.proxy_protocol",
            [
                "entry 1: 'smtpd' is not a listener",
                "use one of smtp, submission, submissions, imap, imaps, pop3, pop3s, "
                "managesieve, http, https",
            ],
        ),
        (
            'proxy_protocol = ["imaps", "pop3"]\nproxy_trusted = ["10.0.0.1"]\n',
            "listen.proxy_protocol",
            ["entry 2: listen.pop3 is not set", 'set listen.pop3 or remove "pop3" from the list'],
        ),
        (
            'proxy_protocol = ["https"]\nproxy_trusted = ["10.0.0.1"]\n',
            "listen.proxy_protocol",
            ["entry 1: listen.https is not set"],
        ),
        (
            'proxy_protocol = "smtp"\nproxy_trusted = ["10.0.0.1"]\n',
            "listen.proxy_protocol",
            ["must be an array of listener names", '["smtp", "imaps"]'],
        ),
        (
            'proxy_protocol = [25]\nproxy_trusted = ["10.0.0.1"]\n',
            "listen.proxy_protocol",
            ["entry 1: 25 is not a listener"],
        ),
        (
            'proxy_protocol = ["smtp"]\nproxy_trusted = ["10.0.0.300"]\n',
            "listen.proxy_trusted",
            ["entry 1", "is not an IP network", '["192.0.2.0/24", "2001:db8::1"]'],
        ),
        (
            'proxy_protocol = ["smtp"]\nproxy_trusted = "10.0.0.1"\n',
            "listen.proxy_trusted",
            ["must be an array"],
        ),
        (
            'proxy_protcol = ["smtp"]\n',
            "listen.proxy_protcol",
            ["did you mean listen.proxy_protocol"],
        ),
    ],
)
def test_bad_values(tmp_path: Path, text: str, key: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, LISTEN + text)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'postroom.toml'}: ")
    assert info.value.key == key, message
    for needle in needles:
        assert needle in message, message
