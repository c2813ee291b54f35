"""Protocol conformance suites run against real servers (imaptest scripts on Dovecot)."""
