"""The [storage] table (config_storage.py): the backend, the PostgreSQL DSN, and the password,
which comes from a file or $POSTROOM_DB_PASSWORD and never shows in the config's repr; the
node name (queue leases), the PostgreSQL timeouts and how long `serve` waits for the database at
start."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config import ConfigError, load_config
from postroom.config_storage import PASSWORD_VARIABLE, StorageConfig

DSN = "postgresql://postroom@127.0.0.1:5432/mail"
PG = f'backend = "postgresql"\ndsn = "{DSN}"\n'


def load(tmp_path: Path, text: str) -> StorageConfig:
    path = tmp_path / "postroom.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path).storage


def test_a_node_name_for_either_backend(tmp_path: Path) -> None:
    assert load(tmp_path, "").node == ""  # the one kept in data_dir/node-id
    assert load(tmp_path, '[storage]\nnode = "mx1.example_2"\n').node == "mx1.example_2"
    text = f'[storage]\nbackend = "postgresql"\ndsn = "{DSN}"\nnode = "mx2"\n'
    assert load(tmp_path, text).node == "mx2"


def test_sqlite_is_the_default(tmp_path: Path) -> None:
    assert load(tmp_path, "") == StorageConfig()
    assert load(tmp_path, '[storage]\nbackend = "sqlite"\n').database is None


def test_postgresql_with_the_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, "from-env")
    storage = load(tmp_path, f'[storage]\nbackend = "postgresql"\ndsn = "{DSN}"\n')
    assert storage.database == DSN
    assert storage.password == "from-env"
    assert "from-env" not in repr(load_config(tmp_path / "postroom.toml"))


def test_postgresql_with_the_password_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, "from-env")
    (tmp_path / "db-password").write_text("from-file\nignored\n")
    text = f'[storage]\nbackend = "postgresql"\ndsn = "{DSN}"\npassword_file = "db-password"\n'
    storage = load(tmp_path, text)
    assert storage.password == "from-file"  # the file named wins over the environment
    assert storage.password_file == tmp_path / "db-password"
    monkeypatch.delenv(PASSWORD_VARIABLE)
    assert load(tmp_path, f'[storage]\nbackend = "postgresql"\ndsn = "{DSN}"\n').password is None


def test_timeouts_and_the_start_wait(tmp_path: Path) -> None:
    default = load(tmp_path, f'[storage]\nbackend = "postgresql"\ndsn = "{DSN}"\n')
    assert (default.lock_timeout, default.statement_timeout, default.start_wait) == (5, 60, 60)
    text = (
        f'[storage]\nbackend = "postgresql"\ndsn = "{DSN}"\nlock_timeout = "250ms"\n'
        'statement_timeout = "2m"\nstart_wait = 0\n'
    )
    storage = load(tmp_path, text)
    assert (storage.lock_timeout, storage.statement_timeout, storage.start_wait) == (0.25, 120, 0)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('backend = "mysql"', "storage.backend", "must be one of"),
        ('backend = "postgresql"', "storage.dsn", "is required"),
        (f'dsn = "{DSN}"', "storage.dsn", 'only used with backend = "postgresql"'),
        ('backend = "postgresql"\ndsn = "mysql://x/y"', "storage.dsn", "postgresql://"),
        ('backend = "postgresql"\ndsn = "postgresql://h:x/db"', "storage.dsn", "not a URI"),
        ('backend = "postgresql"\ndsn = "postgresql://h:5432"', "storage.dsn", "no database"),
        ('backend = "postgresql"\ndsn = 5432', "storage.dsn", "must be a string"),
        (
            'backend = "postgresql"\ndsn = "postgresql://u:hunter2@h/db"',
            "storage.dsn",
            "must not hold the password",
        ),
        (
            f'backend = "postgresql"\ndsn = "{DSN}"\npassword_file = "missing"',
            "storage.password_file",
            "No such file",
        ),
        (
            f'backend = "postgresql"\ndsn = "{DSN}"\npassword_file = "empty"',
            "storage.password_file",
            "first line is empty",
        ),
        ('host = "db"', "storage.host", "unknown key"),
        ('node = "mx 1"', "storage.node", "is not a node name"),
        ('node = ""', "storage.node", "is not a node name"),
        ('node = "-mx1"', "storage.node", "is not a node name"),
        (f'node = "{"n" * 64}"', "storage.node", "up to 63"),
        ("node = 1", "storage.node", "must be a string"),
        ('lock_timeout = "5s"', "storage.lock_timeout", 'only used with backend = "postgresql"'),
        (
            PG + "lock_timeout = 0",
            "storage.lock_timeout",
            "longer than zero",
        ),
        (
            PG + 'statement_timeout = "soon"',
            "storage.statement_timeout",
            "must be a duration",
        ),
        (
            PG + 'lock_timeout = "10s"\nstatement_timeout = "5s"',
            "storage.statement_timeout",
            "shorter than storage.lock_timeout",
        ),
        (
            PG + "start_wait = -1",
            "storage.start_wait",
            "duration",
        ),
    ],
)
def test_errors_name_the_key_and_never_the_password(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "[storage]\n" + text + "\n")
    assert info.value.key == key
    assert words in str(info.value)
    assert "hunter2" not in str(info.value)
