"""Per-request deadlines, so that a client trickling a request a byte at a time is cut off.

An idle timeout between reads never fires for a client that sends one byte every few seconds.
As with Postfix's smtpd_per_request_deadline, a request (a command line, the message of DATA
or BDAT, an IMAP command with its literals) must arrive within the service's timeout of its
first byte. The bytes of a request earn it more time, 1 s per MIN_DATA_RATE bytes (Postfix's
smtpd_min_data_rate), never more than the timeout ahead: a large message or APPEND sent at
a reasonable rate always fits, a trickle runs out. Between requests only the idle timeout
applies. The engines say whether part of a request is in (`mid_request`).
"""

from __future__ import annotations

import math

MIN_DATA_RATE = 500.0  # bytes per second (Postfix: smtpd_min_data_rate = 500)


class RequestDeadline:
    """The deadline of the request a session is receiving, if any."""

    def __init__(self) -> None:
        self.at = math.inf

    def wait_for(self, *, mid_request: bool, received: int, timeout: float, now: float) -> float:
        """How long the next read may wait: `timeout` between requests, what is left of the
        request's time inside one (0 or less: it is over). `received` is what the previous
        read brought, `now` the loop's clock."""
        if not mid_request:
            self.at = math.inf
            return timeout
        if self.at == math.inf:
            self.at = now + timeout  # the request began with the previous read
        else:
            self.at = min(self.at + received / MIN_DATA_RATE, now + timeout)
        return self.at - now
