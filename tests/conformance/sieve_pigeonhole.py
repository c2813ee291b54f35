"""Running a Sieve case through Pigeonhole's `sieve-test` and through postroom's engine, and
normalising both into comparable action lists.

sieve-test runs standalone with a tiny dovecot.conf in a temporary directory: mail is accessed
as `nobody` (Dovecot refuses root), the personal scripts live in `sieve/`, the global ones in
`global/`, the mail store is a Maildir with the case's extra folders, and spamtest reads
`X-Spam-Score` as a score out of 10. Without `-e` it prints the actions the script takes; for a
vacation action it is run again with `-e`, which applies RFC 5230's "should a reply be sent"
checks, and the vacation counts only if the reply was sent.

Normalised actions are strings: "store MAILBOX flags=a,b [create]", "redirect ADDRESS",
"discard", "reject REASON", "vacation seconds=N [subject=S] [from=F] handle=H body=B", the
implicit keep as "implicit store INBOX flags=…"; a runtime error is ["error"], a script that
does not compile ["compile-error"].
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from postroom.proto.sieve import (
    Discard,
    Envelope,
    FileInto,
    Keep,
    Outcome,
    Redirect,
    Reject,
    SieveError,
    SpamVerdict,
    Vacation,
    compile_script,
    run,
)

from .sieve_cases import Case, message_bytes

SIEVE_TEST = shutil.which("sieve-test") or "/usr/bin/sieve-test"
NOBODY = 65534

CONFIG = """\
protocols =
base_dir = {root}/run
mail_uid = {uid}
mail_gid = {gid}
mail_location = maildir:{root}/mail
mail_home = {root}/home
plugin {{
  sieve = file:{root}/sieve;active={root}/active.sieve
  sieve_global = {root}/global
  sieve_extensions = +editheader +vacation-seconds +spamtest +spamtestplus
  sieve_spamtest_status_type = score
  sieve_spamtest_status_header = X-Spam-Score
  sieve_spamtest_max_value = 10
  sieve_vacation_min_period = 1d
}}
"""


def _flags(flags: list[str] | tuple[str, ...]) -> str:
    return ",".join(sorted({f.lower() for f in flags}))


class CaseEnv:
    """The Env of a case, matching what the sieve-test setup gives Pigeonhole."""

    def __init__(self, case: Case, message: bytes) -> None:
        self.case = case
        self.message = message

    def mailbox_exists(self, name: str) -> bool:
        return name.upper() == "INBOX" or name in self.case.mailboxes

    def duplicate_seen(self, key: str, seconds: int, last: bool) -> bool:
        return False

    def vacation_replied(self, sender: str, handle: str, seconds: int) -> bool:
        return False

    def load_script(self, name: str, location: Literal["personal", "global"]) -> str | None:
        scripts = self.case.personal if location == "personal" else self.case.global_scripts
        return scripts.get(name)

    def spamtest(self) -> SpamVerdict | None:
        # As Pigeonhole reads a "score" header with a maximum of 10
        match = re.search(rb"(?mi)^X-Spam-Score:[ \t]*(-?[0-9]+(?:\.[0-9]+)?)", self.message)
        if match is None:
            return None
        score = float(match.group(1))
        value = min(10, max(1, math.floor(score)))
        percent = min(100, max(0, math.floor(score * 10 + 0.5)))
        return SpamVerdict(value, percent)

    def now(self) -> datetime:
        return datetime.now(UTC)


def ours(case: Case) -> list[str]:
    message = message_bytes(case)
    try:
        script = compile_script(case.script)
    except SieveError:
        return ["compile-error"]
    envelope = Envelope(case.mail_from, case.to, case.original_to)
    return normalise_outcome(run(script, message, envelope, CaseEnv(case, message)))


def normalise_outcome(outcome: Outcome) -> list[str]:
    if outcome.error is not None:
        return ["error"]
    result: list[str] = []
    for action in outcome.actions:
        if isinstance(action, Keep):
            prefix = "implicit " if action.implicit else ""
            result.append(f"{prefix}store INBOX flags={_flags(action.flags)}")
        elif isinstance(action, FileInto):
            create = " create" if action.create else ""
            mailbox = re.sub(r"[\x00-\x1f]", "?", action.mailbox)  # as sieve-test shows it
            result.append(f"store {mailbox} flags={_flags(action.flags)}{create}")
        elif isinstance(action, Redirect):
            result.append(f"redirect {action.address}")
        elif isinstance(action, Discard):
            result.append("discard")
        elif isinstance(action, Reject):
            # sieve-test shows control characters as "?"
            reason = re.sub(r"[\x00-\x1f]", "?", action.reason)
            result.append(f"reject {reason}")
        elif isinstance(action, Vacation):
            parts = [f"vacation seconds={action.seconds}", f"subject={action.subject}"]
            if action.from_ is not None:
                parts.append(f"from={action.from_}")
            parts.append("handle=" + action.handle.split("\r")[0].split("\n")[0])
            parts.append("body=" + action.body.replace("\r\n", "\n").strip())
            result.append(" ".join(parts))
    return result


def _pigeonhole_dir(case: Case, root: Path, message: bytes) -> tuple[Path, Path]:
    for sub in ("run", "home", "sieve", "global", "mail", "mail/cur", "mail/new", "mail/tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for mailbox in case.mailboxes:
        for sub in ("cur", "new", "tmp"):
            (root / "mail" / f".{mailbox}" / sub).mkdir(parents=True, exist_ok=True)
    for name, source in case.personal.items():
        (root / "sieve" / f"{name}.sieve").write_text(source, encoding="utf-8")
    for name, source in case.global_scripts.items():
        (root / "global" / f"{name}.sieve").write_text(source, encoding="utf-8")
    (root / "dovecot.conf").write_text(CONFIG.format(root=root, uid=NOBODY, gid=NOBODY))
    script = root / "main.sieve"
    script.write_text(case.script, encoding="utf-8")
    mail = root / "message.eml"
    mail.write_bytes(message)
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o777 if path.is_dir() else 0o666)
    return script, mail


def _sieve_test(case: Case, root: Path, script: Path, mail: Path, execute: bool) -> str:
    command = [SIEVE_TEST, "-C", "-c", str(root / "dovecot.conf")]
    if case.mail_from:
        command += ["-f", case.mail_from]
    command += ["-a", case.original_to or case.to, "-r", case.to]
    if execute:
        command.append("-e")
    command += [str(script), str(mail)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    return done.stdout + "\n" + done.stderr


def pigeonhole(case: Case, root: Path) -> list[str]:
    message = message_bytes(case)
    script, mail = _pigeonhole_dir(case, root, message)
    output = _sieve_test(case, root, script, mail, execute=False)
    result = parse_sieve_test(output)
    if any(item.startswith("vacation ") for item in result):
        # Executing really stores: the folders the script files into must exist (sieve-test
        # does not honour lda_mailbox_autocreate), else the run fails before the reply.
        for item in result:
            if item.startswith("store ") and " flags=" in item:
                folder = item[6 : item.rindex(" flags=")]
                if folder.upper() != "INBOX":
                    for sub in ("cur", "new", "tmp"):
                        path = root / "mail" / ("." + folder.replace("/", ".")) / sub
                        path.mkdir(parents=True, exist_ok=True)
                        for made in (path, path.parent):
                            os.chmod(made, 0o777)
        executed = _sieve_test(case, root, script, mail, execute=True)
        if "sent vacation response" not in executed:
            result = [item for item in result if not item.startswith("vacation ")]
    return result


def parse_sieve_test(output: str) -> list[str]:
    """sieve-test's report as normalised actions."""
    if "failed to compile sieve script" in output:
        return ["compile-error"]
    if "final result: failed" in output:
        return ["error"]
    lines = output.splitlines()
    result: list[str] = []
    section = ""
    current: dict[str, str] | None = None
    body: list[str] | None = None

    def flush() -> None:
        nonlocal current
        if current is None:
            return
        kind = current.pop("kind")
        prefix = "implicit " if section == "implicit" else ""
        if kind == "store":
            create = " create" if "create" in current else ""
            flags = _flags(current.get("flags", "").split())
            result.append(f"{prefix}store {current['mailbox']} flags={flags}{create}")
        elif kind == "vacation":
            parts = [f"vacation seconds={current.get('seconds', '')}"]
            if "subject" in current:
                parts.append(f"subject={current['subject']}")
            if "from" in current:
                parts.append(f"from={current['from']}")
            parts.append(f"handle={current.get('handle', '')}")
            parts.append("body=" + current.get("body", "").strip())
            result.append(" ".join(parts))
        else:
            result.append(current["text"])
        current = None

    for line in lines:
        if body is not None:
            if line == "END MESSAGE":
                assert current is not None
                current["body"] = "\n".join(body)
                body = None
            else:
                body.append(line)
            continue
        stripped = line.lstrip(" \t").rstrip("\r")
        if stripped.startswith("* "):
            stripped = stripped.rstrip("\r")
        if line.startswith("Performed actions:"):
            section = "performed"
            continue
        if line.startswith("Implicit keep:"):
            flush()
            section = "implicit"
            continue
        if not section:
            continue
        if line.startswith("sieve-test:"):
            flush()
            section = ""
            continue
        if stripped.startswith("* "):
            flush()
            text = stripped[2:]
            if text.startswith("store message in folder: "):
                current = {"kind": "store", "mailbox": text.split(": ", 1)[1]}
            elif text.startswith("redirect message to: "):
                address = text.split(": ", 1)[1].strip().removeprefix("<").removesuffix(">")
                current = {"kind": "other", "text": f"redirect {address}"}
            elif text == "discard":
                current = {"kind": "other", "text": "discard"}
            elif text.startswith("reject message with reason: "):
                current = {"kind": "other", "text": "reject " + text.split(": ", 1)[1].strip()}
            elif text.startswith("send vacation message"):
                current = {"kind": "vacation"}
            elif text.startswith("track "):  # duplicate tracking, not a delivery
                current = None
            else:
                current = {"kind": "other", "text": "unknown " + text}
        elif stripped.startswith("+ add IMAP flags: ") and current is not None:
            current["flags"] = stripped.split(": ", 1)[1]
        elif stripped.startswith("+ create mailbox") and current is not None:
            current["create"] = "yes"
        elif stripped.startswith("=> ") and current is not None:
            key, _, value = stripped[3:].partition(":")
            current[key.strip()] = value.strip()
        elif stripped == "START MESSAGE":
            body = []
    flush()
    return result


def comparable(ours_list: list[str], theirs: list[str]) -> list[str]:
    """Our list with what Pigeonhole does not print removed: a vacation subject Pigeonhole
    only computes when sending (its report shows it only when :subject was given)."""
    theirs_subjects = any("subject=" in t for t in theirs if t.startswith("vacation "))
    result = []
    for item in ours_list:
        if item.startswith("vacation ") and not theirs_subjects:
            item = re.sub(r" subject=.*? (from=|handle=)", r" \1", item, count=1)
        result.append(item)
    return result
