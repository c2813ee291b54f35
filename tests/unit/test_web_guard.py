"""The request guard's pure parts: Host header parsing and the names a server answers for;
and the [web]/[acme] config tables' validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.config import ConfigError, load_config
from postroom.web.guard import MAX_HOST_LENGTH, host_name, served_names


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (b"mx.example.test", "mx.example.test"),
        (b"MX.Example.Test.:443", "mx.example.test"),
        (b"[::1]:8443", "::1"),
        (b"[2001:db8::1]", "2001:db8::1"),
        (b"127.0.0.1:80", "127.0.0.1"),
        (b"", None),
        (b"host:port", None),
        (b"host:123456", None),
        (b"[::1", None),
        (b"[not-ip]:80", None),
        (b"[::1]x", None),
        ("h\u00e9st".encode(), None),
        (b"a" * (MAX_HOST_LENGTH + 1), None),
    ],
)
def test_host_name(value: bytes, name: str | None) -> None:
    assert host_name(value) == name


@given(st.binary(max_size=400))
def test_host_name_never_raises(value: bytes) -> None:
    result = host_name(value)
    if result is not None:  # what comes out is a lower-case name or address, nothing around it
        assert result == result.lower() and len(result) <= MAX_HOST_LENGTH
        assert not set(result) & set("[]/ \r\n")


def test_served_names() -> None:
    names = served_names("MX.example.org", ["Example.org", "b.test"])
    assert {"mx.example.org", "localhost", "example.org", "mta-sts.example.org"} <= names
    assert {"autoconfig.b.test", "autodiscover.b.test"} <= names
    assert "evil.test" not in names


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "postroom.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_web_and_acme_tables(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[web]\nmetrics_allow = ["10.0.0.0/8"]\nmax_body = 2048\n'
            '[acme]\nenabled = true\ndirectory = "https://localhost:14000/dir"\n'
            'email = "admin@example.org"\nca_file = "pebble.pem"\n',
        )
    )
    assert str(config.web.metrics_allow[0]) == "10.0.0.0/8"
    assert config.web.max_body == 2048
    assert config.acme.enabled
    assert config.acme.ca_file == tmp_path / "pebble.pem"
    assert config.acme.challenge == "http-01"
    http = config.listen.first("http")
    assert http is not None and http.port == 8080


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[acme]\ndirectory = "http://ca.test/dir"\n', "acme.directory"),
        ('[acme]\nemail = "not an address"\n', "acme.email"),
        ('[acme]\nchallenge = "dns-01"\n', "acme.challenge"),
        ("[web]\nmax_body = 999999999999\n", "web.max_body"),
        ('[web]\nmetrics_allow = ["nonsense"]\n', "web.metrics_allow"),
        ("[web]\nmetric_allow = []\n", "web.metric_allow"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert f": {key}:" in str(error.value)


def test_acme_challenge_tls_alpn_01_and_a_wrong_one(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[acme]\nchallenge = "tls-alpn-01"\n'))
    assert config.acme.challenge == "tls-alpn-01"
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "[acme]\nchallenge = 1\n"))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'postroom.toml'}: acme.challenge: ")
    assert "must be one of http-01, tls-alpn-01, got 1" in message
    assert '"tls-alpn-01" (port 443)' in message
