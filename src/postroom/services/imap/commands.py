"""Which IMAP command is legal in which state, and who handles it (RFC 3501 §3, §6).

One table, as DESIGN.md asks: a command outside its states gets BAD; a handler's `Refusal` or a
store `MailboxError` becomes NO (or BAD) with its response code, here and nowhere else; so does
a `StorageFailure` (NO [OVERQUOTA] or NO [UNAVAILABLE], one log line).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from postroom.proto.imap import grammar_commands as cmd
from postroom.services.imap import messages, searching
from postroom.services.imap.session import ImapSession, Refusal, State
from postroom.storage.records import MailboxError, StorageFailure

log = logging.getLogger("postroom.imap")

Handler = Callable[[ImapSession, str, cmd.Command], Awaitable[None]]

ANY: frozenset[State] = frozenset({"notauth", "auth", "selected"})
NOT_AUTHENTICATED: frozenset[State] = frozenset({"notauth"})
AUTHENTICATED: frozenset[State] = frozenset({"auth", "selected"})
SELECTED: frozenset[State] = frozenset({"selected"})

S = ImapSession
ALLOWED: dict[type, tuple[frozenset[State], Handler]] = {
    cmd.Capability: (ANY, S.capability),
    cmd.Noop: (ANY, S.noop),
    cmd.Logout: (ANY, S.logout),
    cmd.Id: (ANY, S.id),
    cmd.StartTLS: (NOT_AUTHENTICATED, S.starttls),
    cmd.Login: (NOT_AUTHENTICATED, S.login),
    cmd.Authenticate: (NOT_AUTHENTICATED, S.authenticate),
    cmd.Enable: (AUTHENTICATED, S.enable),
    cmd.Namespace: (AUTHENTICATED, S.namespace),
    cmd.Select: (AUTHENTICATED, S.select),
    cmd.Create: (AUTHENTICATED, S.create),
    cmd.Delete: (AUTHENTICATED, S.delete),
    cmd.Rename: (AUTHENTICATED, S.rename),
    cmd.Subscribe: (AUTHENTICATED, S.subscribe),
    cmd.Unsubscribe: (AUTHENTICATED, S.subscribe),
    cmd.List: (AUTHENTICATED, S.list),
    cmd.Lsub: (AUTHENTICATED, S.list),
    cmd.Status: (AUTHENTICATED, S.status),
    cmd.Idle: (AUTHENTICATED, S.idle),
    cmd.Append: (AUTHENTICATED, messages.append),
    cmd.Check: (SELECTED, S.check),
    cmd.Close: (SELECTED, S.close_mailbox),
    cmd.Unselect: (SELECTED, S.close_mailbox),
    cmd.Expunge: (SELECTED, messages.expunge_command),
    cmd.Fetch: (SELECTED, messages.fetch),
    cmd.Store: (SELECTED, messages.store),
    cmd.Copy: (SELECTED, messages.copy),
    cmd.Move: (SELECTED, messages.copy),
    cmd.Search: (SELECTED, searching.search),
    cmd.Sort: (SELECTED, searching.sort),
    cmd.Thread: (SELECTED, searching.thread),
}

_STORAGE_REFUSALS = {
    True: ("OVERQUOTA", "Not enough disk space, try again later"),
    False: ("UNAVAILABLE", "Mail storage temporarily unavailable, try again later"),
}
_WRONG_STATE = {
    "notauth": "Not logged in",
    "auth": "No mailbox selected",
    "selected": "Already logged in",
}


async def run(session: ImapSession, tag: str, command: cmd.Command) -> bool:
    """Run one command and send what it produced; False when the session is over."""
    if not isinstance(command, cmd.Store | cmd.Fetch):
        # Reads see this session's answered flag changes. STORE and FETCH answer flags from
        # the session's view and wait themselves when they need the store's (CONDSTORE).
        await session.settle_pending()
    entry = ALLOWED.get(type(command))
    if entry is None:
        session.tagged(tag, "BAD", "Unknown command")
    elif session.state not in entry[0]:
        session.tagged(tag, "BAD", _WRONG_STATE.get(session.state, "Not allowed now"))
    else:
        try:
            await entry[1](session, tag, command)
        except Refusal as refusal:
            if refusal.status == "NO" and session.selected is not None:
                await session.announce(allow_expunge=False)
            session.tagged(tag, refusal.status, refusal.text, refusal.code)
        except MailboxError as error:
            session.tagged(tag, "NO", error.text, error.code)
        except StorageFailure as failure:
            # RFC 5530: OVERQUOTA for a full disk (Dovecot: "NO [OVERQUOTA] Not enough disk
            # space"), UNAVAILABLE for any other failure of the storage (a subsystem is down);
            # SERVERBUG stays for our bugs. One line, no traceback; the session goes on.
            code, text = _STORAGE_REFUSALS[failure.full]
            log.warning(
                "%s failed client=%s tag=%s result=NO [%s]: %s",
                type(command).__name__.upper(),
                session.io.peer,
                tag,
                code,
                failure,
            )
            session.tagged(tag, "NO", text, code)
        except Exception:
            # A bug of ours: the client gets a clear NO and the session goes on (RFC 5530).
            log.exception("IMAP command failed client=%s tag=%s", session.io.peer, tag)
            session.tagged(tag, "NO", "Internal error, see the server log", "SERVERBUG")
    await session.flush()
    return session.state != "logout"
