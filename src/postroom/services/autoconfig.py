"""The documents mail clients configure themselves from, all naming the real host name and the
ports of the listeners that are started:

- Thunderbird's autoconfig file (clientConfig version 1.1, the format of Mozilla's ISPDB);
- Outlook's POX Autodiscover: the request read (bounded, no DTD, no entities: defusedxml) and
  the response with one IMAP and one SMTP protocol block;
- an Apple configuration profile (.mobileconfig, a property list) with one email account.

Implicit TLS is listed first (RFC 8314 §3.3, §5.1); a STARTTLS listener is offered after it. A
password travels only inside TLS: every listener offered here takes AUTH/LOGIN only after TLS,
so "password-cleartext" is the password sent in TLS. Pure: no I/O.
"""

from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import escape

import defusedxml
import defusedxml.ElementTree

from postroom.storage.records import normalize_address

Kind = Literal["imap", "pop3", "smtp"]
Socket = Literal["SSL", "STARTTLS"]

# [listen] service → what it offers; implicit TLS first (RFC 8314 §5.1).
LISTENERS: tuple[tuple[str, Kind, Socket], ...] = (
    ("imaps", "imap", "SSL"),  # RFC 8314 §3.3: IMAP over implicit TLS
    ("imap", "imap", "STARTTLS"),  # RFC 3501 §6.2.1
    ("pop3s", "pop3", "SSL"),
    ("pop3", "pop3", "STARTTLS"),  # RFC 2595 §4 (STLS)
    ("submissions", "smtp", "SSL"),  # RFC 8314 §3.3: submission over implicit TLS
    ("submission", "smtp", "STARTTLS"),  # RFC 6409, RFC 3207
)
MAX_REQUEST = 64 * 1024  # bytes of an Autodiscover request; a real one is a few hundred
MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3: a path is at most 256 octets with its brackets
REQUEST_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
OUTER_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
PROFILE_TYPE = "application/x-apple-aspen-config"


class AutoconfigError(ValueError):
    """A request that cannot be answered; the text says why (for a 4xx)."""


@dataclass(frozen=True, slots=True)
class Offer:
    """One listener as a client is told about it."""

    kind: Kind
    port: int
    socket: Socket


def offers(ports: Mapping[str, int]) -> list[Offer]:
    """The listeners that are started (`ports`: [listen] service → port), in the order a
    client should prefer them. A port of 0 is unknown until start: not offered."""
    return [
        Offer(kind, ports[service], socket)
        for service, kind, socket in LISTENERS
        if ports.get(service, 0) > 0
    ]


def first(found: Iterable[Offer], kind: Kind) -> Offer | None:
    return next((offer for offer in found if offer.kind == kind), None)


def split_address(text: str) -> tuple[str, str]:
    """An email address as (address, domain), lower case; AutoconfigError when it is not one."""
    address = normalize_address(text)
    local, at, domain = address.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or len(address) > MAX_ADDRESS
        or not address.isprintable()
        or any(c.isspace() or c in '<>"\\' for c in address)
    ):
        raise AutoconfigError(f"{text[:80]!r} is not an email address")
    return address, domain.removesuffix(".")


# --- Thunderbird -------------------------------------------------------------------------------


