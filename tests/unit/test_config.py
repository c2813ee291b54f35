"""Tests for postroom.config (TOML → validated dataclasses) and postroom.durations."""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

try:
    import postroom  # noqa: F401
except ImportError:  # package not installed into the venv: use the src/ layout directly
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import postroom.config as config_module
from postroom.config import Config, ConfigError, Endpoint, default_config, load_config
from postroom.config_limits import LimitsConfig
from postroom.config_listen import DEFAULT_LISTEN, ListenConfig, TlsConfig
from postroom.config_queue import QueueConfig
from postroom.config_template import render_default_config
from postroom.durations import format_duration, parse_duration


def write(tmp_path: Path, text: str, name: str = "postroom.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def assert_one_line(err: ConfigError, key: str | None, *needles: str) -> str:
    message = str(err)
    assert "\n" not in message and "\r" not in message
    assert "postroom.toml" in message
    if key is not None:
        assert f": {key}: " in message
        assert err.key == key
    # "path: key: problem; fix" — a fix always follows the semicolon.
    assert "; " in message and message.rsplit("; ", 1)[1].strip()
    assert err.fix
    for needle in needles:
        assert needle in message, message
    return message


# --------------------------------------------------------------------------- defaults


def test_rendered_default_loads_back(tmp_path: Path) -> None:
    text = render_default_config()
    config = load_config(write(tmp_path, text))
    default = default_config(config.path)
    # `postroom init` writes what an empty file means: this machine's FQDN, domain localhost.
    assert config.hostname == default.hostname
    assert config.domains == default.domains == ("localhost",)
    assert config.listen == default.listen
    assert config.tls == default.tls == TlsConfig(None, None)
    assert config.limits == default.limits == LimitsConfig()
    assert config.queue == default.queue == QueueConfig()
    assert config.data_dir == default.data_dir == tmp_path / "postroom-data"


def test_rendered_default_custom_names(tmp_path: Path) -> None:
    text = render_default_config("MX.Example.COM", ["example.com", "Example.org"])
    config = load_config(write(tmp_path, text))
    assert config.hostname == "mx.example.com"
    assert config.domains == ("example.com", "example.org")


def test_rendered_default_is_commented() -> None:
    text = render_default_config()
    doc = tomllib.loads(text)
    for line in text.splitlines():
        stripped = line.strip()
        if "=" in stripped and not stripped.startswith("#"):
            assert "  # " in line, f"key without a comment: {line!r}"
        assert len(line) <= 100
    assert set(doc["listen"]) == {f.name for f in dataclasses.fields(ListenConfig)}
    assert '# cert = "' in text and '# key = "' in text
    assert set(doc["limits"]) == {f.name for f in dataclasses.fields(LimitsConfig)}
    assert set(doc["queue"]) == {f.name for f in dataclasses.fields(QueueConfig)}


def test_rendered_storage_lines_load_when_uncommented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The commented [storage] example is a working PostgreSQL configuration once uncommented.
    monkeypatch.setenv("POSTROOM_DB_PASSWORD", "secret")
    text = render_default_config()
    assert load_config(write(tmp_path, text)).storage.backend == "sqlite"
    for key in ("backend", "dsn"):
        text = text.replace(f"# {key} = ", f"{key} = ", 1)
    storage = load_config(write(tmp_path, text)).storage
    assert storage.backend == "postgresql"
    assert storage.dsn == "postgresql://postroom@db.example.net:5432/postroom"
    assert storage.password == "secret"


def test_render_rejects_bad_names() -> None:
    with pytest.raises(ValueError):
        render_default_config("bad host")
    with pytest.raises(ValueError):
        render_default_config(domains=["ok.test", "under_score.test"])


def test_empty_file_equals_default_config(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = load_config(path)
    assert config == default_config(path)
    assert config.path == path and config.path.is_absolute()
    assert config.domains == ("localhost",)
    assert config.hostname
    assert config.listen == ListenConfig(
        smtp=(Endpoint("127.0.0.1", 2525),),
        submission=(Endpoint("127.0.0.1", 2587),),
        submissions=(Endpoint("127.0.0.1", 2465),),
        imap=(Endpoint("127.0.0.1", 1143),),
        imaps=(Endpoint("127.0.0.1", 1993),),
        pop3=(Endpoint("127.0.0.1", 1110),),
        pop3s=(Endpoint("127.0.0.1", 1995),),
        managesieve=(Endpoint("127.0.0.1", 14190),),
        http=(Endpoint("127.0.0.1", 8080),),
        https=(Endpoint("127.0.0.1", 8443),),
    )
    assert {k: str(v) for k, (v,) in config.listen.enabled().items()} == DEFAULT_LISTEN


def test_config_is_frozen(tmp_path: Path) -> None:
    config = default_config(tmp_path / "postroom.toml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hostname = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.limits.message_size = 1  # type: ignore[misc]
    assert isinstance(config, Config)


# --------------------------------------------------------------------------- values


def test_full_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        hostname = "Mail.Example.COM."
        data_dir = "/var/lib/postroom"
        domains = ["Example.COM", "example.org", "example.com", "bücher.example"]

        [listen]
        smtp = "0.0.0.0:25"
        imaps = "[::]:993"

        [tls]
        cert = "certs/chain.pem"
        key = "/etc/ssl/private/key.pem"

        [limits]
        message_size = 1000
        line_length = 512
        command_timeout = "1h30m"
        data_timeout = 90
        received_headers = 10
        imap_timeout = "45m"

        [queue]
        group_commit_ms = 0.5
        group_commit_max = 1
        """,
    )
    config = load_config(path)
    assert config.hostname == "mail.example.com"
    assert config.data_dir == Path("/var/lib/postroom")
    assert config.domains == ("example.com", "example.org", "xn--bcher-kva.example")
    assert config.listen.smtp == (Endpoint("0.0.0.0", 25),)
    assert config.listen.imaps == (Endpoint("::", 993),)
    assert config.listen.submission == ()  # [listen] present: only what it names
    assert config.listen.first("submission") is None
    assert config.tls.cert == tmp_path / "certs" / "chain.pem"
    assert config.tls.key == Path("/etc/ssl/private/key.pem")
    assert config.limits.message_size == 1000
    assert config.limits.command_timeout == 5400.0
    assert config.limits.data_timeout == 90.0
    assert config.limits.imap_timeout == 2700.0
    assert config.limits.recipients == LimitsConfig().recipients
    assert config.queue == QueueConfig(group_commit_ms=0.5, group_commit_max=1)


def test_empty_listen_table_starts_nothing(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[listen]\n"))
    assert config.listen == ListenConfig()
    assert config.listen.enabled() == {}


@pytest.mark.parametrize(
    ("data_dir", "expected"),
    [
        ("./postroom-data", "conf/postroom-data"),
        ("data", "conf/data"),
        ("../shared/data", "shared/data"),
    ],
)
def test_relative_data_dir_resolves_against_config_dir(
    tmp_path: Path, data_dir: str, expected: str
) -> None:
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", f'data_dir = "{data_dir}"\n')
    config = load_config(path)
    assert config.data_dir == tmp_path / expected
    assert config.data_dir.is_absolute()


def test_relative_config_path_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, 'data_dir = "d"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("postroom.toml"))
    assert config.path == tmp_path / "postroom.toml"
    assert config.data_dir == tmp_path / "d"
    assert default_config(Path("postroom.toml")).data_dir == tmp_path / "postroom-data"


def test_relative_path_in_error_is_shown_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "[limits]\nrecipients = 0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(Path("postroom.toml"))
    assert str(info.value).startswith("postroom.toml: limits.recipients: ")


# --------------------------------------------------------------------------- endpoints


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1:2525", "127.0.0.1", 2525, "127.0.0.1:2525"),
        ("localhost:0", "localhost", 0, "localhost:0"),
        ("mx.example.com:25", "mx.example.com", 25, "mx.example.com:25"),
        ("[::1]:2525", "::1", 2525, "[::1]:2525"),
        ("[::]:65535", "::", 65535, "[::]:65535"),
        ("[2001:db8::1]:587", "2001:db8::1", 587, "[2001:db8::1]:587"),
    ],
)
def test_endpoint_parse(text: str, host: str, port: int, shown: str) -> None:
    endpoint = Endpoint.parse(text)
    assert endpoint == Endpoint(host, port)
    assert str(endpoint) == shown
    assert Endpoint.parse(str(endpoint)) == endpoint


@pytest.mark.parametrize(
    "text", ["2525", ":2525", "::1:2525", "[::1]", "[::1]2525", "[nothost]:25", "host:x", "h:-1"]
)
def test_endpoint_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Endpoint.parse(text)


def test_ipv6_endpoint_in_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[listen]\nsmtp = "[::1]:2525"\n'))
    assert config.listen.smtp == (Endpoint("::1", 2525),)
    assert str(config.listen.first("smtp")) == "[::1]:2525"


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "postroom.toml")
    assert_one_line(info.value, None, "not found", "postroom init")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "postroom.toml").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "postroom.toml")
    assert_one_line(info.value, None, "directory")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "")

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(config_module, "open", denied, raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_one_line(info.value, None, "permission denied", "readable")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "postroom.toml"
    path.write_bytes(b'hostname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_one_line(info.value, None, "UTF-8")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('hostname = "a"\ndata_dir = unquoted\n', "line 2"),
        ("[limits\nrecipients = 1\n", "line 1"),
        ("recipients = 1\nrecipients = 2\n", "line 2"),
    ],
)
def test_toml_syntax_error_names_line(tmp_path: Path, text: str, where: str) -> None:
    err = load_error(tmp_path, text)
    message = assert_one_line(err, None, "TOML syntax error", where, "double quotes")
    assert message.startswith(f"{tmp_path / 'postroom.toml'}: {where}")


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ("[limits]\nmesage_size = 1\n", "limits.mesage_size", "did you mean limits.message_size?"),
        ("hostnme = 'x'\n", "hostnme", "did you mean hostname?"),
        ('"" = 1\n', '""', "remove it or use one of the keys"),
        ("[limit]\nrecipients = 1\n", "limit", "did you mean limits?"),
        ("[listen]\nsubmision = '127.0.0.1:1'\n", "listen.submision", "listen.submission"),
        ("[queue]\ngroup_commit = 1\n", "queue.group_commit", "queue.group_commit_m"),
        ("[tls]\ncertificate = 'x'\n", "tls.certificate", "did you mean tls.cert?"),
    ],
)
def test_unknown_key_suggests_closest(tmp_path: Path, text: str, key: str, suggestion: str) -> None:
    err = load_error(tmp_path, text)
    assert_one_line(err, key, "unknown key", suggestion)


def test_unknown_key_without_close_match_lists_keys(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[queue]\nzzz = 1\n")
    assert_one_line(
        err, "queue.zzz", "unknown key", "allowed in [queue]: group_commit_ms, group_commit_max"
    )


def test_nested_table_in_section_is_unknown(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[limits.extra]\nx = 1\n")
    assert_one_line(err, "limits.extra", "unknown key")


BAD_VALUES = [
    # (TOML text, dotted key, words the message must contain)
    ('[limits]\nmessage_size = "big"\n', "limits.message_size", ["got 'big'", "byte count"]),
    ("[limits]\nmessage_size = 0\n", "limits.message_size", ["positive integer"]),
    ("[limits]\nmessage_size = 1.5\n", "limits.message_size", ["positive integer"]),
    ("[limits]\nrecipients = true\n", "limits.recipients", ["got true", "whole number"]),
    ("[limits]\nrecipients = -3\n", "limits.recipients", ["positive integer", "1000"]),
    ("[limits]\nline_length = 100\n", "limits.line_length", ["at least 512"]),
    ("[limits]\nconnections = [1]\n", "limits.connections", ["got an array"]),
    ('[limits]\ncommand_timeout = "soon"\n', "limits.command_timeout", ["duration", '"5m"']),
    ("[limits]\ncommand_timeout = 0\n", "limits.command_timeout", ["longer than zero"]),
    ('[limits]\ndata_timeout = "-5m"\n', "limits.data_timeout", ["duration"]),
    ("[limits]\ndata_timeout = inf\n", "limits.data_timeout", ["duration"]),
    ("[limits]\ndata_timeout = {a = 1}\n", "limits.data_timeout", ["got a table"]),
    ("[limits]\nimap_timeout = 0\n", "limits.imap_timeout", ["longer than zero", '"30m"']),
    ('[limits]\nimap_timeout = "later"\n', "limits.imap_timeout", ["duration"]),
    ('[queue]\ngroup_commit_ms = "2ms"\n', "queue.group_commit_ms", ["milliseconds"]),
    ("[queue]\ngroup_commit_ms = -1\n", "queue.group_commit_ms", ["out of range"]),
    ("[queue]\ngroup_commit_ms = 5000\n", "queue.group_commit_ms", ["out of range"]),
    ("[queue]\ngroup_commit_max = 0\n", "queue.group_commit_max", ["positive integer"]),
    ("hostname = 5\n", "hostname", ["must be a string"]),
    ('hostname = "bad host"\n', "hostname", ["not a valid domain", "mx.example.com"]),
    ('hostname = ""\n', "hostname", ["not a valid domain"]),
    ('domains = "example.com"\n', "domains", ["array", '["example.com"']),
    ("domains = []\n", "domains", ["at least one"]),
    ('domains = ["ok.test", "-bad-.test"]\n', "domains", ["entry 2", "'-bad-.test'"]),
    ('domains = ["a..b"]\n', "domains", ["entry 1"]),
    ("data_dir = 3\n", "data_dir", ["must be a string"]),
    ('data_dir = ""\n', "data_dir", ["must not be empty"]),
    ("listen = 5\n", "listen", ["must be a table", "[listen]"]),
    ("limits = []\n", "limits", ["must be a table", "[limits]"]),
    ("[listen]\nsmtp = 25\n", "listen.smtp", ['"host:port"', "127.0.0.1:2525"]),
    ('[listen]\nsmtp = "127.0.0.1:70000"\n', "listen.smtp", ["out of range", "0 to 65535"]),
    ('[listen]\nsmtp = "127.0.0.1"\n', "listen.smtp", ["host:port"]),
    ('[listen]\nsmtp = "::1:25"\n', "listen.smtp", ["brackets"]),
    ('[listen]\nimap = "[::1:143"\n', "listen.imap", ["[ipv6]:port"]),
    (
        '[listen]\nsmtp = "127.0.0.1:2525"\nsubmission = "127.0.0.1:2525"\n',
        "listen.submission",
        ["already used by listen.smtp"],
    ),
    ('[tls]\ncert = "c.pem"\n', "tls.key", ["missing", "both", "neither"]),
    ('[tls]\nkey = "k.pem"\n', "tls.cert", ["missing"]),
    ("[tls]\ncert = 1\nkey = 'k'\n", "tls.cert", ["must be a string"]),
]


@pytest.mark.parametrize(("text", "key", "needles"), BAD_VALUES)
def test_bad_value_is_one_clear_line(
    tmp_path: Path, text: str, key: str, needles: list[str]
) -> None:
    err = load_error(tmp_path, text)
    message = assert_one_line(err, key, *needles)
    assert message.startswith(f"{tmp_path / 'postroom.toml'}: {key}: ")


def test_error_message_format_example() -> None:
    err = ConfigError(
        "postroom.toml",
        "limits.message_size",
        "must be a positive integer, got 'big'",
        "write a byte count such as 52428800",
    )
    assert str(err) == (
        "postroom.toml: limits.message_size: must be a positive integer, got 'big'; "
        "write a byte count such as 52428800"
    )


def test_long_multiline_values_stay_on_one_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[limits]\nmessage_size = """a\nb\nc"""\n')
    assert_one_line(err, "limits.message_size")


def test_port_zero_allowed_and_not_a_duplicate(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[listen]\nsmtp = "127.0.0.1:0"\nimap = "127.0.0.1:0"\n'))
    assert config.listen.smtp == config.listen.imap == (Endpoint("127.0.0.1", 0),)


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        ("0", 0.0),
        ("300", 300.0),
        ("2.5", 2.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("5d", 432000.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("250ms", 0.25),
        ("1s500ms", 1.5),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("  10M ", 600.0),
        ("1h 30m", 5400.0),
        ("100ms", 0.1),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "  ", "abc", "5x", "m5", "-5s", "1h-30m", "30m1h", "1m1m", "1ms1s", "5 minutes"],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    message = str(info.value)
    assert '"1h30m"' in message and '"250ms"' in message  # says what is accepted


@pytest.mark.parametrize("value", [-1, -0.5, float("inf"), float("nan")])
def test_parse_duration_rejects_numbers(value: float) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, None, [1]])
def test_parse_duration_rejects_types(value: object) -> None:
    with pytest.raises(TypeError):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (60, "1m"),
        (300.0, "5m"),
        (5400, "1h30m"),
        (86400, "1d"),
        (93784, "1d2h3m4s"),
        (0.25, "250ms"),
        (1.5, "1s500ms"),
        (3600.0004, "1h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_duration_rejects_negative() -> None:
    with pytest.raises(ValueError):
        format_duration(-1)


@given(st.integers(min_value=0, max_value=10**12))
def test_duration_round_trip_ms(milliseconds: int) -> None:
    seconds = milliseconds / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-9)


def test_auth_plaintext_is_a_boolean(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).auth.plaintext is False
    assert load_config(write(tmp_path, "[auth]\nplaintext = true\n")).auth.plaintext is True
    with pytest.raises(ConfigError, match=r"auth\.plaintext: must be true or false"):
        load_config(write(tmp_path, '[auth]\nplaintext = "yes"\n'))


def test_auth_cache_ttl_is_a_duration_or_off(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).auth.cache_ttl == 3600.0
    assert load_config(write(tmp_path, '[auth]\ncache_ttl = "10m"\n')).auth.cache_ttl == 600.0
    assert load_config(write(tmp_path, "[auth]\ncache_ttl = 0\n")).auth.cache_ttl == 0.0
    with pytest.raises(ConfigError, match=r"auth\.cache_ttl: must be a duration.*or 0 for off"):
        load_config(write(tmp_path, '[auth]\ncache_ttl = "soon"\n'))


def test_junk_scores_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "postroom.toml"
    path.write_text('hostname = "mx.example.test"\n[junk]\njunk_above = 7\nrefuse_above = 9\n')
    config = load_config(path)
    assert (config.junk.enabled, config.junk.junk_above, config.junk.refuse_above) == (True, 7, 9)
    path.write_text('hostname = "mx.example.test"\n[junk]\nrefuse_above = 11\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "junk.refuse_above" in str(error.value) and "1 to 10" in str(error.value)
    path.write_text('hostname = "mx.example.test"\n[junk]\njunk_above = "high"\n')
    with pytest.raises(ConfigError, match=r"junk\.junk_above"):
        load_config(path)
