"""The account page's vacation auto-reply, kept as one managed Sieve script per user.

The form's settings become the script `SCRIPT` (RFC 5230 `vacation`): the first line is a
comment holding the settings as JSON, so the form can show them again; the message goes into a
multi-line `text:` string with dot-stuffing and the subject and addresses into quoted strings
with `\\` and `"` escaped (RFC 5228 §2.4.2), so no user text can end a string early.

Vacation is on exactly when `SCRIPT` is the active script. Turning it on stores the script,
makes it active and remembers which script was active before (`replaced`, shown on the page);
turning it off keeps the settings and makes `replaced` active again (or none, if it is gone).
While it is on, the user's own script does not run: one script is active at a time.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

from postroom.proto.managesieve import space_refusal
from postroom.proto.sieve import SieveError, compile_script
from postroom.services.sieve_scripts import shown, sizes
from postroom.storage.api import Store, Tx

log = logging.getLogger("postroom.sieve")

SCRIPT = "postroom-vacation"
MARK = "# postroom vacation settings: "
MAX_DAYS = 365  # RFC 5230 §4.1 lets a site bound :days; a year is plenty
MAX_SUBJECT = 200
MAX_ADDRESSES = 20


class VacationError(ValueError):
    """A form value that cannot go into the script; the message says which and why, `field`
    names the form's field ("" when it is about none)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Vacation:
    """What the form edits, and which script vacation replaced when it was turned on."""

    subject: str = ""
    message: str = ""
    days: int = 7
    addresses: tuple[str, ...] = ()
    replaced: str | None = None


@dataclass(frozen=True)
class VacationState:
    settings: Vacation
    enabled: bool


def quoted(text: str) -> str:
    """A Sieve quoted string (RFC 5228 §2.4.2): `\\` and `"` escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def multiline(text: str) -> str:
    """A Sieve `text:` string (RFC 5228 §2.4.2): CRLF lines, a leading "." doubled, "." ends."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    stuffed = ["." + line if line.startswith(".") else line for line in lines]
    return "text:\r\n" + "".join(line + "\r\n" for line in stuffed) + ".\r\n"


def checked(subject: str, message: str, days: str, addresses: str) -> Vacation:
    """The form's values as settings, or VacationError naming the field that is wrong."""
    subject = subject.strip()
    if len(subject) > MAX_SUBJECT or any(not c.isprintable() for c in subject):
        raise VacationError(
            f"The subject must be one line of at most {MAX_SUBJECT} characters.", "subject"
        )
    if not message.strip():
        raise VacationError("The message must not be empty.", "message")
    if "\0" in message:
        raise VacationError("The message must not contain NUL characters.", "message")
    try:
        number = int(days)
    except ValueError:
        raise VacationError("Days must be a whole number.", "days") from None
    if not 1 <= number <= MAX_DAYS:
        raise VacationError(f"Days must be between 1 and {MAX_DAYS}.", "days")
    listed = tuple(a for a in addresses.replace(",", " ").split() if a)
    if len(listed) > MAX_ADDRESSES or any(
        a.count("@") != 1 or not a.isprintable() or '"' in a for a in listed
    ):
        raise VacationError(
            f"Addresses: at most {MAX_ADDRESSES} addresses like you@example.org.", "addresses"
        )
    return Vacation(subject, message.rstrip("\r\n"), number, listed)


def script(settings: Vacation) -> str:
    """The Sieve script for `settings` (see the module docstring)."""
    tags = f":days {settings.days}"
    if settings.subject:
        tags += f" :subject {quoted(settings.subject)}"
    if settings.addresses:
        tags += " :addresses [" + ", ".join(quoted(a) for a in settings.addresses) + "]"
    header = MARK + json.dumps(asdict(settings), ensure_ascii=True)
    return (
        f'{header}\r\nrequire ["vacation"];\r\n'
        f"vacation {tags}\r\n{multiline(settings.message)};\r\n"
    )


def _parsed(source: str | None) -> Vacation | None:
    if source is None or not source.startswith(MARK):
        return None
    try:
        values = json.loads(source[len(MARK) :].split("\r\n", 1)[0])
        values["addresses"] = tuple(values["addresses"])
        return Vacation(**values)
    except (ValueError, TypeError, KeyError):
        return None


def state(tx: Tx, user_id: int) -> VacationState:
    """The user's vacation settings (defaults if none or hand-edited) and whether it is on."""
    settings = _parsed(tx.sieve.get(user_id, SCRIPT)) or Vacation()
    return VacationState(settings, dict(tx.sieve.scripts(user_id)).get(SCRIPT, False))


def _put(tx: Tx, user_id: int, settings: Vacation) -> None:
    source = script(settings)
    try:
        compile_script(source, SCRIPT)
    except SieveError as error:  # a bug here, never the user's: say so loudly
        raise AssertionError(f"generated vacation script does not compile: {error}") from None
    refusal = space_refusal(sizes(tx, user_id), SCRIPT, len(source.encode("utf-8")))
    if refusal is not None:
        raise VacationError(refusal.text)
    tx.sieve.put(user_id, SCRIPT, source, time.time())


async def turn_on(store: Store, address: str, settings: Vacation) -> None:
    """Store and activate the vacation script, remembering the script it replaced."""

    def change(tx: Tx) -> str | None:
        uid = _user_id(tx, address)
        current = state(tx, uid)
        active = next((name for name, on in tx.sieve.scripts(uid) if on), None)
        replaced = current.settings.replaced if current.enabled else active
        _put(tx, uid, Vacation(**{**asdict(settings), "replaced": replaced}))
        tx.sieve.activate(uid, SCRIPT)
        return replaced

    replaced = await store.write(change)
    log.info("sieve vacation on user=%s replaced=<%s>", address, shown(replaced or ""))


async def turn_off(store: Store, address: str, settings: Vacation) -> None:
    """Keep the settings; if vacation was on, make the script it replaced active again (none
    if that script is gone)."""

    def change(tx: Tx) -> str | None:
        uid = _user_id(tx, address)
        current = state(tx, uid)
        _put(tx, uid, Vacation(**{**asdict(settings), "replaced": None}))
        listed = dict(tx.sieve.scripts(uid))
        if current.enabled:
            replaced = current.settings.replaced
            tx.sieve.activate(uid, replaced if replaced in listed else None)
        return next((name for name, on in tx.sieve.scripts(uid) if on), None)

    active = await store.write(change)
    log.info("sieve vacation off user=%s active=<%s>", address, shown(active or ""))


def _user_id(tx: Tx, address: str) -> int:
    user = tx.accounts.get_user(address)
    if user is None:
        raise VacationError("The account is gone.")
    return user.id
