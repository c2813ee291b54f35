"""Events the ManageSieve engine hands to its driver, and the results the driver answers with.

Every event but `AuthFailed`, `LoggedIn`, `LoggedOut` and `CloseConnection` is a decision: the
engine pauses until the driver answers through the engine method its docstring names. The
script operations (`ScriptOp`) are all answered with `script_done(result)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from postroom.proto.sasl.exchange import Need


class NeedData:
    """Sentinel: the engine needs more input before it can go on."""


class Paused:
    """Sentinel: the engine waits for the driver's decision on the last event."""


NEED_DATA = NeedData()
PAUSED = Paused()


@dataclass(frozen=True, slots=True)
class Verify:
    """Decision: ask the credential store (a password check, or SCRAM credentials); answer
    `answered`."""

    mechanism: str
    need: Need


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """A login failed on wrong credentials (for the log and the throttle); NO is queued."""

    mechanism: str
    authcid: str


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """AUTHENTICATE succeeded: the session acts for `identity` from now on (informational)."""

    identity: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class LoggedOut:
    """UNAUTHENTICATE (RFC 5804 §2.14.1) or the end of the session (informational)."""

    identity: str


@dataclass(frozen=True, slots=True)
class StartTls:
    """Decision: upgrade the connection now (after sending pending output), then `tls_started`."""


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Send the pending output and close the connection."""


# --- script operations (answered with `script_done`) ---------------------------------------


@dataclass(frozen=True, slots=True)
class ListScripts:
    """Answer `Listing` (RFC 5804 §2.7)."""


@dataclass(frozen=True, slots=True)
class GetScript:
    """Answer `Source`, or `Refused("NONEXISTENT", ...)` (RFC 5804 §2.9)."""

    name: str


@dataclass(frozen=True, slots=True)
class PutScript:
    """Store a script that compiled (RFC 5804 §2.6) after `space_refusal` allowed it; answer
    `Done` or `Refused`."""

    name: str
    source: str


@dataclass(frozen=True, slots=True)
class HaveSpace:
    """Would a script of `size` octets called `name` fit (RFC 5804 §2.5)? Answer `Done` or
    the `Refused` that `space_refusal` gives."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class SetActive:
    """Make `name` the active script, None: none (RFC 5804 §2.8). `Done` or NONEXISTENT."""

    name: str | None


@dataclass(frozen=True, slots=True)
class DeleteScript:
    """RFC 5804 §2.10: `Done`, NONEXISTENT, or ACTIVE when it is the active script."""

    name: str


@dataclass(frozen=True, slots=True)
class RenameScript:
    """RFC 5804 §2.11.1: `Done`, NONEXISTENT, or ALREADYEXISTS."""

    old: str
    new: str


ScriptOp = ListScripts | GetScript | PutScript | HaveSpace | SetActive | DeleteScript | RenameScript


@dataclass(frozen=True, slots=True)
class Done:
    """The operation succeeded."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The operation is refused: NO with `code` (NONEXISTENT, ACTIVE, ALREADYEXISTS,
    QUOTA/MAXSCRIPTS, QUOTA/MAXSIZE, TRYLATER) and a human `text`."""

    code: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Listing:
    scripts: tuple[tuple[str, bool], ...]  # (name, active)


@dataclass(frozen=True, slots=True)
class Source:
    text: str


OpResult = Done | Refused | Listing | Source

Event = (
    Verify
    | AuthFailed
    | LoggedIn
    | LoggedOut
    | StartTls
    | CloseConnection
    | ListScripts
    | GetScript
    | PutScript
    | HaveSpace
    | SetActive
    | DeleteScript
    | RenameScript
)
