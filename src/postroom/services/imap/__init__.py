"""IMAP sessions over the mailbox store: the command handlers behind net/imap_session.py."""
