"""The ManageSieve server engine (RFC 5804): states, commands, SASL, STARTTLS, script limits.

No sockets, no asyncio, no storage: the driver feeds `receive_data`, pulls `next_event` until
it gets NEED_DATA, answers each decision event through the method its docstring names
(events.py), and writes `data_to_send`. Scripts are compiled here (postroom.proto.sieve), so
an invalid one never reaches the store; which scripts exist is the store's business, asked
through the `ScriptOp` events. Which command is legal in which state is `ALLOWED`.
"""

from __future__ import annotations

import base64
import enum
import unicodedata
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from postroom.proto import sasl
from postroom.proto.managesieve import events as ev
from postroom.proto.managesieve.wire import (
    CONTINUE,
    Arg,
    CommandReader,
    Problem,
    Response,
    string,
)
from postroom.proto.sasl import wire as sasl_wire
from postroom.proto.sasl.exchange import Finished, Next, SaslExchange, StoreAnswer
from postroom.proto.sieve import CAPABILITIES, SieveError, compile_script
from postroom.proto.sieve.interpreter import MAX_REDIRECTS

# Per-user limits (reported by HAVESPACE and PUTSCRIPT as QUOTA/MAXSCRIPTS, QUOTA/MAXSIZE).
MAX_SCRIPTS = 32
MAX_SCRIPT_SIZE = 256 * 1024  # octets of one script
# RFC 5804 §1.6: servers accept names of at least 128 characters; this is the limit.
MAX_NAME_LENGTH = 128
MAX_LINE = 8192  # one line of a command, CRLF included (literals apart)
MAX_LITERAL = MAX_SCRIPT_SIZE  # the largest string a command may carry
MAX_COMMAND = MAX_SCRIPT_SIZE + 64 * 1024  # all of one command
IMPLEMENTATION = "postroom"
VERSION = "1.0"  # RFC 5804 §1.7: the protocol version this server implements


@dataclass(frozen=True, slots=True)
class ManageSieveSettings:
    hostname: str
    tls_available: bool = False  # STARTTLS offered
    # SASL only over TLS unless this is set ([auth] plaintext), as IMAP's LOGINDISABLED rule.
    allow_plaintext_auth: bool = False
    auth_mechanisms: tuple[str, ...] = sasl.MECHANISMS
    max_errors: int = 20


class State(enum.Enum):
    NONAUTH = "non-authenticated"
    AUTH = "authenticated"


class Mode(enum.Enum):
    COMMAND = "command"
    SASL = "sasl"  # inside AUTHENTICATE: the client's lines are base64 strings
    TLS = "tls"  # waiting for the driver to finish the handshake
    CLOSED = "closed"


def valid_name(name: str) -> bool:
    """RFC 5804 §1.6: a script name is non-empty UTF-8 without control characters (U+0000-
    U+001F, U+007F-U+009F), line or paragraph separators (U+2028, U+2029); here at most
    MAX_NAME_LENGTH characters, in Unicode NFC (as §1.6 asks clients to send it)."""
    if not name or len(name) > MAX_NAME_LENGTH:
        return False
    for ch in name:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029):
            return False
    return unicodedata.is_normalized("NFC", name)


def space_refusal(existing: Mapping[str, int], name: str, size: int) -> ev.Refused | None:
    """Whether a script `name` of `size` octets fits beside `existing` (name → size):
    None, or the NO to answer (RFC 5804 §1.3 QUOTA/MAXSIZE, QUOTA/MAXSCRIPTS)."""
    if size > MAX_SCRIPT_SIZE:
        return ev.Refused("QUOTA/MAXSIZE", f"Scripts are limited to {MAX_SCRIPT_SIZE} octets")
    if name not in existing and len(existing) >= MAX_SCRIPTS:
        return ev.Refused("QUOTA/MAXSCRIPTS", f"At most {MAX_SCRIPTS} scripts per user")
    return None


def ok(text: str = "", code: str | None = None, code_arg: str | None = None) -> Response:
    return Response("OK", text, code, code_arg)


def no(text: str, code: str | None = None) -> Response:
    return Response("NO", text, code)


def bye(text: str, code: str | None = None) -> Response:
    return Response("BYE", text, code)


