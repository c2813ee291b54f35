"""`postroom serve` started as root: once its ports are open, it becomes `[server] user`.

As Postfix's and Dovecot's masters do: root is needed only to bind ports below 1024. The data
directory is handed to the user first (owner changed through the whole tree, the directory
itself 0700), then the supplementary groups are dropped, the group and the user set (group
first: a non-root user cannot change its group), and the change is checked: every user and
group ID is the user's and becoming root again fails.
"""

from __future__ import annotations

import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from postroom.storage import private

log = logging.getLogger("postroom")


class PrivilegeError(Exception):
    """The server cannot become the configured user; the message names the fix."""


@dataclass(frozen=True)
class Account:
    """The user to become, as the system knows it."""

    name: str
    uid: int
    gid: int


def account(name: str, config_path: Path) -> Account:
    """The system user `name`; PrivilegeError when there is none."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(
            f"[server] user {name!r} does not exist; create it with "
            f"`useradd --system {name}` or change [server] user in {config_path}"
        ) from None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def give_tree(root: Path, who: Account) -> None:
    """Make `who` the owner of `root` and everything below it (symbolic links are not
    followed); `root` itself becomes 0700."""
    os.chown(root, who.uid, who.gid, follow_symlinks=False)
    os.chmod(root, private.DIR_MODE)
    for directory, subdirectories, files in os.walk(root):
        for name in (*subdirectories, *files):
            os.chown(os.path.join(directory, name), who.uid, who.gid, follow_symlinks=False)


def become(who: Account) -> None:
    """Drop root for `who` for good; PrivilegeError when the change did not hold."""
    os.setgroups([])
    os.setgid(who.gid)  # before setuid: once not root, the group cannot change
    os.setuid(who.uid)  # as root this sets the real, effective and saved IDs
    if os.getresuid() != (who.uid,) * 3 or os.getresgid() != (who.gid,) * 3 or os.getgroups():
        raise PrivilegeError(f"the change to user {who.name} did not hold; not serving")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PrivilegeError(f"user {who.name} could become root again; not serving")


def planned(user: str | None, config_path: Path) -> Account | None:
    """The user to become after binding (None: stay as started), checked before anything
    starts. Started as another user than root, that user must be the one configured."""
    if user is None:
        return None
    who = account(user, config_path)
    if os.geteuid() == 0:
        return who
    if os.geteuid() != who.uid:
        current = pwd.getpwuid(os.geteuid()).pw_name
        raise PrivilegeError(
            f"cannot become user {user}: serve runs as {current}, not root; start it as "
            f"root or as {user}, or remove [server] user from {config_path}"
        )
    return None


def drop_privileges(who: Account, data_dir: Path) -> None:
    """After binding: hand data_dir to `who`, then become it."""
    give_tree(data_dir, who)
    become(who)
    log.info("running as user=%s uid=%d gid=%d", who.name, who.uid, who.gid)
