"""`postroom send`: compose a message and submit it over SMTP, printing the talk with -v.

A blocking socket driver around the same sans-I/O client engine the server relays with.
Without --server it submits to this configuration's own submission port (STARTTLS, or
submissions with implicit TLS), verifies the server as `hostname` against its certificate, and
logs in (RFC 6409 §4.3 submission needs it), asking for the login on a terminal. With -v the
SASL exchange prints as `AUTH PLAIN <hidden>`: the credentials never reach the terminal.
Exit status: 0 when the server accepted the message for every recipient, 3 on a temporary
failure (4xx, connection trouble), 4 on a permanent one (5xx); 1 for usage errors.
"""

from __future__ import annotations

import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click

from postroom.cli.common import CliError, load
from postroom.config import Endpoint
from postroom.net.certificates import acme_pair_in_use
from postroom.proto.smtp import client as smtp
from postroom.proto.smtp.params import MailParams
from postroom.proto.smtp.replies import Reply
from postroom.services.compose import compose

EXIT_TEMPORARY = 3
EXIT_PERMANENT = 4
TIMEOUT = 60.0


def describe(reply: Reply) -> str:
    return " ".join(str(p) for p in (reply.code, reply.enhanced, reply.text) if p)


class Failed(Exception):
    def __init__(self, reply: Reply | str) -> None:
        text = reply if isinstance(reply, str) else describe(reply)
        super().__init__(text)
        permanent = isinstance(reply, Reply) and reply.code >= 500
        self.exit_code = EXIT_PERMANENT if permanent else EXIT_TEMPORARY


HIDDEN = "<hidden>"


class AuthMask:
    """What -v shows of the client's lines during AUTH: a SASL exchange (RFC 4954 §4) carries
    the credentials in base64, so the command's initial response and every answer to a 334
    challenge print as <hidden>, as Postfix logs and swaks --protect-password do."""

    def __init__(self) -> None:
        self._state: Literal["off", "command", "responses"] = "off"

    def start(self) -> None:
        """The next line sent is the AUTH command."""
        self._state = "command"

    def sent(self, line: str) -> str:
        if self._state == "command":
            self._state = "responses"
            words = line.split(" ")  # AUTH PLAIN, then maybe the initial response
            return f"{words[0]} {words[1]} {HIDDEN}" if len(words) > 2 else line
        return HIDDEN if self._state == "responses" else line

    def received(self, line: str) -> None:
        # RFC 4954 §4: 334 asks for more; any other reply ends the exchange.
        if self._state == "responses" and not line.startswith("334"):
            self._state = "off"


class Conversation:
    """Moves bytes between a socket and the client engine; echoes them with -v."""

    def __init__(self, sock: socket.socket, client: smtp.SmtpClient, verbose: bool) -> None:
        self.sock = sock
        self.client = client
        self.verbose = verbose
        self.mask = AuthMask()

    def _show(self, prefix: str, data: bytes, *, sent: bool) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            if sent:
                line = self.mask.sent(line)
            else:
                self.mask.received(line)
            if self.verbose:
                click.echo(f"{prefix}{line}", err=True)

    def flush(self) -> None:
        out = self.client.data_to_send()
        if out:
            self._show(" -> ", out, sent=True)
            self.sock.sendall(out)

    def next(self) -> smtp.Event:
        while True:
            self.flush()
            event = self.client.next_event()
            self.flush()  # the engine may answer a reply with a command of its own (RSET)
            if not isinstance(event, smtp.NeedData):
                if isinstance(event, smtp.ProtocolError):
                    raise Failed(f"protocol error: {event.description}")
                return event
            data = self.sock.recv(65536)
            if not data:
                self.client.connection_closed()
            else:
                self._show("<-  ", data, sent=False)
                self.client.receive_data(data)

    def expect(self, kind: type, what: str) -> smtp.Event:
        event = self.next()
        if not isinstance(event, kind):
            reply = getattr(event, "reply", None)
            raise Failed(reply if isinstance(reply, Reply) else f"{what} failed")
        return event


@dataclass(frozen=True)
class Target:
    """Where to submit and how: TLS mode, the name the certificate must carry, extra trust."""

    endpoint: Endpoint
    tls: Literal["none", "starttls", "implicit"]
    server_name: str
    cafile: Path | None = None  # trusted besides the system CAs
    needs_login: bool = False