TIMEOUT = bye("Disconnected for inactivity", "TRYLATER")
SHUTTING_DOWN = bye("Server shutting down", "TRYLATER")
TOO_MANY_ERRORS = bye("Too many errors, closing connection")
# RFC 5804 §2.1: ENCRYPT-NEEDED: only over TLS (STARTTLS first).
ENCRYPT_NEEDED = no("Authentication needs TLS: use STARTTLS first", "ENCRYPT-NEEDED")
LOGIN_FAILED = no("Authentication failed")
AUTH_UNAVAILABLE = no("Authentication temporarily unavailable", "TRYLATER")
_AUTH_ENDINGS = {
    "failed": LOGIN_FAILED,
    "malformed": no("Malformed authentication data"),
    "cancelled": no("Authentication cancelled"),  # the client sent "*" (RFC 5804 §2.1)
    "unavailable": AUTH_UNAVAILABLE,
}
INVALID_NAME = no("Invalid script name")
STORE_FAILED = ev.Refused("TRYLATER", "Script storage temporarily unavailable")

_NONAUTH = frozenset({State.NONAUTH})
_AUTHED = frozenset({State.AUTH})
_ANY = _NONAUTH | _AUTHED
# RFC 5804 §2: where each command is legal.
ALLOWED: dict[str, frozenset[State]] = {
    "CAPABILITY": _ANY,
    "LOGOUT": _ANY,
    "NOOP": _ANY,
    "STARTTLS": _NONAUTH,
    "AUTHENTICATE": _NONAUTH,
    "UNAUTHENTICATE": _AUTHED,
    "HAVESPACE": _AUTHED,
    "PUTSCRIPT": _AUTHED,
    "LISTSCRIPTS": _AUTHED,
    "SETACTIVE": _AUTHED,
    "GETSCRIPT": _AUTHED,
    "DELETESCRIPT": _AUTHED,
    "RENAMESCRIPT": _AUTHED,
    "CHECKSCRIPT": _AUTHED,
}
# RFC 5804 §4: the arguments of each command ("?" optional). Strings may come as atoms too.
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "CAPABILITY": (),
    "LOGOUT": (),
    "NOOP": ("string?",),
    "STARTTLS": (),
    "AUTHENTICATE": ("string", "string?"),
    "UNAUTHENTICATE": (),
    "HAVESPACE": ("string", "number"),
    "PUTSCRIPT": ("string", "string"),
    "LISTSCRIPTS": (),
    "SETACTIVE": ("string",),
    "GETSCRIPT": ("string",),
    "DELETESCRIPT": ("string",),
    "RENAMESCRIPT": ("string", "string"),
    "CHECKSCRIPT": ("string",),
}


class CommandError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.text)
        self.response = response


def _arguments(keyword: str, args: list[Arg]) -> list[str | int | None]:
    spec = ARGUMENTS[keyword]
    if len(args) > len(spec) or len(args) < sum(1 for s in spec if not s.endswith("?")):
        raise CommandError(no(f"Wrong number of arguments for {keyword}"))
    values: list[str | int | None] = []
    for index, kind in enumerate(spec):
        if index >= len(args):
            values.append(None)
            continue
        arg = args[index]
        if kind.startswith("number"):
            if arg.kind != "number":
                raise CommandError(no(f"{keyword} argument {index + 1} must be a number"))
            values.append(arg.number)
        else:
            values.append(arg.text)  # a string, or an atom/number taken as its text
    return values


def compile_problem(source: str, name: str = "") -> str | None:
    """Why `source` is not a valid script ("line:column: message"), or None."""
    try:
        compile_script(source, name)
    except SieveError as error:
        return f"{error.line}:{error.column}: {error.message}"
    except RecursionError:
        return "0:0: script nested too deeply"
    return None


