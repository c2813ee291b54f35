"""What mail leaving for other hosts carries so that receivers can authenticate it.

- DKIM (RFC 6376, ed25519 per RFC 8463): a message whose From: is in one of our domains (or
  below one: bounces from the host name) gets an
  ed25519-sha256 and an rsa-sha256 signature by that domain's active keys, made on the form that
  is sent (after any 7-bit downgrade: delivery/smtp.py calls `finish` last), on a worker thread.
  A domain's first keys are made when first needed. Mail from other From domains (a forwarded
  message) is not signed by us.
- SRS: a message sent on with an envelope sender outside our domains (an alias forwarding mail
  that arrived from elsewhere) leaves with an SRS0 sender of our first domain, so SPF passes at
  the next hop; bounces to it are checked and returned to the original sender (ingress).
- ARC (RFC 8617): mail that arrived from outside and is sent on gets an ARC set with our verdict
  (the Authentication-Results we prepended), sealed with our first domain's key, continuing any
  chain it came with, so receivers that trust us can accept it despite DMARC.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time

from postroom.config import Config
from postroom.delivery.smtp import OutboundMessage
from postroom.mailauth import arc, dkim, dmarc
from postroom.mailauth.keys import SigningKey
from postroom.mailauth.message_fields import field_values
from postroom.mailauth.srs import Srs, SrsError
from postroom.services.dkim_keys import ensure_keys_in, signing_keys
from postroom.storage.api import Store

log = logging.getLogger("postroom.delivery")

# Seconds a domain's signing keys are reused before the store is asked again (at once after
# the "dkim" signal: keys rotated with the CLI or on another node sharing the store).
KEYS_KEPT = 60.0
SRS_SECRET = "srs"
_ARC_RESULT = re.compile(r"\barc=(pass|fail|none)\b")


async def srs_for(config: Config, store: Store) -> Srs:
    """The SRS rewriter of our first domain, with the key made into the store once (read
    first: a server that starts writes nothing for it)."""
    secret = await store.read(lambda tx: tx.secrets.get(SRS_SECRET))
    if secret is None:
        secret = await store.write(lambda tx: tx.secrets.get_or_create(SRS_SECRET, _new_secret))
    return Srs(secret, config.domains[0])


def _new_secret() -> bytes:
    return os.urandom(32)


class OutboundAuth:
    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self._srs: Srs | None = None  # made when first needed (no store write at start)
        self.local_domains = frozenset(d.lower() for d in config.domains)
        self._keys: dict[str, tuple[float, list[SigningKey]]] = {}
        self._keys_stamp = store.signals.version("dkim")

    def is_local(self, domain: str) -> bool:
        return domain.lower() in self.local_domains

    def signing_domain(self, from_domain: str) -> str | None:
        """The local domain whose keys sign mail from `from_domain`: itself, or the local domain
        it is below (bounces come from MAILER-DAEMON@ the host name, mx.example.com: d=
        example.com aligns with it under DMARC's relaxed alignment); None for other domains."""
        name = from_domain.lower()
        while name:
            if name in self.local_domains:
                return name
            name = name.partition(".")[2]
        return None

    async def srs(self) -> Srs:
        if self._srs is None:
            self._srs = await srs_for(self.config, self.store)
        return self._srs

    async def envelope_sender(self, sender: str) -> str:
        """SRS for a sender outside our domains; ours and the null sender stay as they are."""
        if not sender or self.is_local(sender.rpartition("@")[2]):
            return sender
        return (await self.srs()).forward(sender)

    async def reverse(self, address: str) -> str | None:
        """The original address of an SRS address of ours; None when it is not a valid one."""
        try:
            return (await self.srs()).reverse(address)
        except SrsError:
            return None

    async def keys(self, domain: str) -> list[SigningKey]:
        stamp = self.store.signals.version("dkim")  # keys changed here or on another node
        if stamp != self._keys_stamp:
            self._keys_stamp = stamp
            self._keys.clear()
        now = time.monotonic()
        kept = self._keys.get(domain)
        if kept is not None and now - kept[0] < KEYS_KEPT:
            return kept[1]
        found = await self.store.read(lambda tx: signing_keys(tx, domain))
        if not found:
            await ensure_keys_in(self.store, domain, time.time())
            found = await self.store.read(lambda tx: signing_keys(tx, domain))
        self._keys[domain] = (now, found)
        return found

    async def finish(self, message: OutboundMessage, content: bytes) -> bytes:
        """The headers to send on top of `content` (ARC set first, then DKIM), prepended."""
        if message.auth:
            content = await self._seal(message, content)
        if not self.config.dkim.sign:
            return content
        header_end = content.find(b"\r\n\r\n")
        domains = dmarc.from_domains(content if header_end < 0 else content[: header_end + 2])
        if isinstance(domains, dmarc.FromError) or len(domains) != 1:
            return content
        signer = self.signing_domain(domains[0])
        if signer is None:
            return content
        keys = await self.keys(signer)
        if not keys:
            return content
        return await asyncio.to_thread(_signed, content, keys)

    async def _seal(self, message: OutboundMessage, content: bytes) -> bytes:
        ours = self.config.hostname.lower() + ";"
        results = next(
            (
                value.strip()
                for value in field_values(content, "authentication-results")
                if value.strip().lower().startswith(ours.encode())
            ),
            None,
        )
        # RFC 8617 §4.1.3: ARC signs with rsa-sha256 only.
        rsa = [k for k in await self.keys(self.config.domains[0]) if k.algorithm == "rsa"]
        if results is None or not rsa:
            return content
        found = _ARC_RESULT.search(message.auth)
        chain = found[1] if found else "none"
        try:
            sealed = await asyncio.to_thread(
                arc.seal,
                content,
                rsa[0],
                authserv_id=self.config.hostname,
                results=results,
                chain=chain,  # type: ignore[arg-type]
            )
        except ValueError as error:
            # A chain we cannot continue (too long, malformed): sent on without our set.
            log.info("no ARC set added: %s", error)
            return content
        return sealed + content


def _signed(content: bytes, keys: list[SigningKey]) -> bytes:
    return dkim.sign(content, keys) + content


__all__ = ["OutboundAuth", "SrsError", "srs_for"]
