"""Configuration values: each check takes one raw TOML value and returns it typed, or raises
:class:`Invalid` with the problem and its fix (config.py ties them to the file and key)."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass

from postroom.durations import DURATION_FORMS, format_duration, parse_duration

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Invalid(ValueError):
    """A value problem not yet tied to a file and key (becomes a ConfigError)."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix


def show(value: object) -> str:
    """Describe a TOML value briefly, on one line, for an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = repr(value)
        return shown if len(shown) <= 60 else shown[:56] + "...'"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a date/time ({value})"


PORT_FIX = "use a port from 0 to 65535 (0 picks a free port)"
MAX_GROUP_COMMIT_MS = 1000.0


@dataclass(frozen=True)
class Endpoint:
    """A listening address. *host* has no brackets (``::1``); ``str()`` adds them back."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("endpoint host must not be empty")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise TypeError("endpoint port must be an integer")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range; {PORT_FIX}")

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse ``host:port`` or ``[ipv6]:port``; raises ValueError (``problem; fix``)."""
        example = 'write "host:port" such as "127.0.0.1:2525" or "[::1]:2525"'
        text = text.strip()
        if text.startswith("["):
            close = text.find("]")
            if close == -1 or text[close + 1 : close + 2] != ":":
                raise Invalid(f"{text!r} is not a valid [ipv6]:port address", example)
            host, port_text = text[1:close], text[close + 2 :]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise Invalid(f"{host!r} is not an IPv6 address", example) from None
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep or not host:
                raise Invalid(f"{text!r} has no host:port", example)
            if ":" in host:
                raise Invalid(f"{text!r} is ambiguous", _bracket_fix(host, port_text))
            if not is_hostname(host):
                raise Invalid(f"{host!r} is not a valid host name or IPv4 address", example)
        if not port_text.isascii() or not port_text.isdigit():
            raise Invalid(f"port {port_text!r} is not a number", example)
        port = int(port_text)
        if port > 65535:
            raise Invalid(f"port {port} is out of range", PORT_FIX)
        return cls(host, port)

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def _bracket_fix(host: str, port_text: str) -> str:
    """How to write an IPv6 address with a port: in brackets, the port after them ("::25" was
    split after "::", so the address is "::")."""
    for address in (host, host + ":"):
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            continue
        return f'put the IPv6 address in brackets, the port after them: "[{address}]:{port_text}"'
    return "put IPv6 addresses in brackets, such as [::1]:2525"


LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def is_hostname(name: str) -> bool:
    name = name.lower().removesuffix(".")
    if not name or len(name) > 253 or not name.isascii():
        return False
    return all(LABEL.fullmatch(label) for label in name.split("."))


def domain(value: object, example: str) -> str:
    fix = f"write a domain name of letters, digits, hyphens and dots, such as {example}"
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {show(value)}", fix)
    name = value.strip().lower().removesuffix(".")
    if name and not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise Invalid(f"{value!r} is not a valid internationalised domain", fix) from None
    if not is_hostname(name):
        raise Invalid(f"{value!r} is not a valid domain name", fix)
    return name


def hostname(value: object) -> str:
    return domain(value, '"mx.example.com"')


def domains(value: object, may_be_empty: bool = False) -> tuple[str, ...]:
    fix = 'write an array of domain names such as ["example.com", "example.org"]'
    if not isinstance(value, list):
        raise Invalid(f"must be an array of strings, got {show(value)}", fix)
    if not value and not may_be_empty:
        raise Invalid("must list at least one domain", fix)
    result: list[str] = []
    for index, item in enumerate(value):
        try:
            name = domain(item, '"example.com"')
        except Invalid as exc:
            raise Invalid(f"entry {index + 1}: {exc.problem}", exc.fix) from None
        if name not in result:
            result.append(name)
    return tuple(result)


def networks(value: object) -> tuple[IPNetwork, ...]:
    """An array of IP networks ("192.0.2.0/24", "2001:db8::/32", or a single address)."""
    fix = 'write an array such as ["192.0.2.0/24", "2001:db8::1"]'
    if not isinstance(value, list):
        raise Invalid(f"must be an array of strings, got {show(value)}", fix)
    result: list[IPNetwork] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or len(item) > 64:
            raise Invalid(f"entry {index + 1}: must be a network, got {show(item)}", fix)
        try:
            result.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise Invalid(f"entry {index + 1}: {show(item)} is not an IP network", fix) from None
    return tuple(result)


def path_string(value: object, example: str) -> str:
    fix = f"write a path string such as {example}"
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {show(value)}", fix)
    if not value.strip():
        raise Invalid("must not be empty", fix)
    if "\0" in value:
        raise Invalid("must not contain NUL characters", fix)
    return value


def endpoint(value: object, default: str) -> Endpoint:
    if not isinstance(value, str):
        raise Invalid(
            f'must be a "host:port" string, got {show(value)}', f'write it like "{default}"'
        )
    return Endpoint.parse(value)


def boolean(value: object, default: bool) -> bool:
    if not isinstance(value, bool):
        fix = f"write {str(default).lower()} (no quotes)"
        raise Invalid(f"must be true or false, got {show(value)}", fix)
    return value


def positive_int(value: object, default: int, minimum: int = 1) -> int:
    what = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
    fix = f"write a whole number such as {default}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"must be {what}, got {show(value)}", fix)
    if value < minimum:
        raise Invalid(f"must be {what}, got {value}", fix)
    return value


def durations(value: object, default: tuple[float, ...]) -> tuple[float, ...]:
    example = "[" + ", ".join(toml_string(format_duration(d)) for d in default) + "]"
    if not isinstance(value, list) or not value:
        raise Invalid(
            f"must be a non-empty list of durations, got {show(value)}", f"write it like {example}"
        )
    return tuple(timeout(item, default[0]) for item in value)


def nameservers(value: object) -> tuple[str, ...]:
    fix = (
        'write a list like ["127.0.0.1:5353"] (host:port, "[::1]:53" for IPv6),'
        " or [] for the system resolver"
    )
    if not isinstance(value, list):
        raise Invalid(f'must be a list of "host:port" strings, got {show(value)}', fix)
    servers = []
    for item in value:
        if not isinstance(item, str):
            raise Invalid(f'must hold "host:port" strings, got {show(item)}', fix)
        try:
            endpoint = Endpoint.parse(
                item if ":" in item.strip("[]") or "]:" in item else f"{item}:53"
            )
            ipaddress.ip_address(endpoint.host)
        except ValueError:
            raise Invalid(f"{show(item)} is not an IP address with a port", fix) from None
        servers.append(str(endpoint))
    return tuple(servers)


def choice(value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise Invalid(
            f"must be one of {', '.join(choices)}, got {show(value)}", f'write "{choices[0]}"'
        )
    return value


def text(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {show(value)}", 'write it in quotes: "..."')
    return value


def port(value: object, default: int) -> int:
    port = positive_int(value, default)
    if port > 65535:
        raise Invalid(
            f"must be a port number (1-65535), got {port}", f"write a port such as {default}"
        )
    return port


def size(value: object, default: int) -> int:
    fix = f"write a byte count such as {default}"
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise Invalid(f"must be a positive integer, got {show(value)}", fix)
    return value


def _duration(value: object, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Invalid(f"must be a duration, got {show(value)}", fix)
    try:
        return parse_duration(value)
    except (TypeError, ValueError):
        raise Invalid(f"must be a duration, got {show(value)}", fix) from None


def timeout(value: object, default: float) -> float:
    fix = f'write {DURATION_FORMS} (default "{format_duration(default)}")'
    seconds = _duration(value, fix)
    if seconds <= 0:
        raise Invalid(f"must be longer than zero, got {show(value)}", fix)
    return seconds


def duration_or_off(value: object, default: float) -> float:
    return _duration(
        value, f'write {DURATION_FORMS} (default "{format_duration(default)}"), or 0 for off'
    )


def milliseconds(value: object, default: float) -> float:
    fix = f"write a number of milliseconds from 0 to {MAX_GROUP_COMMIT_MS:g}, such as {default:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"must be a number of milliseconds, got {show(value)}", fix)
    if not math.isfinite(value) or not 0 <= value <= MAX_GROUP_COMMIT_MS:
        raise Invalid(f"is out of range, got {show(value)}", fix)
    return float(value)


def toml_string(text: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(text, ensure_ascii=False)
