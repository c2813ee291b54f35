"""Stock clients: Python's smtplib and poplib, with their defaults, against Postfix, Dovecot
and postroom in the same run.

Client libraries leave Nagle's algorithm on and send what they send in as many pieces as
they like; a server that delays its ACK while it waits for the next piece, or answers in
small pieces, makes every such command wait for the delayed-ACK timeout (40 ms on Linux),
which a tuned client (TCP_NODELAY, one send per command) never sees.  So:

* SMTP, smtplib against a private Postfix (sys_postfix.py, plus STARTTLS with the bench's
  certificate and SASL through the private Dovecot below: ``smtpd_sasl_type = dovecot``) and
  postroom's submission listener (STARTTLS, AUTH required):

  - ``smtp_session``: SESSIONS × ``SMTP()`` (connect, greeting), EHLO, STARTTLS, EHLO (QUIT
    untimed);
  - ``smtp_send``: SENDS × ``sendmail`` of a small message (about 2 KiB) on one session that
    did STARTTLS and AUTH PLAIN, each answered once the message is safely queued.

* POP3, poplib over implicit TLS (``POP3_SSL``) against a private Dovecot (sys_dovecot.py with
  pop3s) and postroom's pop3s, over the same POP3_MESSAGES messages (imap_corpus.py, loaded
  over IMAP beforehand):

  - ``pop3_session``: SESSIONS × ``POP3_SSL()``, USER, PASS, STAT (QUIT untimed).  Both
    verify argon2 at the first login; postroom then remembers the password (``[auth]
    cache_ttl``), Dovecot verifies it every time (as in the IMAP run's ``login_select``);
  - ``pop3_retr``: RETRS × ``retr(n)``, n random;
  - ``pop3_uidl``: ``uidl()`` of the whole mailbox;

  the last two in a session of their own per rep (logged in untimed): RFC 1939 §4 lets one
  session at a time hold the maildrop.

Each operation runs REPS times per system, the systems alternating rep by rep; medians in ms.
"""

from __future__ import annotations

import contextlib
import poplib
import random
import shutil
import smtplib
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import imap_corpus as corpus
from common import HOST, BenchError, Load, free_port, medians, wait_port
from imap_client import ImapClient, client_tls_context
from sys_dovecot import Dovecot, make_certificate
from sys_postfix import PrivatePostfix
from sys_postroom import Postroom

USER = "user@bench.test"
SINK = "sink@bench.test"  # where smtplib's mail goes: not the POP3 mailbox
PASSWORD = "benchpw"
REPS = 5
SENDS = 50
SESSIONS = 10
RETRS = 100
POP3_MESSAGES = 1000
LOAD_BATCH = 100
OPS = ("smtp_session", "smtp_send", "pop3_session", "pop3_retr", "pop3_uidl")
REFERENCE = {op: "postfix" if op.startswith("smtp") else "dovecot" for op in OPS}
TLS = client_tls_context()

POSTFIX_TLS_SASL = """
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {socket}
"""


def postroom_config(submission: int, pop3s: int, imaps: int, cert: Path, key: Path) -> str:
    """Lines appended to sys_postroom's config: they continue its [listen] table."""
    return (
        f'submission = "{HOST}:{submission}"\npop3s = "{HOST}:{pop3s}"\n'
        f'imaps = "{HOST}:{imaps}"\n\n[tls]\ncert = "{cert}"\nkey = "{key}"\n'
    )


class System:
    """One server as the operations see it: where its SMTP and POP3 services listen."""

    def __init__(self, name: str, smtp: int | None = None, pop3: int | None = None) -> None:
        self.name, self.smtp, self.pop3 = name, smtp, pop3
        self.smtp_client: smtplib.SMTP | None = None  # STARTTLS done, logged in

    def close(self) -> None:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            if self.smtp_client is not None:
                self.smtp_client.quit()


def small_message(i: int) -> bytes:
    """A message of 2 KiB or so (some less) from USER to SINK."""
    body = corpus.message(i).data.split(b"\r\n\r\n", 1)[1]
    cut = body.find(b"\r\n", 2048)
    body = body if cut < 0 else body[: cut + 2]  # whole lines: a bare CR is refused
    return (
        f"From: <{USER}>\r\nTo: <{SINK}>\r\nSubject: stock client {i}\r\n"
        f"Message-ID: <stock.{i}@bench.test>\r\n\r\n"
    ).encode() + body