def local_submission(ctx: click.Context, tls: str | None, verify: bool) -> Target:
    """This configuration's own submission service (submissions with --tls), verified as its
    hostname against the certificate it serves: the ACME one when [acme] is on and has one,
    else [tls] cert, else the generated one."""
    path: Path = ctx.obj
    if not path.exists():
        raise CliError(
            f"no --server, and no {path} to find the submission port in: "
            "add --server HOST:PORT, or --config FILE"
        )
    config = load(ctx)
    listen = config.listen
    implicit = tls == "implicit" or (tls is None and not listen.submission)
    endpoint = listen.first("submissions" if implicit else "submission")
    if endpoint is None:
        service = "submissions" if implicit else "submission"
        raise CliError(f"{config.path} has no [listen] {service}: add --server HOST:PORT")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(endpoint.host, endpoint.host)
    acme = acme_pair_in_use(config)
    cafile = acme[0] if acme else config.tls.cert or config.data_dir / "tls" / "cert.pem"
    if verify and not cafile.exists():
        raise CliError(
            f"{cafile} does not exist yet: start `postroom serve` (it makes the certificate), "
            "or add --no-verify"
        )
    return Target(
        Endpoint(host, endpoint.port),
        "implicit" if implicit else "starttls",
        config.hostname,
        cafile,
        needs_login=True,
    )


def read_login(auth_user: str | None, sender: str, password_stdin: bool) -> tuple[str, str]:
    """The login: --auth or asked for (the sender is the default), then the password."""
    asking = sys.stdin.isatty()
    if auth_user is None:
        if not asking:
            raise CliError(
                "the submission port needs a login: add --auth USER --password-stdin "
                "(or --server HOST:PORT for a port without one)"
            )
        auth_user = str(click.prompt("Login", default=sender, err=True))
    if password_stdin:
        return auth_user, sys.stdin.readline().rstrip("\r\n")
    if not asking:
        raise CliError(f"no password for {auth_user}: add --password-stdin")
    return auth_user, str(click.prompt("Password", hide_input=True, err=True))


def run_session(
    target: Target,
    *,
    verify: bool,
    helo: str,
    login: tuple[str, str] | None,
    sender: str,
    recipients: list[smtp.Recipient],
    params: MailParams,
    content: bytes,
    verbose: bool,
) -> tuple[Reply, list[Reply]]:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    elif target.cafile is not None:
        # The server's own certificate file: its chain (an ACME leaf and intermediate, whose
        # root may be a private CA's) is trusted as it is, up to no further root.
        context.load_verify_locations(target.cafile)
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    endpoint, tls = target.endpoint, target.tls
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=TIMEOUT)
    if tls == "implicit":
        sock = context.wrap_socket(sock, server_hostname=target.server_name)
    client = smtp.SmtpClient(helo)
    talk = Conversation(sock, client, verbose)
    try:
        greeting = talk.expect(smtp.Greeting, "greeting")
        assert isinstance(greeting, smtp.Greeting)
        if greeting.reply.code != 220:
            raise Failed(greeting.reply)
        client.ehlo()
        if not isinstance(talk.next(), smtp.Capabilities):
            client.helo()
            talk.expect(smtp.Capabilities, "HELO")
        if tls == "starttls":
            client.starttls()
            talk.expect(smtp.StartTlsReady, "STARTTLS")
            talk.sock = context.wrap_socket(sock, server_hostname=target.server_name)
            client.tls_established()
            client.ehlo()
            talk.expect(smtp.Capabilities, "EHLO")
        if login is not None:
            talk.mask.start()
            offered = client.auth_mechanisms
            if "PLAIN" in offered or "LOGIN" not in offered:
                client.auth_plain(*login)
            else:
                client.auth_login(*login)
            result = talk.expect(smtp.AuthResult, "AUTH")
            assert isinstance(result, smtp.AuthResult)
            if result.reply.code != 235:
                raise Failed(result.reply)
        client.send_envelope(sender, recipients, params)
        while not isinstance(event := talk.next(), smtp.EnvelopeResult):
            if isinstance(event, smtp.ServiceClosing):
                raise Failed(event.reply)
        if not event.ready:
            # Name the recipients' refusal (550 5.1.1) rather than DATA's "no valid recipients".
            refusals = [r for r in event.recipients if r.code >= 400]
            failure = refusals[0] if refusals else event.failure
            raise Failed(failure or "the server did not take the message")
        client.send_message(content)
        done = talk.expect(smtp.MessageResult, "DATA")
        assert isinstance(done, smtp.MessageResult)
        client.quit()
        talk.next()
        return done.reply, list(event.recipients)
    finally:
        talk.sock.close()


