"""The JSON log format: one object per line with time, level, logger and message, the message's
`key=` fields taken from its template and arguments (values with spaces kept whole), and the
[log] table's validation."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest

from postroom.config import ConfigError, load_config
from postroom.logsetup import CachedTimeFormatter, JsonFormatter, field_names


def record(
    msg: str, *args: object, level: int = logging.INFO, exc: bool = False
) -> logging.LogRecord:
    info = sys.exc_info() if exc else None
    return logging.LogRecord("postroom.queue", level, __file__, 1, msg, args, info)


def as_json(entry: logging.LogRecord) -> dict[str, object]:
    line = JsonFormatter().format(entry)
    assert "\n" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def test_a_line_has_time_level_logger_message_and_the_named_fields() -> None:
    entry = record(
        "%s id=%s to=<%s> relay=%s reply=%s attempts=%d",
        "deferred",
        "01ABC",
        "bob@example.net",
        "-",
        "451 4.4.3 no answer from the DNS",
        2,
    )
    entry.created = 1_800_000_000.25
    entry.msecs = 250.0
    parsed = as_json(entry)
    assert parsed == {
        "time": "2027-01-15T08:00:00.250Z",
        "level": "INFO",
        "logger": "postroom.queue",
        "message": "deferred id=01ABC to=<bob@example.net> relay=- reply=451 4.4.3 no answer "
        "from the DNS attempts=2",
        "id": "01ABC",
        "to": "bob@example.net",
        "relay": "-",
        "reply": "451 4.4.3 no answer from the DNS",
        "attempts": 2,
    }
    # The text format says the same thing on one line.
    text = CachedTimeFormatter().format(entry)
    assert text.endswith(" postroom.queue INFO " + parsed["message"])  # type: ignore[operator]


def test_placeholders_without_a_key_percent_signs_and_odd_values() -> None:
    assert field_names("%s done in %.1f%% of time=%5.2f user=<%s> %r") == (
        None,
        None,
        "time",
        "user",
        None,
    )
    parsed = as_json(record("stopped; %s size=%s ratio=%s", "batches=3", None, float("nan")))
    assert parsed["message"] == "stopped; batches=3 size=None ratio=nan"
    assert parsed["size"] is None and parsed["ratio"] == "nan"  # still valid JSON
    assert as_json(record("path=%s", Path("/var/lib/x")))["path"] == "/var/lib/x"
    # A reserved name stays in the message only; a template that does not fit its arguments
    # gives the message alone.
    assert as_json(record("level=%s", "x"))["level"] == "INFO"
    assert set(as_json(record("a=%*d", 5, 3))) == {"time", "level", "logger", "message"}
    assert as_json(record("no arguments here a=%s"))["message"] == "no arguments here a=%s"


def test_a_traceback_goes_in_its_own_field() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        parsed = as_json(record("delivery to %s crashed", "example.net", exc=True))
    assert parsed["message"] == "delivery to example.net crashed"
    assert re.search(r"Traceback.*RuntimeError: boom", str(parsed["exception"]), re.DOTALL)


@pytest.mark.parametrize(("text", "expected"), [("", "text"), ('[log]\nformat = "json"\n', "json")])
def test_log_format_is_read(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "postroom.toml"
    path.write_text(text, encoding="utf-8")
    assert load_config(path).log.format == expected


@pytest.mark.parametrize(
    ("text", "key", "needle"),
    [
        ('[log]\nformat = "xml"\n', "log.format", 'write "text"'),
        ("[log]\nformat = 1\n", "log.format", "must be one of text, json"),
        ('[log]\nfromat = "json"\n', "log.fromat", "did you mean log.format?"),
    ],
)
def test_bad_log_settings_name_file_key_and_fix(
    tmp_path: Path, text: str, key: str, needle: str
) -> None:
    path = tmp_path / "postroom.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert info.value.key == key and "postroom.toml" in message and needle in message
    assert "\n" not in message
