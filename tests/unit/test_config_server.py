"""The [server] table (config_server.py) and the production config `quickstart` renders."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from postroom.config import ConfigError, load_config
from postroom.config_server import ServerConfig
from postroom.config_template import render_default_config


def load(tmp_path: Path, text: str) -> ServerConfig:
    path = tmp_path / "postroom.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path).server


def test_server_user(tmp_path: Path) -> None:
    assert load(tmp_path, "") == ServerConfig(user=None)
    assert load(tmp_path, '[server]\nuser = "postroom"\n').user == "postroom"
    assert load(tmp_path, '[server]\nuser = "_mail-1"\n').user == "_mail-1"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[server]\nuser = "Bad User"', "must be a user name"),
        ("[server]\nuser = 1000", "must be a user name, got 1000"),
        ('[server]\nuser = "root"', "must not be root"),
        ('[server]\nuser = ""', "must be a user name"),
        ('[server]\ngroup = "mail"', "unknown key"),
        ('server = "postroom"', "must be a table"),
    ],
)
def test_server_errors_name_the_key(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "postroom.toml: server" in message and words in message, message
    assert "\n" not in message and "; " in message


def test_production_config_loads_back(tmp_path: Path) -> None:
    listen: dict[str, str | list[str]] = {
        "smtp": ["0.0.0.0:25", "[::]:25"],
        "submissions": ["0.0.0.0:465", "[::]:465"],
        "imaps": "0.0.0.0:993",
        "https": ["0.0.0.0:443", "[::]:443"],
    }
    text = render_default_config(
        "mx.example.org",
        ["example.org"],
        listen=listen,
        data_dir="/var/lib/postroom",
        acme_email="admin@example.org",
    )
    for line in text.splitlines():
        assert len(line) <= 100, line
    assert tomllib.loads(text)["acme"] == {"enabled": True, "email": "admin@example.org"}
    path = tmp_path / "postroom.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    written = {name: [str(e) for e in ends] for name, ends in config.listen.enabled().items()}
    assert written == {name: [a] if isinstance(a, str) else a for name, a in listen.items()}
    assert config.data_dir == Path("/var/lib/postroom")
    assert config.acme.enabled and config.acme.email == "admin@example.org"
    assert config.server.user is None


def test_default_config_leaves_acme_and_user_commented() -> None:
    doc = tomllib.loads(render_default_config("mx.example.org"))
    assert doc["acme"] == {} and doc["server"] == {}
