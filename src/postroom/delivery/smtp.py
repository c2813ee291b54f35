"""Outbound SMTP delivery: queued messages for ONE destination domain over ONE connection.

`deliver_to_domain` resolves the domain's mail exchangers (RFC 5321 §5.1, RFC 7505 null MX),
tries each host in order and each host's addresses in order until one greets, says EHLO (HELO
when EHLO is refused, RFC 5321 §4.1.4), upgrades with STARTTLS when offered (RFC 3207;
opportunistic and unauthenticated by default, RFC 7435), then sends every message through the
sans-I/O client engine (`postroom.proto.smtp.client`), pipelined when the peer offers it
(RFC 2920). Each recipient ends `delivered` (2xx), `deferred` (4xx, or no host reachable) or
`failed` (5xx), with the reply text kept for the DSN (RFC 3464 Diagnostic-Code).

The only I/O here is the TCP (and TLS) connection; DNS goes through the injected
`MailResolver`. Every wait has a deadline from `OutboundSettings`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import email.parser
import email.policy
import ipaddress
import logging
import quopri
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from email import generator as email_generator
from email.message import Message
from io import BytesIO
from typing import Literal, cast

from postroom.dns.resolver import (
    NULL_MX_REPLY_CODE,
    NULL_MX_STATUS,
    DnsError,
    MailResolver,
    MxResult,
)
from postroom.model.queue import DeliveryResult, RecipientOutcome
from postroom.proto.smtp.client import (
    AuthResult,
    Capabilities,
    CommandReply,
    EnvelopeResult,
    Event,
    Greeting,
    MessageResult,
    NeedData,
    Recipient,
    SmtpClient,
    StartTlsReady,
)
from postroom.proto.smtp.params import MailParams
from postroom.proto.smtp.replies import Reply

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
QUIT_TIMEOUT = 5.0  # RFC 5321 §4.5.3.2: QUIT is a courtesy; do not wait long for its 221

TlsMode = Literal["opportunistic", "required", "verify"]


@dataclass(frozen=True)
class OutboundSettings:
    """How we talk to remote servers. Timeouts follow RFC 5321 §4.5.3.2 (5 and 10 minutes)."""

    hostname: str  # our EHLO name
    port: int = 25
    tls: TlsMode = "opportunistic"
    connect_timeout: float = 30.0
    command_timeout: float = 300.0  # RFC 5321 §4.5.3.2.1-6: greeting, MAIL, RCPT, DATA: 5 min
    data_timeout: float = 600.0  # RFC 5321 §4.5.3.2.6: DATA termination: 10 min
    # The last step before the content goes out, on the form that is sent (after a 7-bit
    # downgrade): DKIM signatures, an ARC set for forwarded mail. None: sent as stored.
    finish: Finish | None = None


@dataclass(frozen=True)
class Route:
    """A fixed next hop replacing the MX lookup: a smarthost or a per-domain route.

    `tls`: "starttls" (required before AUTH), "implicit" (RFC 8314 TLS from the first byte) or
    "opportunistic". With "starttls" and "implicit" the relay's certificate is verified against
    the host name (RFC 6125), so credentials, sent with AUTH PLAIN (or LOGIN when that is all the
    relay offers), only ever travel over a verified TLS connection.
    """

    host: str
    port: int
    tls: Literal["starttls", "implicit", "opportunistic"] = "starttls"
    username: str = ""
    password: str = ""
    ca_file: str | None = None  # CA bundle to verify the relay with (default: the system's)


@dataclass(frozen=True)
class OutboundRecipient:
    address: str
    notify: tuple[str, ...] | None = None  # RFC 3461 §4.1
    orcpt: str | None = None  # RFC 3461 §4.2, "addr-type;address"


@dataclass(frozen=True)
class OutboundMessage:
    sender: str
    params: MailParams
    recipients: tuple[OutboundRecipient, ...]
    content: bytes
    auth: str = ""  # the inbound checks of mail that arrived from outside (forwarded on)


Finish = Callable[[OutboundMessage, bytes], Awaitable[bytes]]


class _Failover(Exception):
    """This host cannot take the mail now; try the next one (RFC 5321 §5.1)."""

    def __init__(self, reason: str, *, plaintext_retry: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.plaintext_retry = plaintext_retry


class _Downgrade(Exception):
    """The message cannot be converted to 7 bit (RFC 6152 §3)."""


# --- public entry point ------------------------------------------------------------------------


async def deliver_to_domain(
    domain: str,
    messages: Sequence[OutboundMessage],
    *,
    resolver: MailResolver,
    settings: OutboundSettings,
    verify_context: ssl.SSLContext | None = None,
    route: Route | None = None,
) -> list[list[RecipientOutcome]]:
    """Deliver `messages` (all for recipients at `domain`); one outcome list per message.

    With a `route`, the next hop is that host instead of the domain's MX hosts.
    """
    if not messages:
        return []

    def everyone(result: DeliveryResult, reply: str, status: str) -> list[list[RecipientOutcome]]:
        return [
            [RecipientOutcome(r.address, result, reply, status, None) for r in m.recipients]
            for m in messages
        ]

    if route is not None:
        return await _deliver_by_route(domain, messages, route, resolver, settings, everyone)
    try:
        async with asyncio.timeout(settings.command_timeout):
            mx: MxResult = await resolver.mx_hosts(domain)
    except DnsError as error:
        result: DeliveryResult = "failed" if error.permanent else "deferred"
        return everyone(result, f"{error.status} {error}", error.status)
    except TimeoutError:
        return everyone("deferred", f"4.4.3 {domain}: DNS lookup timed out", "4.4.3")
    if mx.null_mx:
        # RFC 7505 §4.2: a null MX domain accepts no mail; fail at once with 556 5.1.10.
        reply = (
            f"{NULL_MX_REPLY_CODE} {NULL_MX_STATUS} Recipient address rejected: "
            f"{domain} does not accept mail (null MX)"
        )
        return everyone("failed", reply, NULL_MX_STATUS)

    last_error = f"4.4.1 no mail exchanger for {domain} could be reached"
    for mx_host in mx.hosts:
        try:
            async with asyncio.timeout(settings.command_timeout):
                addresses = await resolver.addresses(mx_host.host)
        except DnsError as error:
            last_error = f"4.4.1 {mx_host.host}: {error}"
            continue
        except TimeoutError:
            last_error = f"4.4.1 {mx_host.host}: address lookup timed out"
            continue
        for address in addresses:
            use_tls = True
            while True:
                try:
                    session = await _Session.open(
                        mx_host.host,
                        address,
                        settings,
                        verify_context,
                        literal=mx.literal,
                        use_tls=use_tls,
                    )
                except _Failover as failover:
                    last_error = failover.reason
                    log.info("delivery to %s: %s", domain, failover.reason)
                    if failover.plaintext_retry and use_tls:
                        # RFC 7435 §3: opportunistic TLS falls back to cleartext on failure.
                        use_tls = False
                        continue
                    break
                return await session.deliver_all(messages)
    # RFC 5321 §4.5.4.1: no host could be reached — keep the mail and retry later.
    return everyone("deferred", last_error, "4.4.1")


async def _deliver_by_route(
    domain: str,
    messages: Sequence[OutboundMessage],
    route: Route,
    resolver: MailResolver,
    settings: OutboundSettings,
    everyone: Callable[[DeliveryResult, str, str], list[list[RecipientOutcome]]],
) -> list[list[RecipientOutcome]]:
    # Implicit TLS is on before the greeting; "starttls" insists on a verified upgrade.
    tls: TlsMode = "verify" if route.tls == "starttls" else "opportunistic"
    verify = None
    if route.tls != "opportunistic":
        verify = ssl.create_default_context(cafile=route.ca_file)
    routed = dataclasses.replace(settings, port=route.port, tls=tls)
    try:
        addresses = [str(ipaddress.ip_address(route.host.strip("[]")))]  # an IP needs no DNS
    except ValueError:
        addresses = []
    try:
        if not addresses:
            async with asyncio.timeout(settings.command_timeout):
                addresses = await resolver.addresses(route.host)
    except DnsError as error:
        return everyone("deferred", f"4.4.3 route {route.host}: {error}", "4.4.3")
    except TimeoutError:
        return everyone("deferred", f"4.4.3 route {route.host}: lookup timed out", "4.4.3")
    credentials = (route.username, route.password) if route.username else None
    last_error = f"4.4.1 relay {route.host} could not be reached"
    for address in addresses:
        try:
            session = await _Session.open(
                route.host,
                address,
                routed,
                verify,
                literal=False,
                use_tls=route.tls != "implicit",
                implicit_tls=route.tls == "implicit",
                credentials=credentials,
            )
        except _Failover as failover:
            last_error = failover.reason
            log.info("delivery to %s via %s: %s", domain, route.host, failover.reason)
            continue
        return await session.deliver_all(messages)
    return everyone("deferred", last_error, "4.4.1")


# --- one connection ---------------------------------------------------------------------------


class _Link(asyncio.Protocol):
    """The TCP (then TLS) connection: buffered input, flow-controlled output."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._readable.set()

    def eof_received(self) -> bool:
        self.closed = True
        self._readable.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._readable.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def read(self, timeout: float) -> bytes:
        """The bytes received so far (waiting for some); b"" when the peer closed."""
        async with asyncio.timeout(timeout):
            while not self.buffer and not self.closed:
                self._readable.clear()
                await self._readable.wait()
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def write(self, data: bytes, timeout: float) -> None:
        if self.closed or self.transport is None:
            raise ConnectionError("connection closed")
        self.transport.write(data)
        async with asyncio.timeout(timeout):
            await self._writable.wait()  # back-pressure: wait until the buffer drains

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True