class ManageSieveServer:
    """One ManageSieve session. See the module docstring for the driving protocol."""

    def __init__(self, settings: ManageSieveSettings, *, tls_active: bool = False) -> None:
        self.settings = settings
        self.tls_active = tls_active
        self.state = State.NONAUTH
        self.mode = Mode.COMMAND
        self.identity: str | None = None
        self.errors = 0
        self._in = bytearray()
        self._out = bytearray()
        self._events: deque[ev.Event] = deque()
        self._pending: str | ev.ScriptOp | None = None
        self._reader = CommandReader(MAX_LINE, MAX_LITERAL, MAX_COMMAND)
        self._sasl: SaslExchange | None = None

    # --- driver interface ---------------------------------------------------------------------

    def greet(self) -> None:
        """RFC 5804 §1.7: the server starts with its capabilities and OK."""
        self._capabilities(ok(f"{self.settings.hostname} ManageSieve ready"))

    def receive_data(self, data: bytes) -> None:
        if self.mode is not Mode.CLOSED:
            self._in += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def closed(self) -> bool:
        return self.mode is Mode.CLOSED

    @property
    def buffered(self) -> int:
        return len(self._in)

    @property
    def mid_request(self) -> bool:
        """Part of a command is in, not its end; the driver times it."""
        return bool(self._in) or self._reader.mid_command

    def next_event(self) -> ev.Event | ev.NeedData | ev.Paused:
        while True:
            if self._events:
                return self._events.popleft()
            if self._pending is not None:
                return ev.PAUSED
            if self.mode in (Mode.CLOSED, Mode.TLS):
                return ev.NEED_DATA
            if not self._step():
                return ev.NEED_DATA

    def answered(self, answer: StoreAnswer) -> None:
        """The credential store's answer to `Verify`."""
        self._take_pending("verify")
        assert self._sasl is not None
        self._sasl_step(self._sasl.answered(answer))

    def tls_started(self) -> None:
        """The handshake is done (RFC 5804 §2.2): nothing from before it is kept, and the
        capabilities are sent again."""
        self._take_pending("tls")
        self._in.clear()  # CVE-2011-0411: plaintext sent before the handshake is not TLS input
        self._reader.abandon()
        self.tls_active = True
        self.mode = Mode.COMMAND
        self._capabilities(ok("TLS negotiation successful"))

    def script_done(self, result: ev.OpResult) -> None:
        """The store's answer to the pending script operation."""
        op = self._pending
        if op is None or isinstance(op, str):
            raise RuntimeError(f"no script operation is pending ({op})")
        self._pending = None
        if isinstance(result, ev.Refused):
            self._send(no(result.text, result.code))
        elif isinstance(op, ev.ListScripts):
            assert isinstance(result, ev.Listing)
            # RFC 5804 §2.7: one line per script, the active one marked ACTIVE.
            for name, active in result.scripts:
                marked = " ACTIVE" if active else ""
                self._out += (string(name) + marked + "\r\n").encode("utf-8")
            self._send(ok("Listscripts completed"))
        elif isinstance(op, ev.GetScript):
            assert isinstance(result, ev.Source)
            # RFC 5804 §2.9: the script as a literal, then OK.
            data = result.text.encode("utf-8")
            self._out += b"{%d}\r\n" % len(data) + data + b"\r\n"
            self._send(ok("Getscript completed"))
        else:
            self._send(ok(_DONE_TEXT[type(op)]))

    def shutdown(self, response: Response) -> None:
        """Send `response` (a BYE) and close, whatever the state."""
        self._out += response.to_bytes()
        self._close()

    # --- internals ----------------------------------------------------------------------------

    def _take_pending(self, kind: str) -> None:
        if self._pending != kind:
            raise RuntimeError(f"no {kind} decision is pending ({self._pending})")
        self._pending = None

    def _wait(self, kind: str | ev.ScriptOp, event: ev.Event) -> None:
        self._pending = kind
        self._events.append(event)

    def _step(self) -> bool:
        """Take one command (or SASL response) from the input; False when more is needed."""
        taken = self._reader.take(self._in)
        if taken is None:
            return False
        if taken is CONTINUE:
            # A synchronizing literal ({n}): the IMAP-style continuation invites its octets.
            self._out += b'+ "Ready for literal data"\r\n'
            return True
        if isinstance(taken, Problem):
            if taken.fatal:
                self.shutdown(bye(taken.text))
            elif self.mode is Mode.SASL:
                self._end_sasl(no(taken.text, taken.code))
            else:
                self._send(no(taken.text, taken.code))
            return True
        assert isinstance(taken, list)
        if self.mode is Mode.SASL:
            self._sasl_response(taken)
        else:
            self._command(taken)
        return True

    def _command(self, args: list[Arg]) -> None:
        if not args:
            self._send(no("Empty command"))
            return
        head = args[0]
        keyword = head.text.upper() if head.kind == "atom" and head.text.isascii() else ""
        handler = _HANDLERS.get(keyword)
        if handler is None:
            self._send(no("Unknown command"))
            return
        if self.state not in ALLOWED[keyword]:
            text = "Log in first" if self.state is State.NONAUTH else "Already logged in"
            self._send(no(text))
            return
        try:
            handler(self, _arguments(keyword, args[1:]))
        except CommandError as error:
            self._send(error.response)

    def _send(self, response: Response) -> None:
        self._out += response.to_bytes()
        if response.status == "NO":
            self.errors += 1
            if self.errors >= self.settings.max_errors:
                self.shutdown(TOO_MANY_ERRORS)

    def _close(self) -> None:
        self.mode = Mode.CLOSED
        self._in.clear()
        self._reader.abandon()
        self._pending = None
        self._events.append(ev.CloseConnection())

    def _auth_allowed(self) -> bool:
        return self.tls_active or self.settings.allow_plaintext_auth

    def _capabilities(self, final: Response) -> None:
        # RFC 5804 §1.7: one line per capability, each a string and an optional string value.
        lines: list[tuple[str, str | None]] = [("IMPLEMENTATION", IMPLEMENTATION)]
        if self.state is State.NONAUTH and self._auth_allowed():
            lines.append(("SASL", " ".join(self.settings.auth_mechanisms)))
        else:
            lines.append(("SASL", ""))  # none offered: before TLS, or already logged in
        lines.append(("SIEVE", " ".join(CAPABILITIES)))
        if self.settings.tls_available and not self.tls_active and self.state is State.NONAUTH:
            lines.append(("STARTTLS", None))
        lines.append(("MAXREDIRECTS", str(MAX_REDIRECTS)))
        if self.identity is not None:
            lines.append(("OWNER", self.identity))
        lines.append(("UNAUTHENTICATE", None))
        lines.append(("VERSION", VERSION))
        for name, value in lines:
            text = string(name) + ("" if value is None else " " + string(value))
            self._out += (text + "\r\n").encode("utf-8")
        self._send(final)

    def _name(self, value: str | int | None, *, empty: bool = False) -> str:
        assert isinstance(value, str)
        if empty and value == "":
            return value
        if not valid_name(value):
            raise CommandError(INVALID_NAME)
        return value

    # --- commands -----------------------------------------------------------------------------

    def _capability(self, args: list[str | int | None]) -> None:
        self._capabilities(ok("Capability completed"))

    def _logout(self, args: list[str | int | None]) -> None:
        # RFC 5804 §2.3: OK, then the server closes the connection.
        self._out += ok("Logout completed").to_bytes()
        self._close()

    def _noop(self, args: list[str | int | None]) -> None:
        # RFC 5804 §2.13: a tag given comes back in the TAG response code.
        tag = args[0]
        if tag is None:
            self._send(ok("Done"))
        else:
            self._send(ok("Done", "TAG", str(tag)))

    def _starttls(self, args: list[str | int | None]) -> None:
        if self.tls_active:
            raise CommandError(no("TLS is already active"))
        if not self.settings.tls_available:
            raise CommandError(no("TLS is not available"))
        self._send(ok("Begin TLS negotiation now"))
        # CVE-2011-0411: anything pipelined after STARTTLS is plaintext injection; drop it.
        self._in.clear()
        self._reader.abandon()
        self.mode = Mode.TLS
        self._wait("tls", ev.StartTls())

    def _authenticate(self, args: list[str | int | None]) -> None:
        if not self._auth_allowed():
            raise CommandError(ENCRYPT_NEEDED)
        mechanism = str(args[0])
        initial = args[1]
        if " " in mechanism or (initial is not None and " " in str(initial)):
            raise CommandError(_AUTH_ENDINGS["malformed"])
        # RFC 5804 §2.1: the initial response is a string holding base64 ("" for empty).
        argument = mechanism if initial is None else f"{mechanism} {initial or '='}"
        try:
            begun = sasl_wire.start(argument, self.settings.auth_mechanisms)
        except sasl_wire.UnknownMechanism:
            raise CommandError(no("Unsupported authentication mechanism")) from None
        except sasl_wire.Malformed:
            raise CommandError(_AUTH_ENDINGS["malformed"]) from None
        self._sasl = SaslExchange(begun.mechanism)
        self.mode = Mode.SASL
        self._sasl_step(self._sasl.start(begun.initial))

    def _sasl_response(self, args: list[Arg]) -> None:
        assert self._sasl is not None
        # RFC 5804 §2.1: each client response is a string (base64, or "*" to cancel).
        if len(args) != 1:
            self._end_sasl(_AUTH_ENDINGS["malformed"])
            return
        self._sasl_step(self._sasl.client_line(args[0].text))

    def _sasl_step(self, step: Next) -> None:
        assert self._sasl is not None
        if isinstance(step, sasl.Challenge):
            # RFC 5804 §2.1: a challenge is a string of base64.
            self._out += ('"' + base64.b64encode(step.data).decode("ascii") + '"\r\n').encode()
        elif not isinstance(step, Finished):
            self._wait("verify", ev.Verify(self._sasl.name, step))
        elif step.result == "success":
            self._sasl = None
            self.mode = Mode.COMMAND
            self.state = State.AUTH
            self.identity = step.authcid
            self.errors = 0
            self._events.append(ev.LoggedIn(step.authcid, step.mechanism))
            # No security layer is negotiated, so no capabilities follow (RFC 5804 §2.1).
            self._send(ok("Logged in"))
        else:
            if step.result == "failed":
                self._events.append(ev.AuthFailed(step.mechanism, step.authcid))
            self._end_sasl(_AUTH_ENDINGS[step.result])

    def _end_sasl(self, response: Response) -> None:
        self._sasl = None
        self.mode = Mode.COMMAND
        self._send(response)

    def _unauthenticate(self, args: list[str | int | None]) -> None:
        # RFC 5804 §2.14.1: back to the non-authenticated state.
        assert self.identity is not None
        self._events.append(ev.LoggedOut(self.identity))
        self.identity = None
        self.state = State.NONAUTH
        self._send(ok("Unauthenticate completed"))

    def _havespace(self, args: list[str | int | None]) -> None:
        name = self._name(args[0])
        size = args[1]
        assert isinstance(size, int)
        # RFC 5804 §2.5: too large for any script: no need to ask the store.
        refusal = space_refusal({}, name, size)
        if refusal is not None:
            raise CommandError(no(refusal.text, refusal.code))
        op = ev.HaveSpace(name, size)
        self._wait(op, op)

    def _putscript(self, args: list[str | int | None]) -> None:
        name = self._name(args[0])
        source = str(args[1])
        refusal = space_refusal({}, name, len(source.encode("utf-8")))
        if refusal is not None:
            raise CommandError(no(refusal.text, refusal.code))
        # RFC 5804 §2.6: a script that is not valid is refused with the reason.
        problem = compile_problem(source, name)
        if problem is not None:
            raise CommandError(no(problem))
        op = ev.PutScript(name, source)
        self._wait(op, op)

    def _checkscript(self, args: list[str | int | None]) -> None:
        source = str(args[0])
        refusal = space_refusal({}, "", len(source.encode("utf-8")))
        if refusal is not None:
            raise CommandError(no(refusal.text, refusal.code))
        # RFC 5804 §2.12: like PUTSCRIPT, without storing.
        problem = compile_problem(source)
        if problem is not None:
            raise CommandError(no(problem))
        self._send(ok("Script is valid"))

    def _listscripts(self, args: list[str | int | None]) -> None:
        op = ev.ListScripts()
        self._wait(op, op)

    def _setactive(self, args: list[str | int | None]) -> None:
        # RFC 5804 §2.8: the empty name deactivates every script.
        name = self._name(args[0], empty=True)
        op = ev.SetActive(name or None)
        self._wait(op, op)

    def _getscript(self, args: list[str | int | None]) -> None:
        op = ev.GetScript(self._name(args[0]))
        self._wait(op, op)

    def _deletescript(self, args: list[str | int | None]) -> None:
        op = ev.DeleteScript(self._name(args[0]))
        self._wait(op, op)

    def _renamescript(self, args: list[str | int | None]) -> None:
        op = ev.RenameScript(self._name(args[0]), self._name(args[1]))
        self._wait(op, op)