@click.command("send")
@click.option("--from", "sender", required=True, help="Envelope sender and From: header.")
@click.option("--to", "to", multiple=True, help="Recipient (To:), repeatable.")
@click.option("--cc", multiple=True, help="Recipient (Cc:), repeatable.")
@click.option("--bcc", multiple=True, help="Recipient only in the envelope, repeatable.")
@click.option("--subject", default="", help="Subject: header.")
@click.option("--body", default=None, help="Text body.")
@click.option("--body-file", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--html", "html_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--attach", multiple=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--header", "headers", multiple=True, help='Extra header, "Name: value".')
@click.option(
    "--server",
    default=None,
    help="host:port  [default: the submission port of --config's file, with STARTTLS, its "
    "certificate and a login]",
)
@click.option("--starttls", "tls", flag_value="starttls", help="Upgrade with STARTTLS.")
@click.option("--tls", "tls", flag_value="implicit", help="Implicit TLS (port 465).")
@click.option("--no-verify", is_flag=True, help="Accept any certificate (self-signed tests).")
@click.option("--auth", "auth_user", default=None, help="Log in as this user.")
@click.option("--password-stdin", is_flag=True, help="Read the AUTH password from stdin.")
@click.option("--dsn-notify", default=None, help="NEVER or SUCCESS,FAILURE,DELAY")
@click.option("--dsn-ret", type=click.Choice(["FULL", "HDRS"]), default=None)
@click.option("--helo", default=socket.getfqdn(), show_default="this host's name")
@click.option("-v", "--verbose", is_flag=True, help="Print the SMTP conversation.")
@click.pass_context
def send(
    ctx: click.Context,
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    subject: str,
    body: str | None,
    body_file: Path | None,
    html_file: Path | None,
    attach: tuple[Path, ...],
    headers: tuple[str, ...],
    server: str | None,
    tls: Literal["starttls", "implicit"] | None,
    no_verify: bool,
    auth_user: str | None,
    password_stdin: bool,
    dsn_notify: str | None,
    dsn_ret: str | None,
    helo: str,
    verbose: bool,
) -> None:
    """Compose a message and submit it over SMTP (the swaks of postroom)."""
    addresses = [*to, *cc, *bcc]
    if not addresses:
        raise CliError("give at least one --to, --cc or --bcc")
    try:
        if server is None:
            target = local_submission(ctx, tls, verify=not no_verify)
        else:
            endpoint = Endpoint.parse(server)
            target = Target(endpoint, tls or "none", endpoint.host)
        text = body_file.read_text("utf-8") if body_file else (body or "")
        html = html_file.read_text("utf-8") if html_file else None
        content = compose(
            sender=sender,
            to=to,
            cc=cc,
            subject=subject,
            body=text,
            html=html,
            attachments=attach,
            headers=headers,
            hostname=helo,
        )
    except (ValueError, OSError) as error:
        raise CliError(str(error)) from None
    login = None
    if auth_user is not None or target.needs_login:
        if target.tls == "none":
            raise CliError("--auth needs --starttls or --tls: passwords only travel encrypted")
        login = read_login(auth_user, sender, password_stdin)
    notify = tuple(dsn_notify.upper().split(",")) if dsn_notify else None
    params = MailParams(
        size=len(content),
        body=None if content.isascii() else "8BITMIME",
        smtputf8=not all(a.isascii() for a in (sender, *addresses)),
        ret=dsn_ret,
    )
    recipients = [smtp.Recipient(a, notify, None) for a in addresses]
    try:
        final, per_recipient = run_session(
            target,
            verify=not no_verify,
            helo=helo,
            login=login,
            sender=sender,
            recipients=recipients,
            params=params,
            content=content,
            verbose=verbose,
        )
    except Failed as failure:
        click.echo(f"postroom: not sent: {failure}", err=True)
        sys.exit(failure.exit_code)
    except (OSError, ssl.SSLError, ValueError, RuntimeError) as error:
        click.echo(f"postroom: not sent: {error}", err=True)
        sys.exit(EXIT_TEMPORARY)
    refused = [(a, r) for a, r in zip(addresses, per_recipient, strict=True) if r.code >= 400]
    for address, reply in refused:
        click.echo(f"postroom: refused <{address}>: {describe(reply)}", err=True)
    click.echo(describe(final))
    if refused:
        sys.exit(EXIT_PERMANENT if any(r.code >= 500 for _, r in refused) else EXIT_TEMPORARY)
