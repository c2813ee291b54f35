"""The [[milter]] tables: addresses in Postfix's forms, defaults, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config import ConfigError, load_config
from postroom.config_milter import MilterConfig


def load(tmp_path: Path, text: str) -> tuple[MilterConfig, ...]:
    path = tmp_path / "postroom.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path).milters


def test_none_by_default(tmp_path: Path) -> None:
    assert load(tmp_path, "") == ()


def test_forms_and_defaults(tmp_path: Path) -> None:
    milters = load(
        tmp_path,
        '[[milter]]\naddress = "inet:127.0.0.1:11332"\n'
        '[[milter]]\naddress = "inet:[::1]:8891"\non_error = "accept"\n'
        'services = ["smtp", "submission"]\ncommand_timeout = "5s"\n'
        '[[milter]]\naddress = "inet:8893@localhost"\n'
        '[[milter]]\naddress = "unix:run/m.sock"\ncontent_timeout = 60\n',
    )
    first, second, third, fourth = milters
    assert (first.host, first.port, first.on_error, first.services) == (
        "127.0.0.1",
        11332,
        "tempfail",
        ("smtp",),
    )
    assert (first.connect_timeout, first.command_timeout, first.content_timeout) == (30, 30, 300)
    assert (second.host, second.port, second.on_error) == ("::1", 8891, "accept")
    assert second.services == ("smtp", "submission") and second.command_timeout == 5
    assert (third.host, third.port) == ("localhost", 8893)
    assert fourth.path == tmp_path / "run" / "m.sock" and fourth.content_timeout == 60


@pytest.mark.parametrize(
    ("text", "key", "needle"),
    [
        ('[[milter]]\non_error = "accept"\n', "milter[0].address", "missing"),
        ('[[milter]]\naddress = "127.0.0.1:11332"\n', "milter[0].address", "inet:"),
        ('[[milter]]\naddress = "tcp:1.2.3.4:5"\n', "milter[0].address", "socket type"),
        ('[[milter]]\naddress = "inet:1.2.3.4:0"\n', "milter[0].address", "port"),
        ('[[milter]]\naddress = "inet:[::1:11332"\n', "milter[0].address", "unclosed"),
        ('[[milter]]\naddress = "inet:h:1"\non_error = "drop"\n', "milter[0].on_error", "accept"),
        ('[[milter]]\naddress = "inet:h:1"\nservices = ["imap"]\n', "milter[0].services", "imap"),
        ('[[milter]]\naddress = "inet:h:1"\ntimeout = 3\n', "milter[0].timeout", "did you mean"),
        (
            '[[milter]]\naddress = "inet:h:1"\ncommand_timeout = 0\n',
            "milter[0].command_timeout",
            "",
        ),
        ('milter = "inet:h:1"\n', "milter", "[[milter]]"),
    ],
)
def test_bad_values_name_key_and_fix(tmp_path: Path, text: str, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert f": {key}: " in message and needle in message and "\n" not in message
