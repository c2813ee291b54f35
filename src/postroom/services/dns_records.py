"""The DNS records a local domain needs, as RFC 1035 master-file lines (what `postroom dns
records DOMAIN` prints).

Every name is absolute (a final dot, RFC 1035 §5.1), so the lines mean the same in any zone
file whatever its $ORIGIN, and each group of records follows a `;` comment saying what it is
for: the MX, SPF, the DKIM keys (active, announced and, for their week, retired), DMARC,
TLS reporting, MTA-STS (when HTTPS is served), the RFC 6186 SRV records of the mail services,
the web names clients and senders ask (mta-sts., autoconfig., autodiscover.), and, as
comments, what this machine cannot know (its public addresses and their PTR records).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence

from postroom.mailauth.keys import txt_parts
from postroom.services.dkim_keys import RETIRED_KEPT, key_record, record_name
from postroom.services.mta_sts_policy import ServedPolicy
from postroom.storage.records import DkimKey

TTL = 3600
DMARC_REPORTS = "dmarc-reports"  # local part of the DMARC rua= address (issue 13 §5)
TLS_REPORTS = "tls-reports"  # local part of the TLS-RPT rua= address
SPF_DOMAIN = "v=spf1 mx -all"  # a domain's SPF: its MX hosts send its mail
SPF_HOST = "v=spf1 a -all"  # the host name's SPF (the HELO identity of bounces)

# RFC 6186 §3 (and RFC 8314 §5.1 for submissions): SRV service label, the [listen] service
# that offers it, and its priority. RFC 8314 §5.1: implicit TLS is preferred, so the STARTTLS
# services get the larger (less preferred) priority.
SRV_SERVICES: tuple[tuple[str, str, int], ...] = (
    ("_submissions._tcp", "submissions", 0),
    ("_imaps._tcp", "imaps", 0),
    ("_pop3s._tcp", "pop3s", 0),
    ("_submission._tcp", "submission", 10),
    ("_imap._tcp", "imap", 10),
    ("_pop3._tcp", "pop3", 10),
)

_STATE_NOTES = {
    "active": "active: signs the domain's mail",
    "announced": "announced: publish it now; signing moves to it once it is seen in DNS",
}


def absolute(name: str) -> str:
    return name.rstrip(".") + "."


def quote(text: str) -> str:
    """One <character-string> (RFC 1035 §5.1): `"` and `\\` escaped, other octets outside
    printable ASCII as \\DDD."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.extend(f"\\{octet:03d}" for octet in char.encode("utf-8"))
    return '"' + "".join(out) + '"'


def txt_line(name: str, text: str) -> str:
    """A TXT record, its text cut into character-strings of at most 255 octets (RFC 1035
    §3.3.14; RFC 6376 §3.6.2.2: a verifier joins them again)."""
    parts = " ".join(quote(part) for part in txt_parts(text))
    return f"{absolute(name)} {TTL} IN TXT {parts}"


def dkim_line(key: DkimKey) -> str:
    return txt_line(record_name(key), key_record(key))


