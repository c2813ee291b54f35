"""A small mail filter built on pymilter (libmilter), for the milter client's tests.

Run by Debian's /usr/bin/python3 (python3-milter is installed there, not in the venv):
    /usr/bin/python3 pymilter_filter.py PORT RECORD_FILE
It listens on 127.0.0.1:PORT. The word after "milter-" in the Subject picks the action at end
of message (reject, replycode, tempfail, discard, quarantine, addheader, chgheader, insheader,
replbody, chgfrom, addrcpt, delrcpt, spam, accept); MAIL FROM <tempfail-sender@...> is refused
with a temporary failure and RCPT TO <blocked@...> is rejected. Every stage it sees and the
macros it was given are appended, one JSON object a line, to RECORD_FILE.
"""

from __future__ import annotations

import json
import sys

import Milter  # type: ignore[import-not-found]

RECORD = ""
MACROS = (
    "j",
    "i",
    "{daemon_name}",
    "{client_addr}",
    "{auth_authen}",
    "{mail_addr}",
    "{rcpt_addr}",
)


def record(**entry: object) -> None:
    with open(RECORD, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


class Filter(Milter.Base):  # type: ignore[misc]
    def __init__(self) -> None:
        self.subject = ""
        self.rcpts: list[str] = []
        self.headers: list[tuple[str, str]] = []
        self.content = b""

    def macros(self) -> dict[str, str]:
        return {name: self.getsymval(name) for name in MACROS if self.getsymval(name)}

    @Milter.noreply  # type: ignore[misc]
    def connect(self, hostname: str, family: int, hostaddr: object) -> int:
        record(stage="connect", hostname=hostname, addr=str(hostaddr), macros=self.macros())
        return Milter.CONTINUE

    def hello(self, name: str) -> int:
        record(stage="helo", name=name)
        return Milter.CONTINUE

    def envfrom(self, sender: str, *params: str) -> int:
        self.subject, self.rcpts, self.headers, self.content = "", [], [], b""
        record(stage="mail", sender=sender, params=list(params), macros=self.macros())
        if sender.startswith("<tempfail-sender@"):
            return Milter.TEMPFAIL
        return Milter.CONTINUE

    def envrcpt(self, recipient: str, *params: str) -> int:
        record(stage="rcpt", recipient=recipient, macros=self.macros())
        if recipient.startswith("<blocked@"):
            self.setreply("550", "5.1.1", "blocked by the test milter")
            return Milter.REJECT
        self.rcpts.append(recipient)
        return Milter.CONTINUE

    def header(self, name: str, value: str) -> int:
        self.headers.append((name, value))
        if name.lower() == "subject":
            self.subject = value
        return Milter.CONTINUE

    def body(self, chunk: bytes) -> int:
        self.content += chunk
        return Milter.CONTINUE

    def eom(self) -> int:
        action = self.subject.partition("milter-")[2].split(" ")[0]
        record(
            stage="eom",
            action=action,
            headers=self.headers,
            body=self.content.decode("utf-8", "replace"),
            macros=self.macros(),
        )
        if action == "reject":
            return Milter.REJECT
        if action == "replycode":
            self.setreply("554", "5.7.0", "first line", "second line")
            return Milter.REJECT
        if action == "tempfail":
            return Milter.TEMPFAIL
        if action == "discard":
            return Milter.DISCARD
        if action == "quarantine":
            self.quarantine("test quarantine")
        elif action == "addheader":
            self.addheader("X-Milter-Test", "added by pymilter")
        elif action == "chgheader":
            self.chgheader("Subject", 1, "changed by pymilter")
        elif action == "delheader":
            self.chgheader("X-Remove-Me", 1, None)
        elif action == "insheader":
            self.addheader("X-Inserted-First", "top", 0)
        elif action == "replbody":
            self.replacebody(b"The body was replaced.\r\n")
        elif action == "chgfrom":
            self.chgfrom("<changed@example.org>")
        elif action == "addrcpt":
            self.addrcpt("<bob@example.test>")
        elif action == "delrcpt":
            self.addrcpt("<bob@example.test>")
            self.delrcpt("<alice@example.test>")
        elif action == "spam":
            self.addheader("X-Spam", "Yes")
        return Milter.ACCEPT


def main() -> None:
    global RECORD
    port, RECORD = sys.argv[1], sys.argv[2]
    Milter.factory = Filter
    flags = (
        Milter.ADDHDRS
        | Milter.CHGHDRS
        | Milter.CHGBODY
        | Milter.ADDRCPT
        | Milter.DELRCPT
        | Milter.CHGFROM
        | Milter.QUARANTINE
    )
    Milter.set_flags(flags)
    print("listening", flush=True)
    Milter.runmilter("pytest-filter", f"inet:{port}@127.0.0.1", 30)


if __name__ == "__main__":
    main()
