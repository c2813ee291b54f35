"""Sieve mail filtering (RFC 5228) with its extensions: the language engine, pure logic.

    from postroom.proto.sieve import compile_script, run, Envelope, NullEnv, SieveError

    script = compile_script(source)              # str | bytes; SieveError(line, column, message)
    outcome = run(script, raw_message, Envelope(mail_from="a@b.example", to="me@c.example"),
                  env)                           # env: an Env (NullEnv() for none)
    for action in outcome.actions:               # Keep | FileInto | Redirect | Reject |
        ...                                      # Discard | Vacation, in script order; the
                                                 # implicit keep is Keep(implicit=True) at the end
    outcome.error      # a runtime error: then actions == (Keep(implicit=True),)
    outcome.headers    # the header list after editheader (None if unchanged);
                       # render_message(raw, headers) gives the edited message
    outcome.duplicates # (key, seconds, last) for the caller to record after delivery

Public API: compile_script(source, name="") -> Script; run(script, message, envelope, env)
-> Outcome; Script (.extensions, .uses(ext)); Envelope(mail_from, to, original_to=None,
auth=None); Env (Protocol: mailbox_exists, duplicate_seen, vacation_replied, load_script,
spamtest, now); NullEnv; SpamVerdict(value, percent); Outcome; the actions Keep, FileInto,
Redirect, Reject, Discard, Vacation; render_message(raw, headers); CAPABILITIES (what the
engine implements, for ManageSieve's SIEVE capability); SieveError; the limits MAX_* in
parser and interpreter.

Extensions: fileinto, reject, ereject, envelope, encoded-character, imap4flags, body,
variables, vacation, vacation-seconds, copy, relational, subaddress, date, index, editheader,
mailbox, include, duplicate, regex, spamtest, spamtestplus, and the comparators i;octet,
i;ascii-casemap, i;ascii-numeric.
"""

from postroom.proto.sieve.compiler import CAPABILITIES, Script, compile_script
from postroom.proto.sieve.errors import SieveError
from postroom.proto.sieve.interpreter import run
from postroom.proto.sieve.outcome import (
    Action,
    Discard,
    Env,
    Envelope,
    FileInto,
    Keep,
    NullEnv,
    Outcome,
    Redirect,
    Reject,
    SpamVerdict,
    Vacation,
    render_message,
)

__all__ = [
    "CAPABILITIES", "Action", "Discard", "Env", "Envelope", "FileInto", "Keep", "NullEnv",
    "Outcome", "Redirect", "Reject", "Script", "SieveError", "SpamVerdict", "Vacation",
    "compile_script", "render_message", "run",
]
