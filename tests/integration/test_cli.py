"""The `postroom` command line as a user meets it: errors are one line, exports are faithful."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest

from postroom.config_checks import is_hostname

from .conftest import ALICE, BOB, HOST, Factory, Postroom, parse_mboxrd, postroom_executable
from .terminal import run_on_terminal
from .wire import new_token, simple_message, split_trace


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [postroom_executable(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def good_config(tmp_path: Path) -> str:
    return (
        'hostname = "mx.example.test"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        'domains = ["example.test"]\n'
        "[listen]\n"
        'smtp = "127.0.0.1:0"\n'
    )


BAD_CONFIGS = {
    "unknown-top-level-key": ('hostnme = "x"\n', "hostnme"),
    "unknown-limits-key": ("[limits]\nmessage_sise = 5\n", "limits.message_sise"),
    "unknown-listen-key": ('[listen]\nsmpt = "127.0.0.1:25"\n', "listen.smpt"),
    "bad-size": ("[limits]\nmessage_size = -1\n", "limits.message_size"),
    "bad-endpoint": ('[listen]\nsubmission = "nonsense"\n', "listen.submission"),
    "bad-timeout": ('[limits]\ncommand_timeout = "soon"\n', "limits.command_timeout"),
}


@pytest.mark.parametrize("command", [("serve",), ("user", "list"), ("queue", "list")])
@pytest.mark.parametrize(("extra", "key"), BAD_CONFIGS.values(), ids=BAD_CONFIGS)
def test_bad_config_is_one_line_naming_the_key(
    tmp_path: Path, extra: str, key: str, command: tuple[str, ...]
) -> None:
    text = good_config(tmp_path)
    if extra.startswith("["):
        section = extra.split("\n", 1)[0]
        if section in text:
            text = text.replace(section + "\n", extra)
        else:
            text += extra
    else:
        text = extra + text
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    result = run("--config", str(config), *command)
    line = assert_one_line_error(result, key)
    assert str(config) in line or config.name in line, f"the file is not named: {line}"


def test_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text(good_config(tmp_path) + "[limits\nmessage_size = 1\n", encoding="utf-8")
    assert_one_line_error(run("--config", str(config), "serve"), "broken.toml")


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert_one_line_error(run("--config", str(missing), "user", "list"), "nope.toml")


def test_init_writes_a_config_that_loads(tmp_path: Path) -> None:
    config = tmp_path / "new.toml"
    created = run("--config", str(config), "init", "--hostname", "mx.example.test")
    assert created.returncode == 0, created.stderr
    assert run("--config", str(config), "user", "list", cwd=tmp_path).returncode == 0
    again = run("--config", str(config), "init")
    assert_one_line_error(again, "exists")


def test_user_add_duplicate_is_one_clear_error(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(start=False)
    for address in (ALICE, "Alice@Example.TEST"):
        result = server.run_cli("user", "add", address, "--password", "x", check=False)
        line = assert_one_line_error(result, "already exists")
        assert ALICE in line.lower()
        assert result.stdout == ""
    # The original password still works: nothing was overwritten.
    listing = server.run_cli("user", "list").stdout
    assert listing.count(ALICE) == 1


def test_user_add_outside_local_domains_is_refused(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(start=False)
    result = server.run_cli("user", "add", "eve@elsewhere.test", "--password", "x", check=False)
    assert_one_line_error(result, "elsewhere.test")


def test_alias_add_errors_are_one_line(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(start=False)
    for args, says in (
        (("sales@elsewhere.test", "a@example.test"), "elsewhere.test is not a local domain"),
        (("@elsewhere.test", "a@example.test"), "elsewhere.test is not a local domain"),
        (("sales@example.test", "not-an-address"), "'not-an-address' is not a valid"),
    ):
        assert_one_line_error(server.run_cli("alias", "add", *args, check=False), says)
    assert server.run_cli("alias", "list").stdout == ""
    added = server.run_cli("alias", "add", "Sales@Example.test", "A@example.test")
    assert added.stdout == "sales@example.test -> a@example.test\n"


def test_mailbox_status_of_unknown_user_is_one_line(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(start=False)
    result = server.run_cli("mailbox", "status", "nobody@example.test", check=False)
    assert_one_line_error(result, "nobody@example.test")


def test_serve_on_a_busy_port_is_one_line(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(start=False, services=("smtp",))
    with socket.socket() as blocker:
        blocker.bind((HOST, server.smtp_port))
        blocker.listen()
        result = server.run_cli("serve", check=False, timeout=30)
    assert_one_line_error(
        result,
        f"{HOST}:{server.smtp_port} (service smtp)",
        "address already in use",
        f"[listen] smtp in {server.config_path}",
    )


def test_serve_started_twice_names_the_running_one(postroom: Postroom) -> None:
    assert postroom.proc is not None
    result = postroom.run_cli("serve", check=False, timeout=30)
    assert_one_line_error(
        result,
        f"another postroom (pid {postroom.proc.pid}) is already running",
        f"listening on {HOST}:{postroom.smtp_port} (service smtp)",
    )
    assert result.stdout == ""
    postroom.check_alive()
    with postroom.smtp() as client:  # the first one is unharmed
        assert client.noop()[0] == 250


USAGE_ERRORS = {
    "unknown-option": (("queue", "list", "--bogus"), "queue list: no such option '--bogus'"),
    "missing-argument": (("queue", "show"), "missing argument 'MESSAGE_ID'"),
    "bad-value": (("mailbox", "export", ALICE, "--format", "xml"), "'xml' is not one of"),
    "option-without-value": (("send", "--from"), "'--from' requires an argument"),
    "unknown-command": (("frobnicate",), "no such command 'frobnicate'"),
    "missing-command": (
        ("user",),
        "missing command, one of: add, admin, delete, list, passwd, token",
    ),
    "top-level-option": (("--bogus", "user", "list"), "no such option '--bogus'"),
}


@pytest.mark.parametrize(("args", "needle"), USAGE_ERRORS.values(), ids=USAGE_ERRORS)
def test_usage_errors_are_one_line_and_exit_1(
    tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    result = run("--config", str(tmp_path / "postroom.toml"), *args)
    line = assert_one_line_error(result, needle)
    assert line.startswith("postroom: error: "), line
    assert result.stdout == ""


@pytest.mark.parametrize("args", [(), ("queue", "list"), ("send",), ("user", "delete")])
def test_help_still_works(args: tuple[str, ...]) -> None:
    result = run(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: postroom {' '.join(args)}".rstrip())
    assert result.stderr == ""


def test_init_defaults_to_what_an_empty_config_means(tmp_path: Path) -> None:
    """The machine's FQDN (localhost when it has none) and the domain localhost, as in the
    README's configuration table."""
    config = tmp_path / "postroom.toml"
    assert run("--config", str(config), "init").returncode == 0
    written = tomllib.loads(config.read_text(encoding="utf-8"))
    expected = socket.getfqdn().lower().removesuffix(".")
    if not is_hostname(expected):
        expected = "localhost"
    assert written["hostname"] == expected
    assert written["domains"] == ["localhost"]


