"""postroom.delivery.smtp against REAL peers on loopback, routed through a REAL nsd.

Peers: Postfix's `smtp-sink` (accepting, 4xx/5xx on RCPT, disconnecting, no 8BITMIME) and a
`postroom serve` instance (per-recipient results, SIZE, STARTTLS with its self-signed cert,
mailbox content checked byte for byte). All MX names resolve to loopback addresses; the SMTP
port comes from `OutboundSettings.port`, so every MX host of a test shares one port and the
"first MX refuses" case uses two loopback addresses (127.0.0.2 has no listener, 127.0.0.3 has).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from postroom.delivery.smtp import (
    OutboundMessage,
    OutboundRecipient,
    OutboundSettings,
    RecipientOutcome,
    deliver_to_domain,
)
from postroom.dns import DnsResolver
from postroom.proto.smtp.params import MailParams

from .conftest import ALICE, Postroom, free_ports, require_program, wait_until
from .dns_server import DnsServer, run_dns_server

SOA = """$TTL 300
@       IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300
@       IN NS  ns.{origin}.
ns      IN A   127.0.0.1
"""

DEST_ZONE = (
    SOA.format(origin="dest.example")
    + """
sink        IN MX 10 mx-sink.dest.example.
mx-sink     IN A  127.0.0.1
; the first MX has no listener (127.0.0.2), the second one has (127.0.0.3)
fallback    IN MX 10 mx1.dest.example.
fallback    IN MX 20 mx2.dest.example.
mx1         IN A  127.0.0.2
mx2         IN A  127.0.0.3
; RFC 7505 null MX
nullmx      IN MX 0 .
"""
)

POSTROOM_ZONE = (
    SOA.format(origin="example.test")
    + """
@           IN MX 10 mx.example.test.
mx          IN A  127.0.0.1
"""
)

OUR_NAME = "relay.postroom.test"
SENDER = "sender@origin.example"
PLAIN = (
    b"From: Sender <sender@origin.example>\r\n"
    b"To: someone@dest.example\r\n"
    b"Subject: outbound test\r\n"
    b"Message-ID: <outbound-1@origin.example>\r\n"
    b"\r\n"
    b"Hello over SMTP.\r\n"
    b".a line starting with a dot\r\n"
)


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    directory = tmp_path_factory.mktemp("nsd")
    with run_dns_server(directory, {"dest.example": DEST_ZONE, "example.test": POSTROOM_ZONE}) as s:
        yield s


def resolver(dns: DnsServer) -> DnsResolver:
    return DnsResolver(nameservers=[dns.nameserver], timeout=5.0)


def settings(port: int, **kwargs: object) -> OutboundSettings:
    values: dict[str, object] = {
        "connect_timeout": 5.0,
        "command_timeout": 15.0,
        "data_timeout": 15.0,
    }
    values.update(kwargs)
    return OutboundSettings(OUR_NAME, port, **values)  # type: ignore[arg-type]


def message(
    *recipients: str, content: bytes = PLAIN, params: MailParams | None = None
) -> OutboundMessage:
    return OutboundMessage(
        SENDER,
        params or MailParams(body="7BIT"),
        tuple(OutboundRecipient(r) for r in recipients),
        content,
    )


def deliver(
    dns: DnsServer,
    domain: str,
    messages: Sequence[OutboundMessage],
    port: int,
    **kwargs: object,
) -> list[list[RecipientOutcome]]:
    verify = kwargs.pop("verify_context", None)
    return asyncio.run(
        asyncio.wait_for(
            deliver_to_domain(
                domain,
                messages,
                resolver=resolver(dns),
                settings=settings(port, **kwargs),
                verify_context=verify,  # type: ignore[arg-type]
            ),
            timeout=60,
        )
    )


# --- smtp-sink ---------------------------------------------------------------------------------


class Sink:
    def __init__(self, proc: subprocess.Popen[bytes], host: str, port: int, dumps: Path) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.dumps = dumps

    def messages(self) -> list[bytes]:
        """Dumped transactions (oldest first): smtp-sink's X- lines, its Received, the data."""
        return [p.read_bytes() for p in sorted(self.dumps.iterdir(), key=lambda p: p.name)]


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[Callable[..., Sink]]:
    """Factory: `smtp_sink("-r", "RCPT", host="127.0.0.1")` runs smtp-sink on a free port."""
    program = require_program("smtp-sink")
    procs: list[subprocess.Popen[bytes]] = []
    dump_dirs: list[Path] = []

    def start(*options: str, host: str = "127.0.0.1", port: int | None = None) -> Sink:
        # smtp-sink runs as nobody (-u, required for root) and writes its dumps there: tmp_path
        # sits under a root-only directory, so the dumps go to a world-writable temp directory.
        dumps = Path(tempfile.mkdtemp(prefix="postroom-sink-"))
        dump_dirs.append(dumps)
        dumps.chmod(0o777)
        port = port or free_ports(1, host)[0]
        proc = subprocess.Popen(
            [
                program,
                *("-u", "nobody"),
                *("-d", f"{dumps}/%Y%m%d%H%M%S."),
                *options,
                f"{host}:{port}",
                "10",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"sink{len(procs)}.log").open("wb"),
        )
        procs.append(proc)

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"smtp-sink exited with {proc.returncode}")
            return _listening(host, port)

        wait_until(ready, 10.0, "smtp-sink to listen")
        return Sink(proc, host, port, dumps)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    for directory in dump_dirs:
        shutil.rmtree(directory, ignore_errors=True)


