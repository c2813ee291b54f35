"""An ACME client (RFC 8555): account (its contact kept to `[acme] email`), order, http-01
(RFC 8555 §8.3) or tls-alpn-01 (RFC 8737) challenges, finalize, certificate chain.

Blocking, over urllib (HTTPS only, the CA's certificate verified against the system's trust
store or `[acme] ca_file`): callers run `AcmeClient.issue` on a worker thread. Requests are
JWS-signed with the account's P-256 key (ES256); the nonce of each answer signs the next
request. Every failure is an `AcmeError` with one line that says what the CA or the network
said. The challenges are published through a `ChallengeBoard` the HTTP(S) listener reads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

USER_AGENT = "postroom-acme/1"
REQUEST_TIMEOUT = 30.0  # seconds for one HTTP exchange with the CA
ORDER_TIMEOUT = 300.0  # seconds for the whole order, polling included
MAX_ANSWER = 1024 * 1024  # bytes of one answer from the CA (a chain is a few KiB)
BAD_NONCE_RETRIES = 10  # each retry carries the nonce the refusal gave
POLL_FIRST = 0.25  # seconds before the first poll of a pending object; doubles up to POLL_MOST
POLL_MOST = 5.0
RETRY_AFTER_MOST = 30.0
# RFC 8555 §8.1: a token is base64url; it becomes part of a URL path and a file name here.
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
BAD_NONCE = "urn:ietf:params:acme:error:badNonce"
NO_ACCOUNT = "urn:ietf:params:acme:error:accountDoesNotExist"
HTTP_01 = "http-01"
TLS_ALPN_01 = "tls-alpn-01"


class AcmeError(Exception):
    """An order failed; the message is one line naming what failed and why."""


class AcmeRefused(AcmeError):
    """The CA answered a request with an error document (RFC 8555 §6.7) of type `kind`."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class ChallengeBoard(Protocol):
    """Where key authorizations are put for the listener to answer: by token for http-01
    (the HTTP listener), by the name validated for tls-alpn-01 (the HTTPS listener)."""

    def publish(self, key: str, key_authorization: str) -> None: ...

    def withdraw(self, key: str) -> None: ...


@dataclass(frozen=True)
class Issued:
    """A certificate chain (PEM, leaf first) and the PEM private key it was issued for."""

    chain: bytes
    key: bytes


@dataclass(frozen=True)
class Account:
    """The account at the CA: its URL (the `kid` of every request) and its contact URLs as the
    CA last answered them."""

    url: str
    contact: tuple[str, ...]


def contact_of(email: str) -> tuple[str, ...]:
    """RFC 8555 §7.3: the account's contact URLs for `[acme] email` (none when empty)."""
    return (f"mailto:{email}",) if email else ()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            raise AcmeError(
                f"the CA answered {self.status} with something that is not JSON"
            ) from None
        if not isinstance(value, dict):
            raise AcmeError("the CA answered with JSON that is not an object")
        return value


def b64url(data: bytes) -> str:
    """RFC 8555 §6.1 / RFC 7515 §2: base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The account key's public half as a JWK (RFC 7518 §6.2.1), P-256 only."""
    numbers = key.public_key().public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 §3: SHA-256 of the required members, sorted, without whitespace."""
    canonical = json.dumps(dict(jwk), sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def key_authorization(token: str, jwk: Mapping[str, str]) -> str:
    """RFC 8555 §8.1: token '.' base64url(JWK thumbprint)."""
    return f"{token}.{thumbprint(jwk)}"


def signed(
    key: ec.EllipticCurvePrivateKey, protected: Mapping[str, Any], payload: object | None
) -> bytes:
    """A JWS in flattened JSON serialization (RFC 8555 §6.2), ES256. `payload` None is the
    empty payload of a POST-as-GET (§6.3)."""
    protected64 = b64url(json.dumps(dict(protected)).encode())
    payload64 = "" if payload is None else b64url(json.dumps(payload).encode())
    der = key.sign(f"{protected64}.{payload64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # RFC 7518 §3.4: R || S
    body = {"protected": protected64, "payload": payload64, "signature": b64url(signature)}
    return json.dumps(body).encode()


def csr_for(key: ec.EllipticCurvePrivateKey, names: Sequence[str]) -> bytes:
    """RFC 8555 §7.4: the CSR (DER) naming every identifier of the order in its SAN."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