class _Session:
    """A connected, greeted (and maybe TLS-protected) SMTP session with one MX address."""

    def __init__(
        self, host: str, address: str, settings: OutboundSettings, link: _Link, client: SmtpClient
    ) -> None:
        self.host = host
        self.address = address
        self.settings = settings
        self.link = link
        self.client = client
        self.peer = f"{host}[{address}]"
        self.lost: str | None = None  # a local reason the session ended (timeout, reset)

    # --- opening: connect, greeting, EHLO, STARTTLS (all before any mail is sent) -------------

    @classmethod
    async def open(
        cls,
        host: str,
        address: str,
        settings: OutboundSettings,
        verify_context: ssl.SSLContext | None,
        *,
        literal: bool,
        use_tls: bool,
        implicit_tls: bool = False,
        credentials: tuple[str, str] | None = None,
    ) -> _Session:
        peer = f"{host}[{address}]"
        loop = asyncio.get_running_loop()
        # RFC 8314 §3: implicit TLS from the first byte, verified like STARTTLS would be.
        context = (verify_context or ssl.create_default_context()) if implicit_tls else None
        try:
            async with asyncio.timeout(settings.connect_timeout):
                _, link = await loop.create_connection(
                    _Link,
                    address,
                    settings.port,
                    ssl=context,
                    server_hostname=None if context is None else host,
                )
        except TimeoutError:
            raise _Failover(f"4.4.1 connection to {peer} timed out") from None
        except ConnectionRefusedError:
            raise _Failover(f"4.4.1 connection refused by {peer}") from None
        except OSError as error:
            raise _Failover(f"4.4.1 cannot connect to {peer}: {error.strerror or error}") from None
        session = cls(host, address, settings, link, SmtpClient(settings.hostname))
        try:
            await session._start(verify_context, literal=literal, use_tls=use_tls)
            if credentials is not None:
                if not implicit_tls and link.transport is not None and not _encrypted(link):
                    raise _Failover(f"4.7.0 {peer}: no TLS, credentials not sent")
                await session._authenticate(*credentials)
        except _Failover:
            await session.close(quit_first=True)
            raise
        return session

    async def _start(
        self, verify_context: ssl.SSLContext | None, *, literal: bool, use_tls: bool
    ) -> None:
        client = self.client
        greeting = await self._event()
        # RFC 5321 §3.1 / §5.1: a host that does not greet with 220 is skipped for the next one.
        if not isinstance(greeting, Greeting) or greeting.reply.code != 220:
            raise _Failover(f"4.4.1 {self.peer} refused to talk to us: {self._describe(greeting)}")
        await self._hello()
        mode = self.settings.tls
        if "STARTTLS" not in client.extensions or not use_tls:
            if mode != "opportunistic":
                raise _Failover(f"4.4.1 {self.peer} does not offer STARTTLS (tls = {mode!r})")
            return
        # RFC 3207 §4: STARTTLS, then the handshake, then a new EHLO (§4.2).
        client.starttls()
        reply = await self._event()
        if not isinstance(reply, StartTlsReady):
            if mode != "opportunistic" or client.closed:
                raise _Failover(f"4.4.1 {self.peer} refused STARTTLS: {self._describe(reply)}")
            return  # RFC 7435: carry on in cleartext
        if mode == "verify":
            context = verify_context or ssl.create_default_context()
            server_hostname: str | None = self.host
        else:
            # RFC 7435 §3: opportunistic security encrypts without authenticating the peer.
            context = _unauthenticated_context()
            server_hostname = None if literal else self.host
        link = self.link
        assert link.transport is not None
        link.buffer.clear()  # CVE-2011-0411: nothing sent before the handshake is trusted
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                link.transport,
                link,
                context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=self.settings.command_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as error:
            link.abort()
            raise _Failover(
                f"4.4.1 TLS handshake with {self.peer} failed: {error}",
                plaintext_retry=mode == "opportunistic",
            ) from None
        if transport is None:
            raise _Failover(f"4.4.1 TLS handshake with {self.peer} failed: connection closed")
        link.transport = transport
        client.tls_established()
        await self._hello()

    async def _authenticate(self, user: str, password: str) -> None:
        """RFC 4954: AUTH PLAIN (LOGIN when only that is offered) to a relay."""
        offered = self.client.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in offered or "LOGIN" not in offered:
            self.client.auth_plain(user, password)
        else:
            self.client.auth_login(user, password)
        event = await self._event()
        if not isinstance(event, AuthResult) or event.reply.code != 235:
            # A refused login is a configuration problem: keep the mail (4.7.0), do not bounce.
            raise _Failover(f"4.7.0 {self.peer} refused our login: {self._describe(event)}")

    async def _hello(self) -> None:
        self.client.ehlo()
        event = await self._event()
        if isinstance(event, Capabilities):
            return
        # RFC 5321 §4.1.4: a server that rejects EHLO (5xx) may still take HELO.
        if isinstance(event, CommandReply) and event.reply.code >= 500 and self.client.idle:
            self.client.helo()
            event = await self._event()
            if isinstance(event, Capabilities):
                return
        raise _Failover(f"4.4.1 {self.peer} refused our greeting: {self._describe(event)}")

    def _describe(self, event: Event | None) -> str:
        if self.lost:
            return self.lost
        reply = getattr(event, "reply", None)
        return _reply_text(reply) if isinstance(reply, Reply) else "connection closed"

    # --- event pump ---------------------------------------------------------------------------

    async def _event(self, timeout: float | None = None) -> Event | None:
        """The engine's next event, reading (and writing what is pending) as needed.

        None means the session is over with nothing more to report.
        """
        client = self.client
        wait = self.settings.command_timeout if timeout is None else timeout
        while True:
            event = client.next_event()
            # Handling a reply may have queued the next command (RSET after a DATA refused
            # because no RCPT was accepted, RFC 2920 §3.1): send it before waiting for input.
            await self._flush()
            if not isinstance(event, NeedData):
                return event
            if client.closed:
                return None
            try:
                data = await self.link.read(wait)
            except TimeoutError:
                # RFC 5321 §4.5.3.2: give up on a silent server after the timeout.
                self.lost = f"4.4.2 timeout after {wait:g}s waiting for {self.peer}"
                self.link.abort()
                data = b""
            if data:
                client.receive_data(data)
            else:
                client.connection_closed()

    async def _flush(self) -> None:
        out = self.client.data_to_send()
        if not out:
            return
        try:
            await self.link.write(out, self.settings.data_timeout)
        except (TimeoutError, ConnectionError, OSError) as error:
            self.lost = self.lost or f"4.4.2 lost connection with {self.peer}: {error or 'timeout'}"
            self.link.abort()
            self.client.connection_closed()

    # --- messages -----------------------------------------------------------------------------

    async def deliver_all(
        self, messages: Sequence[OutboundMessage]
    ) -> list[list[RecipientOutcome]]:
        results: list[list[RecipientOutcome]] = []
        try:
            for message in messages:
                if self.client.closed:
                    # RFC 5321 §3.8: after a 421 / a lost connection the rest waits for a retry.
                    reason = self.lost or f"4.4.2 connection with {self.peer} closed"
                    results.append(self._all(message, "deferred", reason, "4.4.2"))
                    continue
                results.append(await self._deliver(message))
        finally:
            await self.close(quit_first=True)
        return results

    def _all(
        self, message: OutboundMessage, result: DeliveryResult, reply: str, status: str
    ) -> list[RecipientOutcome]:
        return [
            RecipientOutcome(
                r.address, result, reply, status, self.host, remote_ip=self.address, tls=self.tls
            )
            for r in message.recipients
        ]

    async def _deliver(self, message: OutboundMessage) -> list[RecipientOutcome]:
        client = self.client
        content = message.content
        params = message.params
        if params.body == "8BITMIME" and "8BITMIME" not in client.extensions:
            if not content.isascii():
                try:
                    # RFC 6152 §3: convert to 7 bit before relaying to a peer without 8BITMIME.
                    content = downgrade_to_7bit(content)
                except _Downgrade as error:
                    reply = f"554 5.6.3 conversion to 7 bit for {self.peer} failed: {error}"
                    return self._all(message, "failed", reply, "5.6.3")
            params = replace(params, body=None)  # 7BIT, the default without 8BITMIME
        if self.settings.finish is not None:
            try:
                content = await self.settings.finish(message, content)
            except Exception:
                log.exception("preparing a message for %s failed", self.peer)
                reason = "451 4.3.0 local error preparing the message (signing)"
                return self._all(message, "deferred", reason, "4.3.0")
        # RFC 1870 §4: declare the (possibly converted) size so the peer can refuse early.
        params = replace(params, size=len(content))
        recipients = [Recipient(r.address, r.notify, r.orcpt) for r in message.recipients]
        try:
            client.send_envelope(message.sender, recipients, params)
        except ValueError as error:
            return self._all(message, "failed", f"553 5.1.3 {error}", "5.1.3")
        envelope: EnvelopeResult | None = None
        while envelope is None:
            event = await self._event()
            if event is None:
                break
            if isinstance(event, EnvelopeResult):
                envelope = event
        if envelope is None:  # cannot happen: the engine settles every envelope it started
            reason = self.lost or f"4.4.2 connection with {self.peer} closed"
            return self._all(message, "deferred", reason, "4.4.2")
        final: Reply | None = envelope.failure
        if envelope.ready:
            client.send_message(content)
            final = None
            while final is None:
                # RFC 5321 §4.5.3.2.6: the reply to "." may take up to 10 minutes.
                event = await self._event(self.settings.data_timeout)
                if event is None:
                    break
                if isinstance(event, MessageResult):
                    final = event.reply
        outcomes = []
        for index, recipient in enumerate(message.recipients):
            answer = envelope.recipients[index] if index < len(envelope.recipients) else None
            if answer is not None and 200 <= answer.code < 300:
                # RFC 5321 §4.1.1.4: the reply after the content covers every accepted RCPT.
                answer = final
            outcomes.append(self._outcome(recipient.address, answer))
        if "DSN" in client.extensions:
            outcomes = [replace(o, dsn_passed=True) for o in outcomes]
        return outcomes

    def _outcome(self, address: str, reply: Reply | None) -> RecipientOutcome:
        if reply is None or (reply.code == 421 and self.lost):
            reason = self.lost or f"4.4.2 connection with {self.peer} closed"
            return RecipientOutcome(
                address,
                "deferred",
                reason,
                "4.4.2",
                self.host,
                remote_ip=self.address,
                tls=self.tls,
            )
        # RFC 5321 §4.2.1: 2yz delivered, 4yz transient, 5yz permanent.
        result: DeliveryResult = (
            "delivered" if reply.code < 400 else "deferred" if reply.code < 500 else "failed"
        )
        status = reply.enhanced or f"{str(reply.code)[0]}.0.0"
        return RecipientOutcome(
            address,
            result,
            _reply_text(reply),
            status,
            self.host,
            remote_ip=self.address,
            tls=self.tls,
        )

    @property
    def tls(self) -> str:
        """The session's TLS version and cipher ("TLSv1.3 TLS_AES_256_GCM_SHA384"), "" without."""
        transport = self.link.transport
        tls = None if transport is None else transport.get_extra_info("ssl_object")
        if tls is None:
            return ""
        cipher = tls.cipher()
        return " ".join(part for part in (tls.version(), cipher and cipher[0]) if part)

    async def close(self, *, quit_first: bool) -> None:
        """QUIT (RFC 5321 §4.1.1.10) when the session is still usable, then close."""
        client = self.client
        if quit_first and not client.closed and client.idle and not self.link.closed:
            with contextlib.suppress(Exception):
                client.quit()
                while await self._event(QUIT_TIMEOUT) is not None:
                    if client.closed:
                        break
        transport = self.link.transport
        if transport is not None and not transport.is_closing():
            transport.close()


