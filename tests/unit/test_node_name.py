"""This server's node name (storage/node.py): the configured one, else one made once per
data_dir and kept in `node-id` (0600), the same at every start, another for another data_dir;
a file that does not hold a node name is refused, naming it and the fix."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from postroom.config_storage import NODE_NAME as CONFIG_RULE
from postroom.storage.node import NODE_FILE, NODE_NAME, new_name, node_name
from postroom.storage.records import StorageFailure


def test_the_configured_name_wins_and_no_file_is_made(tmp_path: Path) -> None:
    assert node_name(tmp_path, "mx1") == "mx1"
    assert not (tmp_path / NODE_FILE).exists()


def test_a_name_is_made_once_per_data_dir_and_kept(tmp_path: Path) -> None:
    first = node_name(tmp_path / "one")
    assert node_name(tmp_path / "one") == first  # a restarted node keeps its name
    other = node_name(tmp_path / "two")
    assert other != first  # two nodes on one machine never share one
    path = tmp_path / "one" / NODE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == first + "\n"
    assert sorted(p.name for p in path.parent.iterdir()) == [NODE_FILE]  # no temporary left


def test_made_names_follow_the_configs_rule() -> None:
    assert NODE_NAME.pattern == CONFIG_RULE.pattern
    for host in ("mx1.example.net", "MX_1 (test)", "", "-", "a" * 80):
        name = new_name(host)
        assert NODE_NAME.fullmatch(name), name
        assert re.fullmatch(r".+-[0-9a-f]{6}", name)
    assert new_name("mx1.example.net").startswith("mx1-")


def test_a_file_that_is_not_a_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / NODE_FILE).write_text("two words\n")
    with pytest.raises(StorageFailure, match=r"node-id: 'two words' is not a node name.*delete it"):
        node_name(tmp_path)
