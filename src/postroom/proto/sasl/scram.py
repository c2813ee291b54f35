"""SCRAM-SHA-256 SASL server mechanism (RFC 5802, RFC 7677) without channel binding.

Exchange: client-first → :class:`NeedScramCredentials` → server-first challenge → client-final
→ server-final challenge (``v=``) → empty client response → :class:`Success`.  Also provides
:func:`derive_scram_credentials` to compute the stored verifier from a password.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import re

from postroom.proto.sasl.saslprep import SASLprepError, saslprep
from postroom.proto.sasl.steps import (
    Challenge,
    Failure,
    FailureReason,
    NeedScramCredentials,
    ScramCredentials,
    Step,
    Success,
)

__all__ = ["DEFAULT_ITERATIONS", "ScramSha256Mechanism", "derive_scram_credentials"]

DEFAULT_ITERATIONS = 4096  # RFC 7677 §4: the iteration count SHOULD be at least 4096
_SALT_LEN = 16
_NONCE_BYTES = 18

# Per-process key for the fake salts handed out for unknown users.  The fake salt is derived
# deterministically from the user name so that probing the same name twice gives the same
# answer, as it would for a real account.
_FAKE_SALT_KEY = os.urandom(32)

# RFC 5802 §7: printable = %x21-2B / %x2D-7E  (printable ASCII except ",")
_PRINTABLE_RE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
# RFC 5802 §7: attr-val = ALPHA "=" value ; value = 1*value-char (UTF8-char except NUL, ",")
_ATTR_VAL_RE = re.compile(r"[A-Za-z]=[^\x00,]+")


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()  # RFC 5802 §2.2 H(), SHA-256 per RFC 7677 §3


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()  # RFC 5802 §2.2 HMAC()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _prepare_password(password: str) -> bytes:
    """RFC 5802 §2.2 Normalize(): SASLprep; unassigned code points are let through (see below)."""
    # RFC 5802 §2.2 asks for "stored string" semantics, which with Python's Unicode 3.2 tables
    # would refuse every character added since 2002 (emoji, ...).  Unassigned code points are
    # unchanged by the preparation, so any client that does prepare such a password computes
    # the same string; we therefore use query semantics for passwords everywhere.
    return saslprep(password, allow_unassigned=True).encode("utf-8")


def derive_scram_credentials(
    password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> ScramCredentials:
    """Compute the SCRAM-SHA-256 verifier for ``password``; a random 16-byte salt by default.

    Raises :class:`ValueError` (:class:`SASLprepError`) if the password cannot be prepared or is
    empty after preparation, or if ``iterations`` < 1 or ``salt`` is empty.
    """
    if iterations < 1:
        raise ValueError("iterations must be positive")
    if salt is None:
        salt = os.urandom(_SALT_LEN)
    if not salt:
        raise ValueError("salt must not be empty")
    normalized = _prepare_password(password)
    if not normalized:
        raise ValueError("password is empty after SASLprep")
    # RFC 5802 §3: SaltedPassword := Hi(Normalize(password), salt, i)  (Hi is PBKDF2, §2.2)
    salted = hashlib.pbkdf2_hmac("sha256", normalized, salt, iterations)
    client_key = _hmac(salted, b"Client Key")  # RFC 5802 §3: ClientKey
    stored_key = _h(client_key)  # RFC 5802 §3: StoredKey := H(ClientKey)
    server_key = _hmac(salted, b"Server Key")  # RFC 5802 §3: ServerKey
    return ScramCredentials(
        salt=salt, iterations=iterations, stored_key=stored_key, server_key=server_key
    )


def _decode_saslname(text: str) -> str | None:
    """RFC 5802 §5.1/§7 saslname: decode "=2C"/"=3D"; ``None`` for any other "=" or empty."""
    if not text or "\x00" in text:  # RFC 5802 §7: saslname = 1*(value-safe-char / ...), no NUL
        return None
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "=":
            esc = text[i : i + 3]
            if esc == "=2C":
                out.append(",")
            elif esc == "=3D":
                out.append("=")
            else:
                # RFC 5802 §5.1: "=" not followed by "2C" or "3D" MUST fail the authentication.
                return None
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _fake_credentials(username: str) -> ScramCredentials:
    """Credentials for an unknown user: deterministic salt, keys that no proof can match."""
    digest = _hmac(_FAKE_SALT_KEY, b"salt\x00" + username.encode("utf-8"))
    return ScramCredentials(
        salt=digest[:_SALT_LEN],
        iterations=DEFAULT_ITERATIONS,
        stored_key=os.urandom(32),
        server_key=os.urandom(32),
    )


class _State(enum.Enum):
    INITIAL = enum.auto()
    WAIT_CLIENT_FIRST = enum.auto()
    WAIT_CREDENTIALS = enum.auto()
    WAIT_CLIENT_FINAL = enum.auto()
    WAIT_ACK = enum.auto()
    DONE = enum.auto()


class ScramSha256Mechanism:
    """Server side of SCRAM-SHA-256; ``nonce`` fixes the server nonce part (tests only)."""

    name = "SCRAM-SHA-256"

    def __init__(self, nonce: str | None = None) -> None:
        if nonce is None:
            # RFC 5802 §5.1 r=: a fresh, unpredictable nonce (18 random bytes → 24 b64 chars).
            nonce = base64.b64encode(os.urandom(_NONCE_BYTES)).decode("ascii")
        elif not _PRINTABLE_RE.fullmatch(nonce):
            raise ValueError("server nonce must be printable ASCII without ','")
        self._server_nonce = nonce
        self._state = _State.INITIAL
        self._gs2_header = b""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._authcid = ""
        self._authzid = ""
        self._creds: ScramCredentials | None = None
        self._fake = False

    def _fail(self, reason: FailureReason = "malformed") -> Failure:
        self._state = _State.DONE
        self._creds = None
        return Failure(reason)

    # -- client-first ---------------------------------------------------------------------

    def start(self, initial_response: bytes | None) -> Step:
        if self._state is not _State.INITIAL:
            return self._fail()
        if initial_response is None:
            # RFC 4422 §5: no initial response → empty challenge; client-first comes next.
            self._state = _State.WAIT_CLIENT_FIRST
            return Challenge(b"")
        return self._client_first(initial_response)

    def _client_first(self, data: bytes) -> Step:
        try:
            text = data.decode("utf-8")  # RFC 5802 §5: messages are UTF-8 strings
        except UnicodeDecodeError:
            return self._fail()
        # RFC 5802 §7: client-first-message = gs2-header client-first-message-bare
        #               gs2-header = gs2-cbind-flag "," [ authzid ] ","
        fields = text.split(",", 2)
        if len(fields) != 3:
            return self._fail()
        cbind_flag, authzid_field, bare = fields
        # RFC 5802 §6 / §7 gs2-cbind-flag: "n" (client does not support channel binding) or
        # "y" (client does, but believes the server does not — true: we offer no -PLUS).
        # "p=..." demands channel binding, which we do not support, so it MUST fail (§6).
        if cbind_flag not in ("n", "y"):
            return self._fail()
        authzid = ""
        if authzid_field:
            if not authzid_field.startswith("a="):  # RFC 5802 §7: authzid = "a=" saslname
                return self._fail()
            decoded = _decode_saslname(authzid_field[2:])
            if decoded is None:
                return self._fail()
            authzid = decoded

        # RFC 5802 §7: client-first-message-bare =
        #               [reserved-mext ","] username "," nonce ["," extensions]
        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            # RFC 5802 §5.1 m: reserved; its presence MUST cause authentication failure.
            return self._fail()
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            return self._fail()
        username = _decode_saslname(attrs[0][2:])  # RFC 5802 §5.1 n=: decode =2C / =3D
        if username is None:
            return self._fail()
        client_nonce = attrs[1][2:]
        if not _PRINTABLE_RE.fullmatch(client_nonce):  # RFC 5802 §7: c-nonce = printable
            return self._fail()
        if not all(_ATTR_VAL_RE.fullmatch(ext) for ext in attrs[2:]):  # §7 extensions
            return self._fail()  # (well-formed unknown extensions are ignored, §5.1)

        try:
            # RFC 5802 §5.1 n=: the server SASLpreps the user name it received.
            authcid = saslprep(username, allow_unassigned=True)
        except SASLprepError:
            return self._fail("credentials")
        if not authcid:  # RFC 5802 §5.1: empty after preparation → abort
            return self._fail("credentials")

        self._gs2_header = (text[: len(cbind_flag) + len(authzid_field) + 2]).encode("utf-8")
        self._client_first_bare = bare
        self._nonce = client_nonce + self._server_nonce  # RFC 5802 §5.1 r=: c-nonce + s-nonce
        self._authcid = authcid
        self._authzid = authzid
        self._state = _State.WAIT_CREDENTIALS
        return NeedScramCredentials(authcid=authcid, authzid=authzid)

    # -- server-first ---------------------------------------------------------------------

    def credentials_found(self, creds: ScramCredentials | None) -> Step:
        if self._state is not _State.WAIT_CREDENTIALS:
            return self._fail()
        if creds is None:
            # Unknown user: carry on with a plausible fake salt so the client cannot tell, and
            # fail at the proof step like a wrong password would.  (RFC 5802 §7, note on
            # server-error-value: the server may hide the real reason to prevent information
            # disclosure, instead of reporting "unknown-user".)
            creds = _fake_credentials(self._authcid)
            self._fake = True
        self._creds = creds
        # RFC 5802 §7: server-first-message = [reserved-mext ","] nonce "," salt ","
        #               iteration-count ["," extensions]
        self._server_first = f"r={self._nonce},s={_b64(creds.salt)},i={creds.iterations}"
        self._state = _State.WAIT_CLIENT_FINAL
        return Challenge(self._server_first.encode("ascii"))

    # -- client-final / server-final ------------------------------------------------------

    def respond(self, data: bytes) -> Step:
        if self._state is _State.WAIT_CLIENT_FIRST:
            return self._client_first(data)
        if self._state is _State.WAIT_CLIENT_FINAL:
            return self._client_final(data)
        if self._state is _State.WAIT_ACK:
            # SMTP AUTH has no "additional data with success" (RFC 4954 §4), so server-final
            # went out as a challenge; the client must answer it with an empty response.
            if data:
                return self._fail()
            self._state = _State.DONE
            return Success(authcid=self._authcid, authzid=self._authzid)
        return self._fail()

    def _client_final(self, data: bytes) -> Step:
        creds = self._creds
        if creds is None:  # cannot happen in WAIT_CLIENT_FINAL; keeps the type checker happy
            return self._fail()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail()
        # RFC 5802 §7: client-final-message = client-final-message-without-proof "," proof
        without_proof, sep, proof_field = text.rpartition(",")
        if not sep or not proof_field.startswith("p="):
            return self._fail()
        # RFC 5802 §7: client-final-message-without-proof = channel-binding "," nonce
        #               ["," extensions]
        attrs = without_proof.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
            return self._fail()
        if not all(_ATTR_VAL_RE.fullmatch(ext) for ext in attrs[2:]):
            return self._fail()
        cbind = _strict_b64decode(attrs[0][2:])
        proof = _strict_b64decode(proof_field[2:])
        if cbind is None or proof is None:
            return self._fail()
        # RFC 5802 §5.1 c=: without channel binding the value is base64(gs2-header) and the
        # server MUST check it matches the gs2-header of client-first.
        if not hmac.compare_digest(cbind, self._gs2_header):
            return self._fail()
        # RFC 5802 §5.1 r=: must be exactly the nonce from server-first.
        if not hmac.compare_digest(attrs[1][2:].encode("utf-8"), self._nonce.encode("ascii")):
            return self._fail()
        if len(proof) != len(creds.stored_key):
            return self._fail()

        # RFC 5802 §3: AuthMessage := client-first-message-bare + "," +
        #                              server-first-message + "," +
        #                              client-final-message-without-proof
        auth_message = ",".join((self._client_first_bare, self._server_first, without_proof))
        auth_bytes = auth_message.encode("utf-8")
        client_signature = _hmac(creds.stored_key, auth_bytes)  # RFC 5802 §3: ClientSignature
        # RFC 5802 §3: ClientKey = ClientProof XOR ClientSignature; §5.2: verify H(ClientKey)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        proof_ok = hmac.compare_digest(_h(client_key), creds.stored_key)
        if self._fake or not proof_ok:
            return self._fail("credentials")
        server_signature = _hmac(creds.server_key, auth_bytes)  # RFC 5802 §3: ServerSignature
        self._state = _State.WAIT_ACK
        self._creds = None
        # RFC 5802 §7: server-final-message = verifier ; verifier = "v=" base64
        return Challenge(b"v=" + base64.b64encode(server_signature))

    def password_checked(self, ok: bool) -> Step:
        return self._fail()  # SCRAM never asks the caller to check a password


def _strict_b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        return None
