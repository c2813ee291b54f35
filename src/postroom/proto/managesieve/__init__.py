"""ManageSieve (RFC 5804) server engine, pure logic: bytes in → events out, answers in → bytes out.

    from postroom.proto.managesieve import ManageSieveServer, ManageSieveSettings, events

    engine = ManageSieveServer(ManageSieveSettings(hostname="mx.example"), tls_active=False)
    engine.greet()                      # the capability list and OK (RFC 5804 §1.7)
    engine.receive_data(data)
    event = engine.next_event()         # NEED_DATA, PAUSED, or an event from `events`
    ...                                 # decisions answered through the engine method named in
    out = engine.data_to_send()         # each event's docstring

Public API: ManageSieveServer, ManageSieveSettings, the limits MAX_SCRIPTS, MAX_SCRIPT_SIZE,
MAX_NAME_LENGTH, MAX_LINE, MAX_LITERAL; `valid_name(name)`; `space_refusal(existing, name,
size)` (the per-user quota decision the store's side applies); the wire reader
(`wire.CommandReader`) and responses (`responses`).
"""

from postroom.proto.managesieve.engine import (
    MAX_LINE,
    MAX_LITERAL,
    MAX_NAME_LENGTH,
    MAX_SCRIPT_SIZE,
    MAX_SCRIPTS,
    ManageSieveServer,
    ManageSieveSettings,
    space_refusal,
    valid_name,
)

__all__ = [
    "MAX_LINE",
    "MAX_LITERAL",
    "MAX_NAME_LENGTH",
    "MAX_SCRIPTS",
    "MAX_SCRIPT_SIZE",
    "ManageSieveServer",
    "ManageSieveSettings",
    "space_refusal",
    "valid_name",
]
