"""PLAIN SASL server mechanism (RFC 4616): one message ``[authzid] NUL authcid NUL passwd``."""

from __future__ import annotations

import enum

from postroom.proto.sasl.saslprep import prepare_login
from postroom.proto.sasl.steps import (
    Challenge,
    CheckPassword,
    Failure,
    FailureReason,
    ScramCredentials,
    Step,
    Success,
)

__all__ = ["PlainMechanism"]


class _State(enum.Enum):
    INITIAL = enum.auto()
    WAIT_RESPONSE = enum.auto()
    WAIT_CHECK = enum.auto()
    DONE = enum.auto()


class PlainMechanism:
    """Server side of PLAIN: one message, then :class:`CheckPassword`, then the outcome."""

    name = "PLAIN"

    def __init__(self) -> None:
        self._state = _State.INITIAL
        self._authcid = ""
        self._authzid = ""

    def _fail(self, reason: FailureReason = "malformed") -> Failure:
        self._state = _State.DONE
        return Failure(reason)

    def start(self, initial_response: bytes | None) -> Step:
        if self._state is not _State.INITIAL:
            return self._fail()
        if initial_response is None:
            # RFC 4616 §2 / RFC 4422 §5: no initial response → send an empty challenge.
            self._state = _State.WAIT_RESPONSE
            return Challenge(b"")
        return self._message(initial_response)

    def respond(self, data: bytes) -> Step:
        if self._state is not _State.WAIT_RESPONSE:
            return self._fail()
        return self._message(data)

    def _message(self, data: bytes) -> Step:
        # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
        parts = data.split(b"\x00")
        if len(parts) != 3:
            return self._fail()
        try:
            # RFC 4616 §2: all three fields are UTF-8 strings (SAFE = UTF8-char except NUL).
            authzid, authcid, passwd = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            return self._fail()
        if not authcid or not passwd:  # RFC 4616 §2: authcid and passwd are 1*SAFE
            return self._fail()
        prepared = prepare_login(authcid, passwd)  # RFC 4616 §2: SASLprep is RECOMMENDED
        if prepared is None:
            return self._fail("credentials")
        prepared_authcid, prepared_passwd = prepared
        self._authcid = prepared_authcid
        self._authzid = authzid  # RFC 4616 §2: empty authzid = act as authcid
        self._state = _State.WAIT_CHECK
        return CheckPassword(authcid=prepared_authcid, authzid=authzid, password=prepared_passwd)

    def password_checked(self, ok: bool) -> Step:
        if self._state is not _State.WAIT_CHECK:
            return self._fail()
        self._state = _State.DONE
        if not ok:
            return Failure("credentials")
        return Success(authcid=self._authcid, authzid=self._authzid)

    def credentials_found(self, creds: ScramCredentials | None) -> Step:
        return self._fail()  # PLAIN never asks for SCRAM credentials