def _problem(answer: Answer) -> tuple[str, str]:
    """RFC 8555 §6.7: an error's type and detail (RFC 7807 problem document)."""
    try:
        document = json.loads(answer.body)
    except ValueError:
        return "", answer.body[:200].decode("utf-8", "replace").strip()
    if not isinstance(document, dict):
        return "", ""
    return str(document.get("type", "")), str(document.get("detail", ""))


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


class AcmeClient:
    """One ACME account at one CA; `issue` runs an order from start to chain."""

    def __init__(
        self,
        directory_url: str,
        account_key: ec.EllipticCurvePrivateKey,
        *,
        email: str = "",
        ca_file: Path | None = None,
        order_timeout: float = ORDER_TIMEOUT,
    ) -> None:
        self.directory_url = directory_url
        self.key = account_key
        self.jwk = public_jwk(account_key)
        self.email = email
        self.order_timeout = order_timeout
        try:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as error:
            raise AcmeError(
                f"{ca_file}: cannot load the CAs of [acme] ca_file ({error}); "
                "point it at a readable PEM file"
            ) from None
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
        self._nonce: str | None = None
        self._kid: str | None = None
        self._deadline = 0.0
        self.account: Account | None = None  # once `issue` or `sync_account` found it

    # --- transport -----------------------------------------------------------------------------

    def _request(self, method: str, url: str, body: bytes | None = None) -> Answer:
        if not url.startswith("https://"):  # RFC 8555 §6.1: ACME is spoken over HTTPS only
            raise AcmeError(f"the CA gave a URL that is not https://: {url[:200]}")
        headers = {"User-Agent": USER_AGENT}  # §6.1
        if body is not None:
            headers["Content-Type"] = "application/jose+json"  # §6.2
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=REQUEST_TIMEOUT) as response:
                return Answer(response.status, response.headers, response.read(MAX_ANSWER))
        except urllib.error.HTTPError as error:
            with error:
                return Answer(error.code, error.headers, error.read(MAX_ANSWER))
        except urllib.error.URLError as error:
            raise AcmeError(f"cannot reach the ACME server at {url}: {error.reason}") from None
        except (OSError, ValueError) as error:
            raise AcmeError(f"cannot reach the ACME server at {url}: {error}") from None

    def _get_json(self, url: str) -> dict[str, Any]:
        answer = self._request("GET", url)
        if answer.status != 200:
            kind, detail = _problem(answer)
            raise AcmeError(f"GET {url} answered {answer.status}: {_one_line(detail or kind)}")
        return answer.json()

    def _new_nonce(self, directory: Mapping[str, Any]) -> str:
        """RFC 8555 §7.2: HEAD newNonce gives a fresh Replay-Nonce."""
        answer = self._request("HEAD", str(directory["newNonce"]))
        nonce = answer.headers.get("Replay-Nonce")
        if not nonce:
            raise AcmeError(f"the CA's newNonce answered {answer.status} without a Replay-Nonce")
        return nonce

    def _post(self, directory: Mapping[str, Any], url: str, payload: object | None) -> Answer:
        """A signed POST (payload None: POST-as-GET, §6.3); a badNonce is retried with the
        nonce it carried (§6.5)."""
        for attempt in range(BAD_NONCE_RETRIES + 1):
            nonce = self._nonce or self._new_nonce(directory)
            self._nonce = None
            protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
            if self._kid is None:
                protected["jwk"] = self.jwk  # §6.2: only newAccount is signed with the key
            else:
                protected["kid"] = self._kid
            answer = self._request("POST", url, signed(self.key, protected, payload))
            self._nonce = answer.headers.get("Replay-Nonce")  # §6.5: every answer carries one
            if answer.status < 400:
                return answer
            kind, detail = _problem(answer)
            if kind == BAD_NONCE and attempt < BAD_NONCE_RETRIES:
                continue
            what = _one_line(detail or kind or f"HTTP {answer.status}")
            raise AcmeRefused(f"the ACME server refused the request to {url}: {what}", kind)
        raise AssertionError("unreachable")

    # --- the protocol --------------------------------------------------------------------------

    def _directory(self) -> dict[str, Any]:
        directory = self._get_json(self.directory_url)  # §7.1.1
        for field in ("newNonce", "newAccount", "newOrder"):
            if not isinstance(directory.get(field), str):
                raise AcmeError(f"{self.directory_url} is not an ACME directory (no {field})")
        return directory

    def _account(self, directory: Mapping[str, Any], *, only_existing: bool = False) -> Account:
        """RFC 8555 §7.3: newAccount with our key (§7.3.1 `onlyReturnExisting`: never make
        one); an existing account answers 200 with its URL, which then signs every request
        (kid), and its contact is brought to `email`'s (§7.3.2)."""
        meta = directory.get("meta") or {}
        if isinstance(meta, dict) and meta.get("externalAccountRequired"):
            raise AcmeError(
                "the CA requires external account binding (RFC 8555 §7.3.4), "
                "which postroom does not support; choose another [acme] directory"
            )
        wanted = contact_of(self.email)
        payload: dict[str, Any] = {"termsOfServiceAgreed": True}
        if only_existing:
            payload = {"onlyReturnExisting": True}
        elif wanted:
            payload["contact"] = list(wanted)
        answer = self._post(directory, str(directory["newAccount"]), payload)
        location = answer.headers.get("Location")
        if not location:
            raise AcmeError("the CA created the account without giving its URL (Location)")
        self._kid = location
        if answer.status == 201:  # §7.3: created, with the contact sent
            return Account(location, wanted)
        found = _json_object(answer.body)
        if found is None:  # §7.3.3: the account object by POST-as-GET of its URL
            found = self._post(directory, location, None).json()
        if _contact(found) != wanted:
            # §7.3.2: an update of the account's contact, POSTed to its URL
            found = self._post(directory, location, {"contact": list(wanted)}).json()
        return Account(location, _contact(found))

    def sync_account(self) -> Account | None:
        """The existing account with its contact brought to `email`'s; None when the CA has
        no account for our key (the next order makes one with that contact)."""
        directory = self._directory()
        try:
            self.account = self._account(directory, only_existing=True)
        except AcmeRefused as refused:
            if refused.kind == NO_ACCOUNT:
                return None
            raise
        return self.account

    def _poll(
        self, directory: Mapping[str, Any], url: str, done: set[str], what: str
    ) -> dict[str, Any]:
        """POST-as-GET `url` until its status is in `done` (§7.5.1, §7.4): 'invalid' or the
        order's deadline ends it with an AcmeError."""
        wait = POLL_FIRST
        while True:
            answer = self._post(directory, url, None)
            resource = answer.json()
            status = resource.get("status")
            if status in done:
                return resource
            if status == "invalid":
                raise AcmeError(f"{what} became invalid: {_error_of(resource)}")
            pause = _retry_after(answer.headers) or wait
            if time.monotonic() + pause > self._deadline:
                raise AcmeError(f"{what} is still {status} after {self.order_timeout:g}s")
            time.sleep(pause)
            wait = min(wait * 2, POLL_MOST)

    def issue(
        self, names: Sequence[str], board: ChallengeBoard, *, challenge: str = HTTP_01
    ) -> Issued:
        """Order a certificate for `names` (the first is its subject) answering `challenge`
        (http-01 or tls-alpn-01) through `board`."""
        self._deadline = time.monotonic() + self.order_timeout
        directory = self._directory()
        self.account = self._account(directory)
        identifiers = [{"type": "dns", "value": name} for name in names]
        answer = self._post(directory, directory["newOrder"], {"identifiers": identifiers})
        order = answer.json()  # §7.4
        order_url = answer.headers.get("Location")
        if not order_url:
            raise AcmeError("the CA created the order without giving its URL (Location)")
        authorizations = order.get("authorizations")
        if not isinstance(authorizations, list) or not authorizations:
            raise AcmeError("the CA's order lists no authorizations")
        published: list[str] = []
        try:
            pending = {
                url: name
                for url in map(str, authorizations)
                if (name := self._answer_challenge(directory, url, board, challenge, published))
            }
            for url, name in pending.items():
                self._poll(directory, url, {"valid"}, f"the authorization for {name}")
            order = self._poll(directory, order_url, {"ready", "valid"}, "the order")
            key = ec.generate_private_key(ec.SECP256R1())
            if order["status"] == "ready":
                finalize = str(order.get("finalize", ""))
                self._post(directory, finalize, {"csr": b64url(csr_for(key, names))})
                order = self._poll(directory, order_url, {"valid"}, "the order")
        finally:
            for published_key in published:
                board.withdraw(published_key)
        chain = self._post(directory, str(order.get("certificate", "")), None).body  # §7.4.2
        return Issued(_checked_chain(chain, key, names), _key_pem(key))

    def _answer_challenge(
        self,
        directory: Mapping[str, Any],
        url: str,
        board: ChallengeBoard,
        kind: str,
        published: list[str],
    ) -> str | None:
        """Publish and announce the `kind` answer of one authorization (§7.5; http-01 §8.3,
        tls-alpn-01 RFC 8737 §3); its name, or None when it is valid already (a CA may reuse
        authorizations, §7.1.3)."""
        authorization = self._post(directory, url, None).json()
        name = str((authorization.get("identifier") or {}).get("value", "?"))
        status = authorization.get("status")
        if status == "valid":
            return None
        if status != "pending":
            raise AcmeError(f"the authorization for {name} is {status}: {_error_of(authorization)}")
        challenge = next(
            (c for c in authorization.get("challenges", []) if c.get("type") == kind), None
        )
        if challenge is None:
            raise AcmeError(f"the CA offers no {kind} challenge for {name}")
        token = str(challenge.get("token", ""))
        if not TOKEN.fullmatch(token):
            raise AcmeError(f"the CA gave a malformed {kind} token for {name}")
        # http-01: answered at a URL holding the token; tls-alpn-01: to the name in the SNI
        # (RFC 8737 §3), a dns identifier that is not a wildcard (§3: not for wildcards).
        key = token if kind == HTTP_01 else name
        identifier_type = (authorization.get("identifier") or {}).get("type")
        if kind == TLS_ALPN_01 and (identifier_type != "dns" or authorization.get("wildcard")):
            raise AcmeError(f"tls-alpn-01 cannot validate the identifier {name}")
        board.publish(key, key_authorization(token, self.jwk))
        published.append(key)
        self._post(directory, str(challenge["url"]), {})  # §7.5.1: "ready to be validated"
        return name