# --- helpers ----------------------------------------------------------------------------------


def _reply_text(reply: Reply) -> str:
    head = f"{reply.code} {reply.enhanced}" if reply.enhanced else str(reply.code)
    text = " ".join(line for line in reply.lines if line)
    return f"{head} {text}" if text else head


def _encrypted(link: _Link) -> bool:
    return link.transport is not None and link.transport.get_extra_info("ssl_object") is not None


def _unauthenticated_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


_SEVEN_BIT_POLICY = email.policy.compat32.clone(linesep="\r\n", max_line_length=0)


def downgrade_to_7bit(content: bytes) -> bytes:
    """RFC 6152 §3: re-encode 8-bit parts (text as quoted-printable, others as base64).

    Raises _Downgrade when the result would still hold 8-bit octets (in headers, say).
    """
    message = email.parser.BytesParser(policy=_SEVEN_BIT_POLICY).parsebytes(content)
    for part in message.walk():
        _downgrade_part(part)
    buffer = BytesIO()
    email_generator.BytesGenerator(buffer, mangle_from_=False, policy=_SEVEN_BIT_POLICY).flatten(
        message
    )
    out = buffer.getvalue()
    if not out.isascii():
        raise _Downgrade("8-bit octets outside a convertible body part (headers?)")
    return out


def _downgrade_part(part: Message) -> None:
    encoding = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if part.is_multipart():
        # RFC 2045 §6.4: a composite part may only be 7bit/8bit/binary; its parts are 7 bit now.
        if encoding in ("8bit", "binary"):
            part.replace_header("Content-Transfer-Encoding", "7bit")
        return
    if encoding not in ("8bit", "binary", "7bit"):
        return  # already quoted-printable or base64
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes) or raw.isascii():
        return
    del part["Content-Transfer-Encoding"]
    if part.get_content_maintype() == "text":
        # RFC 2045 §6.7: quoted-printable keeps text readable; line breaks stay line breaks.
        text = raw.replace(b"\r\n", b"\n")
        part["Content-Transfer-Encoding"] = "quoted-printable"
        part.set_payload(quopri.encodestring(text).decode("ascii"))
    else:
        part["Content-Transfer-Encoding"] = "base64"  # RFC 2045 §6.8
        encoded = base64.encodebytes(raw).decode("ascii")
        part.set_payload(encoded)


__all__ = [
    "OutboundMessage",
    "OutboundRecipient",
    "OutboundSettings",
    "RecipientOutcome",
    "deliver_to_domain",
    "downgrade_to_7bit",
]
