"""The PostgreSQL store: the same repositories as `storage/sqlite/`, in a PostgreSQL database."""
