"""Mail authentication: SPF, DKIM, DMARC, ARC, SRS and Authentication-Results.

Parsers and evaluators that take their DNS answers through `dns.lookup.DnsLookup` (so the
reference suites feed them zone data and the server its resolver) and do no other I/O; CPU work
(RSA, hashing bodies) is left to the caller to run off the event loop.
"""
