"""The text form of a SASL exchange shared by SMTP AUTH (RFC 4954), POP3 AUTH (RFC 5034) and IMAP
AUTHENTICATE (RFC 3501 §6.2.2): "MECHANISM [initial-response]", base64 lines, "*" to cancel."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass

from postroom.proto import sasl

CANCEL = None  # what `client_line` returns for "*"


@dataclass(frozen=True)
class Start:
    mechanism: sasl.Mechanism
    initial: bytes | None  # None: no initial response; b"" for "="


class UnknownMechanism(ValueError):
    pass


class Malformed(ValueError):
    pass


def b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def start(argument: str, allowed: Collection[str]) -> Start:
    """Parse "MECHANISM [initial-response]" into a fresh mechanism and its initial response."""
    name, _, initial_text = argument.partition(" ")
    name = name.upper()
    mechanism = sasl.new_mechanism(name) if name in allowed else None
    if mechanism is None:
        raise UnknownMechanism(name)
    initial_text = initial_text.strip()
    if not initial_text:
        return Start(mechanism, None)
    # RFC 4954 §4, RFC 5034 §4: "=" stands for an initial response of zero length.
    initial = b"" if initial_text == "=" else b64decode(initial_text)
    if initial is None:
        raise Malformed(name)
    return Start(mechanism, initial)


def client_line(line: str) -> bytes | None:
    """A client's answer to a challenge: its bytes, or CANCEL for "*" (the client gave up)."""
    if line.strip() == "*":
        return CANCEL
    data = b64decode(line.strip())
    if data is None:
        raise Malformed("invalid base64")
    return data
