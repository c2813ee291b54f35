"""Minimal SASLprep (RFC 4013), the stringprep (RFC 3454) profile for user names and passwords.

Built on the standard library's :mod:`stringprep` tables, which are pinned to Unicode 3.2 as
RFC 3454 requires, and on the Unicode 3.2 NFKC normalisation from :mod:`unicodedata`.
"""

from __future__ import annotations

import stringprep
import unicodedata

__all__ = ["SASLprepError", "saslprep"]


class SASLprepError(ValueError):
    """The string cannot be prepared (prohibited character, bad bidi, unassigned code point)."""


# RFC 4013 §2.3: characters that must not appear in the output (tables from RFC 3454 App. C).
_PROHIBITED = (
    stringprep.in_table_c12,  # Non-ASCII space characters
    stringprep.in_table_c21,  # ASCII control characters
    stringprep.in_table_c22,  # Non-ASCII control characters
    stringprep.in_table_c3,  # Private use
    stringprep.in_table_c4,  # Non-character code points
    stringprep.in_table_c5,  # Surrogate codes
    stringprep.in_table_c6,  # Inappropriate for plain text
    stringprep.in_table_c7,  # Inappropriate for canonical representation
    stringprep.in_table_c8,  # Change display properties or deprecated
    stringprep.in_table_c9,  # Tagging characters
)


def _map(text: str) -> str:
    out: list[str] = []
    for ch in text:
        if stringprep.in_table_c12(ch):
            out.append(" ")  # RFC 4013 §2.1: non-ASCII space (C.1.2) is mapped to SPACE (U+0020)
        elif stringprep.in_table_b1(ch):
            continue  # RFC 4013 §2.1: "commonly mapped to nothing" characters (B.1) are removed
        else:
            out.append(ch)
    return "".join(out)


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """Prepare ``text`` with SASLprep and return the result.

    ``allow_unassigned`` selects the RFC 3454 §7 "query" semantics (code points unassigned in
    Unicode 3.2 pass through); the default is the stricter "stored string" semantics.  Raises
    :class:`SASLprepError` when the string cannot be prepared.  The result may be empty (for
    instance when the input was only a soft hyphen); callers decide whether that is acceptable.
    """
    mapped = _map(text)
    normalized = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)  # RFC 4013 §2.2: NFKC
    if not normalized:
        return normalized

    for ch in normalized:
        if any(table(ch) for table in _PROHIBITED):  # RFC 4013 §2.3: prohibited output
            raise SASLprepError(f"prohibited character U+{ord(ch):04X}")
        if not allow_unassigned and stringprep.in_table_a1(ch):  # RFC 4013 §2.5, RFC 3454 §7
            raise SASLprepError(f"unassigned code point U+{ord(ch):04X}")

    # RFC 4013 §2.4 → RFC 3454 §6: bidirectional text rules.
    has_ral = any(stringprep.in_table_d1(ch) for ch in normalized)
    if has_ral:
        if any(stringprep.in_table_d2(ch) for ch in normalized):  # §6 rule 2: no LCat with RandAL
            raise SASLprepError("string mixes left-to-right and right-to-left characters")
        # §6 rule 3: a RandALCat string must start and end with a RandALCat character.
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            raise SASLprepError("right-to-left string must start and end with a RandAL character")
    return normalized


def prepare_login(authcid: str, password: str) -> tuple[str, str] | None:
    """SASLprep a user name and password for a password check (PLAIN, LOGIN).

    RFC 4616 §2 recommends SASLprep; unassigned code points are allowed (RFC 3454 §7 query
    semantics) so characters newer than Unicode 3.2 (e.g. emoji) still work in passwords.
    None when either is unusable: no account can have such a name or password.
    """
    try:
        prepared_authcid = saslprep(authcid, allow_unassigned=True)
        prepared_password = saslprep(password, allow_unassigned=True)
    except SASLprepError:
        return None
    if not prepared_authcid or not prepared_password:
        return None
    return prepared_authcid, prepared_password
