"""The greeting delay against clients that talk first (`[antispam] greet_delay`), as Postfix's
postscreen does it: the first line of a multi-line 220 goes out at once, the last one after
the delay; a client that sends anything before the greeting has ended breaks RFC 5321 §4.3.1
(it must wait for it) and is refused with 554 5.5.1 and dropped. Real MTAs and smtplib wait
for the whole reply (RFC 5321 §4.2.1), so they only see a slower greeting.
"""

from __future__ import annotations

import asyncio
import logging

from postroom.net.stream import ByteStream
from postroom.services.antispam import PREGREET_REFUSAL

log = logging.getLogger("postroom.antispam")


async def wait(stream: ByteStream, hostname: str, delay: float) -> bool:
    """Send "220-" and wait `delay` seconds; False (refused, or gone) when the client talked
    or left meanwhile. The engine's greeting then sends the last line."""
    stream.write(f"220-{hostname} ESMTP postroom\r\n".encode())
    loop = asyncio.get_running_loop()
    end = loop.time() + delay
    data = b""
    while not data:
        try:
            data = await stream.read(end - loop.time())
        except TimeoutError:
            return True
        if not data and stream.at_eof:
            return False
    log.info(
        "pregreet client=%s bytes=%d result=554 5.5.1 %r",
        stream.peer[0],
        len(data),
        data[:40],
    )
    stream.write(PREGREET_REFUSAL.to_bytes())
    return False
