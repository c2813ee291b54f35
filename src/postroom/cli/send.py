"""`postroom send`: compose a message and submit it over SMTP, printing the talk with -v.

A blocking socket driver around the same sans-I/O client engine the server relays with.
Exit status: 0 when the server accepted the message for every recipient, 3 on a temporary
failure (4xx, connection trouble), 4 on a permanent one (5xx); 1 for usage errors.
"""

from __future__ import annotations

import socket
import ssl
import sys
from pathlib import Path

import click

from postroom.cli.common import CliError
from postroom.config import Endpoint
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


class Conversation:
    """Moves bytes between a socket and the client engine; echoes them with -v."""

    def __init__(self, sock: socket.socket, client: smtp.SmtpClient, verbose: bool) -> None:
        self.sock = sock
        self.client = client
        self.verbose = verbose

    def _show(self, prefix: str, data: bytes) -> None:
        if self.verbose:
            for line in data.decode("utf-8", "replace").splitlines():
                click.echo(f"{prefix}{line}", err=True)

    def flush(self) -> None:
        out = self.client.data_to_send()
        if out:
            self._show(" -> ", out)
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
                self._show("<-  ", data)
                self.client.receive_data(data)

    def expect(self, kind: type, what: str) -> smtp.Event:
        event = self.next()
        if not isinstance(event, kind):
            reply = getattr(event, "reply", None)
            raise Failed(reply if isinstance(reply, Reply) else f"{what} failed")
        return event


def run_session(
    endpoint: Endpoint,
    *,
    tls: str,
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
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=TIMEOUT)
    if tls == "implicit":
        sock = context.wrap_socket(sock, server_hostname=endpoint.host)
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
            talk.sock = context.wrap_socket(sock, server_hostname=endpoint.host)
            client.tls_established()
            client.ehlo()
            talk.expect(smtp.Capabilities, "EHLO")
        if login is not None:
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
@click.option("--server", default="127.0.0.1:2587", show_default=True, help="host:port")
@click.option("--starttls", "tls", flag_value="starttls", help="Upgrade with STARTTLS.")
@click.option("--tls", "tls", flag_value="implicit", help="Implicit TLS (port 465).")
@click.option("--no-verify", is_flag=True, help="Accept any certificate (self-signed tests).")
@click.option("--auth", "auth_user", default=None, help="Log in as this user.")
@click.option("--password-stdin", is_flag=True, help="Read the AUTH password from stdin.")
@click.option("--dsn-notify", default=None, help="NEVER or SUCCESS,FAILURE,DELAY")
@click.option("--dsn-ret", type=click.Choice(["FULL", "HDRS"]), default=None)
@click.option("--helo", default=socket.getfqdn(), show_default="this host's name")
@click.option("-v", "--verbose", is_flag=True, help="Print the SMTP conversation.")
def send(
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
    server: str,
    tls: str | None,
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
        endpoint = Endpoint.parse(server)
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
    if auth_user is not None:
        if tls is None:
            raise CliError("--auth needs --starttls or --tls: passwords only travel encrypted")
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = str(click.prompt("Password", hide_input=True, err=True))
        login = (auth_user, password)
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
            endpoint,
            tls=tls or "none",
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
