"""IMAP4rev1/IMAP4rev2 protocol pieces: command reader, grammar, response encoding, MIME."""