def smtp_login(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP(HOST, port, timeout=120)
    client.starttls(context=TLS)
    client.login(USER, PASSWORD)
    return client


def pop3_login(port: int) -> poplib.POP3_SSL:
    client = poplib.POP3_SSL(HOST, port, context=TLS, timeout=120)
    client.user(USER)
    client.pass_(PASSWORD)
    return client


def run_op(op: str, system: System, rep: int) -> dict[str, Any]:
    """One rep of one operation on `system`; returns what to check."""
    if op == "smtp_session":
        assert system.smtp is not None
        seconds = 0.0
        for _ in range(SESSIONS):
            started = time.perf_counter()
            client = smtplib.SMTP(HOST, system.smtp, timeout=120)
            client.starttls(context=TLS)
            client.ehlo()
            seconds += time.perf_counter() - started
            client.quit()
        return {"seconds": seconds}
    if op == "smtp_send":
        assert system.smtp_client is not None
        for j in range(SENDS):
            refused = system.smtp_client.sendmail(USER, [SINK], small_message(rep * SENDS + j))
            if refused:
                raise BenchError(f"{system.name} refused {refused}")
        return {}
    if op == "pop3_session":
        assert system.pop3 is not None
        seconds = 0.0
        for _ in range(SESSIONS):
            started = time.perf_counter()
            client = pop3_login(system.pop3)
            count, _ = client.stat()
            seconds += time.perf_counter() - started
            client.quit()
        return {"seconds": seconds, "messages": count}
    # RFC 1939 §4: one session at a time holds the maildrop lock; each rep logs in (untimed).
    assert system.pop3 is not None
    client = pop3_login(system.pop3)
    try:
        started = time.perf_counter()
        if op == "pop3_retr":
            total = 0
            for n in random.Random(rep).sample(range(1, POP3_MESSAGES + 1), RETRS):
                _, lines, _ = client.retr(n)
                total += sum(len(line) + 2 for line in lines)
            return {"seconds": time.perf_counter() - started, "bytes": total}
        if op == "pop3_uidl":
            _, listing, _ = client.uidl()
            return {"seconds": time.perf_counter() - started, "messages": len(listing)}
        raise ValueError(op)
    finally:
        client.quit()


def run_ops(systems: dict[str, System]) -> dict[str, dict[str, Any]]:
    """Every op REPS times per system (its reference and postroom alternating); medians."""
    times: dict[str, dict[str, list[float]]] = {name: {} for name in systems}
    checks: dict[str, dict[str, Any]] = {name: {} for name in systems}
    for op in OPS:
        print(f"   {op} ...", flush=True)
        pair = [systems[name] for name in (REFERENCE[op], "postroom") if name in systems]
        for rep in range(REPS):
            for system in pair:
                started = time.perf_counter()
                info = run_op(op, system, rep)
                elapsed = info.pop("seconds", time.perf_counter() - started)
                times[system.name].setdefault(op, []).append(elapsed * 1000.0)
                checks[system.name].setdefault(op, info)
    return medians(times, checks)


def load_pop3_mailbox(name: str, imaps: int) -> float:
    """POP3_MESSAGES corpus messages into USER's INBOX over IMAP; seconds taken."""
    started = time.perf_counter()
    client = ImapClient(HOST, imaps, TLS)
    try:
        client.login(USER, PASSWORD)
        for first in range(0, POP3_MESSAGES, LOAD_BATCH):
            batch = range(first, min(first + LOAD_BATCH, POP3_MESSAGES))
            messages = [corpus.message(i) for i in batch]
            client.append("INBOX", [(m.data, m.internal_date) for m in messages])
    finally:
        client.close()
    print(f"   {name}: {POP3_MESSAGES} messages for POP3 loaded", flush=True)
    return time.perf_counter() - started


@contextmanager
def _postroom(cert: Path, key: Path) -> Iterator[System]:
    submission, pop3s, imaps = free_port(), free_port(), free_port()
    setup = [("user", "add", u, "--password", PASSWORD) for u in (USER, SINK)]
    extra = postroom_config(submission, pop3s, imaps, cert, key)
    with Postroom(Load(recipient=SINK), extra_config=extra, setup=setup) as pr:
        assert pr.proc is not None
        for port in (submission, pop3s, imaps):
            wait_port(port, timeout=30, proc=pr.proc, log=pr.log)
        load_pop3_mailbox("postroom", imaps)
        yield System("postroom", smtp=submission, pop3=pop3s)


def run(names: list[str]) -> dict[str, Any]:
    """The stock-clients scenario; `names` is a subset of ("postfix", "dovecot", "postroom")."""
    out: dict[str, Any] = {"reps": REPS, "reference": REFERENCE, "results": {}, "errors": {}}
    tmp = Path(tempfile.mkdtemp(prefix="postroom-bench-stock-"))
    systems: dict[str, System] = {}
    try:
        cert, key = make_certificate(tmp)
        with ExitStack() as stack:
            dovecot: Dovecot | None = None
            if "dovecot" in names or "postfix" in names:
                print("== stock: start Dovecot (POP3, and SASL for Postfix) ...", flush=True)
                try:
                    dovecot = stack.enter_context(
                        Dovecot({USER: PASSWORD}, cert, key, pop3=True, sasl=True)
                    )
                    if "dovecot" in names:
                        load_pop3_mailbox("dovecot", dovecot.port)
                        systems["dovecot"] = System("dovecot", pop3=dovecot.pop3_port)
                except (BenchError, OSError) as exc:
                    out["errors"]["dovecot"] = str(exc)
            if "postfix" in names and dovecot is not None:
                print("== stock: start Postfix (STARTTLS, SASL) ...", flush=True)
                try:
                    extra = POSTFIX_TLS_SASL.format(
                        cert=cert, key=key, socket=dovecot.sasl_socket
                    )
                    postfix = stack.enter_context(
                        PrivatePostfix(Load(recipient=SINK), extra_main_cf=extra)
                    )
                    systems["postfix"] = System("postfix", smtp=postfix.port)
                except (BenchError, OSError) as exc:
                    out["errors"]["postfix"] = str(exc)
            if "postroom" in names:
                print("== stock: start postroom ...", flush=True)
                try:
                    systems["postroom"] = stack.enter_context(_postroom(cert, key))
                except (BenchError, OSError) as exc:
                    out["errors"]["postroom"] = str(exc)
            for system in systems.values():
                if system.smtp is not None:
                    system.smtp_client = smtp_login(system.smtp)
            try:
                out["results"] = run_ops(systems)
            finally:
                for system in systems.values():
                    system.close()
    except (BenchError, OSError, smtplib.SMTPException, poplib.error_proto) as exc:
        out["errors"]["stock"] = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def reference_view(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Results as {"reference": op → its reference system's result, "postroom": ...}."""
    return {
        "reference": {
            op: results[system][op]
            for op, system in REFERENCE.items()
            if op in results.get(system, {})
        },
        "postroom": results.get("postroom", {}),
    }
