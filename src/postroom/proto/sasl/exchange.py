"""One SASL exchange, run the same way by SMTP AUTH (RFC 4954), POP3 AUTH (RFC 5034) and IMAP
AUTHENTICATE (RFC 3501 §6.2.2), so they cannot drift apart.

The exchange wraps a mechanism: it decodes the client's lines (base64, "*" to cancel), tells
the protocol what to do next — send a challenge, ask the credential store (`Need`), or stop
(`Finished`, with the result and the user named) — and takes the store's answer, including "the
store could not answer" (`UNAVAILABLE`: a temporary failure, RFC 4954 §6 454 4.7.0, RFC 5530
[UNAVAILABLE], RFC 3206 [SYS/TEMP]). Each protocol only turns `Finished` into its own reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from postroom.proto.sasl import wire
from postroom.proto.sasl.steps import (
    Challenge,
    CheckPassword,
    Mechanism,
    NeedScramCredentials,
    ScramCredentials,
    Step,
    Success,
)


class Unavailable:
    """The credential store could not answer (it failed, not the client)."""

    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE = Unavailable()

Need = CheckPassword | NeedScramCredentials
# What the store says: a verdict for CheckPassword, the credentials (None: no such user) for
# NeedScramCredentials, or UNAVAILABLE.
StoreAnswer = bool | ScramCredentials | None | Unavailable

Result = Literal["success", "failed", "malformed", "cancelled", "unavailable"]


@dataclass(frozen=True, slots=True)
class Finished:
    """The exchange is over. `authcid` is the user the client named ("" when it named none);
    `authzid` the identity it asked to act as ("" for itself)."""

    result: Result
    mechanism: str
    authcid: str
    authzid: str = ""


Next = Challenge | CheckPassword | NeedScramCredentials | Finished


class SaslExchange:
    def __init__(self, mechanism: Mechanism) -> None:
        self.mechanism = mechanism
        self.authcid = ""
        self._need: Need | None = None

    @property
    def name(self) -> str:
        return self.mechanism.name

    def start(self, initial: bytes | None) -> Next:
        """Begin, with the decoded initial response (None: none was sent)."""
        return self._next(self.mechanism.start(initial))

    def client_line(self, line: str) -> Next:
        """The client's answer to a challenge, as sent (base64, or "*")."""
        try:
            data = wire.client_line(line)
        except wire.Malformed:
            return self._finish("malformed")
        if data is wire.CANCEL:
            # RFC 4954 §4, RFC 5034 §4, RFC 3501 §6.2.2: the client cancels with "*".
            return self._finish("cancelled")
        return self._next(self.mechanism.respond(data))

    def answered(self, answer: StoreAnswer) -> Next:
        """The credential store's answer to the last `Need`."""
        need, self._need = self._need, None
        if isinstance(answer, Unavailable):
            return self._finish("unavailable")
        if isinstance(need, CheckPassword):
            assert isinstance(answer, bool), "a password check is answered with a verdict"
            return self._next(self.mechanism.password_checked(answer))
        assert need is not None, "no question is pending"
        assert not isinstance(answer, bool), "a credentials lookup is answered with them"
        return self._next(self.mechanism.credentials_found(answer))

    def _next(self, step: Step) -> Next:
        if isinstance(step, CheckPassword | NeedScramCredentials):
            self.authcid = step.authcid
            self._need = step
            return step
        if isinstance(step, Challenge):
            return step
        if isinstance(step, Success):
            return Finished("success", self.name, step.authcid, step.authzid)
        return self._finish("malformed" if step.reason == "malformed" else "failed")

    def _finish(self, result: Result) -> Finished:
        return Finished(result, self.name, self.authcid)