# --- exports -------------------------------------------------------------------------------------


FROM_LINES = (
    b"From here on, a line that mbox readers take for a separator\r\n"
    b">From there, already quoted once\r\n"
    b">>From everywhere, quoted twice\r\n"
    b"Fromage is not a From_ line\r\n"
    b" From with a leading space is not one either\r\n"
)


def send_all(server: Postroom, messages: list[bytes], to: str = ALICE) -> None:
    with server.smtp() as client:
        for message in messages:
            assert client.sendmail("x@y.test", [to], message) == {}
    server.wait_for_messages(to, len(messages))


def test_mbox_export_uses_mboxrd_quoting(postroom: Postroom) -> None:
    tokens = [new_token("mbox") for _ in range(3)]
    originals = [simple_message(t) + FROM_LINES for t in tokens]
    send_all(postroom, originals)
    raw = subprocess.run(
        [postroom_executable(), "--config", str(postroom.config_path), "mailbox", "export", ALICE],
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=True,
    ).stdout
    # mboxrd: every ">*From " at the start of a line gets one more ">".
    assert raw.count(b"\n>From here on") == 3
    assert raw.count(b"\n>>From there") == 3
    assert raw.count(b"\n>>>From everywhere") == 3
    assert raw.count(b"\nFromage is not") == 3
    assert raw.count(b"\n From with a leading space") == 3
    separators = [line for line in raw.split(b"\n") if line.startswith(b"From ")]
    assert len(separators) == 3, separators
    assert all(line.startswith(b"From x@y.test ") for line in separators), separators
    # Undoing the quoting gives back exactly what the maildir export holds.
    assert parse_mboxrd(raw) == postroom.export_maildir(ALICE)
    for stored, original in zip(parse_mboxrd(raw), originals, strict=True):
        assert split_trace(stored)[1] == original.replace(b"\r\n", b"\n")


def test_mbox_export_to_a_file(postroom: Postroom, tmp_path: Path) -> None:
    send_all(postroom, [simple_message(new_token())], to=BOB)
    target = tmp_path / "bob.mbox"
    result = postroom.run_cli("mailbox", "export", BOB, "--output", str(target))
    assert "1" in result.stderr
    assert len(parse_mboxrd(target.read_bytes())) == 1


