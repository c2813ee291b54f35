"""LOGIN SASL server mechanism (draft-murchison-sasl-login): "Username:" then "Password:".

LOGIN is obsolete but still what many mail clients try first; it carries no authzid.
"""

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

__all__ = ["LoginMechanism"]

USERNAME_CHALLENGE = b"Username:"
PASSWORD_CHALLENGE = b"Password:"


class _State(enum.Enum):
    INITIAL = enum.auto()
    WAIT_USERNAME = enum.auto()
    WAIT_PASSWORD = enum.auto()
    WAIT_CHECK = enum.auto()
    DONE = enum.auto()


class LoginMechanism:
    """Server side of LOGIN; yields two challenges, :class:`CheckPassword`, then the outcome."""

    name = "LOGIN"

    def __init__(self) -> None:
        self._state = _State.INITIAL
        self._username = ""
        self._authcid = ""

    def _fail(self, reason: FailureReason = "malformed") -> Failure:
        self._state = _State.DONE
        return Failure(reason)

    def start(self, initial_response: bytes | None) -> Step:
        if self._state is not _State.INITIAL:
            return self._fail()
        if initial_response is None:
            # draft-murchison-sasl-login §2: the server first challenges for the user name
            # (the draft suggests "User Name"; "Username:" is what deployed servers send).
            self._state = _State.WAIT_USERNAME
            return Challenge(USERNAME_CHALLENGE)
        # Not in the draft, but common practice (e.g. "AUTH LOGIN <b64 user>" in SMTP, accepted
        # by Postfix/Cyrus): an initial response is the user name.
        self._state = _State.WAIT_USERNAME
        return self.respond(initial_response)

    def respond(self, data: bytes) -> Step:
        if self._state is _State.WAIT_USERNAME:
            # draft-murchison-sasl-login §2: the first response is the user name.
            username = self._decode(data)
            if username is None:
                return self._fail()
            self._username = username
            self._state = _State.WAIT_PASSWORD
            return Challenge(PASSWORD_CHALLENGE)
        if self._state is _State.WAIT_PASSWORD:
            # draft-murchison-sasl-login §2: the second response is the password.
            password = self._decode(data)
            if password is None:
                return self._fail()
            return self._check(password)
        return self._fail()

    @staticmethod
    def _decode(data: bytes) -> str | None:
        """Decode a non-empty UTF-8 string containing no NUL; ``None`` if it is not one."""
        if not data or b"\x00" in data:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _check(self, password: str) -> Step:
        # Same preparation as PLAIN, so a user authenticates identically whichever mechanism
        # the client picks.
        prepared = prepare_login(self._username, password)
        if prepared is None:
            return self._fail("credentials")
        authcid, prepared_password = prepared
        self._authcid = authcid
        self._state = _State.WAIT_CHECK
        return CheckPassword(authcid=authcid, authzid="", password=prepared_password)

    def password_checked(self, ok: bool) -> Step:
        if self._state is not _State.WAIT_CHECK:
            return self._fail()
        self._state = _State.DONE
        if not ok:
            return Failure("credentials")
        return Success(authcid=self._authcid, authzid="")

    def credentials_found(self, creds: ScramCredentials | None) -> Step:
        return self._fail()  # LOGIN never asks for SCRAM credentials