def sink_data(dump: bytes) -> bytes:
    """The message data in an smtp-sink dump: after the X- lines and smtp-sink's Received.

    smtp-sink writes LF line ends and one empty line after the data; that line is removed.
    """
    match = re.match(rb"(?:X-[^\n]*\n)*Received:[^\n]*\n(?:[ \t][^\n]*\n)*", dump)
    assert match, dump[:300]
    assert dump.endswith(b"\n\n"), dump[-80:]
    return dump[match.end() : -1]


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def wait_dumps(sink: Sink, count: int) -> list[bytes]:
    wait_until(lambda: len(sink.messages()) >= count, 10.0, f"{count} smtp-sink dumps")
    return sink.messages()


# --- smtp-sink scenarios -----------------------------------------------------------------------


def test_delivered_two_messages_one_connection(
    dns: DnsServer, smtp_sink: Callable[..., Sink]
) -> None:
    sink = smtp_sink()
    second = PLAIN.replace(b"outbound test", b"second message")
    out = deliver(
        dns,
        "sink.dest.example",
        [
            message("a@sink.dest.example", "b@sink.dest.example"),
            message("c@sink.dest.example", content=second),
        ],
        sink.port,
    )
    assert [[o.result for o in m] for m in out] == [["delivered", "delivered"], ["delivered"]], out
    first = out[0][0]
    assert first.reply.startswith("250 2.0.0"), first
    assert first.status == "2.0.0"
    assert first.remote_mta == "mx-sink.dest.example"
    dumps = wait_dumps(sink, 2)
    # RFC 5321 §4.5.2: the leading dot travelled stuffed and arrived as it was.
    # The dumps' names do not order messages sent within one second: compare sorted.
    assert sorted(sink_data(d) for d in dumps) == sorted([lf(PLAIN), lf(second)])
    both = b"".join(dumps)
    for rcpt in (b"a", b"b", b"c"):
        assert b"X-Rcpt-Args: <" + rcpt + b"@sink.dest.example>" in both


def test_rcpt_5xx_is_failed(dns: DnsServer, smtp_sink: Callable[..., Sink]) -> None:
    sink = smtp_sink("-f", "RCPT")
    [[outcome]] = deliver(dns, "sink.dest.example", [message("a@sink.dest.example")], sink.port)
    assert outcome.result == "failed", outcome
    assert outcome.reply.startswith("5"), outcome
    assert outcome.status.startswith("5."), outcome


def test_rcpt_4xx_is_deferred(dns: DnsServer, smtp_sink: Callable[..., Sink]) -> None:
    sink = smtp_sink("-r", "RCPT")
    [[outcome]] = deliver(dns, "sink.dest.example", [message("a@sink.dest.example")], sink.port)
    assert outcome.result == "deferred", outcome
    assert outcome.reply.startswith("4"), outcome
    assert outcome.status.startswith("4."), outcome
    assert outcome.remote_mta == "mx-sink.dest.example"


@pytest.mark.parametrize("option", ["-q", "-Q"])  # -q: drop the connection; -Q: 421 and drop
def test_disconnect_mid_session_defers_the_rest(
    dns: DnsServer, smtp_sink: Callable[..., Sink], option: str
) -> None:
    sink = smtp_sink(option, "DATA")
    out = deliver(
        dns,
        "sink.dest.example",
        [message("a@sink.dest.example", "b@sink.dest.example"), message("c@sink.dest.example")],
        sink.port,
    )
    outcomes = [o for m in out for o in m]
    assert [o.result for o in outcomes] == ["deferred"] * 3, outcomes
    assert all(o.status.startswith("4.") for o in outcomes), outcomes


