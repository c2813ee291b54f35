"""The commented configuration file that `postroom init` writes (it loads with load_config)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from postroom.config import _DEFAULT_DATA_DIR, DEFAULT_DOMAINS, default_hostname
from postroom.config_checks import domains as check_domains
from postroom.config_checks import hostname as check_hostname
from postroom.config_checks import toml_string
from postroom.config_limits import LimitsConfig
from postroom.config_listen import DEFAULT_LISTEN
from postroom.config_outbound import DeliveryConfig
from postroom.config_queue import QueueConfig
from postroom.durations import format_duration


def render_default_config(
    hostname: str | None = None,
    domains: Sequence[str] = DEFAULT_DOMAINS,
    *,
    listen: Mapping[str, str | Sequence[str]] = DEFAULT_LISTEN,
    data_dir: str = _DEFAULT_DATA_DIR,
    acme_email: str | None = None,
) -> str:
    """The commented TOML file that ``postroom init`` writes; it loads with :func:`load_config`.

    By default it holds what an empty file means: the machine's FQDN, the domain localhost.
    `postroom quickstart` passes the production values: public `listen` addresses on the
    standard ports, a `data_dir` under /var/lib, and `acme_email` (ACME turned on).

    Raises ValueError if *hostname* or *domains* are not valid domain names.
    """
    if isinstance(domains, str):
        raise TypeError("domains must be a sequence of domain names, not a single string")
    host = check_hostname(default_hostname() if hostname is None else hostname)
    names = check_domains(list(domains))
    limits = LimitsConfig()
    queue = QueueConfig()
    domain_list = ", ".join(toml_string(name) for name in names)

    def line(key: str, value: str, comment: str, prefix: str = "") -> str:
        return f"{prefix}{key} = {value}".ljust(32) + f"  # {comment}"

    def section(rows: Sequence[tuple[str, str, str]], prefix: str = "") -> str:
        return "\n".join(line(*row, prefix=prefix) for row in rows)

    top = section(
        [
            ("hostname", toml_string(host), "this server's public name, used in SMTP greetings"),
            ("data_dir", toml_string(data_dir), "queue, mailboxes and generated keys"),
            ("domains", f"[{domain_list}]", "domains whose mail is delivered to mailboxes here"),
        ]
    )
    listen_comments = {
        "smtp": "mail from other servers (usually port 25)",
        "submission": "mail from your users, STARTTLS (usually 587)",
        "submissions": "mail from your users, implicit TLS (usually 465)",
        "imap": "IMAP, STARTTLS (usually 143)",
        "imaps": "IMAP, implicit TLS (usually 993)",
        "pop3": "POP3, STLS (usually 110)",
        "pop3s": "POP3, implicit TLS (usually 995)",
        "managesieve": "ManageSieve, STARTTLS (usually 4190)",
        "http": "web admin, ACME, autoconfig, metrics (usually 80)",
        "https": "the same over TLS (usually 443)",
    }

    def addresses(value: str | Sequence[str]) -> str:
        if isinstance(value, str):
            return toml_string(value)
        return "[" + ", ".join(toml_string(address) for address in value) + "]"

    listen_rows = section(
        [(name, addresses(addr), listen_comments[name]) for name, addr in listen.items()]
    )
    tls = section(
        [
            ("cert", '"tls/fullchain.pem"', "certificate chain, PEM (set both cert and key)"),
            ("key", '"tls/privkey.pem"', "private key of that certificate, PEM"),
        ],
        prefix="# ",
    )
    limit_rows = [
        ("message_size", str(limits.message_size), "largest accepted message, in bytes"),
        ("recipients", str(limits.recipients), "most recipients in one mail transaction"),
        ("line_length", str(limits.line_length), "longest command line incl. CRLF (min 512)"),
        (
            "command_timeout",
            toml_string(format_duration(limits.command_timeout)),
            "how long to wait for the next command",
        ),
        (
            "data_timeout",
            toml_string(format_duration(limits.data_timeout)),
            "how long to wait for more message data",
        ),
        ("connections_per_ip", str(limits.connections_per_ip), "per client IP, each service"),
        ("connections", str(limits.connections), "sessions in total, each service"),
        (
            "errors_per_session",
            str(limits.errors_per_session),
            "error replies before closing with 421",
        ),
        ("received_headers", str(limits.received_headers), "more Received: headers = mail loop"),
        (
            "pop3_timeout",
            toml_string(format_duration(limits.pop3_timeout)),
            "idle POP3 sessions are closed after",
        ),
        (
            "imap_timeout",
            toml_string(format_duration(limits.imap_timeout)),
            "idle IMAP sessions are logged out after",
        ),
        (
            "managesieve_timeout",
            toml_string(format_duration(limits.managesieve_timeout)),
            "idle ManageSieve sessions are closed after",
        ),
        (
            "imap_sessions_per_user",
            str(limits.imap_sessions_per_user),
            "IMAP sessions one user may have open",
        ),
        (
            "auth_failures",
            str(limits.auth_failures),
            "failed logins (one account, one address) before a block",
        ),
        (
            "auth_block",
            toml_string(format_duration(limits.auth_block)),
            "how long such a block lasts",
        ),
        ("messages_per_hour", str(limits.messages_per_hour), "per user who logged in"),
        ("recipients_per_hour", str(limits.recipients_per_hour), "per user who logged in"),
    ]
    queue_rows = [
        ("group_commit_ms", f"{queue.group_commit_ms:g}", "extra ms to gather writes per fsync"),
        ("group_commit_max", str(queue.group_commit_max), "most writes in one fsync"),
        (
            "retry",
            "[" + ", ".join(toml_string(format_duration(d)) for d in queue.retry) + "]",
            "waits between attempts; the last repeats",
        ),
        ("warn_after", toml_string(format_duration(queue.warn_after)), "delay notice after"),
        ("give_up_after", toml_string(format_duration(queue.give_up_after)), "return mail after"),
        (
            "keep_history",
            toml_string(format_duration(queue.keep_history)),
            "delivery history kept (queue show)",
        ),
    ]
    delivery = DeliveryConfig()
    if acme_email is None:
        acme = "# enabled = true   # certificates for hostname from Let's Encrypt (needs port 80)\n"
        acme += '# email = "postmaster@example.com"   # the ACME account\'s contact'
    else:
        acme = section(
            [
                ("enabled", "true", "certificates for hostname from the CA (needs port 80)"),
                ("email", toml_string(acme_email), "the ACME account's contact"),
            ]
        )
    acme += '\n# challenge = "tls-alpn-01"   # port 80 closed: the CA checks port 443 instead'
    return f"""\
