"""Config keys for outbound delivery: [queue] retry schedule, [dns] nameservers, [delivery]."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config import Config, ConfigError, load_config


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "postroom.toml"
    path.write_text(text)
    return load_config(path)


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.queue.retry == (900.0, 1800.0, 3600.0, 7200.0, 14400.0)
    assert config.queue.warn_after == 4 * 3600
    assert config.queue.give_up_after == 5 * 86400
    assert config.dns.nameservers == ()
    assert (config.delivery.port, config.delivery.concurrency) == (25, 10)


def test_values_in_seconds_for_tests(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[queue]\nretry = ["1s", 2]\nwarn_after = "3s"\ngive_up_after = "1m"\n'
        '[dns]\nnameservers = ["127.0.0.1:5353", "[::1]:53", "192.0.2.1"]\n'
        "[delivery]\nport = 2526\nconcurrency = 3\n",
    )
    assert config.queue.retry == (1.0, 2.0)
    assert (config.queue.warn_after, config.queue.give_up_after) == (3.0, 60.0)
    assert config.dns.nameservers == ("127.0.0.1:5353", "[::1]:53", "192.0.2.1:53")
    assert (config.delivery.port, config.delivery.concurrency) == (2526, 3)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[queue]\nretry = []\n", "queue.retry"),
        ('[queue]\nretry = ["soon"]\n', "queue.retry"),
        ('[queue]\nwarn_after = "-1s"\n', "queue.warn_after"),
        ('[dns]\nnameservers = "127.0.0.1"\n', "dns.nameservers"),
        ('[dns]\nnameservers = ["dns.example:53"]\n', "dns.nameservers"),
        ("[delivery]\nport = 70000\n", "delivery.port"),
        ("[delivery]\nconcurrency = 0\n", "delivery.concurrency"),
        ("[delivery]\nprot = 25\n", "delivery.prot"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, text)
    message = str(error.value)
    assert f"postroom.toml: {key}:" in message
    assert "\n" not in message