def test_fallback_when_first_mx_refuses(dns: DnsServer, smtp_sink: Callable[..., Sink]) -> None:
    port = free_ports(1, "127.0.0.3")[0]
    assert not _listening("127.0.0.2", port)
    sink = smtp_sink(host="127.0.0.3", port=port)
    [[outcome]] = deliver(dns, "fallback.dest.example", [message("a@fallback.dest.example")], port)
    assert outcome.result == "delivered", outcome
    assert outcome.remote_mta == "mx2.dest.example"
    assert len(wait_dumps(sink, 1)) == 1


def test_helo_when_the_peer_refuses_ehlo(dns: DnsServer, smtp_sink: Callable[..., Sink]) -> None:
    """RFC 5321 §4.1.4: a 5xx to EHLO from an old server → HELO, and the mail still goes."""
    sink = smtp_sink("-e")  # no ESMTP: EHLO is answered with a 5xx
    [[outcome]] = deliver(dns, "sink.dest.example", [message("a@sink.dest.example")], sink.port)
    assert outcome.result == "delivered", outcome
    [dump] = wait_dumps(sink, 1)
    assert b"X-Helo-Args: " + OUR_NAME.encode() in dump
    assert b"X-Mail-Args: <sender@origin.example>\n" in dump  # no ESMTP parameters after HELO
    assert sink_data(dump) == lf(PLAIN)


@contextlib.contextmanager
def silent_server(host: str, port: int) -> Iterator[list[socket.socket]]:
    """Accepts connections and never says a word (a tarpit, or a hung server)."""
    listener = socket.create_server((host, port))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()


def test_silent_first_mx_times_out_and_the_next_one_takes_it(
    dns: DnsServer, smtp_sink: Callable[..., Sink]
) -> None:
    port = free_ports(1, "127.0.0.2")[0]
    with silent_server("127.0.0.2", port) as accepted:
        sink = smtp_sink(host="127.0.0.3", port=port)
        [[outcome]] = deliver(
            dns,
            "fallback.dest.example",
            [message("a@fallback.dest.example")],
            port,
            command_timeout=1.0,
        )
        assert accepted, "the silent first MX was never contacted"
    assert outcome.result == "delivered", outcome
    assert outcome.remote_mta == "mx2.dest.example"
    assert len(wait_dumps(sink, 1)) == 1


def test_only_a_silent_peer_defers_with_a_timeout(dns: DnsServer) -> None:
    port = free_ports(1, "127.0.0.2")[0]
    with silent_server("127.0.0.1", port):
        [[outcome]] = deliver(
            dns, "sink.dest.example", [message("a@sink.dest.example")], port, command_timeout=1.0
        )
    assert outcome.result == "deferred", outcome
    assert outcome.status.startswith("4.4."), outcome
    assert "timed out" in outcome.reply or "timeout" in outcome.reply, outcome


def test_no_host_reachable_is_deferred(dns: DnsServer) -> None:
    port = free_ports(1, "127.0.0.3")[0]
    [[outcome]] = deliver(dns, "fallback.dest.example", [message("a@fallback.dest.example")], port)
    assert outcome.result == "deferred", outcome
    assert outcome.status == "4.4.1"
    # The last error names the last host tried.
    assert outcome.reply == "4.4.1 connection refused by mx2.dest.example[127.0.0.3]", outcome


def test_null_mx_fails_at_once(dns: DnsServer) -> None:
    [[a, b]] = deliver(
        dns, "nullmx.dest.example", [message("a@nullmx.dest.example", "b@nullmx.dest.example")], 9
    )
    for outcome in (a, b):
        assert outcome.result == "failed"
        assert outcome.status == "5.1.10"
        assert outcome.reply.startswith("556 5.1.10 "), outcome
        assert outcome.remote_mta is None


def test_nxdomain_fails(dns: DnsServer) -> None:
    [[outcome]] = deliver(dns, "missing.dest.example", [message("a@missing.dest.example")], 9)
    assert outcome.result == "failed"
    assert outcome.status == "5.1.2"
    assert outcome.reply.startswith("5.1.2 "), outcome