# postroom configuration. Durations take seconds (300) or strings like "30s", "5m", "1h30m".
# Relative paths are relative to the directory of this file.

{top}

[listen]
# "host:port" per service, or a list: ["0.0.0.0:25", "[::]:25"] for IPv4 and IPv6 (an IPv6
# address in brackets; "[::]" takes IPv6 only). Port 0 picks a free port.
# Only the services listed here are started: comment a line out to disable it.
{listen_rows}

[tls]
# Without cert and key, a self-signed certificate is generated into data_dir.
{tls}

[acme]
{acme}

[server]
# user = "postroom"   # started as root: become this user once the ports are open

[storage]
# Everything is kept in data_dir (SQLite and files) unless a PostgreSQL database is named;
# several postroom nodes can share one database (`postroom storage migrate` moves a store there).
# backend = "postgresql"
# dsn = "postgresql://postroom@db.example.net:5432/postroom"
# password_file = "/etc/postroom/db-password"   # or $POSTROOM_DB_PASSWORD; never in this file

[limits]
{section(limit_rows)}

[queue]
{section(queue_rows)}

[dns]
# nameservers = ["127.0.0.1:53"]   # resolvers to ask ("host:port"); default: the system's

[auth]
# plaintext = true   # password logins without TLS too (only behind a TLS proxy, or for tests)

[verify]
# SPF, DKIM, DMARC and ARC of mail arriving on smtp from clients that did not log in.
# Each failure's action: "reject" (550 5.7.26), "junk" (the Junk mailbox) or "mark" (header only).
# enabled = true
# dmarc_reject = "reject"       # DMARC fails, the domain publishes p=reject
# dmarc_quarantine = "junk"     # DMARC fails, the domain publishes p=quarantine
# own_domains = "reject"        # From: one of our domains, and DMARC does not pass
# spf_fail = "junk"             # SPF fails, the From domain publishes no DMARC record
# trusted_networks = []         # e.g. ["192.0.2.0/24"]: not checked (loopback is not trusted)
# arc_trusted = []              # e.g. ["forwarder.example"]: ARC sealers trusted over DMARC

[antispam]
# Checks of clients on smtp (not of users who log in). All off by default.
# dnsbl = []          # e.g. ["zen.spamhaus.org"]: a listed client gets 554 5.7.1 at RCPT
# dnswl = []          # e.g. ["list.dnswl.org"]: a listed client is not greylisted
# greylist = "0"      # e.g. "5m": unknown (network, sender, recipient) get 451 4.7.1 that long
# greet_delay = "0"   # e.g. "3s": wait before the 220; clients that talk first get 554 5.5.1

[dkim]
# sign = true   # DKIM-sign mail whose From: is in one of our domains (ed25519 and rsa)

[junk]
# Each user's own junk filter, trained by moving mail into and out of Junk (or `postroom spam
# train`); it scores port-25 mail 1 (ham) to 10 (spam) once the user trained 200 of each.
# enabled = true
# junk_above = 5     # a higher score files the user's copy into Junk (0: never)
# refuse_above = 0   # a higher score for every recipient refuses at DATA, 550 5.7.1 (0: never)

# Mail filters speaking the Sendmail milter protocol (rspamd, opendkim, ...), called in the order
# written during SMTP receive; each sees the changes of the ones before it. One section each:
# [[milter]]
# address = "inet:127.0.0.1:11332"   # or "inet:[::1]:11332", "unix:/run/milter.sock"
# on_error = "tempfail"              # milter down or broken: 451 4.7.1; "accept": skip it
# services = ["smtp"]                # also "submission", "submissions" when listed
# connect_timeout = "30s"
# command_timeout = "30s"
# content_timeout = "5m"             # the message content and the end-of-message step

[delivery]
{
        section(
            [
                ("port", str(delivery.port), "SMTP port of remote servers"),
                ("concurrency", str(delivery.concurrency), "outbound SMTP sessions at once"),
            ]
        )
    }
"""
