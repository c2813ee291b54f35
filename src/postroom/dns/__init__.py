"""DNS lookups for mail routing: MX hosts and addresses (RFC 5321 §5.1, RFC 7505)."""

from postroom.dns.resolver import (
    NULL_MX_REPLY_CODE,
    NULL_MX_STATUS,
    DnsError,
    DnsPermanentError,
    DnsResolver,
    DnsTemporaryError,
    InvalidAddressLiteral,
    MailResolver,
    MxHost,
    MxResult,
    NoMailRoute,
    NoSuchDomain,
    order_mx,
    parse_address_literal,
    parse_nameserver,
)

__all__ = [
    "NULL_MX_REPLY_CODE",
    "NULL_MX_STATUS",
    "DnsError",
    "DnsPermanentError",
    "DnsResolver",
    "DnsTemporaryError",
    "InvalidAddressLiteral",
    "MailResolver",
    "MxHost",
    "MxResult",
    "NoMailRoute",
    "NoSuchDomain",
    "order_mx",
    "parse_address_literal",
    "parse_nameserver",
]
