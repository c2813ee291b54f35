"""Running a compiled Sieve script on a message (RFC 5228 and the extensions listed in
postroom.proto.sieve). Pure: the message arrives as bytes, the outside world through `Env`.

Bounded: MAX_STEPS commands and tests evaluated, MAX_ACTIONS actions, MAX_REDIRECTS redirects,
MAX_INCLUDE_DEPTH nested includes, variables of at most MAX_VARIABLE_SIZE characters and at
most MAX_VARIABLES of them. Any runtime failure gives an Outcome with `error` set and only the
implicit keep (RFC 5228 §2.10.6): a broken script never loses mail.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

from postroom.proto.sieve import values as derived
from postroom.proto.sieve.compiler import (
    DATE_PARTS,
    Node,
    Script,
    compile_script,
    valid_mailbox,
    zone_ok,
)
from postroom.proto.sieve.errors import SieveError, SieveRuntimeError
from postroom.proto.sieve.matching import (
    RegexRefused,
    compare,
    compile_regex,
    fold,
    glob_match,
    regex_match,
    relational,
)
from postroom.proto.sieve.message import (
    Address,
    body_parts,
    header_text,
    html_to_text,
    parse_addresses,
    split_message,
    text_of,
)
from postroom.proto.sieve.outcome import (
    Action,
    Discard,
    Env,
    Envelope,
    FileInto,
    Headers,
    Keep,
    Outcome,
    Redirect,
    Reject,
    Vacation,
)

MAX_STEPS = 100_000
MAX_ACTIONS = 32
MAX_REDIRECTS = 4
MAX_INCLUDE_DEPTH = 10
MAX_INCLUDES = 255
MAX_VARIABLE_SIZE = 4096
MAX_VARIABLES = 255
MAX_MATCH_VALUES = 10_000  # header values / body parts looked at by one test
VACATION_DEFAULT_DAYS = 7  # RFC 5230 §4.1
VACATION_MIN_SECONDS = 86400  # Pigeonhole's sieve_vacation_min_period (1 day)
VACATION_MAX_SECONDS = 90 * 86400
DUPLICATE_DEFAULT_SECONDS = 14 * 86400  # Pigeonhole's sieve_duplicate_default_period
DETAIL_SEPARATOR = "+"  # RFC 5233 §2
SUBJECT_PREFIX = "Auto: "  # RFC 5230 §4.3 suggests a prefix; Pigeonhole uses "Auto: "
# RFC 5229 §3: ${name} (identifiers joined by ".") or ${digits}
_VARIABLE_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|[0-9]+)\}")
_PROTECTED_HEADERS = {"received", "auto-submitted"}  # RFC 5293 §9 (never deleted or added)
_LIST_HEADERS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post",
                 "list-owner", "list-archive")
_NO_REPLY_LOCALPARTS = ("mailer-daemon", "listserv", "majordomo", "owner-", "-request")


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


class _Run:
    def __init__(self, message: bytes, envelope: Envelope, env: Env) -> None:
        self.raw = message
        self.envelope = envelope
        self.env = env
        fields, self.body = split_message(message)
        self.headers: list[tuple[str, str]] = fields
        self.headers_edited = False
        self.steps = 0
        self.actions: list[Action] = []
        self.cancel_implicit = False
        self.flags: list[str] = []  # RFC 5232 internal variable
        self.globals: dict[str, str] = {}
        self.match_values: list[str] = []
        self.included: set[tuple[str, str]] = set()
        self.include_count = 0
        self.stack: list[tuple[str, str]] = []
        self.duplicates: list[tuple[str, int, bool]] = []
        self.mime: Any = None
        self._now: datetime | None = None

    # -- limits and helpers -------------------------------------------------------------
    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise SieveRuntimeError(f"script took more than {MAX_STEPS} steps")

    def charge(self, steps: int) -> None:
        if steps:
            self.steps += steps
            self.step()

    def now(self) -> datetime:
        if self._now is None:
            now = self.env.now()
            self._now = now if now.tzinfo else now.replace(tzinfo=UTC)
        return self._now

    def header_values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for field, value in self.headers if field.lower() == lowered]

    def snapshot(self) -> Headers | None:
        return tuple(self.headers) if self.headers_edited else None


class _Scope:
    """Variables of one script (RFC 5229); names declared `global` live in the run."""

    def __init__(self, run: _Run, script: Script) -> None:
        self.run = run
        self.script = script
        self.local: dict[str, str] = {}
        self.global_names: set[str] = set()
        self.variables = script.uses("variables")

    def get(self, name: str) -> str:
        name = name.lower()
        if name.isdigit():
            index = int(name)
            values = self.run.match_values
            return values[index] if index < len(values) else ""
        if name.startswith("global."):
            return self.run.globals.get(name[7:], "")
        if name in self.global_names:
            return self.run.globals.get(name, "")
        return self.local.get(name, "")

    def set(self, name: str, value: str) -> None:
        name = name.lower()
        if len(value) > MAX_VARIABLE_SIZE:
            value = value[:MAX_VARIABLE_SIZE]  # Pigeonhole truncates too
        if name.startswith("global."):
            target, name = self.run.globals, name[7:]
        elif name in self.global_names:
            target = self.run.globals
        else:
            target = self.local
        if name not in target and len(target) >= MAX_VARIABLES:
            raise SieveRuntimeError(f"more than {MAX_VARIABLES} variables")
        target[name] = value

    def expand(self, value: str) -> str:
        if not self.variables or "${" not in value:
            return value
        result = _VARIABLE_REF.sub(lambda m: self.get(m.group(1)), value)
        if len(result) > MAX_VARIABLE_SIZE * 4:
            raise SieveRuntimeError("expanded string too long")
        return result

    def expand_all(self, values: list[str]) -> list[str]:
        return [self.expand(v) for v in values]


class Interpreter:
    def __init__(self, run: _Run) -> None:
        self.run = run

    # -- running --------------------------------------------------------------------------
    def script(self, script: Script, scope: _Scope) -> None:
        with contextlib.suppress(_Return):
            self.block(script.commands, scope)

    def block(self, nodes: Iterable[Node], scope: _Scope) -> None:
        for node in nodes:
            self.command(node, scope)

    def command(self, node: Node, scope: _Scope) -> None:
        run = self.run
        run.step()
        name = node.name
        tags = node.tags
        if name == "if":
            for test, body in node.branches:
                if test is None or self.test(test, scope):
                    self.block(body, scope)
                    return
            return
        if name == "stop":
            raise _Stop
        if name == "return":
            raise _Return
        if name == "keep":
            flags = self.action_flags(node, scope)
            self.store("INBOX", flags, copy=False, create=False, keep=True)
        elif name == "discard":
            run.cancel_implicit = True
            if not any(isinstance(a, Discard) for a in run.actions):
                self.add(Discard())
        elif name == "fileinto":
            mailbox = scope.expand(node.args[0])
            if not mailbox:
                raise SieveRuntimeError("fileinto: empty mailbox name")
            flags = self.action_flags(node, scope)
            self.store(mailbox, flags, copy="copy" in tags, create="create" in tags, keep=False)
        elif name == "redirect":
            self.redirect(scope.expand(node.args[0]), "copy" in tags)
        elif name in ("reject", "ereject"):
            self.reject(scope.expand(node.args[0]), name == "ereject")
        elif name == "set":
            self.set_variable(node, scope)
        elif name in ("setflag", "addflag", "removeflag"):
            self.flag_command(node, scope)
        elif name == "vacation":
            self.vacation(node, scope)
        elif name == "addheader":
            self.addheader(node, scope)
        elif name == "deleteheader":
            self.deleteheader(node, scope)
        elif name == "include":
            self.include(node, scope)
        elif name == "global":
            for variable in node.args[0]:
                scope.global_names.add(variable.lower())
        else:  # pragma: no cover - the validator knows every command
            raise SieveRuntimeError(f"unknown command {name}")

    def add(self, action: Action) -> None:
        if len(self.run.actions) >= MAX_ACTIONS:
            raise SieveRuntimeError(f"more than {MAX_ACTIONS} actions")
        self.run.actions.append(action)

    def action_flags(self, node: Node, scope: _Scope) -> tuple[str, ...]:
        if "flags" in node.tags:
            return tuple(derived.flags_of(scope.expand_all(node.tags["flags"])))
        if scope.script.uses("imap4flags"):
            return tuple(self.run.flags)
        return ()

    def store(self, mailbox: str, flags: tuple[str, ...], copy: bool, create: bool,
              keep: bool) -> None:
        """keep and fileinto (RFC 5228 §4.1-4.3): a second store into the same mailbox is
        the same action (§2.10.3); "INBOX" is matched case-insensitively."""
        run = self.run
        self.check_reject_conflict("fileinto" if not keep else "keep")
        if not copy:
            run.cancel_implicit = True
        key = "INBOX" if mailbox.upper() == "INBOX" else mailbox
        for index, action in enumerate(run.actions):
            if (isinstance(action, Keep) and key == "INBOX") or (
                isinstance(action, FileInto) and (
                    action.mailbox.upper() == "INBOX" if key == "INBOX" else
                    action.mailbox == key)
            ):
                # Pigeonhole: the later store's flags replace the earlier ones
                merged = flags
                if isinstance(action, FileInto):
                    run.actions[index] = FileInto(
                        action.mailbox, merged, action.copy and copy, action.create or create,
                        action.headers,
                    )
                else:
                    run.actions[index] = Keep(merged, False, action.headers)
                return
        if keep:
            self.add(Keep(flags, False, run.snapshot()))
        else:
            self.add(FileInto(mailbox, flags, copy, create, run.snapshot()))

    def redirect(self, address: str, copy: bool) -> None:
        run = self.run
        address = address.strip()
        if address.startswith("<") and address.endswith(">"):
            address = address[1:-1]
        if not valid_mailbox(address):
            raise SieveRuntimeError(f"redirect: invalid address '{address}'")
        self.check_reject_conflict("redirect")
        if not copy:
            run.cancel_implicit = True
        for action in run.actions:
            if isinstance(action, Redirect) and action.address.lower() == address.lower():
                return
        if sum(isinstance(a, Redirect) for a in run.actions) >= MAX_REDIRECTS:
            raise SieveRuntimeError(f"more than {MAX_REDIRECTS} redirects")
        self.add(Redirect(address, copy, run.snapshot()))

    def check_reject_conflict(self, what: str) -> None:
        # RFC 5429 §2.1-2.2: reject cannot be combined with actions that deliver the message
        if any(isinstance(a, Reject) for a in self.run.actions):
            raise SieveRuntimeError(f"reject conflicts with {what}")

    def reject(self, reason: str, extended: bool) -> None:
        run = self.run
        for action in run.actions:
            if isinstance(action, Reject):
                return  # RFC 5429 §2.1: only the first reject counts... a duplicate is ignored
            if isinstance(action, (Keep, FileInto, Redirect, Vacation)):
                raise SieveRuntimeError("reject conflicts with an earlier action")
        run.cancel_implicit = True
        self.add(Reject(reason, extended))

    # -- variables and flags --------------------------------------------------------------
    def set_variable(self, node: Node, scope: _Scope) -> None:
        value = scope.expand(node.args[1])
        modifiers = sorted(
            (m for m in node.tags if m in _SET_ORDER), key=lambda m: -_SET_ORDER[m]
        )
        for modifier in modifiers:
            if modifier == "lower":
                value = value.lower()
            elif modifier == "upper":
                value = value.upper()
            elif modifier == "lowerfirst":
                value = value[:1].lower() + value[1:]
            elif modifier == "upperfirst":
                value = value[:1].upper() + value[1:]
            elif modifier == "quotewildcard":
                value = derived.quote_wildcards(value)
            elif modifier == "quoteregex":
                value = derived.quote_regex(value)
            elif modifier == "length":
                value = str(len(value))
        scope.set(node.args[0], value)

    def flag_command(self, node: Node, scope: _Scope) -> None:
        run = self.run
        if len(node.args) == 2:
            variable = node.args[0][0]
            current = derived.flags_of([scope.get(variable)])
            flags = derived.flags_of(scope.expand_all(node.args[1]))
        else:
            variable = None
            current = list(run.flags)
            flags = derived.flags_of(scope.expand_all(node.args[0]))
        if node.name == "setflag":
            result = flags
        elif node.name == "addflag":
            result = derived.flags_of([*current, *flags])
        else:
            drop = {f.lower() for f in flags}
            result = [f for f in current if f.lower() not in drop]
        if variable is None:
            run.flags = result
        else:
            scope.set(variable, " ".join(result))

    # -- vacation (RFC 5230, 6131, 3834) --------------------------------------------------
    def vacation(self, node: Node, scope: _Scope) -> None:
        run = self.run
        tags = node.tags
        if any(isinstance(a, Vacation) for a in run.actions):
            raise SieveRuntimeError("only one vacation action is allowed")
        if any(isinstance(a, Reject) for a in run.actions):
            raise SieveRuntimeError("vacation conflicts with reject")
        reason = scope.expand(node.args[0])
        subject_tag = scope.expand(tags["subject"]) if "subject" in tags else None
        from_tag = scope.expand(tags["from"]) if "from" in tags else None
        addresses = tuple(scope.expand_all(tags.get("addresses", [])))
        mime = "mime" in tags
        if "seconds" in tags:
            seconds = int(tags["seconds"])
        else:
            seconds = int(tags.get("days", VACATION_DEFAULT_DAYS)) * 86400
        # RFC 6131 §2 lets a site impose a minimum; like Pigeonhole's default it is one day
        seconds = min(max(VACATION_MIN_SECONDS, seconds), VACATION_MAX_SECONDS)
        if "handle" in tags:
            handle = scope.expand(tags["handle"])
        else:  # Pigeonhole's default handle: the arguments (as written) that shape the reply
            handle = (node.args[0] + tags.get("subject", "<default-subject>")
                      + tags.get("from", "<default-from>")
                      + ("<MIME>" if mime else "<NO-MIME>"))
        if not self.vacation_allowed(addresses):
            return
        sender = run.envelope.mail_from
        if run.env.vacation_replied(sender, handle, seconds):
            return
        subjects = run.header_values("subject")
        if subject_tag is not None:
            subject = subject_tag
        else:
            original = header_text(subjects[0]) if subjects else ""
            subject = SUBJECT_PREFIX + original if original else "Automated reply"
        message_ids = run.header_values("message-id")
        in_reply_to = message_ids[0].strip() if message_ids else None
        references_values = run.header_values("references")
        references = " ".join(
            v.strip() for v in [*(references_values[:1]), *( [in_reply_to] if in_reply_to
                                                            else [])]
        ) or None
        self.add(Vacation(sender, subject, from_tag, reason, mime, handle, seconds, addresses,
                          in_reply_to, references))

    def vacation_allowed(self, addresses: tuple[str, ...]) -> bool:
        """RFC 5230 §4.5-4.6 and RFC 3834 §2: whom never to answer."""
        run = self.run
        sender = run.envelope.mail_from.strip()
        if not sender or sender == "<>":
            return False
        local = sender.split("@", 1)[0].lower()
        if any(local == p or (p.endswith("-") and local.startswith(p)) or
               (p.startswith("-") and local.endswith(p)) for p in _NO_REPLY_LOCALPARTS):
            return False
        own = {a.lower() for a in (run.envelope.to, run.envelope.envelope_to, *addresses) if a}
        if sender.lower() in own:
            return False
        for value in run.header_values("auto-submitted"):
            if value.strip().split(";")[0].strip().lower() != "no":
                return False
        for value in run.header_values("precedence"):
            if value.strip().lower() in ("bulk", "list", "junk"):
                return False
        if any(run.header_values(name) for name in _LIST_HEADERS):
            return False
        # §4.5: one of the user's addresses must be in a recipient header
        for name in ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"):
            for value in run.header_values(name):
                for address in parse_addresses(value):
                    if address.all.lower() in own:
                        return True
        return False

    # -- editheader (RFC 5293) ------------------------------------------------------------
    def addheader(self, node: Node, scope: _Scope) -> None:
        run = self.run
        name = scope.expand(node.args[0])
        value = scope.expand(node.args[1])
        if name.lower() in _PROTECTED_HEADERS or not derived.field_ok(name):
            return
        if any(c in value for c in "\r\n\x00"):
            value = " ".join(value.replace("\x00", "").split())
        encoded = " " + derived.encode_2047(value)
        if "last" in node.tags:
            run.headers.append((name, encoded))
        else:
            run.headers.insert(0, (name, encoded))
        run.headers_edited = True

    def deleteheader(self, node: Node, scope: _Scope) -> None:
        run = self.run
        name = scope.expand(node.args[0]).lower()
        if name in _PROTECTED_HEADERS:
            return
        patterns = scope.expand_all(node.args[1]) if len(node.args) > 1 else None
        positions = [i for i, (field, _) in enumerate(run.headers) if field.lower() == name]
        if "index" in node.tags:
            index = node.tags["index"]
            if index > len(positions):
                return
            positions = [positions[-index] if "last" in node.tags else positions[index - 1]]
        doomed = set()
        for position in positions:
            if patterns is None:
                doomed.add(position)
            else:
                value = header_text(run.headers[position][1])
                if self.match(node, scope, [value], patterns, set_variables=False):
                    doomed.add(position)
        if doomed:
            run.headers = [f for i, f in enumerate(run.headers) if i not in doomed]
            run.headers_edited = True

    # -- include (RFC 6609) ---------------------------------------------------------------
    def include(self, node: Node, scope: _Scope) -> None:
        run = self.run
        name = scope.expand(node.args[0])
        location: Literal["personal", "global"] = "global" if "global" in node.tags else (
            "personal")
        key = (location, name)
        if "once" in node.tags and key in run.included:
            return
        if key in run.stack:
            raise SieveRuntimeError(f"include: '{name}' includes itself")
        if len(run.stack) >= MAX_INCLUDE_DEPTH:
            raise SieveRuntimeError(f"include: nested more than {MAX_INCLUDE_DEPTH} deep")
        run.include_count += 1
        if run.include_count > MAX_INCLUDES:
            raise SieveRuntimeError(f"include: more than {MAX_INCLUDES} includes")
        source = run.env.load_script(name, location)
        if source is None:
            if "optional" in node.tags:
                return
            raise SieveRuntimeError(f"include: {location} script '{name}' not found")
        try:
            included = compile_script(source, name)
        except SieveError as exc:
            raise SieveRuntimeError(f"include: {location} script '{name}': {exc}") from None
        run.included.add(key)
        run.stack.append(key)
        self.script(included, _Scope(run, included))
        run.stack.pop()

    # -- tests ----------------------------------------------------------------------------
    def test(self, node: Node, scope: _Scope) -> bool:
        run = self.run
        run.step()
        name = node.name
        if name == "true":
            return True
        if name == "false":
            return False
        if name == "not":
            return not self.test(node.tests[0], scope)
        if name == "allof":
            return all(self.test(t, scope) for t in node.tests)
        if name == "anyof":
            return any(self.test(t, scope) for t in node.tests)
        if name == "size":
            limit: int = node.args[0]
            size = len(run.raw)
            return size > limit if "over" in node.tags else size < limit
        if name == "exists":
            return all(run.header_values(n) for n in scope.expand_all(node.args[0]))
        if name == "header":
            names = scope.expand_all(node.args[0])
            values = [header_text(v) for n in names for v in self.indexed(node, n)]
            return self.match(node, scope, values, scope.expand_all(node.args[1]))
        if name == "address":
            names = scope.expand_all(node.args[0])
            addresses = [a for n in names for v in self.indexed(node, n)
                         for a in parse_addresses(header_text(v))]
            return self.match(node, scope, self.address_parts(node, addresses),
                              scope.expand_all(node.args[1]))
        if name == "envelope":
            return self.match(node, scope, self.envelope_values(node, scope),
                              scope.expand_all(node.args[1]))
        if name == "string":
            values = scope.expand_all(node.args[0])
            if "count" in node.tags:  # RFC 5229 §5: empty strings are not counted
                values = [v for v in values if v]
            return self.match(node, scope, values, scope.expand_all(node.args[1]))
        if name == "hasflag":
            if len(node.args) == 2:
                flags = derived.flags_of(scope.get(v) for v in node.args[0])
                keys = scope.expand_all(node.args[1])
            else:
                flags = list(run.flags)
                keys = scope.expand_all(node.args[0])
            if "count" not in node.tags and "value" not in node.tags:
                keys = derived.flags_of(keys)
            return self.match(node, scope, flags, keys)
        if name == "body":
            return self.match(node, scope, self.body_values(node, scope),
                              scope.expand_all(node.args[0]))
        if name == "date":
            header = scope.expand(node.args[0])
            part = scope.expand(node.args[1]).lower()
            if part not in DATE_PARTS:
                return False  # Pigeonhole warns and the test fails
            values = []
            for value in self.indexed(node, header):
                text = header_text(value)
                if header.lower() == "received":  # RFC 5260 §4: the date after the last ";"
                    text = text.rsplit(";", 1)[-1]
                when = derived.parse_date(text)
                if when is None:
                    continue
                values.append(derived.date_part(self.zoned(node, when, original=True), part))
            if "count" not in node.tags and not values:
                return False
            return self.match(node, scope, values, scope.expand_all(node.args[2]))
        if name == "currentdate":
            part = scope.expand(node.args[0]).lower()
            if part not in DATE_PARTS:
                return False
            value = derived.date_part(self.zoned(node, run.now(), original=False), part)
            return self.match(node, scope, [value], scope.expand_all(node.args[1]))
        if name == "mailboxexists":
            return all(run.env.mailbox_exists(m) for m in scope.expand_all(node.args[0]))
        if name == "duplicate":
            return self.duplicate(node, scope)
        if name == "spamtest":
            verdict = run.env.spamtest()
            if verdict is None:
                value = "0"
            elif "percent" in node.tags:
                value = str(max(0, min(100, verdict.percent)))
            else:
                value = str(max(1, min(10, verdict.value)))
            return self.match(node, scope, [value], [scope.expand(node.args[0])])
        raise SieveRuntimeError(f"unknown test {name}")  # pragma: no cover

    def indexed(self, node: Node, name: str) -> list[str]:
        """The raw values of the header fields `name`, narrowed by :index/:last (RFC 5260 §6)."""
        values = self.run.header_values(name)
        if "index" in node.tags:
            index = node.tags["index"]
            if index > len(values):
                return []
            return [values[-index] if "last" in node.tags else values[index - 1]]
        return values

    def address_parts(self, node: Node, addresses: Iterable[Address]) -> list[str]:
        tags = node.tags
        result: list[str] = []
        for address in addresses:
            if "localpart" in tags:
                result.append(address.local)
            elif "domain" in tags:
                if address.domain is not None:
                    result.append(address.domain)
            elif "user" in tags or "detail" in tags:
                # RFC 5233 §4: user is the part before the separator, detail after it; an
                # address without a separator has no detail (the :detail test skips it)
                user, sep, detail = address.local.partition(DETAIL_SEPARATOR)
                if "user" in tags:
                    result.append(user)
                elif sep:
                    result.append(detail)
            else:
                result.append(address.all)
            if len(result) > MAX_MATCH_VALUES:
                break
        return result

    def envelope_values(self, node: Node, scope: _Scope) -> list[str]:
        envelope = self.run.envelope
        result: list[str] = []
        for part in scope.expand_all(node.args[0]):
            part = part.lower()
            if part == "from":
                sender = envelope.mail_from.strip().removeprefix("<").removesuffix(">")
                if not sender:
                    # RFC 5228 §5.4: the null reverse-path is the empty string (for :all)
                    if not any(t in node.tags for t in ("localpart", "domain", "user",
                                                          "detail")):
                        result.append("")
                    continue
                result.extend(self.address_parts(node, parse_addresses(sender)))
            elif part == "to":
                result.extend(self.address_parts(node, parse_addresses(envelope.envelope_to)))
        return result

    def body_values(self, node: Node, scope: _Scope) -> list[str]:
        run = self.run
        if "raw" in node.tags:
            return [run.body.decode("utf-8", "replace")]
        if run.mime is None:
            run.mime = body_parts(run.raw)
        types = ["text"] if "content" not in node.tags else [
            t.lower() for t in scope.expand_all(node.tags["content"])
        ]
        values: list[str] = []
        for part in run.mime.walk():
            if len(values) >= MAX_MATCH_VALUES:
                break
            content_type = part.get_content_type().lower()
            major = content_type.split("/")[0]
            if part.is_multipart() and not any(t == "multipart" or t == content_type
                                               for t in types):
                continue
            if not any(t == "" or t == content_type or ("/" not in t and t == major)
                       for t in types):
                continue
            if part.is_multipart():
                continue  # prologue/epilogue text: rarely used, not offered
            if major == "text":
                text = text_of(part)
                if "content" not in node.tags and content_type == "text/html":
                    text = html_to_text(text)
                values.append(text)
            else:
                payload = part.get_payload(decode=True)
                values.append(payload.decode("utf-8", "replace") if isinstance(
                    payload, bytes) else "")
        return values

    def zoned(self, node: Node, when: datetime, original: bool) -> datetime:
        if "zone" in node.tags and zone_ok(node.tags["zone"]):  # else ignored, as Pigeonhole
            zone = node.tags["zone"]
            minutes = int(zone[1:3]) * 60 + int(zone[3:5])
            offset = timedelta(minutes=minutes if zone[0] == "+" else -minutes)
            return when.astimezone(timezone(offset))
        if "originalzone" in node.tags and original:
            return when
        local = self.run.now().tzinfo
        return when.astimezone(local)

    def duplicate(self, node: Node, scope: _Scope) -> bool:
        run = self.run
        tags = node.tags
        if "uniqueid" in tags:
            unique = scope.expand(tags["uniqueid"])
        else:
            header = scope.expand(tags.get("header", "message-id"))
            values = run.header_values(header)
            if not values:
                return False  # RFC 7352 §3.1: nothing to track
            unique = values[0].strip()
            if header.lower() == "message-id":
                unique = unique.removeprefix("<").removesuffix(">").strip()
        handle = scope.expand(tags.get("handle", ""))
        seconds = int(tags.get("seconds", DUPLICATE_DEFAULT_SECONDS))
        key = f"{handle}\x00{unique}"
        last = "last" in tags
        for recorded, _, _ in run.duplicates:
            if recorded == key:
                return False  # the same message checked twice: not a duplicate of itself
        seen = run.env.duplicate_seen(key, seconds, last)
        run.duplicates.append((key, seconds, last))
        return seen

    # -- matching (RFC 5228 §2.7, RFC 5231, RFC 5229 §3.2) -------------------------------
    def match(self, node: Node, scope: _Scope, values: list[str], keys: list[str],
              set_variables: bool = True) -> bool:
        tags = node.tags
        comparator = tags.get("comparator", "i;ascii-casemap")
        if "count" in tags:
            count = str(len(values))
            return any(relational(tags["count"], compare(comparator, count, k)) for k in keys)
        if "value" in tags:
            op = tags["value"]
            return any(relational(op, compare(comparator, v, k)) for v in values for k in keys)
        if "matches" in tags or "regex" in tags:
            want_vars = set_variables and scope.variables
            compiled = None
            for key in keys:
                if "regex" in tags:
                    try:
                        compiled = compile_regex(key, comparator)
                    except RegexRefused as exc:
                        raise SieveRuntimeError(f"regex '{key}': {exc}") from None
                for value in values:
                    self.run.step()
                    if compiled is not None:
                        captures = regex_match(compiled, value)
                        if captures is not None and want_vars:
                            self.run.match_values = captures[:10]
                    else:
                        # "?" runs cost a pass over the value each: charge them as steps
                        self.run.charge(len(value) * key.count("?") // 1000)
                        captures = glob_match(key, value, comparator)
                        if captures is not None and want_vars:
                            self.run.match_values = [value, *captures][:10]
                    if captures is not None:
                        return True
            return False
        if "contains" in tags:
            if comparator == "i;octet":
                return any(k in v for v in values for k in keys)
            folded_keys = [fold(comparator, k) for k in keys]
            return any(k in fold(comparator, v) for v in values for k in folded_keys)
        # :is (the default)
        return any(compare(comparator, v, k) == 0 if comparator == "i;ascii-numeric"
                   else fold(comparator, v) == fold(comparator, k)
                   for v in values for k in keys)


_SET_ORDER = {"lower": 40, "upper": 40, "lowerfirst": 30, "upperfirst": 30,
              "quotewildcard": 20, "quoteregex": 20, "length": 10}


def run(script: Script, message: bytes, envelope: Envelope, env: Env) -> Outcome:
    """Run `script` on `message` (raw RFC 5322 bytes) delivered with `envelope`."""
    state = _Run(message, envelope, env)
    interpreter = Interpreter(state)
    try:
        with contextlib.suppress(_Stop):
            interpreter.script(script, _Scope(state, script))
    except (SieveRuntimeError, RecursionError, MemoryError) as exc:
        return Outcome((Keep(implicit=True),), None, (), f"{exc}" or type(exc).__name__)
    actions = list(state.actions)
    if not state.cancel_implicit:
        # RFC 5228 §2.10.2; RFC 5232 §3: the implicit keep carries the internal flags
        flags = tuple(state.flags) if script.uses("imap4flags") else ()
        existing = [i for i, a in enumerate(actions) if isinstance(a, Keep) or (
            isinstance(a, FileInto) and a.mailbox.upper() == "INBOX")]
        if not existing:
            actions.append(Keep(flags, True, state.snapshot()))
    return Outcome(tuple(actions), state.snapshot(), tuple(state.duplicates), None)
