"""Building a message for `postroom send`: headers, text/HTML body, attachments (MIME).

Uses the stdlib `email` package (policy SMTP: CRLF line endings); attachment types are guessed
from the file name and sent base64-encoded (RFC 2045 §6.8).
"""

from __future__ import annotations

import email.utils
import mimetypes
from collections.abc import Sequence
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from pathlib import Path


class ComposeError(ValueError):
    """A header or file given on the command line cannot be used."""


def compose(
    *,
    sender: str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    subject: str = "",
    body: str = "",
    html: str | None = None,
    attachments: Sequence[Path] = (),
    headers: Sequence[str] = (),
    hostname: str = "localhost",
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    if to:
        message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)  # Bcc recipients are only in the envelope
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=True)
    message["Message-ID"] = email.utils.make_msgid(domain=hostname)
    for line in headers:
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or any(c in name for c in " \t"):
            raise ComposeError(f"--header {line!r}: write it as 'Name: value'")
        if name.strip().lower() in ("from", "to", "cc", "subject", "date", "message-id"):
            del message[name.strip()]
        message[name.strip()] = value.strip()
    message.set_content(body if body.endswith("\n") or not body else body + "\n")
    if html is not None:
        message.add_alternative(html, subtype="html")
    for path in attachments:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ComposeError(f"--attach {path}: {error.strerror or error}") from None
        kind, _ = mimetypes.guess_type(path.name)
        maintype, _, subtype = (kind or "application/octet-stream").partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    needs_utf8 = not all(a.isascii() for a in (sender, *to, *cc))
    return message.as_bytes(policy=SMTPUTF8 if needs_utf8 else SMTP)
