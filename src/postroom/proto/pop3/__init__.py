"""POP3 (RFC 1939, 2449, 2595, 5034) as a sans-I/O engine: see `engine.Pop3Server`."""
