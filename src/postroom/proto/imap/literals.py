"""How much a command may carry in literals: the decision on each literal announcement.

Before authentication the client is nobody: a command's literals may hold 8 KiB together and
be at most 8 (Dovecot bounds a whole command to 8 KiB before login, IMAP_LOGIN_MAX_LINE_LENGTH;
LOGIN needs two literals, ID is the only other command with strings). After it, a command
other than APPEND may carry 64 KiB of literals, at most 1,024 of them (Dovecot's
imap_max_line_length, 64 KiB, bounds a command with its literals the same way). APPEND's
messages are bounded one by one by `max_append` and stream to disk when large (RFC 3502
MULTIAPPEND has no count to bound).

A literal over a limit: the synchronising kind is refused with a tagged BAD [TOOBIG] (NO
[TOOBIG] for an APPEND message, RFC 7889 §4) and the client sends none of it (RFC 3501 §7.5).
The non-synchronising kind is already on its way (RFC 7888 §4: the server rejects it, then
reads and discards it or closes the connection): after authentication it is read and thrown
away with the rest of its command, as before; before, the connection is closed after the BAD,
as Dovecot does, rather than read what may be gigabytes for a client nobody knows.
"""

from __future__ import annotations

from dataclasses import dataclass

from postroom.proto.imap.reader import NeedContinuation


@dataclass(frozen=True, slots=True)
class Budget:
    """Literals one command may carry."""

    octets: int
    count: int


BEFORE_LOGIN = Budget(octets=8 * 1024, count=8)
AFTER_LOGIN = Budget(octets=64 * 1024, count=1024)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Accept the literal (`refusal` empty), or answer `refusal` and, if `close`, hang up."""

    refusal: bytes = b""
    close: bool = False


ACCEPT = Verdict()


def judge(event: NeedContinuation, *, authenticated: bool, max_append: int) -> Verdict:
    tag = event.tag or "*"
    if authenticated and event.command == "APPEND":
        if event.size <= max_append:
            return ACCEPT
        # RFC 7889 §4 (and RFC 4469 §4.2): TOOBIG for a message over the APPEND limit.
        return Verdict(f"{tag} NO [TOOBIG] Literal too large\r\n".encode())
    budget = AFTER_LOGIN if authenticated else BEFORE_LOGIN
    if event.earlier >= budget.count:
        why = "Too many literals"
    elif event.earlier_octets + event.size > budget.octets:
        why = "Literal too large"
    else:
        return ACCEPT
    refusal = f"{tag} BAD [TOOBIG] {why}\r\n".encode()  # RFC 9051 §7.1 TOOBIG
    if event.synchronizing or authenticated:
        return Verdict(refusal)
    return Verdict(refusal + f"* BYE {why} before login\r\n".encode(), close=True)