def test_maildir_export_produces_cur_files(postroom: Postroom, tmp_path: Path) -> None:
    tokens = [new_token("maildir") for _ in range(3)]
    originals = [simple_message(t) + FROM_LINES for t in tokens]
    send_all(postroom, originals)
    target = tmp_path / "Maildir"
    postroom.run_cli("mailbox", "export", ALICE, "--format", "maildir", "--output", str(target))
    for sub in ("cur", "new", "tmp"):
        assert (target / sub).is_dir(), f"{sub}/ missing"
    assert list((target / "tmp").iterdir()) == []
    files = sorted((target / "cur").iterdir())
    assert len(files) == 3
    names = [path.name for path in files]
    assert len(set(names)) == 3
    assert all(":2," in name for name in names), names
    contents = [path.read_bytes() for path in files]
    for token, original in zip(tokens, originals, strict=True):
        [stored] = [c for c in contents if token.encode() in c]
        # Maildir files hold the message itself: no From_ line, no quoting.
        assert split_trace(stored)[1] == original.replace(b"\r\n", b"\n")
    # Unseen messages go without the S flag.
    assert not any(name.endswith("S") for name in names)


def test_maildir_export_requires_output(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(start=False)
    result = server.run_cli("mailbox", "export", ALICE, "--format", "maildir", check=False)
    assert_one_line_error(result, "--output")


def test_mailbox_status_counts(postroom: Postroom) -> None:
    assert postroom.mailbox_status(ALICE) == {"messages": 0, "unseen": 0, "size": 0}
    send_all(postroom, [simple_message(new_token()) for _ in range(2)])
    status = postroom.mailbox_status(ALICE)
    assert status["messages"] == 2 and status["unseen"] == 2
    exported = postroom.export(ALICE)
    assert status["size"] == sum(len(m.replace(b"\n", b"\r\n")) for m in exported)


# --- accounts, end to end ------------------------------------------------------------------------


def test_user_added_with_password_stdin_can_log_in(postroom: Postroom) -> None:
    carol = "carol@example.test"
    postroom.run_cli("user", "add", carol, "--password-stdin", input="stdin-secret\n")
    postroom.passwords[carol] = "stdin-secret"
    with postroom.submission(login=carol) as s:
        assert s.sendmail(carol, [carol], simple_message(new_token(), carol, carol)) == {}
    postroom.wait_for_messages(carol, 1)


def test_user_passwd_and_delete_take_effect_on_the_running_server(postroom: Postroom) -> None:
    with postroom.submission(login=None) as s:  # the server now remembers this password
        assert s.login(BOB, postroom.passwords[BOB])[0] == 235
    postroom.run_cli("user", "passwd", BOB, "--password", "new-bob-secret")
    with postroom.submission(login=None) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login(BOB, postroom.passwords[BOB])
        assert s.login(BOB, "new-bob-secret")[0] == 235
    postroom.run_cli("user", "delete", BOB, "--yes")
    with postroom.submission(login=None) as s, pytest.raises(smtplib.SMTPAuthenticationError):
        s.login(BOB, "new-bob-secret")
    with postroom.smtp() as client:
        client.ehlo()
        client.mail("x@y.test")
        assert client.rcpt(BOB)[0] == 550
    result = postroom.run_cli("mailbox", "status", BOB, check=False)
    assert_one_line_error(result, BOB)


def test_user_delete_needs_yes_without_a_terminal(postroom_factory: Factory) -> None:
    server: Postroom = postroom_factory(start=False)
    result = server.run_cli("user", "delete", BOB, check=False)
    assert_one_line_error(result, f"deleting {BOB} removes all of their mail: add --yes")
    assert BOB in server.run_cli("user", "list").stdout
    assert server.run_cli("user", "delete", BOB, "--yes").stdout == f"deleted {BOB}\n"
    assert BOB not in server.run_cli("user", "list").stdout
    result = server.run_cli("user", "delete", BOB, check=False)
    assert_one_line_error(result, f"no user {BOB}")


def test_user_delete_asks_on_a_terminal(postroom: Postroom) -> None:
    send_all(postroom, [simple_message(new_token())], to=BOB)
    command = ["--config", str(postroom.config_path), "user", "delete", BOB]
    status, screen = run_on_terminal(command, answers=[("[y/N]", "\n")])
    assert f"Delete {BOB} and all of their mail (1 message(s))? [y/N]" in screen
    assert status == 1 and f"postroom: error: {BOB} not deleted" in screen, screen
    assert postroom.mailbox_status(BOB)["messages"] == 1
    status, screen = run_on_terminal(command, answers=[("[y/N]", "y\n")])
    assert status == 0 and f"deleted {BOB}" in screen, screen
    assert BOB not in postroom.run_cli("user", "list").stdout