def _day(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%d")


def mx_line(domain: str, hostname: str) -> str:
    return f"{absolute(domain)} {TTL} IN MX 10 {absolute(hostname)}"


def dmarc_name(domain: str) -> str:
    return f"_dmarc.{domain}"


def dmarc_text(domain: str) -> str:
    return f"v=DMARC1; p=reject; rua=mailto:{DMARC_REPORTS}@{domain}"


def tlsrpt_name(domain: str) -> str:
    return f"_smtp._tls.{domain}"


def tlsrpt_text(domain: str) -> str:
    return f"v=TLSRPTv1; rua=mailto:{TLS_REPORTS}@{domain}"


def address_line(hostname: str, address: str) -> str:
    """The A or AAAA record of the host name for one of its addresses."""
    rtype = "AAAA" if ":" in address else "A"
    return f"{absolute(hostname)} {TTL} IN {rtype} {address}"


def _key_note(key: DkimKey) -> str:
    note = _STATE_NOTES.get(key.state)
    if note is None:
        until = _day(key.state_changed + RETIRED_KEPT)
        note = f"retired: signs no more; keep it published until {until} (mail in transit)"
    return f"; {key.selector} ({key.algorithm}), {note}"


def _inside(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def zone_lines(
    domain: str,
    hostname: str,
    ports: Mapping[str, int],
    keys: Sequence[DkimKey],
    *,
    relay: str | None = None,
    mta_sts: ServedPolicy | None = None,
) -> list[str]:
    """The records of `domain`, whose mail host is `hostname`. `ports`: the [listen] services
    that are started, by name, with their port; `keys`: the DKIM keys to publish
    (`dkim_keys.published_keys`); `relay`: the smarthost mail leaves through, if any;
    `mta_sts`: the policy the HTTPS listener serves for the domain, if it serves one."""
    zone = absolute(domain)
    host = absolute(hostname)
    lines = [
        f"; DNS records for {domain}, in RFC 1035 master-file syntax (absolute names).",
        "",
        f"; Mail for {domain} goes to {hostname} (RFC 5321 §5.1). The MX must name a host with",
        "; A/AAAA records, not a CNAME (RFC 2181 §10.3): see the end.",
        mx_line(domain, hostname),
        "",
        f"; SPF (RFC 7208): mail from {domain} comes from its MX host and nowhere else.",
        txt_line(domain, SPF_DOMAIN),
    ]
    if hostname != domain:
        # RFC 7208 §2.3: bounces have an empty MAIL FROM; receivers check the HELO name.
        helo = txt_line(hostname, SPF_HOST)
        lines.append(f"; and for {hostname}, the HELO name of bounces (RFC 7208 §2.3):")
        lines.append(helo if _inside(hostname, domain) else f"; (in its own zone) {helo}")
    if relay:
        lines.append(
            f"; Mail leaves through the relay {relay}: authorise its senders too, adding what its"
        )
        lines.append('; provider gives (such as "include:...") before "-all".')
    lines += [
        "",
        "; DKIM (RFC 6376; ed25519 per RFC 8463): the public keys that verify its signatures.",
    ]
    for key in keys:
        lines += [_key_note(key), dkim_line(key)]
    if not keys:
        lines.append("; (no keys)")
    lines += [
        "",
        "; DMARC (RFC 7489, DMARCbis): refuse mail that fails SPF and DKIM alignment; aggregate",
        f"; reports go to {DMARC_REPORTS}@{domain}.",
        txt_line(dmarc_name(domain), dmarc_text(domain)),
        "",
        f"; SMTP TLS reporting (RFC 8460): reports on TLS with {domain}'s MX go to",
        f"; {TLS_REPORTS}@{domain}.",
        txt_line(tlsrpt_name(domain), tlsrpt_text(domain)),
        "",
        *_mta_sts_lines(domain, hostname, ports, mta_sts),
        "; Where mail clients find the services (RFC 6186, RFC 8314 §5.1): implicit TLS first;",
        '; "0 0 0 ." says a service is not offered (RFC 6186 §3.4).',
        *_srv_lines(zone, host, ports),
        "",
        *_web_lines(domain, hostname, ports),
        *_address_notes(host),
    ]
    return lines


def _srv_lines(zone: str, host: str, ports: Mapping[str, int]) -> Iterable[str]:
    for label, service, priority in SRV_SERVICES:
        port = ports.get(service, 0)
        # A port of 0 is picked when the server starts: no client could be told it.
        target = f"{priority} 1 {port} {host}" if port else "0 0 0 ."
        yield f"{label}.{zone} {TTL} IN SRV {target}"


def _mta_sts_lines(
    domain: str, hostname: str, ports: Mapping[str, int], policy: ServedPolicy | None
) -> list[str]:
    if policy is None or not ports.get("https"):
        return [
            "; MTA-STS (RFC 8461) needs the https listener ([listen] https): not offered.",
            "",
        ]
    url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
    if policy.mode == "enforce":
        state = [
            "; MTA-STS (RFC 8461): the policy served at",
            f"; {url} is in mode enforce: senders",
            f"; deliver only over TLS to {hostname}, with a certificate valid for it.",
        ]
    else:
        state = [
            "; MTA-STS (RFC 8461): the policy served at",
            f"; {url} is in mode testing: the certificate",
            f"; is not yet valid for {hostname} and mta-sts.{domain} (senders report TLS",
            "; failures but deliver).",
        ]
    lines = [
        *state,
        "; The id changes with the policy: print these records again when the certificate",
        "; changes (the policy turns to enforce once it is valid).",
    ]
    if ports["https"] != 443:
        lines.append(
            f"; Senders fetch the policy on port 443; [listen] https is on port {ports['https']}."
        )
    return [*lines, txt_line(f"_mta-sts.{domain}", policy.record), ""]


def _web_lines(domain: str, hostname: str, ports: Mapping[str, int]) -> list[str]:
    """The names senders and clients ask over HTTP(S), pointed at the host name (a CNAME is
    fine here: they are no MX targets)."""
    if not (ports.get("http") or ports.get("https")):
        return []
    host = absolute(hostname)
    lines = [
        "; The web names of the domain (MTA-STS policy, Thunderbird autoconfig, Outlook",
        "; autodiscover), answered by this server; its certificate must name them.",
    ]
    for prefix in ("mta-sts", "autoconfig", "autodiscover"):
        name = f"{prefix}.{domain}"
        if name != hostname:
            lines.append(f"{absolute(name)} {TTL} IN CNAME {host}")
    if ports.get("https"):
        # Where Outlook looks for Autodiscover when autodiscover.DOMAIN fails (MS-OXDSCLI).
        lines.append(
            f"_autodiscover._tcp.{absolute(domain)} {TTL} IN SRV 0 1 {ports['https']} {host}"
        )
    return [*lines, ""]


def _address_notes(host: str) -> list[str]:
    return [
        "; What this machine cannot know: its public addresses. Publish them for the host name",
        f"; {host} {TTL} IN A <this server's public IPv4 address>",
        f"; {host} {TTL} IN AAAA <this server's public IPv6 address, if it has one>",
        "; and have the owner of each address (the hosting provider) point its PTR back to it:",
        "; many receivers refuse mail from an address whose name does not lead back to it.",
        f"; <reverse name of the address>.in-addr.arpa. (or .ip6.arpa.) IN PTR {host}",
    ]
