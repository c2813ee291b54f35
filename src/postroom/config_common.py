"""What every table module of the configuration shares: the :class:`Reader` it is handed.

:mod:`postroom.config` owns the file, the error type and the reader itself; each
``config_*.py`` module reads its table(s) through this interface, so its errors name the
file, the dotted key and the fix like the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")


class Reader(Protocol):
    """What the table readers need of config's reader (errors name file, key and fix)."""

    def error(self, key: str | None, problem: str, fix: str) -> Exception: ...

    def check(self, key: str, convert: Callable[..., _T], *args: Any) -> _T: ...

    def table(self, doc: Mapping[str, Any], name: str, known: Sequence[str]) -> dict[str, Any]: ...

    def unknown_keys(
        self, table: Mapping[str, Any], known: Sequence[str], prefix: str, section: str
    ) -> None: ...

    def resolve(self, text: str) -> Path: ...