def thunderbird(hostname: str, domains: Sequence[str], ports: Mapping[str, int]) -> bytes:
    """The clientConfig v1.1 document for `domains` (the first is the provider's id)."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domains[0])
    for domain in domains:
        ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = f"{domains[0]} mail on {hostname}"
    ET.SubElement(provider, "displayShortName").text = domains[0]
    for offer in offers(ports):
        if offer.kind == "smtp":
            server = ET.SubElement(provider, "outgoingServer", type="smtp")
        else:
            server = ET.SubElement(provider, "incomingServer", type=offer.kind)
        ET.SubElement(server, "hostname").text = hostname
        ET.SubElement(server, "port").text = str(offer.port)
        ET.SubElement(server, "socketType").text = offer.socket
        ET.SubElement(server, "authentication").text = "password-cleartext"  # inside TLS
        ET.SubElement(server, "username").text = "%EMAILADDRESS%"
    ET.indent(root)
    document = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{document}\n'.encode()


# --- Outlook POX Autodiscover ------------------------------------------------------------------


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def autodiscover_request(body: bytes) -> str:
    """The EMailAddress of a POX Autodiscover request; AutoconfigError when the body is not
    well-formed XML, has a DTD or entities (refused before any is expanded), or is not an
    Outlook request for the 2006a response schema."""
    if len(body) > MAX_REQUEST:
        raise AutoconfigError(f"the request is larger than {MAX_REQUEST} bytes")
    try:
        root = defusedxml.ElementTree.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DefusedXmlException as error:
        raise AutoconfigError(f"refused XML: {type(error).__name__}") from None
    except ET.ParseError as error:
        raise AutoconfigError(f"not well-formed XML: {error}") from None
    if _local(root.tag) != "Autodiscover":
        raise AutoconfigError("the root element is not Autodiscover")
    request = next((e for e in root if _local(e.tag) == "Request"), None)
    if request is None:
        raise AutoconfigError("no Request element")
    fields = {_local(e.tag): (e.text or "").strip() for e in request}
    schema = fields.get("AcceptableResponseSchema", RESPONSE_SCHEMA)
    if schema != RESPONSE_SCHEMA:
        raise AutoconfigError(f"only the response schema {RESPONSE_SCHEMA} is offered")
    address = fields.get("EMailAddress", "")
    if not address:
        raise AutoconfigError("no EMailAddress")
    return split_address(address)[0]


def _protocol(kind: str, hostname: str, offer: Offer, address: str) -> str:
    # "Encryption" says which TLS: SSL is implicit TLS, TLS is STARTTLS (it overrides "SSL").
    encryption = "SSL" if offer.socket == "SSL" else "TLS"
    smtp = "<UsePOPAuth>off</UsePOPAuth><SMTPLast>off</SMTPLast>" if kind == "SMTP" else ""
    return (
        f"<Protocol><Type>{kind}</Type><Server>{escape(hostname)}</Server>"
        f"<Port>{offer.port}</Port><DomainRequired>off</DomainRequired>"
        f"<LoginName>{escape(address)}</LoginName><SPA>off</SPA><SSL>on</SSL>"
        f"<Encryption>{encryption}</Encryption><AuthRequired>on</AuthRequired>{smtp}</Protocol>"
    )


def autodiscover_response(hostname: str, address: str, ports: Mapping[str, int]) -> bytes:
    """The POX response for `address`: the IMAP and SMTP listeners to use (the first
    offered of each; Outlook uses one of each)."""
    found = offers(ports)
    blocks = [
        _protocol(name, hostname, offer, address)
        for name, offer in (("IMAP", first(found, "imap")), ("SMTP", first(found, "smtp")))
        if offer is not None
    ]
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{OUTER_SCHEMA}"><Response xmlns="{RESPONSE_SCHEMA}">'
        "<Account><AccountType>email</AccountType><Action>settings</Action>"
        f"{''.join(blocks)}</Account></Response></Autodiscover>\n"
    ).encode()


# --- Apple configuration profile ---------------------------------------------------------------


def mobileconfig(hostname: str, address: str, ports: Mapping[str, int]) -> bytes:
    """An unsigned configuration profile with one IMAP account for `address` (the password is
    asked for at installation). Its identifiers are derived from the host name and address,
    so installing it again replaces the earlier profile."""
    found = offers(ports)
    incoming, outgoing = first(found, "imap"), first(found, "smtp")
    if incoming is None or outgoing is None:
        raise AutoconfigError("this server offers no IMAP or no submission listener")
    reverse = ".".join(reversed(hostname.split(".")))
    profile_id = uuid.uuid5(uuid.NAMESPACE_URL, f"postroom:{hostname}:{address}")
    account_id = uuid.uuid5(profile_id, "email")
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.postroom.email.{account_id}",
        "PayloadUUID": str(account_id).upper(),
        "PayloadDisplayName": f"Mail {address}",
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": hostname,
        "IncomingMailServerPortNumber": incoming.port,
        "IncomingMailServerUseSSL": True,  # implicit TLS, or STARTTLS on a STARTTLS port
        "IncomingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": hostname,
        "OutgoingMailServerPortNumber": outgoing.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": address,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.postroom.{profile_id}",
        "PayloadUUID": str(profile_id).upper(),
        "PayloadDisplayName": f"{address} on {hostname}",
        "PayloadDescription": f"The mail account {address} (IMAP and SMTP over TLS).",
        "PayloadOrganization": hostname,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)
