"""Validation of a parsed Sieve script ("compile"): every command, test and tag known, argument
types right, each extension required before its use (RFC 5228 §3.2), comparator, match type and
address part combinations allowed. The result, a `Script`, is immutable and may be run any
number of times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from postroom.proto.sieve.errors import SieveError
from postroom.proto.sieve.matching import RegexRefused, compile_regex
from postroom.proto.sieve.parser import Command, Number, StringList, Tag, Test, parse

# Capabilities this engine implements (what ManageSieve advertises in SIEVE).
CAPABILITIES: tuple[str, ...] = (
    "fileinto", "reject", "ereject", "envelope", "encoded-character", "imap4flags", "body",
    "variables", "vacation", "vacation-seconds", "copy", "relational", "subaddress", "date",
    "index", "editheader", "mailbox", "include", "duplicate", "regex", "spamtest",
    "spamtestplus", "comparator-i;ascii-numeric", "comparator-i;octet",
    "comparator-i;ascii-casemap",
)
# Requiring one implies the other (RFC 6131 §2, RFC 5235 §3.2).
_IMPLIES = {"vacation-seconds": "vacation", "spamtestplus": "spamtest"}
COMPARATORS = {
    "i;octet": None, "i;ascii-casemap": None, "i;ascii-numeric": "comparator-i;ascii-numeric",
}
# Headers the address test accepts (RFC 5228 §5.1 names the minimum; these are the ones
# Pigeonhole and the RFCs define as holding addresses).
ADDRESS_HEADERS = frozenset({
    "from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender",
    "resent-reply-to", "resent-to", "resent-cc", "resent-bcc", "return-receipt-to",
    "disposition-notification-to", "errors-to", "delivered-to", "envelope-to",
    "original-recipient", "return-path", "mail-followup-to", "mail-reply-to",
    "x-original-to", "x-envelope-to", "x-beenthere", "x-original-from",
})
RELATIONAL_OPS = {"gt", "ge", "lt", "le", "eq", "ne"}  # RFC 5231 §5
DATE_PARTS = {
    "year", "month", "day", "date", "julian", "hour", "minute", "second", "time", "iso8601",
    "std11", "zone", "weekday",
}  # RFC 5260 §4.2
SET_MODIFIERS = {  # RFC 5229 §4.1 precedence (higher applied first); :quoteregex (regex draft)
    "lower": 40, "upper": 40, "lowerfirst": 30, "upperfirst": 30, "quotewildcard": 20,
    "quoteregex": 20, "length": 10,
}

# Argument kinds
STR, STRS, NUM = "string", "string-list", "number"


@dataclass(frozen=True)
class _TagSpec:
    arg: str | None  # STR, STRS, NUM or None
    group: str  # tags of one group exclude each other
    ext: str | None = None


def _tags(*specs: tuple[str, _TagSpec]) -> dict[str, _TagSpec]:
    return dict(specs)


_COMPARATOR = ("comparator", _TagSpec(STR, "comparator"))
_MATCH = [
    ("is", _TagSpec(None, "match")),
    ("contains", _TagSpec(None, "match")),
    ("matches", _TagSpec(None, "match")),
    ("regex", _TagSpec(None, "match", "regex")),
    ("value", _TagSpec(STR, "match", "relational")),
    ("count", _TagSpec(STR, "match", "relational")),
]
_ADDRESS_PART = [
    ("all", _TagSpec(None, "address-part")),
    ("localpart", _TagSpec(None, "address-part")),
    ("domain", _TagSpec(None, "address-part")),
    ("user", _TagSpec(None, "address-part", "subaddress")),
    ("detail", _TagSpec(None, "address-part", "subaddress")),
]
_INDEX = [("index", _TagSpec(NUM, "index", "index")), ("last", _TagSpec(None, "last", "index"))]
_MATCHING = [_COMPARATOR, *_MATCH]
_FLAGS = ("flags", _TagSpec(STRS, "flags", "imap4flags"))
_COPY = ("copy", _TagSpec(None, "copy", "copy"))


@dataclass(frozen=True)
class _Spec:
    test: bool
    ext: str | None
    tags: dict[str, _TagSpec]
    positional: tuple[str, ...]  # a trailing "?" marks optional arguments
    block: bool = False
    tests: str = "none"  # "none", "one", "list"


_SPECS: dict[str, _Spec] = {
    # Control and action commands, RFC 5228 §3-4
    "require": _Spec(False, None, {}, (STRS,)),
    "if": _Spec(False, None, {}, (), True, "one"),
    "elsif": _Spec(False, None, {}, (), True, "one"),
    "else": _Spec(False, None, {}, (), True),
    "stop": _Spec(False, None, {}, ()),
    "keep": _Spec(False, None, _tags(_FLAGS), ()),
    "discard": _Spec(False, None, {}, ()),
    "redirect": _Spec(False, None, _tags(_COPY), (STR,)),
    "fileinto": _Spec(
        False, "fileinto", _tags(_FLAGS, _COPY, ("create", _TagSpec(None, "create", "mailbox"))),
        (STR,),
    ),
    "reject": _Spec(False, "reject", {}, (STR,)),
    "ereject": _Spec(False, "ereject", {}, (STR,)),
    # RFC 5229
    "set": _Spec(
        False, "variables",
        {name: _TagSpec(None, name, "regex" if name == "quoteregex" else None)
         for name in SET_MODIFIERS},
        (STR, STR),
    ),
    # RFC 5232
    "setflag": _Spec(False, "imap4flags", {}, (STRS, STRS + "?")),
    "addflag": _Spec(False, "imap4flags", {}, (STRS, STRS + "?")),
    "removeflag": _Spec(False, "imap4flags", {}, (STRS, STRS + "?")),
    # RFC 5230, 6131
    "vacation": _Spec(
        False, "vacation",
        _tags(
            ("days", _TagSpec(NUM, "period")),
            ("seconds", _TagSpec(NUM, "period", "vacation-seconds")),
            ("subject", _TagSpec(STR, "subject")),
            ("from", _TagSpec(STR, "from")),
            ("addresses", _TagSpec(STRS, "addresses")),
            ("mime", _TagSpec(None, "mime")),
            ("handle", _TagSpec(STR, "handle")),
        ),
        (STR,),
    ),
    # RFC 5293
    "addheader": _Spec(False, "editheader", _tags(("last", _TagSpec(None, "last"))), (STR, STR)),
    "deleteheader": _Spec(
        False, "editheader",
        _tags(("index", _TagSpec(NUM, "index")), ("last", _TagSpec(None, "last")), *_MATCHING),
        (STR, STRS + "?"),
    ),
    # RFC 6609
    "include": _Spec(
        False, "include",
        _tags(
            ("personal", _TagSpec(None, "location")), ("global", _TagSpec(None, "location")),
            ("once", _TagSpec(None, "once")), ("optional", _TagSpec(None, "optional")),
        ),
        (STR,),
    ),
    "return": _Spec(False, "include", {}, ()),
    "global": _Spec(False, "include", {}, (STRS,)),
    # Tests, RFC 5228 §5
    "address": _Spec(True, None, _tags(*_MATCHING, *_ADDRESS_PART, *_INDEX), (STRS, STRS)),
    "allof": _Spec(True, None, {}, (), tests="list"),
    "anyof": _Spec(True, None, {}, (), tests="list"),
    "envelope": _Spec(True, "envelope", _tags(*_MATCHING, *_ADDRESS_PART), (STRS, STRS)),
    "exists": _Spec(True, None, {}, (STRS,)),
    "false": _Spec(True, None, {}, ()),
    "header": _Spec(True, None, _tags(*_MATCHING, *_INDEX), (STRS, STRS)),
    "not": _Spec(True, None, {}, (), tests="one"),
    "size": _Spec(
        True, None, _tags(("over", _TagSpec(None, "size")), ("under", _TagSpec(None, "size"))),
        (NUM,),
    ),
    "true": _Spec(True, None, {}, ()),
    "string": _Spec(True, "variables", _tags(*_MATCHING), (STRS, STRS)),
    "hasflag": _Spec(True, "imap4flags", _tags(*_MATCHING), (STRS, STRS + "?")),
    "body": _Spec(
        True, "body",
        _tags(
            *_MATCHING,
            ("raw", _TagSpec(None, "transform")),
            ("content", _TagSpec(STRS, "transform")),
            ("text", _TagSpec(None, "transform")),
        ),
        (STRS,),
    ),
    "date": _Spec(
        True, "date",
        _tags(
            ("zone", _TagSpec(STR, "zone")), ("originalzone", _TagSpec(None, "zone")),
            *_MATCHING, *_INDEX,
        ),
        (STR, STR, STRS),
    ),
    "currentdate": _Spec(
        True, "date", _tags(("zone", _TagSpec(STR, "zone")), *_MATCHING), (STR, STRS)
    ),
    "mailboxexists": _Spec(True, "mailbox", {}, (STRS,)),
    "duplicate": _Spec(
        True, "duplicate",
        _tags(
            ("handle", _TagSpec(STR, "handle")),
            ("header", _TagSpec(STR, "id")), ("uniqueid", _TagSpec(STR, "id")),
            ("seconds", _TagSpec(NUM, "seconds")), ("last", _TagSpec(None, "last")),
        ),
        (),
    ),
    "spamtest": _Spec(
        True, "spamtest",
        _tags(("percent", _TagSpec(None, "percent", "spamtestplus")), *_MATCHING),
        (STR,),
    ),
}


@dataclass(slots=True)
class Node:
    """A validated command or test. `tags` maps a tag to its argument (True when it has none);
    `args` holds the positional arguments (list[str] for string lists)."""

    name: str
    tags: dict[str, Any]
    args: list[Any]
    tests: list[Node]
    block: list[Node] | None
    line: int
    column: int
    branches: list[tuple[Node | None, list[Node]]] = field(default_factory=list)  # "if" chains


@dataclass(frozen=True)
class Script:
    """A compiled script: run it with `postroom.proto.sieve.run`."""

    commands: tuple[Node, ...]
    extensions: frozenset[str]
    name: str = ""

    def uses(self, extension: str) -> bool:
        return extension in self.extensions


def _field_name_ok(name: str) -> bool:
    # RFC 5322 §3.6.8 field-name: printable US-ASCII except ":"
    return bool(name) and all(33 <= ord(c) <= 126 and c != ":" for c in name)


def _hex_decode(body: str) -> str | None:
    parts = body.split()
    raw = bytearray()
    for part in parts:
        if len(part) % 2 or any(c not in "0123456789abcdefABCDEF" for c in part):
            return None
        raw.extend(bytes.fromhex(part))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _unicode_decode(body: str) -> str | None:
    out = []
    for part in body.split():
        if len(part) > 6 or any(c not in "0123456789abcdefABCDEF" for c in part):
            return None
        cp = int(part, 16)
        if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
            return None
        out.append(chr(cp))
    return "".join(out)


def decode_encoded_characters(value: str, line: int, column: int) -> str:
    """RFC 5228 §2.4.2.4: "${hex: 41 42}" and "${unicode: 263a}" replaced by their characters.
    A malformed sequence is left as it is; an invalid Unicode code point is an error."""
    if "${" not in value:
        return value
    out: list[str] = []
    pos = 0
    end = -1  # the "}" found last: reused while it lies ahead, so the scan stays linear
    while True:
        start = value.find("${", pos)
        if start < 0:
            out.append(value[pos:])
            return "".join(out)
        if end < start:
            end = value.find("}", start)
        if end < 0:
            out.append(value[pos:])
            return "".join(out)
        inner = value[start + 2 : end]
        nested = inner.rfind("${")
        if nested >= 0:  # "${a ${hex:41}": only the innermost can be a sequence
            out.append(value[pos : start + 2 + nested])
            pos = start + 2 + nested
            continue
        colon = inner.find(":")
        kind = inner[:colon].strip().lower() if colon >= 0 else ""
        decoded: str | None = None
        if kind == "hex":
            decoded = _hex_decode(inner[colon + 1 :])
        elif kind == "unicode":
            decoded = _unicode_decode(inner[colon + 1 :])
            if decoded is None and all(
                c in "0123456789abcdefABCDEF \t\r\n" for c in inner[colon + 1 :]
            ):
                raise SieveError(line, column, f"invalid unicode character in '${{{inner}}}'")
        if decoded is None:
            out.append(value[pos : start + 2])
            pos = start + 2
            continue
        out.append(value[pos:start])
        out.append(decoded)
        pos = end + 1


class _Validator:
    def __init__(self, name: str) -> None:
        self.name = name
        self.extensions: set[str] = set()
        self.requires_done = False

    def fail(self, node: Command | Test | Tag | Number | StringList, message: str) -> SieveError:
        return SieveError(node.line, node.column, message)

    def strings(self, arg: StringList) -> list[str]:
        values = list(arg.values)
        if "encoded-character" in self.extensions:
            values = [decode_encoded_characters(v, arg.line, arg.column) for v in values]
        return values

    def block(self, commands: list[Command], top: bool) -> list[Node]:
        result: list[Node] = []
        for command in commands:
            if command.name == "require":
                if not top or self.requires_done:
                    raise self.fail(command, "require must come before any other command")
                self.require(command)
                continue
            self.requires_done = True
            if command.name in ("elsif", "else"):
                if not result or result[-1].name != "if" or result[-1].branches[-1][0] is None:
                    raise self.fail(command, f"{command.name} without a preceding if")
                node = self.node(command, False)
                assert node.block is not None
                result[-1].branches.append((node.tests[0] if node.tests else None, node.block))
                continue
            node = self.node(command, False)
            if node.name == "if":
                assert node.block is not None
                node.branches.append((node.tests[0], node.block))
            result.append(node)
        return result

    def require(self, command: Command) -> None:
        if len(command.arguments) != 1 or not isinstance(command.arguments[0], StringList):
            raise self.fail(command, "require takes a string list of capabilities")
        if command.tests:
            raise self.fail(command, "require takes no test")
        for capability in command.arguments[0].values:
            if capability not in CAPABILITIES:
                raise self.fail(command.arguments[0], f"unknown capability '{capability}'")
            self.extensions.add(capability)
            if capability in _IMPLIES:
                self.extensions.add(_IMPLIES[capability])

    def node(self, item: Command | Test, as_test: bool) -> Node:
        spec = _SPECS.get(item.name)
        kind = "test" if as_test else "command"
        if spec is None or spec.test != as_test:
            if spec is not None:
                other = "a test" if spec.test else "a command"
                raise self.fail(item, f"'{item.name}' is {other}, not a {kind}")
            raise self.fail(item, f"unknown {kind} '{item.name}'")
        if spec.ext and spec.ext not in self.extensions:
            raise self.fail(item, f"{kind} '{item.name}' needs require \"{spec.ext}\"")
        tags: dict[str, Any] = {}
        groups: dict[str, str] = {}
        positional: list[Number | StringList] = []
        arguments = item.arguments
        i = 0
        while i < len(arguments):
            arg = arguments[i]
            i += 1
            if not isinstance(arg, Tag):
                positional.append(arg)
                continue
            if positional:
                raise self.fail(arg, f"tag ':{arg.name}' after the positional arguments")
            tag = spec.tags.get(arg.name)
            if tag is None:
                raise self.fail(arg, f"unknown tag ':{arg.name}' for {kind} '{item.name}'")
            if tag.ext and tag.ext not in self.extensions:
                raise self.fail(arg, f"tag ':{arg.name}' needs require \"{tag.ext}\"")
            if tag.group in groups:
                previous = groups[tag.group]
                what = "twice" if previous == arg.name else f"together with ':{previous}'"
                raise self.fail(arg, f"tag ':{arg.name}' given {what}")
            groups[tag.group] = arg.name
            value: Any = True
            if tag.arg is not None:
                if i >= len(arguments):
                    raise self.fail(arg, f"tag ':{arg.name}' needs a {tag.arg} argument")
                value_arg = arguments[i]
                i += 1
                value = self.typed(value_arg, tag.arg, f"tag ':{arg.name}'")
            tags[arg.name] = value
        required = [p for p in spec.positional if not p.endswith("?")]
        if not len(required) <= len(positional) <= len(spec.positional):
            want = len(required) if len(required) == len(spec.positional) else (
                f"{len(required)} to {len(spec.positional)}"
            )
            raise self.fail(
                item, f"{kind} '{item.name}' takes {want} positional arguments, "
                f"{len(positional)} given"
            )
        args: list[Any] = []
        # With one optional argument first (setflag "var" "flags"), the given ones align right.
        kinds = list(spec.positional)
        if len(positional) < len(kinds) and not kinds[0].endswith("?"):
            kinds = kinds[len(kinds) - len(positional) :] if item.name in (
                "setflag", "addflag", "removeflag", "hasflag"
            ) else kinds[: len(positional)]
        for value_arg, want_kind in zip(positional, kinds, strict=False):
            args.append(self.typed(value_arg, want_kind.rstrip("?"), f"{kind} '{item.name}'"))
        # Tests and blocks
        if spec.tests == "none" and item.tests:
            raise self.fail(item, f"{kind} '{item.name}' takes no test")
        if spec.tests == "one" and (len(item.tests) != 1 or item.test_list):
            raise self.fail(item, f"{kind} '{item.name}' needs exactly one test")
        if spec.tests == "list" and not item.test_list:
            raise self.fail(item, f"test '{item.name}' needs a test list in parentheses")
        tests = [self.node(t, True) for t in item.tests]
        block: list[Node] | None = None
        if isinstance(item, Command):
            if spec.block and item.block is None:
                raise self.fail(item, f"command '{item.name}' needs a block")
            if not spec.block and item.block is not None:
                raise self.fail(item, f"command '{item.name}' takes no block")
            if item.block is not None:
                block = self.block(item.block, False)
        node = Node(item.name, tags, args, tests, block, item.line, item.column)
        self.check(node, item)
        return node

    def typed(self, arg: Tag | Number | StringList, want: str, where: str) -> Any:
        if want == NUM:
            if not isinstance(arg, Number):
                raise self.fail(arg, f"{where} expects a number")
            return arg.value
        if not isinstance(arg, StringList):
            raise self.fail(arg, f"{where} expects a {want}")
        if want == STR and arg.is_list:
            raise self.fail(arg, f"{where} expects a string, not a list")
        values = self.strings(arg)
        return values[0] if want == STR else values

    def check(self, node: Node, item: Command | Test) -> None:
        """The rules a tag table cannot say."""
        tags = node.tags
        comparator = tags.get("comparator", "i;ascii-casemap")
        if "comparator" in tags:
            if comparator not in COMPARATORS:
                raise self.fail(item, f"unknown comparator '{comparator}'")
            ext = COMPARATORS[comparator]
            if ext and ext not in self.extensions:
                raise self.fail(item, f"comparator '{comparator}' needs require \"{ext}\"")
        if comparator == "i;ascii-numeric" and any(m in tags for m in ("contains", "matches",
                                                                        "regex")):
            raise self.fail(item, "comparator 'i;ascii-numeric' cannot do substring matching")
        for op_tag in ("value", "count"):
            if op_tag in tags and tags[op_tag].lower() not in RELATIONAL_OPS:
                raise self.fail(item, f"unknown relational operator '{tags[op_tag]}'")
            if op_tag in tags:
                tags[op_tag] = tags[op_tag].lower()
        if "last" in tags and "index" not in tags and node.name != "addheader" and (
            node.name != "duplicate"
        ):
            raise self.fail(item, "':last' needs ':index'")
        if "index" in tags and tags["index"] < 1:
            raise self.fail(item, "':index' counts from 1")
        name = node.name
        # A bad field name in a test only makes the test false (Pigeonhole warns); the
        # editheader commands refuse it.
        if name in ("deleteheader", "addheader") and not (
            "variables" in self.extensions and "${" in node.args[0]
        ) and not _field_name_ok(node.args[0]):
            raise self.fail(item, f"invalid header field name '{node.args[0]}'")
        if name == "address":
            # RFC 5228 §5.1: the address test is restricted to headers that hold addresses
            for field_name in node.args[0]:
                if "${" not in field_name and field_name.lower() not in ADDRESS_HEADERS:
                    raise self.fail(
                        item, f"header '{field_name}' is not allowed for the address test"
                    )
        if name == "size" and "over" not in tags and "under" not in tags:
            raise self.fail(item, "the size test needs :over or :under")
        if "regex" in tags:
            keys = node.args[-1]
            for key in keys if isinstance(keys, list) else [keys]:
                if "${" in key and "variables" in self.extensions:
                    continue
                try:
                    compile_regex(key, comparator)
                except RegexRefused as exc:
                    raise self.fail(item, f"invalid regular expression '{key}': {exc}") from None
        if name == "envelope":
            for part in node.args[0]:
                if part.lower() not in ("from", "to") and "${" not in part:
                    raise self.fail(item, f"unknown envelope part '{part}'")
        if name == "set" and not _variable_name_ok(node.args[0]):
            raise self.fail(item, f"invalid variable name '{node.args[0]}'")
        if name == "global":
            for variable in node.args[0]:
                if not _variable_name_ok(variable):
                    raise self.fail(item, f"invalid variable name '{variable}'")
        if name in ("setflag", "addflag", "removeflag", "hasflag") and len(node.args) == 2:
            if name == "hasflag":
                pass
            elif not isinstance(node.args[0], list) or len(node.args[0]) != 1:
                raise self.fail(item, f"{name}: the variable must be one string")
            if name != "hasflag" and not _variable_name_ok(node.args[0][0]):
                raise self.fail(item, f"invalid variable name '{node.args[0][0]}'")
        if name == "include":
            script = node.args[0]
            if not script or "/" in script or script.startswith("."):
                raise self.fail(item, f"invalid script name '{script}'")
        if name == "redirect":
            address = node.args[0]
            if ("${" not in address or "variables" not in self.extensions) and not (
                valid_mailbox(address)
            ):
                raise self.fail(item, f"invalid redirect address '{address}'")
        if name == "vacation" and (
            "from" in tags and "${" not in tags["from"] and not _address_ok(tags["from"])
        ):
            raise self.fail(item, f"invalid :from address '{tags['from']}'")
        if name == "addheader" and len(node.args[1]) > 998 * 4:
            raise self.fail(item, "header value too long")
        if name in ("fileinto",) and not node.args[0]:
            raise self.fail(item, "empty mailbox name")


def _variable_name_ok(name: str) -> bool:
    # RFC 5229 §3: identifier, optionally namespaced with "."; no match variables.
    if not name:
        return False
    return all(
        part and (part[0].isascii() and (part[0].isalpha() or part[0] == "_"))
        and all(c.isascii() and (c.isalnum() or c == "_") for c in part)
        for part in name.split(".")
    )


def zone_ok(zone: str) -> bool:
    # RFC 5260 §4.1: "+hhmm" or "-hhmm"
    return len(zone) == 5 and zone[0] in "+-" and zone[1:].isdigit() and int(zone[3:]) < 60


_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)  # RFC 5322 §3.2.3


def valid_mailbox(address: str) -> bool:
    """An RFC 5321 mailbox (§4.1.2): a dot-atom or quoted local part, "@", and a domain of
    letter-digit-hyphen labels (non-ASCII allowed, RFC 6531) or an address literal."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    at = address.rfind("@")
    if at <= 0 or len(address) > 512:
        return False
    local, domain = address[:at], address[at + 1 :]
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        if any(c in local[1:-1] for c in "\r\n"):
            return False
    elif not all(
        part and all(c in _ATEXT or ord(c) > 127 for c in part) for part in local.split(".")
    ):
        return False
    if domain.startswith("[") and domain.endswith("]"):
        return len(domain) > 2 and all(c.isalnum() or c in ".:-" for c in domain[1:-1])
    return all(
        label and not label.startswith("-") and not label.endswith("-")
        and all(c.isalnum() or c == "-" for c in label)
        for label in domain.split(".")
    )


def _address_ok(text: str) -> bool:
    if "<" in text and text.rstrip().endswith(">"):
        return valid_mailbox(text[text.rfind("<") :])
    return valid_mailbox(text)


def compile_script(source: str | bytes, name: str = "") -> Script:
    """Parse and validate a script; SieveError(line, column, message) if it is not valid."""
    validator = _Validator(name)
    commands = validator.block(parse(source), True)
    return Script(tuple(commands), frozenset(validator.extensions), name)