def test_tls_required_without_starttls_defers(
    dns: DnsServer, smtp_sink: Callable[..., Sink]
) -> None:
    sink = smtp_sink()
    [[outcome]] = deliver(
        dns, "sink.dest.example", [message("a@sink.dest.example")], sink.port, tls="required"
    )
    assert outcome.result == "deferred", outcome
    assert "STARTTLS" in outcome.reply
    assert sink.messages() == []


def test_smtputf8_to_peer_without_it_fails(dns: DnsServer, smtp_sink: Callable[..., Sink]) -> None:
    sink = smtp_sink()
    params = MailParams(body="8BITMIME", smtputf8=True)
    content = "From: jörg@origin.example\r\nSubject: ü\r\n\r\nü\r\n".encode()
    [[outcome]] = deliver(
        dns,
        "sink.dest.example",
        [message("a@sink.dest.example", content=content, params=params)],
        sink.port,
    )
    assert outcome.result == "failed", outcome
    assert outcome.status == "5.6.7"


EIGHT_BIT_TEXT = "Grüße aus Köln — naïve café, €5 = 5 Euro.\nZweite Zeile: ÄÖÜ ß.\n"


def test_8bit_downgraded_for_peer_without_8bitmime(
    dns: DnsServer, smtp_sink: Callable[..., Sink]
) -> None:
    sink = smtp_sink("-8")  # smtp-sink -8: do not announce 8BITMIME
    content = (
        b"From: sender@origin.example\r\n"
        b"To: a@sink.dest.example\r\n"
        b"Subject: eight bit\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + EIGHT_BIT_TEXT.replace("\n", "\r\n").encode("utf-8")
    )
    params = MailParams(body="8BITMIME")
    [[outcome]] = deliver(
        dns,
        "sink.dest.example",
        [message("a@sink.dest.example", content=content, params=params)],
        sink.port,
    )
    assert outcome.result == "delivered", outcome
    [dump] = wait_dumps(sink, 1)
    assert b"BODY=8BITMIME" not in dump
    received = sink_data(dump)
    assert received.isascii(), received
    parsed = email.message_from_bytes(received, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed["Subject"] == "eight bit"
    assert parsed.get_content() == EIGHT_BIT_TEXT


# --- a postroom peer ---------------------------------------------------------------------------


def mailbox_content(stored: bytes) -> bytes:
    """A delivered message without the Return-Path and Received lines postroom put on top."""
    match = re.match(rb"(?:(?:Return-Path|Received):[^\n]*\n(?:[ \t][^\n]*\n)*)+", stored)
    assert match, stored[:300]
    return stored[match.end() :]


def test_postroom_peer_mixed_results_starttls(
    dns: DnsServer, postroom_factory: Callable[..., Postroom]
) -> None:
    server = postroom_factory(services=("smtp",))
    out = deliver(
        dns,
        "example.test",
        [message(ALICE, "nobody@example.test")],
        server.smtp_port,
    )
    [[alice, nobody]] = out
    assert alice.result == "delivered", alice
    assert alice.remote_mta == "mx.example.test"
    assert nobody.result == "failed", nobody
    assert nobody.status.startswith("5.1."), nobody
    server.wait_for_messages(ALICE, 1)
    [stored] = server.export(ALICE)
    assert lf(mailbox_content(stored)) == lf(PLAIN)
    # RFC 3207 / RFC 7435: the opportunistic STARTTLS took place (RFC 3848 "ESMTPS").
    head = stored[: stored.find(b"\n\n")]
    assert b"ESMTPS" in head, head


def test_postroom_peer_verified_tls_and_size(
    dns: DnsServer, postroom_factory: Callable[..., Postroom]
) -> None:
    server = postroom_factory(services=("smtp",), limits={"message_size": 4096})
    big = PLAIN + b"x" * 70 + b"\r\n"
    big = big * (8192 // len(big))
    out = deliver(
        dns,
        "example.test",
        [message(ALICE), message(ALICE, content=big)],
        server.smtp_port,
        tls="verify",
        verify_context=server.tls_context(),
    )
    [[small], [too_big]] = out
    assert small.result == "delivered", small
    assert too_big.result == "failed", too_big
    assert too_big.status == "5.3.4", too_big
    server.wait_for_messages(ALICE, 1)
    # Refused before MAIL was even sent (RFC 1870 §6): only the small one is in the mailbox.
    [stored] = server.export(ALICE)
    assert lf(mailbox_content(stored)) == lf(PLAIN)
