"""ETRN from anyone must not become a store write each time (RFC 1985 lets any client ask).

A node made due is not made due again for a while, server-wide: more ETRNs for it are answered
from memory. A client gets few ETRNs that reach the store per minute; more get 458. The store
writes are counted by the server itself: `serve` logs its group-commit totals when it stops
(`stopped; batches=N jobs=N ...`), every write being one job."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

from .conftest import Postroom
from .wire import HOST, Wire, open_session

FLOOD = 1000
PER_CLIENT = 10  # ETRNs per client address and minute that reach the store (README)
IDLE_WRITES = 3  # what a server that was only started and stopped writes (scheduler start-up)


def jobs_written(server: Postroom) -> int:
    assert server.stop() == 0
    match = re.search(r"stopped; batches=\d+ jobs=(\d+)", server.log())
    assert match, server.log_tail()
    return int(match[1])


def flood(wire: Wire, lines: list[bytes]) -> list[str]:
    """Pipeline every line at once; the replies until the last one or the server's close."""
    wire.send(b"".join(lines))
    codes = []
    for _ in lines:
        reply = wire.reply()
        codes.append(f"{reply.code} {reply.enhanced}")
        if reply.code == 421:
            break
    return codes


def from_address(source: str, port: int) -> Wire:
    sock = socket.create_connection((HOST, port), timeout=15, source_address=(source, 0))
    wire = Wire.adopt(sock)
    wire.expect(220)
    wire.cmd("EHLO client.example.net", 250)
    return wire


def test_an_etrn_flood_costs_a_handful_of_store_writes(
    postroom_factory: Callable[..., Postroom],
) -> None:
    server = postroom_factory(services=("smtp",))
    started = time.monotonic()
    with open_session(server.smtp_port) as wire:
        # One node, a thousand times: one write, every ETRN answered.
        codes = flood(wire, [b"ETRN example.net\r\n"] * FLOOD)
        assert codes == ["250 2.0.0"] * FLOOD
    with from_address("127.0.0.2", server.smtp_port) as other:
        # Another client, the same node: already started, answered from memory.
        assert flood(other, [b"ETRN example.net\r\n"] * FLOOD) == ["250 2.0.0"] * FLOOD
    assert time.monotonic() - started < 15, "1,000 ETRNs must be answered quickly"
    with open_session(server.smtp_port) as wire:
        # A thousand nodes from the first client: what is left of its budget, then 458 until
        # the error limit ([limits] errors_per_session, 20) closes the session.
        codes = flood(wire, [b"ETRN n%d.example\r\n" % i for i in range(FLOOD)])
    allowed = PER_CLIENT - 1
    assert codes == ["250 2.0.0"] * allowed + ["458 4.7.0"] * 20 + ["421 4.7.0"], codes
    # Each ETRN that reached the store wakes the scheduler, which looks at the queue (a
    # write): at most twice the budget, on top of the start-up.
    assert jobs_written(server) <= IDLE_WRITES + 2 * PER_CLIENT