def _error_of(resource: Mapping[str, Any]) -> str:
    """The detail of an invalid authorization's failed challenge (§7.1.4), or the order's."""
    errors = [resource.get("error")]
    errors += [c.get("error") for c in resource.get("challenges", []) if isinstance(c, dict)]
    for error in errors:
        if isinstance(error, dict) and error.get("detail"):
            return _one_line(str(error["detail"]))
    return "no reason given"


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _contact(account: Mapping[str, Any]) -> tuple[str, ...]:
    """An account object's contact URLs (§7.1.2; absent: none)."""
    contact = account.get("contact")
    return tuple(map(str, contact)) if isinstance(contact, list) else ()


def _retry_after(headers: Message) -> float | None:
    """RFC 8555 §7.5.1 / RFC 9110 §10.2.3, in seconds only (bounded)."""
    value = headers.get("Retry-After", "")
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MOST)
    return None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _checked_chain(chain: bytes, key: ec.EllipticCurvePrivateKey, names: Sequence[str]) -> bytes:
    """The chain the CA sent, once its leaf is for our key and names."""
    try:
        certificates = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise AcmeError("the CA's certificate download is not a PEM chain") from None
    leaf = certificates[0]
    if leaf.public_key() != key.public_key():
        raise AcmeError("the CA's certificate is not for the key of our CSR")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise AcmeError("the CA's certificate has no subject alternative names") from None
    missing = sorted(set(names) - set(san.get_values_for_type(x509.DNSName)))
    if missing:
        raise AcmeError(f"the CA's certificate does not name {', '.join(missing)}")
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
