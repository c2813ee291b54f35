"""Whether the certificate a server TLS context presents would be accepted by a verifying
client: a TLS handshake between that context and a client context, in memory (no socket),
with the name as SNI and as the name checked.

The answer is exact for whatever the context serves now (a certificate loaded again, or one
picked per name by an SNI callback). The client trusts the system's CA store (OpenSSL's
default paths, what senders on the Internet use) and, when given, one more PEM bundle (a
private CA, such as `[acme] ca_file`). `served_policy` turns the answer into the MTA-STS
policy a domain gets (services/mta_sts_policy.py): what the server serves and what `dns
records` announces are made by this one function.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

from postroom.services.mta_sts_policy import ServedPolicy, policy_for, policy_name

HANDSHAKE_ROUNDS = 10  # a TLS 1.2 or 1.3 handshake takes 2 to 3; more is a stuck peer


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context: system CAs, plus `ca_file` when given."""
    context = ssl.create_default_context()
    if ca_file is not None:
        # An unreadable bundle trusts nothing more; the check then says why not.
        with contextlib.suppress(OSError, ssl.SSLError):
            context.load_verify_locations(cafile=str(ca_file))
    return context


def certificate_problem(server: ssl.SSLContext, name: str, client: ssl.SSLContext) -> str | None:
    """Why a client trusting what `client` trusts refuses the certificate `server` presents
    for `name`; None when it accepts it."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, to_server, server_hostname=name)
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    server_done = False
    for _ in range(HANDSHAKE_ROUNDS):
        try:
            client_side.do_handshake()
            return None
        except ssl.SSLCertVerificationError as error:
            return str(error.verify_message or error)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as error:
            return f"handshake failed: {error}"
        server_in.write(to_server.read())
        if not server_done:
            try:
                server_side.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as error:
                return f"the server side failed: {error}"
        to_client.write(server_out.read())
    return "the handshake did not finish"


def served_policy(
    server: ssl.SSLContext, hostname: str, domain: str, client: ssl.SSLContext
) -> tuple[ServedPolicy, str | None]:
    """The domain's MTA-STS policy, and why it is in testing mode (None: enforce). Enforce
    needs a certificate valid for the MX host name (RFC 8461 §4.1: senders verify it) and for
    the policy host (§3.3: senders fetch the policy over verified HTTPS)."""
    for name in (hostname, policy_name(domain)):
        problem = certificate_problem(server, name, client)
        if problem is not None:
            return policy_for(hostname, False), f"{name}: {problem}"
    return policy_for(hostname, True), None
