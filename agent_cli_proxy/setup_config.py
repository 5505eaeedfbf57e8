"""Writing an env file: what ``init`` (and ``service install --system``) put on disk.

This module owns composing the file's text (a fresh file, or an existing one with some
values changed in place, its comments and other lines kept), checking the result with the
real configuration loader before it replaces anything, and writing it atomically with
private permissions: the file usually holds secrets. It never prints and never prompts;
``cli.init`` asks the questions.
"""

from __future__ import annotations

import contextlib
import grp
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from agent_cli_proxy import config
from agent_cli_proxy.config import ConfigIssue, inspect_settings, make_private_dirs
from agent_cli_proxy.envfile import assigned_name, format_assignment

# The system user and group of the service (contrib/systemd/agent-cli-proxy.sysusers).
SERVICE_GROUP = config.APP
# Variables whose location follows the user's home, passed through when a written file is
# checked: the check must not read any other configuration of the calling shell.
_PATH_VARIABLES = ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")

HEADER = """\
# agent-cli-proxy settings, written by `agent-cli-proxy init`.
# Every variable is described in agent-cli-proxy.env(5); check with `agent-cli-proxy doctor`.
"""


class SetupError(Exception):
    """The env file cannot be written as asked; the message says why (exit status 1)."""


@dataclass(frozen=True, slots=True)
class Written:
    path: str
    mode: int
    changed: tuple[str, ...]  # variables set by this run, in file order
    warnings: tuple[str, ...]  # what the configuration loader noticed in the result


def generate_secret() -> str:
    """A new random token (ADMIN_API_KEY): 32 hex characters, as the original makes."""
    return secrets.token_hex(16)


def new_text(values: Mapping[str, str]) -> str:
    """A fresh env file setting *values*, in the order given."""
    return HEADER + "".join(format_assignment(name, value) + "\n"
                            for name, value in values.items())


def merged_text(existing: str, values: Mapping[str, str]) -> str:
    """*existing* with *values* applied: an assigned name keeps its line (its last one, the
    one that counts; earlier duplicates are dropped), new names are appended, and every
    other line, comments included, stays as it was."""
    lines = existing.removeprefix("\ufeff").splitlines()
    last: dict[str, int] = {}
    for index, line in enumerate(lines):
        name = assigned_name(line)
        if name is not None and name in values:
            last[name] = index
    out: list[str] = []
    for index, line in enumerate(lines):
        name = assigned_name(line)
        if name is not None and name in values:
            if last[name] == index:
                out.append(format_assignment(name, values[name]))
            continue
        out.append(line)
    out += [format_assignment(name, value) for name, value in values.items()
            if name not in last]
    return "\n".join(out) + "\n"


def check_text(path: str, text: str, environ: Mapping[str, str] | None = None
               ) -> tuple[list[ConfigIssue], list[str]]:
    """What the configuration loader says about *text* as the env file at *path*: (issues,
    warnings). Only the home-directory variables of *environ* are used, so the answer is
    about the file, not about the calling shell's settings."""
    process_env = os.environ if environ is None else environ
    paths_only = {k: process_env[k] for k in _PATH_VARIABLES if k in process_env}
    # Checked in a private temporary directory: nothing appears at *path* (nor its
    # directory) unless the text is good.
    with tempfile.TemporaryDirectory(prefix="agent-cli-proxy-init-") as scratch:
        probe = os.path.join(scratch, "env")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        settings, issues = inspect_settings(paths_only, env_file=probe)
    # The probe's name stands in for the real one in what the loader says.
    issues = [ConfigIssue(i.name.replace(probe, path), i.message) for i in issues]
    return issues, [w.replace(probe, path) for w in settings.warnings]


def write_env_file(path: str, text: str, *, replace: bool, group: str | None = None
                   ) -> int:
    """Write *text* to *path* atomically (a temporary file renamed over it) and return the
    mode it got. A new file is 0600, or 0640 owned by *group* when that group is given and
    exists; a replaced file keeps its group and group-read bit (a service may rely on
    them) but never stays readable by others. Without *replace*, an existing file is left
    alone and :class:`SetupError` raised."""
    path = os.path.abspath(path)
    try:
        before = os.stat(path)
    except FileNotFoundError:
        before = None
    if before is not None and not replace:
        raise SetupError(f"{path} already exists; use --force to overwrite it, or --merge "
                         "to keep its values and change only those given")
    if before is not None and not stat.S_ISREG(before.st_mode):
        raise SetupError(f"{path} exists and is not a regular file")
    gid: int | None = None
    mode = 0o600
    if before is not None:
        gid, mode = before.st_gid, 0o600 | (before.st_mode & 0o040)
    elif group is not None:
        with contextlib.suppress(KeyError):
            gid, mode = grp.getgrnam(group).gr_gid, 0o640
    make_private_dirs(os.path.dirname(path))
    write_file_atomically(path, text, mode, gid)
    return mode


def write_file_atomically(path: str, text: str, mode: int, gid: int | None = None) -> None:
    """Put *text* at *path* through a temporary file renamed over it, with *mode* (and group
    *gid*, where allowed) set before any content is written; the directory must exist."""
    temp = _temp_path(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if gid is not None and gid != os.getegid():
                # Only root or a member may hand the file to the group; else it stays ours.
                with contextlib.suppress(PermissionError):
                    os.fchown(handle.fileno(), -1, gid)
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_dir(os.path.dirname(path))


def _temp_path(path: str) -> str:
    # Beside the target, so the rename stays on one filesystem and is atomic.
    return f"{path}.tmp.{os.getpid()}.{secrets.token_hex(4)}"


def _fsync_dir(directory: str) -> None:
    # The rename is durable once the directory is synced; some filesystems refuse.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def group_for(path: str) -> str | None:
    """The group a new env file at *path* should belong to: the service's for the system
    service's file (the service reads it as that group), else none (private to us)."""
    return SERVICE_GROUP if os.path.abspath(path) == config.SYSTEM_ENV_FILE else None


def save(path: str, values: Mapping[str, str], *, existing: str | None, merge: bool,
         environ: Mapping[str, str] | None = None) -> Written:
    """Compose (fresh, or *existing* merged when *merge*), check, and write the env file.
    Raises :class:`config.ConfigError` when the result would not load, before anything is
    written, and :class:`SetupError` when it cannot be written."""
    text = merged_text(existing, values) if merge and existing is not None else new_text(values)
    issues, warnings = check_text(path, text, environ)
    if issues:
        raise config.ConfigError(issues)
    try:
        mode = write_env_file(path, text, replace=existing is not None, group=group_for(path))
    except OSError as exc:
        raise SetupError(f"cannot write {path}: {exc.strerror or exc}") from None
    return Written(os.path.abspath(path), mode, tuple(values), tuple(warnings))
