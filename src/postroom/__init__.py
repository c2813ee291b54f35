"""postroom: an all-in-one Internet mail server."""

__version__ = "0.1.0"
