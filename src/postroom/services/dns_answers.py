"""Reading published DNS records the way the checks need them, shared by `postroom doctor`
(services/doctor.py) and the web admin's DNS check (services/dns_check.py): the host an MX
names, the public key a DKIM record carries, whether an address is public. Record texts are
`dns.lookup.Answer`'s."""

from __future__ import annotations

import ipaddress

from postroom.mailauth.taglist import TagListError, parse_tag_list
from postroom.services import dkim_keys


def mx_host(text: str) -> tuple[int, str]:
    """(preference, host) of an MX record text "preference host"; the root is "."."""
    pref, _, host = text.partition(" ")
    name = host.strip().lower().rstrip(".") or "."
    return (int(pref) if pref.isdigit() and len(pref) <= 5 else 0, name)


def dkim_tags(text: str) -> dict[str, str] | None:
    """The tags of a DKIM key record (RFC 6376 §3.6.1); None when the text is not a tag list
    with p= (or longer than any record of ours)."""
    if len(text) > dkim_keys.MAX_RECORD:
        return None
    try:
        tags = parse_tag_list(text)
    except TagListError:
        return None
    return tags if "p" in tags else None


def dkim_public(text: str) -> str | None:
    """The p= of a DKIM key record, whitespace removed (RFC 6376 §3.6.1: base64 with FWS);
    None when the text is not a tag list with p=."""
    tags = dkim_tags(text)
    return None if tags is None else "".join(tags["p"].split())


def is_global(address: str) -> bool:
    """Whether other servers on the Internet can reach the address (not private, loopback,
    link-local or documentation space)."""
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False
