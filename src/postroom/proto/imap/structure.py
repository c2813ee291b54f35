"""ENVELOPE, BODY and BODYSTRUCTURE of a message (RFC 3501 §7.4.2), and FETCH sections (§6.4.5).

`summarise` runs once per message at delivery: it parses the message (`mime.parse`) and returns
the three FETCH items exactly as they go on the wire, plus the plain values SEARCH and SORT need.
`section_bytes` cuts a BODY[section] out of the raw message.

The wire form copies Dovecot's choices so clients see what they already handle: strings are
quoted unless they hold CR, LF, 8-bit bytes or more than four quoted-specials (then a literal),
Subject and display names are cleaned "for humans" (blanks collapsed; a literal when changed),
header values are otherwise raw (never RFC 2047-decoded), and missing MIME values get the
RFC 2045 defaults ("text" "plain", ("charset" "us-ascii"), "7bit").
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from typing import Final, Literal

from postroom.proto.imap.address import EnvelopeAddress, decode_words, parse_addresses
from postroom.proto.imap.mime import Params, Part, field_value, parse, unfold

SectionKind = Literal["", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"]

_EMPTY_BODY: Final = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
_EMPTY_BODYSTRUCTURE: Final = (
    b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
)
_ENVELOPE_FIELDS: Final = frozenset(
    {
        b"date",
        b"subject",
        b"from",
        b"sender",
        b"reply-to",
        b"to",
        b"cc",
        b"bcc",
        b"in-reply-to",
        b"message-id",
    }
)
_BLANK_RUNS: Final = re.compile(rb"[ \t\r\n]+")
_MSG_ID: Final = re.compile(rb"<([^<>]*)>")
# TEXT-CHARs that need no escaping in a quoted string (RFC 3501 §9)
_PLAIN: Final = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]*")


@dataclass(frozen=True, slots=True)
class MailAddress:
    """An address for SEARCH/SORT: RFC 2047-decoded name, local part and domain.

    A group start shows up with the group name as `mailbox` and an empty `host` (as in
    ENVELOPE, RFC 3501 §7.4.2); group ends are left out. Missing pieces are "".
    """

    name: str
    mailbox: str
    host: str

    @property
    def addr_spec(self) -> str:
        return f"{self.mailbox}@{self.host}" if self.host else self.mailbox


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """What IMAP keeps about a message from delivery on."""

    envelope: bytes  # "(date subject from ... message-id)", ready for "ENVELOPE "
    bodystructure: bytes  # "(...)" with extension data, ready for "BODYSTRUCTURE "
    body: bytes  # "(...)" without extension data, ready for "BODY "
    date: int | None  # Date: as a Unix time, None when absent or unparsable
    subject_raw: bytes | None  # Subject: unfolded, undecoded; None when absent
    subject: str | None  # Subject: RFC 2047-decoded
    from_: tuple[MailAddress, ...]
    to: tuple[MailAddress, ...]
    cc: tuple[MailAddress, ...]
    message_id: str | None  # first <msg-id> of Message-ID:, without the angle brackets
    in_reply_to: str | None  # first <msg-id> of In-Reply-To:
    references: tuple[str, ...]  # the <msg-id>s of References:, in order


def summarise(raw: bytes) -> MessageSummary:
    """Parse a message and compute everything of `MessageSummary`."""
    tree = parse(raw)
    values = _envelope_values(raw, tree)
    addresses = _parsed_addresses(values)
    full: list[bytes] = [b"("]
    basic: list[bytes] = [b"("]
    _write_part(raw, tree, full, basic)
    full.append(b")")
    basic.append(b")")
    subject = values.get(b"subject")
    subject_raw = None if subject is None else unfold(subject)
    date_value = values.get(b"date")
    refs = tree.header_value(raw, "references", last=True)
    return MessageSummary(
        envelope=b"(" + _envelope(values, addresses) + b")",
        bodystructure=b"".join(full),
        body=b"".join(basic),
        date=None if date_value is None else _unix_time(unfold(date_value)),
        subject_raw=subject_raw,
        subject=None if subject_raw is None else decode_words(subject_raw),
        from_=_mail_addresses(addresses[b"from"]),
        to=_mail_addresses(addresses[b"to"]),
        cc=_mail_addresses(addresses[b"cc"]),
        message_id=_first_id(values.get(b"message-id")),
        in_reply_to=_first_id(values.get(b"in-reply-to")),
        references=() if refs is None else _ids(refs),
    )


def envelope(raw: bytes, tree: Part) -> bytes:
    """The ENVELOPE of a parsed message (or of an embedded message), parenthesised."""
    values = _envelope_values(raw, tree)
    return b"(" + _envelope(values, _parsed_addresses(values)) + b")"


def bodystructure(raw: bytes, tree: Part, *, extended: bool = True) -> bytes:
    """BODYSTRUCTURE (or BODY when `extended` is False) of a parsed message, parenthesised."""
    full: list[bytes] = [b"("]
    basic: list[bytes] = [b"("]
    _write_part(raw, tree, full, basic)
    return b"".join(full if extended else basic) + b")"


# -- FETCH BODY[section] ------------------------------------------------------------------------


def section_bytes(
    raw: bytes,
    tree: Part,
    part_path: tuple[int, ...],
    kind: SectionKind,
    fields: tuple[str, ...] = (),
) -> bytes:
    """The bytes of BODY[part_path.kind (fields)], per RFC 3501 §6.4.5; b"" if no such part.

    `tree` is `mime.parse(raw)`. The <origin.count> partial is left to the caller.
    """
    node = _resolve(tree, part_path)
    if node is None:
        return b""
    if kind == "":
        return raw if not part_path else node.body(raw)
    if kind == "MIME":
        # RFC 3501 §6.4.5: MIME is the MIME header of the part, only with a part number
        return node.header(raw) if part_path else b""
    if part_path:
        # HEADER and TEXT of a part refer to the message inside a message/rfc822 part
        if node.kind != "message" or node.message is None:
            return b""
        node = node.message
    if kind == "HEADER":
        return node.header(raw)
    if kind == "TEXT":
        return node.body(raw)
    wanted = {name.lower().encode("ascii", "replace") for name in fields}
    keep = kind == "HEADER.FIELDS"
    out = [_field_line(raw[f.start : f.end]) for f in node.fields if (f.name in wanted) == keep]
    out.append(b"\r\n")
    return b"".join(out)


def _field_line(line: bytes) -> bytes:
    return line if line.endswith(b"\n") else line + b"\r\n"


def _resolve(tree: Part, path: tuple[int, ...]) -> Part | None:
    """RFC 3501 §6.4.5 part numbering: the children of a multipart are numbered from 1, a
    non-multipart entity has only part 1 (its body), and below a message/rfc822 part the
    numbering continues in the embedded message."""
    node = tree
    for depth, number in enumerate(path):
        if number < 1:
            return None
        if depth > 0 and node.kind != "multipart":
            if node.kind != "message" or node.message is None:
                return None
            node = node.message
        if node.kind == "multipart":
            if number > len(node.children):
                return None
            node = node.children[number - 1]
        elif number != 1:
            return None
    return node


# -- ENVELOPE -----------------------------------------------------------------------------------


def _envelope_values(raw: bytes, tree: Part) -> dict[bytes, bytes]:
    values: dict[bytes, bytes] = {}
    for f in tree.fields:
        # like Dovecot, a repeated field's last occurrence wins
        if f.name in _ENVELOPE_FIELDS and f.value_start >= 0:
            values[f.name] = field_value(raw, f)
    return values


_ADDRESS_FIELDS: Final = (b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc")


def _parsed_addresses(values: dict[bytes, bytes]) -> dict[bytes, list[EnvelopeAddress]]:
    out: dict[bytes, list[EnvelopeAddress]] = {}
    for name in _ADDRESS_FIELDS:
        value = values.get(name)
        out[name] = [] if value is None else parse_addresses(value)
    return out


def _envelope(values: dict[bytes, bytes], addresses: dict[bytes, list[EnvelopeAddress]]) -> bytes:
    from_ = _address_list(addresses[b"from"])
    return b" ".join(
        (
            nstring(_nolf(values.get(b"date"))),
            human_nstring(values.get(b"subject")),
            from_,
            # RFC 3501 §7.4.2: sender and reply-to default to from
            _address_list(addresses[b"sender"]) if addresses[b"sender"] else from_,
            _address_list(addresses[b"reply-to"]) if addresses[b"reply-to"] else from_,
            _address_list(addresses[b"to"]),
            _address_list(addresses[b"cc"]),
            _address_list(addresses[b"bcc"]),
            nstring(_nolf(values.get(b"in-reply-to"))),
            nstring(_nolf(values.get(b"message-id"))),
        )
    )


def _address_list(addrs: list[EnvelopeAddress]) -> bytes:
    if not addrs:
        return b"NIL"
    return (
        b"("
        + b"".join(
            b"(%s %s %s %s)"
            % (human_nstring(a.name), nstring(a.route), nstring(a.mailbox), nstring(a.host))
            for a in addrs
        )
        + b")"
    )


def _mail_addresses(addresses: list[EnvelopeAddress]) -> tuple[MailAddress, ...]:
    out: list[MailAddress] = []
    for a in addresses:
        if a.mailbox is None:
            continue  # a group end
        name = "" if a.name is None else decode_words(_BLANK_RUNS.sub(b" ", a.name).strip())
        mailbox = "" if a.mailbox == b"MISSING_MAILBOX" else a.mailbox.decode("utf-8", "replace")
        host = "" if a.host in (None, b"MISSING_DOMAIN") else a.host.decode("utf-8", "replace")
        out.append(MailAddress(name, mailbox, host))
    return tuple(out)


def _unix_time(value: bytes) -> int | None:
    # RFC 5322 §3.3 date-time, with the obsolete forms email.utils accepts
    try:
        parsed = email.utils.parsedate_tz(value.decode("ascii", "replace"))
        return None if parsed is None else int(email.utils.mktime_tz(parsed))
    except (ValueError, OverflowError, IndexError, TypeError):
        return None


def _ids(value: bytes) -> tuple[str, ...]:
    # RFC 5322 §3.6.4 msg-id = "<" id-left "@" id-right ">"; folding inside is dropped
    out: list[str] = []
    for m in _MSG_ID.finditer(value):
        ident = _BLANK_RUNS.sub(b"", m.group(1))
        if ident:
            out.append(ident.decode("utf-8", "replace"))
    return tuple(out)


def _first_id(value: bytes | None) -> str | None:
    ids = () if value is None else _ids(value)
    return ids[0] if ids else None


# -- BODY / BODYSTRUCTURE -----------------------------------------------------------------------


def _write_part(raw: bytes, part: Part, full: list[bytes], basic: list[bytes]) -> None:
    """Append the BODYSTRUCTURE of `part` to `full` and its BODY (no extension data) to `basic`."""
    if part.kind == "multipart":
        # RFC 3501 §7.4.2: body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
        if part.children:
            for child in part.children:
                full.append(b"(")
                basic.append(b"(")
                _write_part(raw, child, full, basic)
                full.append(b")")
                basic.append(b")")
        else:
            full.append(_EMPTY_BODYSTRUCTURE)
            basic.append(_EMPTY_BODY)
        subtype = b" " + string(part.content_subtype or b"")
        full.append(subtype)
        basic.append(subtype)
        full.append(b" " + _params(part.params, default_charset=False))
        _write_ext_common(part, full)
        return
    text = part.kind == "text"
    if part.kind == "message" and (part.content_subtype or b"rfc822").lower() == b"rfc822":
        media = b'"message" "rfc822"'
    elif part.content_type is None:
        media = b'"text" "plain"'
    else:
        media = string(part.content_type) + b" " + string(part.content_subtype or b"")
    # body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP body-fld-enc SP octets
    fields = b"%s %s %s %s %s %d" % (
        media,
        _params(part.params, default_charset=text),
        nstring(_nolf(part.content_id)),
        nstring(_nolf(part.description)),
        b'"7bit"' if part.encoding is None else string(part.encoding),
        part.size,
    )
    full.append(fields)
    basic.append(fields)
    if text:
        lines = b" %d" % part.lines  # body-fld-lines
        full.append(lines)
        basic.append(lines)
    elif part.kind == "message":
        # RFC 3501 §7.4.2 (RFC 9051 §7.5.2 for message/global): envelope body lines
        inner = part.message
        if inner is None:
            full.append(b" (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) " + _EMPTY_BODYSTRUCTURE)
            basic.append(b" (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) " + _EMPTY_BODY)
        else:
            values = _envelope_values(raw, inner)
            head = b" (" + _envelope(values, _parsed_addresses(values)) + b") ("
            full.append(head)
            basic.append(head)
            _write_part(raw, inner, full, basic)
            full.append(b")")
            basic.append(b")")
        lines = b" %d" % part.lines
        full.append(lines)
        basic.append(lines)
    full.append(b" " + nstring(_nolf(part.md5)))  # body-fld-md5
    _write_ext_common(part, full)


def _write_ext_common(part: Part, out: list[bytes]) -> None:
    # body-fld-dsp SP body-fld-lang SP body-fld-loc
    if part.disposition is None:
        disposition = b"NIL"
    else:
        disposition = b"(%s %s)" % (
            string(part.disposition),
            _params(part.disposition_params, default_charset=False),
        )
    if part.language is None:
        language = b"NIL"
    else:
        language = b"(" + b" ".join(string(tag) for tag in part.language) + b")"
    out.append(b" %s %s %s" % (disposition, language, nstring(_nolf(part.location))))


def _params(params: Params, *, default_charset: bool) -> bytes:
    # body-fld-param; RFC 2045 §5.2: text without a charset is us-ascii
    items = [string(name) + b" " + string(value) for name, value in params]
    if default_charset and not any(name.lower() == b"charset" for name, _ in params):
        items.append(b'"charset" "us-ascii"')
    return b"(" + b" ".join(items) + b")" if items else b"NIL"


# -- IMAP strings -------------------------------------------------------------------------------


def nstring(value: bytes | None) -> bytes:
    """NIL, a quoted string, or a literal when quoting cannot carry the value (RFC 3501 §4.3)."""
    if value is None:
        return b"NIL"
    return string(value)


def string(value: bytes) -> bytes:
    """A quoted string, or a literal for CR, LF, 8-bit bytes or more than 4 quoted-specials."""
    if _PLAIN.fullmatch(value):
        return b'"' + value + b'"'
    if (
        value.isascii()
        and b"\r" not in value
        and b"\n" not in value
        and value.count(b'"') + value.count(b"\\") <= 4
    ):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(value) + value


def human_nstring(value: bytes | None) -> bytes:
    """Dovecot's rendering of Subject and display names: TABs, line ends and runs of blanks
    become one space, leading and trailing blanks go; a value that needed any change, or
    holds quotes, backslashes or 8-bit bytes, is sent as a literal."""
    if value is None:
        return b"NIL"
    if (
        value.isascii()
        and not value.startswith(b" ")
        and not value.endswith(b" ")
        and b"  " not in value
        and not any(c in value for c in (b"\t", b"\r", b"\n", b'"', b"\\", b"\0"))
    ):
        return b'"' + value + b'"'
    cleaned = _BLANK_RUNS.sub(b" ", value.replace(b"\0", b"\x80")).strip(b" ")
    if not cleaned:
        return b'""'
    return b"{%d}\r\n" % len(cleaned) + cleaned


def _nolf(value: bytes | None) -> bytes | None:
    return None if value is None else unfold(value)
