"""Plans: what installing or removing a service does, as data, then done or shown.

A plan is a list of steps (write a file, make a directory, remove a file, run a command)
plus notes and errors. ``--dry-run`` prints :func:`describe`; a real run calls
:func:`execute`. Both walk the same list, so a dry run shows exactly what a real run does.
"""

from __future__ import annotations

import grp
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent_cli_proxy.setup_config import write_file_atomically


@dataclass(frozen=True, slots=True)
class WriteFile:
    path: str
    text: str
    mode: int
    group: str | None = None  # group owner, when it exists (root installs)
    keep_existing: bool = False  # an existing file is left as it is


@dataclass(frozen=True, slots=True)
class MakeDir:
    path: str
    mode: int
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Run:
    argv: tuple[str, ...]
    may_fail: bool = False  # e.g. stopping a service that is not running


@dataclass(frozen=True, slots=True)
class Remove:
    path: str


Step = WriteFile | MakeDir | Run | Remove


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # printed; nothing stops
    errors: list[str] = field(default_factory=list)  # a real run refuses to start


class ServiceError(Exception):
    """Installing or controlling the service failed; the message says how (exit 1)."""


def required_programs(plan: Plan) -> list[str]:
    """The commands a plan runs, each once, in order."""
    return list(dict.fromkeys(step.argv[0] for step in plan.steps if isinstance(step, Run)))


# --- Carrying a plan out, or showing it -----------------------------------------------------


def describe(plan: Plan) -> list[str]:
    """Every file a plan would write (with its text) and every command it would run."""
    out: list[str] = []
    for step in plan.steps:
        if isinstance(step, WriteFile):
            owner = f", group {step.group}" if step.group else ""
            keep = ", unless it exists" if step.keep_existing else ""
            out.append(f"would write {step.path} (mode {step.mode:04o}{owner}{keep}):")
            out += ["    " + line if line else "" for line in step.text.splitlines()]
        elif isinstance(step, MakeDir):
            owner = f", group {step.group}" if step.group else ""
            out.append(f"would create directory {step.path} (mode {step.mode:04o}{owner})")
        elif isinstance(step, Remove):
            out.append(f"would remove {step.path}")
        else:
            out.append("would run: " + " ".join(_shell_word(w) for w in step.argv))
    return out


def _shell_word(word: str) -> str:
    return shlex.quote(word)


def execute(plan: Plan, echo: Callable[[str], None]) -> None:
    """Carry out each step in order; :class:`ServiceError` at the first that fails."""
    for step in plan.steps:
        if isinstance(step, WriteFile):
            if step.keep_existing and os.path.exists(step.path):
                echo(f"kept {step.path}")
                continue
            os.makedirs(os.path.dirname(step.path), exist_ok=True)
            try:
                write_file_atomically(step.path, step.text, step.mode, _gid(step.group))
            except OSError as exc:
                raise ServiceError(f"cannot write {step.path}: {exc.strerror or exc}") from None
            echo(f"wrote {step.path}")
        elif isinstance(step, MakeDir):
            _make_dir(step)
        elif isinstance(step, Remove):
            try:
                os.unlink(step.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise ServiceError(f"cannot remove {step.path}: {exc.strerror or exc}") from None
            echo(f"removed {step.path}")
        else:
            echo("running: " + " ".join(_shell_word(w) for w in step.argv))
            code = run_command(step.argv)
            if code != 0 and not step.may_fail:
                raise ServiceError(f"{' '.join(step.argv)} failed (exit status {code})")


def _make_dir(step: MakeDir) -> None:
    try:
        os.makedirs(step.path, mode=step.mode, exist_ok=True)
        os.chmod(step.path, step.mode)  # makedirs' mode is filtered by the umask
        gid = _gid(step.group)
        if gid is not None:
            os.chown(step.path, -1, gid)
    except OSError as exc:
        raise ServiceError(f"cannot create {step.path}: {exc.strerror or exc}") from None


def _gid(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None  # not made yet (a dry run); the file then stays root's own


def missing_program(argv0: str) -> str | None:
    """A message when *argv0* is not installed, else None."""
    if shutil.which(argv0) is not None:
        return None
    if argv0 in ("systemctl", "journalctl", "systemd-sysusers"):
        return (f"{argv0} not found: this machine does not use systemd. Run "
                "'agent-cli-proxy serve' under the service manager it has")
    return f"{argv0} not found"


def run_command(argv: Sequence[str]) -> int:
    """Run *argv* with this process's terminal (status and logs are for the user to read)."""
    try:
        # argv is built from constants here (systemctl, journalctl, launchctl …), never
        # from a shell string.
        return subprocess.run(list(argv), check=False).returncode  # noqa: S603
    except OSError as exc:
        raise ServiceError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