_DONE_TEXT: dict[type, str] = {
    ev.PutScript: "Putscript completed",
    ev.HaveSpace: "Putscript would succeed",
    ev.SetActive: "Setactive completed",
    ev.DeleteScript: "Deletescript completed",
    ev.RenameScript: "Renamescript completed",
}

# Command dispatch by explicit table (never by looking up method names).
_HANDLERS: dict[str, Callable[[ManageSieveServer, list[str | int | None]], None]] = {
    "CAPABILITY": ManageSieveServer._capability,
    "LOGOUT": ManageSieveServer._logout,
    "NOOP": ManageSieveServer._noop,
    "STARTTLS": ManageSieveServer._starttls,
    "AUTHENTICATE": ManageSieveServer._authenticate,
    "UNAUTHENTICATE": ManageSieveServer._unauthenticate,
    "HAVESPACE": ManageSieveServer._havespace,
    "PUTSCRIPT": ManageSieveServer._putscript,
    "LISTSCRIPTS": ManageSieveServer._listscripts,
    "SETACTIVE": ManageSieveServer._setactive,
    "GETSCRIPT": ManageSieveServer._getscript,
    "DELETESCRIPT": ManageSieveServer._deletescript,
    "RENAMESCRIPT": ManageSieveServer._renamescript,
    "CHECKSCRIPT": ManageSieveServer._checkscript,
}
