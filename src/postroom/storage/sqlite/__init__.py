"""The embedded store: SQLite (WAL, group commit on one writer thread) and blob files."""
