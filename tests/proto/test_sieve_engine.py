"""The Sieve engine's own guarantees, beyond what the Pigeonhole comparison shows: errors with
line:column, the limits, a broken script keeping the mail, editheader's output, vacation's
reply details, duplicate records, includes, the regex safety rules."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

import pytest

from postroom.proto.sieve import (
    CAPABILITIES,
    Discard,
    Envelope,
    FileInto,
    Keep,
    NullEnv,
    Redirect,
    Reject,
    SieveError,
    SpamVerdict,
    Vacation,
    compile_script,
    render_message,
    run,
)
from postroom.proto.sieve.interpreter import MAX_ACTIONS, MAX_REDIRECTS, MAX_STEPS
from postroom.proto.sieve.matching import RegexRefused, glob_match, translate_regex
from postroom.proto.sieve.parser import MAX_NESTING, MAX_SCRIPT_BYTES

MESSAGE = (
    b"From: Alice <alice@example.com>\r\nTo: me@example.org\r\nSubject: Hello there\r\n"
    b"Message-ID: <m1@example.com>\r\nReferences: <m0@example.com>\r\n\r\nBody text\r\n"
)
ENVELOPE = Envelope("alice@example.com", "me@example.org")


def outcome(source: str, env: object | None = None, message: bytes = MESSAGE):  # type: ignore[no-untyped-def]
    return run(compile_script(source), message, ENVELOPE, env or NullEnv())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "line", "column", "words"),
    [
        ("keep;\nfrob;", 2, 1, "unknown command 'frob'"),
        ("keep;\n  if true { keep }", 2, 18, "expected ';'"),
        ('require "fileinto";\nkeep;\n fileinto :flags "a" "b";', 3, 11, "needs require"),
        ('if header :is "a" "b', 1, 19, "unterminated string"),
        ("if size :over 99999999999G { keep; }", 1, 15, "number too large"),
        ("/* open", 1, 1, "unterminated comment"),
        ('require "x-unknown";', 1, 9, "unknown capability"),
        ("keep;\n\n   discard :copy;", 3, 12, "unknown tag"),
    ],
)
def test_errors_carry_line_and_column(source: str, line: int, column: int, words: str) -> None:
    with pytest.raises(SieveError) as caught:
        compile_script(source)
    assert (caught.value.line, caught.value.column) == (line, column), caught.value
    assert words in caught.value.message


def test_bytes_must_be_utf8_and_size_is_bounded() -> None:
    with pytest.raises(SieveError, match="UTF-8") as caught:
        compile_script(b"keep;\n# \xff\n")
    assert caught.value.line == 2
    with pytest.raises(SieveError, match="larger than"):
        compile_script(b"#" * (MAX_SCRIPT_BYTES + 1))


def test_nesting_is_bounded() -> None:
    deep = "if true { " * (MAX_NESTING + 1) + "}" * (MAX_NESTING + 1)
    with pytest.raises(SieveError, match="nesting"):
        compile_script(deep)
    tests = "if " + "not " * (MAX_NESTING + 1) + "true { keep; }"
    with pytest.raises(SieveError, match="nesting"):
        compile_script(tests)
    compile_script("if true { " * 10 + "}" * 10)


def test_script_is_reusable() -> None:
    script = compile_script('require "fileinto"; if header :contains "subject" "hello" '
                            '{ fileinto "A"; }')
    for _ in range(3):
        assert run(script, MESSAGE, ENVELOPE, NullEnv()).actions == (FileInto("A"),)
    assert run(script, b"Subject: x\r\n\r\n", ENVELOPE, NullEnv()).actions == (
        Keep(implicit=True),
    )


def test_runtime_error_keeps_the_message() -> None:
    result = outcome('require "variables"; set "a" "not an address"; discard;'
                     ' redirect "${a}";')
    assert result.error is not None and "redirect" in result.error
    assert result.actions == (Keep(implicit=True),)  # the discard is not carried out


def test_action_and_redirect_limits() -> None:
    redirects = "".join(f'redirect "u{i}@example.net";' for i in range(MAX_REDIRECTS + 1))
    assert outcome(redirects).error is not None
    ok = "".join(f'redirect "u{i}@example.net";' for i in range(MAX_REDIRECTS))
    assert [type(a) for a in outcome(ok).actions] == [Redirect] * MAX_REDIRECTS
    many = 'require "fileinto";' + "".join(f'fileinto "b{i}";' for i in range(MAX_ACTIONS + 1))
    assert outcome(many).error is not None


def test_steps_are_bounded() -> None:
    # Each test walks a long key list: the step counter stops it, quickly.
    keys = ", ".join(f'"k{i}*"' for i in range(1000))
    source = "".join(f'if header :matches ["subject", "from", "to"] [{keys}] {{ }}\n'
                     for _ in range(60))
    started = time.monotonic()
    result = outcome(source)
    assert result.error is not None and str(MAX_STEPS) in result.error
    assert time.monotonic() - started < 10


def test_implicit_keep_rules() -> None:
    assert outcome("").actions == (Keep(implicit=True),)
    assert outcome("discard;").actions == (Discard(),)
    assert outcome('require ["fileinto", "copy"]; fileinto :copy "A";').actions == (
        FileInto("A", copy=True), Keep(implicit=True),
    )
    assert outcome('require "imap4flags"; addflag "\\\\Seen";').actions == (
        Keep(("\\Seen",), implicit=True),
    )
    assert outcome('require "reject"; reject "no";').actions == (Reject("no"),)
    assert outcome('require "ereject"; ereject "no";').actions == (Reject("no", True),)


def test_editheader_result() -> None:
    result = outcome('require ["editheader", "fileinto"]; addheader "X-Filtered" "yes";'
                     ' fileinto "A"; deleteheader "subject";')
    assert result.headers is not None
    assert result.headers[0] == ("X-Filtered", " yes")
    assert all(name.lower() != "subject" for name, _ in result.headers)
    filed = result.actions[0]
    assert isinstance(filed, FileInto)
    # The fileinto happened before the deleteheader: its copy still has the subject
    assert filed.headers is not None and any(n == "Subject" for n, _ in filed.headers)
    edited = render_message(MESSAGE, result.headers)
    assert edited.startswith(b"X-Filtered: yes\r\n")
    assert b"Subject:" not in edited and edited.endswith(b"\r\n\r\nBody text\r\n")
    assert outcome("keep;").headers is None


def test_addheader_encodes_non_ascii() -> None:
    result = outcome('require "editheader"; addheader "X-Note" "Grüße";')
    assert result.headers is not None
    assert result.headers[0] == ("X-Note", " =?UTF-8?B?R3LDvMOfZQ==?=")


def test_vacation_details() -> None:
    class Replied(NullEnv):
        def __init__(self) -> None:
            self.asked: list[tuple[str, str, int]] = []

        def vacation_replied(self, sender: str, handle: str, seconds: int) -> bool:
            self.asked.append((sender, handle, seconds))
            return sender == "seen@example.com"

    env = Replied()
    result = outcome('require "vacation"; vacation :days 2 :handle "h" "Away";', env)
    (reply, keep) = result.actions
    assert reply == Vacation("alice@example.com", "Auto: Hello there", None, "Away", False,
                             "h", 2 * 86400, (), "<m1@example.com>",
                             "<m0@example.com> <m1@example.com>")
    assert keep == Keep(implicit=True)
    assert env.asked == [("alice@example.com", "h", 2 * 86400)]
    seen = run(compile_script('require "vacation"; vacation "Away";'), MESSAGE,
               Envelope("seen@example.com", "me@example.org"), env)
    assert seen.actions == (Keep(implicit=True),)


@pytest.mark.parametrize(
    "header",
    [b"Precedence: bulk\r\n", b"List-Id: <x.example.com>\r\n", b"Auto-Submitted: auto-replied\r\n"],
)
def test_vacation_never_answers_lists_or_robots(header: bytes) -> None:
    result = outcome('require "vacation"; vacation "Away";', message=header + MESSAGE)
    assert not any(isinstance(a, Vacation) for a in result.actions)
    answered = outcome('require "vacation"; vacation "Away";',
                       message=b"Auto-Submitted: no\r\n" + MESSAGE)
    assert any(isinstance(a, Vacation) for a in answered.actions)


def test_duplicate_records_and_checks() -> None:
    class Seen(NullEnv):
        def duplicate_seen(self, key: str, seconds: int, last: bool) -> bool:
            return key == "\x00m1@example.com"

    result = outcome('require ["duplicate", "fileinto"]; if duplicate { fileinto "dup"; }',
                     Seen())
    assert result.actions == (FileInto("dup"),)
    assert result.duplicates == (("\x00m1@example.com", 14 * 86400, False),)
    fresh = outcome('require "duplicate"; if duplicate :uniqueid "u" :handle "h" :seconds 60'
                    ' :last { discard; }')
    assert fresh.actions == (Keep(implicit=True),)
    assert fresh.duplicates == (("h\x00u", 60, True),)


class Includes(NullEnv):
    def __init__(self, scripts: dict[tuple[str, str], str]) -> None:
        self.scripts = scripts

    def load_script(self, name: str, location: Literal["personal", "global"]) -> str | None:
        return self.scripts.get((location, name))


def test_include_recursion_and_broken_include_keep_the_mail() -> None:
    loop = Includes({("personal", "a"): 'require "include"; include "a";'})
    result = outcome('require "include"; include "a"; discard;', loop)
    assert result.error is not None and result.actions == (Keep(implicit=True),)
    broken = Includes({("global", "g"): "frob;"})
    result = outcome('require "include"; include :global "g";', broken)
    assert result.error is not None and "frob" in result.error


def test_spamtest_and_currentdate_use_the_env() -> None:
    class Env(NullEnv):
        def spamtest(self) -> SpamVerdict | None:
            return SpamVerdict(9, 88)

        def now(self) -> datetime:
            return datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)

    source = ('require ["spamtestplus", "date", "fileinto", "variables", "relational",'
              ' "comparator-i;ascii-numeric"];\n'
              'if spamtest :value "ge" :comparator "i;ascii-numeric" "8" { set "s" "junk"; }\n'
              'if spamtest :percent :is "88" { set "p" "88"; }\n'
              'if currentdate :matches "iso8601" "*" { fileinto "${s}-${p}-${0}"; }')
    assert outcome(source, Env()).actions == (FileInto("junk-88-2030-05-06T07:08:09Z"),)


def test_mailboxexists_and_create() -> None:
    class Env(NullEnv):
        def mailbox_exists(self, name: str) -> bool:
            return name in ("INBOX", "Work")

    source = ('require ["mailbox", "fileinto"]; if mailboxexists "Work" { fileinto :create'
              ' "Work/New"; }')
    assert outcome(source, Env()).actions == (FileInto("Work/New", create=True),)


@pytest.mark.parametrize("pattern", ["(a+)+", "(a*)*b", "(a|aa)*", "(.|x)+", "(a)\\1"])
def test_catastrophic_regexes_are_refused(pattern: str) -> None:
    with pytest.raises(RegexRefused):
        translate_regex(pattern)
    with pytest.raises(SieveError, match="regular expression"):
        quoted = pattern.replace("\\", "\\\\")  # a Sieve string escapes backslashes
        compile_script(f'require "regex"; if header :regex "subject" "{quoted}" {{ keep; }}')


def test_harmless_regexes_pass() -> None:
    for pattern in ["^(foo|bar)+$", "[[:alpha:]]+@[a-z.]+", "a{2,3}", "(x|y)?z"]:
        translate_regex(pattern)


def test_glob_matching_is_not_exponential() -> None:
    text = "a" * 5000
    started = time.monotonic()
    assert glob_match("*a*a*a*a*a*a*a*b", text, "i;octet") is None
    assert time.monotonic() - started < 5
    assert glob_match("*a*b", "xaybzb", "i;octet") == ["x", "ybz"]


def test_capabilities_cover_the_issue() -> None:
    wanted = {"fileinto", "reject", "ereject", "envelope", "encoded-character", "imap4flags",
              "body", "variables", "vacation", "vacation-seconds", "copy", "relational",
              "subaddress", "date", "index", "editheader", "mailbox", "include", "duplicate",
              "regex", "spamtest", "spamtestplus", "comparator-i;ascii-numeric"}
    assert wanted <= set(CAPABILITIES)


def test_hostile_strings_stay_linear() -> None:
    started = time.monotonic()
    with pytest.raises(SieveError, match="redirect address"):
        compile_script('require "encoded-character"; redirect "a@b.c' + "${" * 200_000 + '}";')
    assert time.monotonic() - started < 5
    started = time.monotonic()
    assert glob_match("*" + "?" * 300 + "b*", "a" * 200_000, "i;octet") is None
    assert time.monotonic() - started < 5
