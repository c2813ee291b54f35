"""`postroom quickstart` and `postroom service install`: a production install in two commands.

`quickstart ADMIN@DOMAIN` writes the production config (the standard ports on every IPv4
and IPv6 address, ACME on with the admin's address as contact, data under /var/lib/postroom),
makes the domain's first user with a generated password printed once, the domain's DKIM keys,
and prints the DNS records (`dns records`) and what to do next. It never overwrites a config.

`service install` writes a systemd unit that runs `serve` as its own system user (made with
useradd when missing), with CAP_NET_BIND_SERVICE for the ports below 1024 and the sandboxing
systemd offers (systemd.exec(5)); the data directory is the only place it may write.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import click

from postroom.cli.accounts import check_address
from postroom.cli.common import CliError, load, open_store
from postroom.cli.dkim import ensure_local_keys
from postroom.cli.dns_records import records
from postroom.cli.privileges import Account, give_tree
from postroom.config import ConfigError, load_config
from postroom.config_checks import Invalid
from postroom.config_checks import hostname as check_hostname
from postroom.config_template import render_default_config
from postroom.services.accounts import hash_password

PRODUCTION_DATA_DIR = "/var/lib/postroom"
PRODUCTION_CONFIG = "/etc/postroom/postroom.toml"
PASSWORD_BYTES = 18  # token_urlsafe: 24 characters, 144 random bits
# The standard port of each service (IANA; RFC 8314 for 465, 993, 995; RFC 5804 for 4190).
PRODUCTION_PORTS = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "imap": 143,
    "imaps": 993,
    "pop3": 110,
    "pop3s": 995,
    "managesieve": 4190,
    "http": 80,
    "https": 443,
}
# Every IPv4 address, and every IPv6 address on a socket of its own ([::] takes IPv6 only, so
# IPv4 clients are never seen as ::ffff: addresses by SPF, DNSBLs and the per-IP limits).
ALL_IPV4 = "0.0.0.0"
ALL_IPV6 = "[::]"
UNIT_NAME = "postroom.service"
SERVICE_USER = "postroom"


def _config_path(ctx: click.Context, given: Path | None) -> Path:
    """quickstart's own --config, else postroom's --config or $POSTROOM_CONFIG when given,
    else /etc/postroom/postroom.toml."""
    if given is not None:
        return given
    parent = ctx.parent
    source = parent.get_parameter_source("config_path") if parent is not None else None
    if source is click.core.ParameterSource.COMMANDLINE or "POSTROOM_CONFIG" in os.environ:
        path: Path = ctx.obj
        return path
    return Path(PRODUCTION_CONFIG)


def _write_new(path: Path, text: str) -> None:
    """Create `path` (0600: it may come to hold the [relay] password); never replace one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(
            f"{path} already exists; quickstart never overwrites a config (move it away first)"
        ) from None
    except OSError as error:
        raise CliError(f"{path}: cannot write it: {error.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(fd, 0o600)
        handle.write(text)


@click.command()
@click.argument("admin")
@click.option("--hostname", default=None, help="This server's public name.  [default: mx.DOMAIN]")
@click.option(
    "--data-dir",
    default=PRODUCTION_DATA_DIR,
    show_default=True,
    help="Where mail, the queue and keys are kept.",
)
@click.option(
    "--config",
    "config_given",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"The config file to write.  [default: {PRODUCTION_CONFIG}]",
)
@click.pass_context
def quickstart(
    ctx: click.Context, admin: str, hostname: str | None, data_dir: str, config_given: Path | None
) -> None:
    """Set up a production server for ADMIN's domain: config, the admin's account, DKIM keys;
    then print the DNS records to publish and the next steps."""
    check_address(admin)
    domain = admin.rpartition("@")[2].lower().removesuffix(".")
    try:
        domain = check_hostname(domain)
        host = check_hostname(hostname if hostname is not None else f"mx.{domain}")
    except Invalid as error:
        raise CliError(f"{error.problem}; {error.fix}") from None
    if "." not in domain:
        raise CliError(f"{admin}: {domain} is not a public domain name (example.com)")
    path = _config_path(ctx, config_given)
    if path.exists():
        raise CliError(
            f"{path} already exists; quickstart never overwrites a config (move it away first)"
        )
    data = Path(data_dir).expanduser().absolute()
    ipv6 = has_ipv6()
    hosts = (ALL_IPV4, ALL_IPV6) if ipv6 else (ALL_IPV4,)
    listen = {name: [f"{h}:{port}" for h in hosts] for name, port in PRODUCTION_PORTS.items()}
    text = render_default_config(
        host, [domain], listen=listen, data_dir=str(data), acme_email=admin
    )
    _write_new(path, text)
    try:
        try:
            config = load_config(path)
        except ConfigError as error:
            raise CliError(str(error)) from None
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        password_hash, scram = hash_password(password)
        with open_store(config, accounts=True) as store:
            with store.transaction() as tx:
                if tx.accounts.get_user(admin) is not None:
                    raise CliError(
                        f"{admin} already exists in {config.data_dir}; give another --data-dir "
                        "or use the existing install"
                    )
                tx.accounts.add_user(admin, password_hash, scram, admin=True)  # web admin
            now = time.time()
            ensure_local_keys(store, [domain], now)
            lines = records(config, store, domain, now)
    except BaseException:
        path.unlink(missing_ok=True)  # no config of a failed quickstart refuses the next one
        raise
    shown = admin.lower()
    click.echo(f"wrote {path}")
    if not ipv6:
        click.echo("this machine takes no IPv6 sockets: the services listen on IPv4 only")
    click.echo(f"created {domain} with the admin {shown} (also of the web admin, /admin/)")
    click.echo("")
    click.echo(f"  login:    {shown}")
    click.echo(f"  password: {password}")
    click.echo("")
    click.echo("This password is shown only now; `postroom user passwd` changes it.")
    click.echo("")
    click.echo(f"Publish these records in the DNS zone of {domain}:")
    click.echo("")
    for line in lines:
        click.echo(line)
    config_option = f"--config {path.absolute()}"
    click.echo("")
    click.echo("Next steps:")
    click.echo(f"  1. postroom {config_option} service install   # a systemd unit, as root")
    click.echo("  2. systemctl daemon-reload && systemctl enable --now postroom")
    click.echo(f"  3. postroom {config_option} doctor {domain}   # once the records are live")


def has_ipv6() -> bool:
    """Whether this kernel takes IPv6 sockets. Then quickstart listens on [::] as well, whether
    or not the host has a public IPv6 address yet: the socket costs nothing without one, and an
    AAAA record added later works without a config change (`doctor` checks that both agree).
    Only a kernel without IPv6 (ipv6.disable=1) would refuse the socket and stop `serve`."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::", 0))
    except OSError:
        return False
    return True


@click.group()
def service() -> None:
    """Run postroom as a system service."""


def executable() -> Path:
    """The absolute path of the running `postroom` (what ExecStart runs)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "postroom" and argv0.exists():
        return argv0.absolute()
    found = shutil.which("postroom")
    if found is not None:
        return Path(found).absolute()
    beside = Path(sys.executable).with_name("postroom")
    if beside.exists():
        return beside
    raise CliError("cannot find the postroom program; install it (pip install postroom) first")


def _in_home(path: Path) -> bool:
    return any(path == Path(h) or Path(h) in path.parents for h in ("/home", "/root", "/run/user"))


def render_unit(program: Path, config_path: Path, data_dir: Path, user: str) -> str:
    """The systemd unit (systemd.service(5), systemd.exec(5))."""
    # ProtectHome=yes hides /home and /root; a program installed there must stay readable.
    home = "read-only" if _in_home(program) or _in_home(config_path) else "yes"
    return f"""\
# Written by `postroom service install`.
[Unit]
Description=postroom mail server
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
Group={user}
ExecStart={program} --config {config_path} serve
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
UMask=0077
LimitNOFILE=65536
# Ports below 1024 without root, and nothing else.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
# The file system is read-only but for the data directory.
ProtectSystem=strict
ReadWritePaths={data_dir}
ProtectHome={home}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service

[Install]
WantedBy=multi-user.target
"""


def _ensure_user(name: str, data_dir: Path) -> Account:
    """The system user `name`, made with useradd when missing (no login, no home made)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = None
    if entry is None:
        command = [
            *("useradd", "--system", "--user-group", "--no-create-home"),
            *("--home-dir", str(data_dir), "--shell", "/usr/sbin/nologin", name),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as error:
            raise CliError(f"cannot run useradd: {error.strerror}; create user {name}") from None
        if result.returncode != 0:
            why = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
            raise CliError(f"useradd {name} failed: {why}")
        click.echo(f"created the system user {name}")
        entry = pwd.getpwnam(name)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


@service.command("install")
@click.option("--user", default=SERVICE_USER, show_default=True, help="The user it runs as.")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/systemd/system"),
    show_default=True,
    help="Where the unit file goes.",
)
@click.option("--dry-run", is_flag=True, help="Print the unit; change nothing.")
@click.pass_context
def service_install(ctx: click.Context, user: str, unit_dir: Path, dry_run: bool) -> None:
    """Write a hardened systemd unit running `postroom serve` as its own user."""
    from postroom.config_server import user_name

    config = load(ctx)
    try:
        user_name(user)
    except Invalid as error:
        raise CliError(f"--user {user!r}: {error.problem}") from None
    unit = render_unit(executable(), config.path, config.data_dir, user)
    if dry_run:
        click.echo(unit, nl=False)
        return
    if os.geteuid() != 0:
        raise CliError("service install makes a user and writes the unit: run it as root")
    who = _ensure_user(user, config.data_dir)
    try:
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        give_tree(config.data_dir, who)
        # The service reads its config (SIGHUP reads it again): root's, readable by its group.
        os.chown(config.path, 0, who.gid)
        os.chmod(config.path, 0o640)
        unit_dir.mkdir(parents=True, exist_ok=True)
        target = unit_dir / UNIT_NAME
        temporary = target.with_name(UNIT_NAME + ".new")
        temporary.write_text(unit, encoding="utf-8")
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except OSError as error:
        raise CliError(f"{error.filename}: {error.strerror}") from None
    click.echo(f"wrote {target}")
    click.echo(f"{config.data_dir} belongs to {user}; {config.path} is readable by its group")
    click.echo("Next: systemctl daemon-reload && systemctl enable --now postroom")
    click.echo(f"Then: postroom --config {config.path} doctor")
