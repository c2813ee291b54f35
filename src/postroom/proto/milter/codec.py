"""The Sendmail milter protocol, version 6 (as Postfix speaks it): packets, commands, replies.

Pure: bytes in, typed values out; typed values in, bytes out. A packet is a 4-octet length in
network order (counting the command octet and the data), the command octet, then the data.
Strings inside packets end in NUL. Replies from a milter are untrusted input: `PacketReader`
refuses a length outside 1..MAX_PACKET before buffering the data, and `parse_reply` checks
every field (counts of NUL-terminated strings, index ranges, reply codes) in one linear pass,
raising `MilterProtocolError` for anything malformed — never another exception.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

VERSION = 6  # the protocol version offered (libmilter 8.14+, Postfix 2.6+)
MIN_VERSION = 2  # oldest version a milter may answer with (Postfix accepts 2..6)
MAX_PACKET = 1024 * 1024 + 64  # largest reply accepted (the data of MDS_1M plus headroom)
BODY_CHUNK = 65535  # MILTER_CHUNK_SIZE: the largest BODY packet sent

# --- commands the MTA sends (SMFIC_*) ---------------------------------------------------------
C_ABORT = b"A"
C_BODY = b"B"
C_CONNECT = b"C"
C_MACRO = b"D"
C_BODYEOB = b"E"
C_HELO = b"H"
C_QUIT_NC = b"K"
C_HEADER = b"L"
C_MAIL = b"M"
C_EOH = b"N"
C_OPTNEG = b"O"
C_QUIT = b"Q"
C_RCPT = b"R"
C_DATA = b"T"
C_UNKNOWN = b"U"

# --- replies and modifications a milter sends (SMFIR_*) ---------------------------------------
R_ADDRCPT = b"+"
R_DELRCPT = b"-"
R_ADDRCPT_PAR = b"2"
R_SHUTDOWN = b"4"
R_ACCEPT = b"a"
R_REPLBODY = b"b"
R_CONTINUE = b"c"
R_DISCARD = b"d"
R_CHGFROM = b"e"
R_CONN_FAIL = b"f"
R_ADDHEADER = b"h"
R_INSHEADER = b"i"
R_SETSYMLIST = b"l"
R_CHGHEADER = b"m"
R_PROGRESS = b"p"
R_QUARANTINE = b"q"
R_REJECT = b"r"
R_SKIP = b"s"
R_TEMPFAIL = b"t"
R_REPLYCODE = b"y"

# --- action flags (SMFIF_*): what the milter may change ---------------------------------------
F_ADDHDRS = 0x01
F_CHGBODY = 0x02
F_ADDRCPT = 0x04
F_DELRCPT = 0x08
F_CHGHDRS = 0x10
F_QUARANTINE = 0x20
F_CHGFROM = 0x40
F_ADDRCPT_PAR = 0x80
F_SETSYMLIST = 0x100
ACTIONS_ALL = 0x1FF

# --- protocol flags (SMFIP_*): stages skipped, replies not sent, details ----------------------
P_NOCONNECT = 0x01
P_NOHELO = 0x02
P_NOMAIL = 0x04
P_NORCPT = 0x08
P_NOBODY = 0x10
P_NOHDRS = 0x20
P_NOEOH = 0x40
P_NR_HDR = 0x80  # no reply to each header (SMFIP_NOHREPL)
P_NOUNKNOWN = 0x100
P_NODATA = 0x200
P_SKIP = 0x400  # the MTA understands SMFIR_SKIP
P_RCPT_REJ = 0x800  # the milter wants rejected recipients too
P_NR_CONN = 0x1000
P_NR_HELO = 0x2000
P_NR_MAIL = 0x4000
P_NR_RCPT = 0x8000
P_NR_DATA = 0x10000
P_NR_UNKN = 0x20000
P_NR_EOH = 0x40000
P_NR_BODY = 0x80000
P_HDR_LEADSPC = 0x100000  # header values keep their leading space both ways
P_MDS_256K = 0x10000000
P_MDS_1M = 0x20000000
# What this MTA offers: every stage may be skipped, every no-reply flag, SKIP and the leading
# space; not RCPT_REJ (only accepted recipients reach milters) nor larger data sizes.
PROTOCOL_OFFERED = (
    P_NOCONNECT | P_NOHELO | P_NOMAIL | P_NORCPT | P_NOBODY | P_NOHDRS | P_NOEOH | P_NR_HDR
    | P_NOUNKNOWN | P_NODATA | P_SKIP | P_NR_CONN | P_NR_HELO | P_NR_MAIL | P_NR_RCPT
    | P_NR_DATA | P_NR_UNKN | P_NR_EOH | P_NR_BODY | P_HDR_LEADSPC
)  # fmt: skip

# --- macro stages of SETSYMLIST (SMFIM_*) and the command each belongs to ---------------------
STAGE_CONNECT, STAGE_HELO, STAGE_ENVFROM, STAGE_ENVRCPT, STAGE_DATA, STAGE_EOM, STAGE_EOH = range(7)
STAGE_COMMAND: dict[int, bytes] = {
    STAGE_CONNECT: C_CONNECT,
    STAGE_HELO: C_HELO,
    STAGE_ENVFROM: C_MAIL,
    STAGE_ENVRCPT: C_RCPT,
    STAGE_DATA: C_DATA,
    STAGE_EOM: C_BODYEOB,
    STAGE_EOH: C_EOH,
}
MAX_SYMLIST = 1024  # longest macro list accepted for one stage

# The stages a protocol flag skips, and the flag that says the milter sends no reply there.
SKIP_FLAG: dict[bytes, int] = {
    C_CONNECT: P_NOCONNECT,
    C_HELO: P_NOHELO,
    C_MAIL: P_NOMAIL,
    C_RCPT: P_NORCPT,
    C_DATA: P_NODATA,
    C_HEADER: P_NOHDRS,
    C_EOH: P_NOEOH,
    C_BODY: P_NOBODY,
    C_UNKNOWN: P_NOUNKNOWN,
}
NO_REPLY_FLAG: dict[bytes, int] = {
    C_CONNECT: P_NR_CONN,
    C_HELO: P_NR_HELO,
    C_MAIL: P_NR_MAIL,
    C_RCPT: P_NR_RCPT,
    C_DATA: P_NR_DATA,
    C_HEADER: P_NR_HDR,
    C_EOH: P_NR_EOH,
    C_BODY: P_NR_BODY,
    C_UNKNOWN: P_NR_UNKN,
}

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


class MilterProtocolError(Exception):
    """The milter sent something the protocol does not allow (the connection is unusable)."""


# --- framing ----------------------------------------------------------------------------------


def packet(command: bytes, data: bytes = b"") -> bytes:
    """One packet: length (command octet + data), command, data."""
    return _U32.pack(len(data) + 1) + command + data


class PacketReader:
    """Splits a byte stream into (command, data) packets; bounded and linear."""

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self._buffer = bytearray()
        self._max = max_packet

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def needed(self) -> int:
        """How many more octets the next packet needs (at least 1 when one is incomplete)."""
        if len(self._buffer) < 4:
            return 4 - len(self._buffer)
        length = self._length()
        return max(0, 4 + length - len(self._buffer))

    def _length(self) -> int:
        (length,) = _U32.unpack_from(self._buffer, 0)
        if length < 1 or length > self._max:
            # Never trust a length: checked before any of the data is waited for or kept.
            raise MilterProtocolError(f"packet length {length} outside 1..{self._max}")
        return int(length)

    def next_packet(self) -> tuple[bytes, bytes] | None:
        """The next whole packet, or None until more data arrives."""
        if len(self._buffer) < 4:
            return None
        length = self._length()
        if len(self._buffer) < 4 + length:
            return None
        command = bytes(self._buffer[4:5])
        data = bytes(self._buffer[5 : 4 + length])
        del self._buffer[: 4 + length]
        return command, data


# --- commands (MTA → milter) ------------------------------------------------------------------


def _cstr(text: str) -> bytes:
    # A NUL inside a value would split it: the protocol has no escape, so it is dropped.
    return text.encode("utf-8", "surrogateescape").replace(b"\0", b"") + b"\0"


def optneg(actions: int = ACTIONS_ALL, protocol: int = PROTOCOL_OFFERED) -> bytes:
    return packet(C_OPTNEG, _U32.pack(VERSION) + _U32.pack(actions) + _U32.pack(protocol))


def macro(command: bytes, macros: Iterable[tuple[str, str]]) -> bytes:
    """SMFIC_MACRO: the macros for the command that follows (names as "j" or "{name}")."""
    return packet(C_MACRO, command + b"".join(_cstr(n) + _cstr(v) for n, v in macros))


def connect(hostname: str, address: str, port: int, family: str) -> bytes:
    """SMFIC_CONNECT; family "4", "6", "L" (unix socket, address is its path) or "U" (unknown,
    nothing follows)."""
    if family == "U":
        return packet(C_CONNECT, _cstr(hostname) + b"U")
    return packet(
        C_CONNECT,
        _cstr(hostname) + family.encode("ascii") + _U16.pack(port & 0xFFFF) + _cstr(address),
    )


def helo(name: str) -> bytes:
    return packet(C_HELO, _cstr(name))


def mail(sender: str, args: Sequence[str] = ()) -> bytes:
    """SMFIC_MAIL: "<sender>" then each ESMTP parameter as its own string."""
    return packet(C_MAIL, _cstr(f"<{sender}>") + b"".join(_cstr(a) for a in args))


def rcpt(recipient: str, args: Sequence[str] = ()) -> bytes:
    return packet(C_RCPT, _cstr(f"<{recipient}>") + b"".join(_cstr(a) for a in args))


def data() -> bytes:
    return packet(C_DATA)


def header(name: str, value: str) -> bytes:
    return packet(C_HEADER, _cstr(name) + _cstr(value))


def eoh() -> bytes:
    return packet(C_EOH)


def body(chunk: bytes) -> bytes:
    if len(chunk) > BODY_CHUNK:
        raise ValueError("a body chunk is at most 65535 octets")
    return packet(C_BODY, chunk)


def end_of_body(chunk: bytes = b"") -> bytes:
    return packet(C_BODYEOB, chunk)


def abort() -> bytes:
    return packet(C_ABORT)


def quit() -> bytes:
    return packet(C_QUIT)


def quit_new_connection() -> bytes:
    """SMFIC_QUIT_NC: this session ends, the connection is kept for another."""
    return packet(C_QUIT_NC)


def unknown(command: str) -> bytes:
    return packet(C_UNKNOWN, _cstr(command))


# --- replies (milter → MTA) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The milter's answer to OPTNEG: version, the actions it may take, its protocol flags and
    the macros it asked for per stage (SETSYMLIST, STAGE_* → names)."""

    version: int
    actions: int
    protocol: int
    symlists: dict[int, tuple[str, ...]] = field(default_factory=dict)

    def sends(self, command: bytes) -> bool:
        """Whether the MTA sends this stage at all."""
        flag = SKIP_FLAG.get(command, 0)
        return not self.protocol & flag

    def replies(self, command: bytes) -> bool:
        """Whether the milter answers this stage (MACRO, ABORT and QUIT never get answers)."""
        if command in (C_MACRO, C_ABORT, C_QUIT, C_QUIT_NC):
            return False
        flag = NO_REPLY_FLAG.get(command, 0)
        return not self.protocol & flag

    def may(self, action: int) -> bool:
        return bool(self.actions & action)

    @property
    def leading_space(self) -> bool:
        return bool(self.protocol & P_HDR_LEADSPC)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A final answer to a stage: accept, continue, discard, reject, tempfail, skip (stop
    sending the body), shutdown/conn_fail (the milter gives up)."""

    kind: str


@dataclass(frozen=True, slots=True)
class ReplyCode:
    """SMFIR_REPLYCODE: reject (5xx) or tempfail (4xx) with this reply."""

    code: int
    enhanced: str | None
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Progress:
    """SMFIR_PROGRESS: still working, restart the timeout."""


@dataclass(frozen=True, slots=True)
class AddHeader:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class InsertHeader:
    index: int  # position among all header fields, 0 = first
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ChangeHeader:
    index: int  # 1 = the first field of that name; an empty value deletes it
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ReplaceBody:
    chunk: bytes  # one piece of the new body; the pieces concatenate


@dataclass(frozen=True, slots=True)
class ChangeFrom:
    sender: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AddRecipient:
    recipient: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeleteRecipient:
    recipient: str


@dataclass(frozen=True, slots=True)
class Quarantine:
    reason: str


Modification = (
    AddHeader
    | InsertHeader
    | ChangeHeader
    | ReplaceBody
    | ChangeFrom
    | AddRecipient
    | DeleteRecipient
    | Quarantine
)
Reply = Verdict | ReplyCode | Progress | Modification

_VERDICTS = {
    R_ACCEPT: "accept",
    R_CONTINUE: "continue",
    R_DISCARD: "discard",
    R_REJECT: "reject",
    R_TEMPFAIL: "tempfail",
    R_SKIP: "skip",
    R_SHUTDOWN: "shutdown",
    R_CONN_FAIL: "conn_fail",
}
# The action flag the milter must have negotiated to send each modification.
MODIFICATION_ACTION: dict[bytes, int] = {
    R_ADDHEADER: F_ADDHDRS,
    R_INSHEADER: F_ADDHDRS,
    R_CHGHEADER: F_CHGHDRS,
    R_REPLBODY: F_CHGBODY,
    R_CHGFROM: F_CHGFROM,
    R_ADDRCPT: F_ADDRCPT,
    R_ADDRCPT_PAR: F_ADDRCPT_PAR,
    R_DELRCPT: F_DELRCPT,
    R_QUARANTINE: F_QUARANTINE,
}
MAX_HEADER_NAME = 256
MAX_INDEX = 1 << 20


def _strings(data: bytes, count: int, what: str, *, more: bool = False) -> list[str]:
    """Exactly `count` NUL-terminated strings (at least, with `more`), decoded."""
    if not data.endswith(b"\0"):
        raise MilterProtocolError(f"{what}: strings must end in NUL")
    parts = data[:-1].split(b"\0")
    if len(parts) < count or (not more and len(parts) != count):
        raise MilterProtocolError(f"{what}: expected {count} strings, got {len(parts)}")
    return [p.decode("utf-8", "surrogateescape") for p in parts]


def _header_name(name: str, what: str) -> str:
    # RFC 5322 §2.2: a field name is printable US-ASCII except colon.
    if not name or len(name) > MAX_HEADER_NAME or any(c < "!" or c > "~" or c == ":" for c in name):
        raise MilterProtocolError(f"{what}: invalid header name {name[:40]!r}")
    return name


def _address(text: str, what: str) -> str:
    address = text.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    if any(c in address for c in "<>\r\n") or any(ord(c) < 32 for c in address):
        raise MilterProtocolError(f"{what}: invalid address {text[:60]!r}")
    return address


def parse_reply_code(text: str) -> ReplyCode:
    """SMFIR_REPLYCODE text: "550 5.7.1 text", or multi-line "550-5.7.1 a\\r\\n550 5.7.1 b";
    4xx or 5xx only (RFC 5321 §4.2: three digits; RFC 3463: class.subject.detail)."""
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise MilterProtocolError("replycode: empty")
    code = lines[0][:3]
    if len(code) != 3 or not code.isdigit() or code[0] not in "45":
        raise MilterProtocolError(f"replycode: {text[:40]!r} is not a 4xx/5xx reply")
    enhanced: str | None = None
    out: list[str] = []
    for index, line in enumerate(lines):
        last = index == len(lines) - 1
        if line[:3] != code or len(line) < 3:
            raise MilterProtocolError("replycode: every line must repeat the code")
        sep = line[3:4]
        if sep not in ((" ", "") if last else ("-",)):
            raise MilterProtocolError("replycode: continuation lines use '-', the last ' '")
        rest = line[4:]
        first, _, tail = rest.partition(" ")
        if _is_enhanced(first, code[0]):
            if enhanced is None and index == 0:
                enhanced = first
            if first == enhanced:
                rest = tail
        if any(ord(c) < 32 or ord(c) == 127 for c in rest):
            raise MilterProtocolError("replycode: control characters in the text")
        out.append(rest)
    return ReplyCode(int(code), enhanced, tuple(out))


def _is_enhanced(text: str, klass: str) -> bool:
    # RFC 3463 §2: class "." subject "." detail; the class matches the reply's first digit.
    parts = text.split(".")
    return (
        len(parts) == 3
        and parts[0] == klass
        and all(p.isdigit() and 1 <= len(p) <= 3 for p in parts[1:])
        and text.isascii()
    )


def parse_reply(command: bytes, data: bytes) -> Reply:
    """One reply packet from a milter; MilterProtocolError for anything malformed."""
    kind = _VERDICTS.get(command)
    if kind is not None:
        return Verdict(kind)
    if command == R_PROGRESS:
        return Progress()
    if command == R_REPLYCODE:
        (text,) = _strings(data, 1, "replycode")
        return parse_reply_code(text)
    if command == R_ADDHEADER:
        name, value = _strings(data, 2, "addheader")
        return AddHeader(_header_name(name, "addheader"), value)
    if command in (R_INSHEADER, R_CHGHEADER):
        what = "insheader" if command == R_INSHEADER else "chgheader"
        if len(data) < 4:
            raise MilterProtocolError(f"{what}: too short")
        (index,) = _U32.unpack_from(data, 0)
        if index > MAX_INDEX:
            raise MilterProtocolError(f"{what}: index {index} out of range")
        name, value = _strings(data[4:], 2, what)
        _header_name(name, what)
        if command == R_INSHEADER:
            return InsertHeader(index, name, value)
        return ChangeHeader(index, name, value)
    if command == R_REPLBODY:
        return ReplaceBody(data)
    if command == R_CHGFROM:
        parts = _strings(data, 1, "chgfrom", more=True)
        return ChangeFrom(_address(parts[0], "chgfrom"), tuple(p for p in parts[1:] if p))
    if command == R_ADDRCPT:
        (recipient,) = _strings(data, 1, "addrcpt")
        return AddRecipient(_address(recipient, "addrcpt"), ())
    if command == R_ADDRCPT_PAR:
        parts = _strings(data, 1, "addrcpt_par", more=True)
        return AddRecipient(_address(parts[0], "addrcpt_par"), tuple(p for p in parts[1:] if p))
    if command == R_DELRCPT:
        (recipient,) = _strings(data, 1, "delrcpt")
        return DeleteRecipient(_address(recipient, "delrcpt"))
    if command == R_QUARANTINE:
        (reason,) = _strings(data, 1, "quarantine")
        return Quarantine(reason)
    raise MilterProtocolError(f"unknown reply command {command!r}")


def parse_optneg(
    command: bytes, data: bytes, offered_actions: int = ACTIONS_ALL,
    offered_protocol: int = PROTOCOL_OFFERED,
) -> Negotiated:  # fmt: skip
    """The milter's OPTNEG answer: version 2..6, actions and protocol flags within what was
    offered, then optional (stage, macro list) pairs (the SETSYMLIST requests)."""
    if command != C_OPTNEG:
        raise MilterProtocolError(f"expected an OPTNEG reply, got {command!r}")
    if len(data) < 12:
        raise MilterProtocolError("optneg: too short")
    version, actions, protocol = struct.unpack_from(">III", data, 0)
    if not MIN_VERSION <= version <= VERSION:
        raise MilterProtocolError(f"optneg: unsupported version {version}")
    if protocol & ~offered_protocol & ~(P_MDS_256K | P_MDS_1M):
        raise MilterProtocolError(
            f"optneg: protocol flags {protocol & ~offered_protocol:#x} were not offered"
        )
    symlists: dict[int, tuple[str, ...]] = {}
    rest = data[12:]
    while rest:
        if len(rest) < 5:
            raise MilterProtocolError("optneg: truncated macro list")
        (stage,) = _U32.unpack_from(rest, 0)
        end = rest.find(b"\0", 4)
        if end < 0:
            raise MilterProtocolError("optneg: macro list without NUL")
        if stage not in STAGE_COMMAND:
            raise MilterProtocolError(f"optneg: unknown macro stage {stage}")
        names = rest[4:end]
        if len(names) > MAX_SYMLIST:
            raise MilterProtocolError("optneg: macro list too long")
        symlists[stage] = tuple(names.decode("ascii", "replace").split())
        rest = rest[end + 1 :]
    # Actions beyond what was offered are ignored (Postfix logs and masks them).
    return Negotiated(int(version), int(actions) & offered_actions, int(protocol), symlists)
