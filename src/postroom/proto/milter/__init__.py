"""The milter protocol (Sendmail's mail filter API, version 6) from the MTA's side: packet
codec (codec.py) and the message edits milters ask for (edit.py). No I/O."""
