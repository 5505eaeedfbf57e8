"""Running the proxy as a service: the unit texts, and what installing one does.

This module owns the one renderer of the systemd units (system and user), the sysusers.d
and tmpfiles.d entries: ``contrib/systemd/`` holds their output for the packaged path
``/usr/bin/agent-cli-proxy`` and a test keeps the two equal. ``service install`` renders
the same text with the path of the running program.

Installing, removing and controlling are *plans*: a list of steps (write a file, make a
directory, run a command) built first, then either printed (``--dry-run``) or carried
out, so a dry run shows exactly what a real run would do. macOS's launchd is handled in
:mod:`agent_cli_proxy.service_launchd`.

The system service runs as the dedicated user ``agent-cli-proxy``, made by
systemd-sysusers, not as a ``DynamicUser=``: its env file in ``/etc`` is readable by the
service's group (0640), which needs a group that exists while the service is stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence

from agent_cli_proxy import config
from agent_cli_proxy.env_template import render_env_example
from agent_cli_proxy.service_plan import MakeDir, Plan, Remove, Run, WriteFile

UNIT = "agent-cli-proxy.service"
SERVICE_USER = config.APP
PACKAGED_EXECUTABLE = "/usr/bin/agent-cli-proxy"
SYSTEM_UNIT_DIR = "/etc/systemd/system"
SYSUSERS_FILE = "/etc/sysusers.d/agent-cli-proxy.conf"
PACKAGED_SYSUSERS_FILE = "/usr/lib/sysusers.d/agent-cli-proxy.conf"
CONFIG_DIR = "/etc/agent-cli-proxy"
# The packaged user unit finds the user's env file through systemd's %E (XDG_CONFIG_HOME).
USER_ENV_SPECIFIER = "%E/agent-cli-proxy/.env"

_SYSTEM_HEADER = """\
# agent-cli-proxy system service. Packages install it to /usr/lib/systemd/system/;
# `agent-cli-proxy service install --system` writes it to /etc/systemd/system/.
# Settings: /etc/agent-cli-proxy/agent-cli-proxy.env (see agent-cli-proxy.env(5)).
# Secrets may instead be given as credentials, e.g. in a drop-in:
#   LoadCredential=CLI_PROXY_API_KEY:/etc/agent-cli-proxy/cli-proxy-api-key
"""
_USER_HEADER = """\
# agent-cli-proxy user service: a user's own proxy. Packages install it to
# /usr/lib/systemd/user/; `agent-cli-proxy service install` writes it to
# ~/.config/systemd/user/. Settings: ~/.config/agent-cli-proxy/.env (agent-cli-proxy init).
# To keep it running while the user is logged out: loginctl enable-linger USER
"""
_UNIT_SECTION = """\
[Unit]
Description=agent-cli-proxy: usage and cost proxy for AI coding tools
Documentation=man:agent-cli-proxy(1) man:agent-cli-proxy.env(5)
"""
_SERVICE_COMMON = """\
# 78 is EX_CONFIG: the configuration is invalid, restarting will not help.
RestartPreventExitStatus=78
Restart=on-failure
RestartSec=5
# Long streams are normal: SIGTERM drains them for SHUTDOWN_DRAIN_MS (10 s) first.
TimeoutStopSec=30
KillMode=mixed
"""
_SYSTEM_DIRECTORIES = """\
# The database lives here (DB_PATH defaults to /var/lib/agent-cli-proxy/ when the /etc
# env file is the one in use), the price cache in the cache directory (PRICING_CACHE_PATH).
StateDirectory=agent-cli-proxy
StateDirectoryMode=0700
CacheDirectory=agent-cli-proxy
CacheDirectoryMode=0700
# Mode as in tmpfiles.d: root and the service's group may read the env file's directory.
ConfigurationDirectory=agent-cli-proxy
ConfigurationDirectoryMode=0750
"""
_SYSTEM_HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
CapabilityBoundingSet=
UMask=0077
"""
# A user manager cannot set up namespaces everywhere (they need unprivileged user
# namespaces), so the user unit keeps only what works for any user.
_USER_HARDENING = """\
NoNewPrivileges=yes
UMask=0077
"""


def render_unit(*, system: bool, exec_start: str) -> str:
    """The unit file: the system service (``system``) or a user's; *exec_start* is the
    ``ExecStart=`` value, already in unit syntax (see :func:`exec_line`)."""
    parts = [_SYSTEM_HEADER if system else _USER_HEADER, _UNIT_SECTION]
    if system:
        parts.append("After=network-online.target\nWants=network-online.target\n")
    parts.append("\n[Service]\n"
                 "# The proxy tells systemd when it accepts connections (READY=1) and when "
                 "it stops.\nType=notify\nNotifyAccess=main\n")
    if system:
        parts.append(f"User={SERVICE_USER}\nGroup={SERVICE_USER}\n")
    parts.append(f"ExecStart={exec_start}\n")
    # SIGHUP re-reads the custom providers (systemctl reload); nothing else is reloaded.
    parts.append("ExecReload=kill -HUP $MAINPID\n")
    if system:
        parts.append(_SYSTEM_DIRECTORIES)
    parts += [_SERVICE_COMMON, "\n", _SYSTEM_HARDENING if system else _USER_HARDENING]
    parts.append("\n[Install]\nWantedBy=" + ("multi-user.target" if system
                                             else "default.target") + "\n")
    return "".join(parts)


def render_sysusers() -> str:
    return (f"# Packages install it as {PACKAGED_SYSUSERS_FILE};\n"
            f"# `agent-cli-proxy service install --system` as {SYSUSERS_FILE}.\n"
            f'u {SERVICE_USER} - "agent-cli-proxy daemon" {config.SYSTEM_STATE_DIR}\n')


def render_tmpfiles() -> str:
    # The env file's directory exists (with its group) before the first start, so it can
    # be edited then; the unit's ConfigurationDirectory= keeps it afterwards.
    return ("# Install as /usr/lib/tmpfiles.d/agent-cli-proxy.conf\n"
            f"d {CONFIG_DIR} 0750 root {SERVICE_USER} -\n")


_PLAIN = re.compile(r"[A-Za-z0-9_./:@+,=-]+")


def unit_quote(word: str) -> str:
    """*word* as one word of an ``ExecStart=`` line: specifiers (``%``) and variable
    expansion (``$``) disarmed, quoted when it holds anything else special."""
    if any(ord(c) < 32 or ord(c) == 127 for c in word):
        raise ValueError(f"{word!r} has a control character; a unit cannot hold it")
    escaped = word.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_line(command: Sequence[str], env_file: str) -> str:
    """``ExecStart=`` value running *command* ``serve --env-file`` *env_file*."""
    return " ".join(unit_quote(w) for w in [*command, "serve", "--env-file", env_file])


def packaged_files() -> dict[str, str]:
    """The contrib files, by path in the repository: what packages install."""
    executable = PACKAGED_EXECUTABLE
    return {
        "contrib/systemd/agent-cli-proxy.service": render_unit(
            system=True, exec_start=exec_line([executable], config.SYSTEM_ENV_FILE)),
        # The specifier is written as is: systemd expands it for each user.
        "contrib/systemd/agent-cli-proxy-user.service": render_unit(
            system=False, exec_start=f"{executable} serve --env-file {USER_ENV_SPECIFIER}"),
        "contrib/systemd/agent-cli-proxy.sysusers": render_sysusers(),
        "contrib/systemd/agent-cli-proxy.tmpfiles": render_tmpfiles(),
        "contrib/agent-cli-proxy.env.example": render_env_example(),
    }


def current_command(argv0: str | None = None) -> list[str]:
    """How to run this program again: the ``agent-cli-proxy`` script being run, by its
    absolute path (not resolved: a packaged symlink stays valid across upgrades), else
    this interpreter with ``-m agent_cli_proxy``."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if os.path.basename(argv0).startswith("agent-cli-proxy"):
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found and os.path.isfile(found):
            return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "agent_cli_proxy"]


# --- Plans ----------------------------------------------------------------------------------


def systemctl(system: bool, *args: str) -> tuple[str, ...]:
    return ("systemctl", *(() if system else ("--user",)), *args)


def unit_path(system: bool, environ: dict[str, str] | None = None) -> str | None:
    """Where ``service install`` puts the unit; None for a user without a home."""
    if system:
        return os.path.join(SYSTEM_UNIT_DIR, UNIT)
    user_env = config.user_env_file(environ)  # $XDG_CONFIG_HOME/agent-cli-proxy/.env
    if user_env is None:
        return None
    config_home = os.path.dirname(os.path.dirname(user_env))
    return os.path.join(config_home, "systemd", "user", UNIT)


def plan_install(*, system: bool, command: Sequence[str], env_file: str | None, now: bool,
                 euid: int, environ: dict[str, str] | None = None) -> Plan:
    """What ``service install`` does on a systemd machine."""
    plan = Plan()
    if system:
        _plan_system_install(plan, command, euid)
    else:
        _plan_user_install(plan, command, env_file, environ)
    plan.steps.append(Run(systemctl(system, "daemon-reload")))
    if now:
        plan.steps.append(Run(systemctl(system, "enable", "--now", UNIT)))
    else:
        plan.notes.append("start it with: agent-cli-proxy service start"
                          + (" --system" if system else "") + " (and "
                          + " ".join(systemctl(system, "enable", UNIT))
                          + " to start it at boot" + ("" if system else " or login") + ")")
    return plan


def _plan_user_install(plan: Plan, command: Sequence[str], env_file: str | None,
                       environ: dict[str, str] | None) -> None:
    path = unit_path(False, environ)
    env = env_file or config.user_env_file(environ)
    if path is None or env is None:
        plan.errors.append("no home directory for a user service; give --env-file and set "
                           "HOME, or use --system")
        return
    env = os.path.abspath(env)
    if not os.path.exists(env):
        plan.errors.append(f"{env} does not exist; write it first with: agent-cli-proxy init"
                           + ("" if env_file is None else f" --env-file {env}"))
    plan.steps.append(WriteFile(path, render_unit(system=False,
                                                  exec_start=exec_line(command, env)), 0o644))


# What ProtectHome=yes and PrivateTmp=yes hide from the system service: a program there
# cannot be its ExecStart. (Paths compared, never written: not a temporary-file use.)
_HIDDEN_FROM_SERVICE = ("/home/", "/root/", "/run/user/", "/tmp/", "/var/tmp/")  # noqa: S108


def _plan_system_install(plan: Plan, command: Sequence[str], euid: int) -> None:
    if euid != 0:
        plan.errors.append("--system needs root: run it with sudo, or install a user "
                           "service without --system")
    hidden = [p for p in _HIDDEN_FROM_SERVICE if os.path.abspath(command[0]).startswith(p)]
    if hidden:
        plan.notes.append(f"warning: {command[0]} is under {hidden[0]}, which the service's "
                          "ProtectHome=/PrivateTmp= hide from it; install agent-cli-proxy "
                          "system-wide (a package, or pip as root into /usr/local or /opt)")
    if os.path.exists(PACKAGED_SYSUSERS_FILE):
        sysusers = PACKAGED_SYSUSERS_FILE
    else:
        sysusers = SYSUSERS_FILE
        plan.steps.append(WriteFile(SYSUSERS_FILE, render_sysusers(), 0o644))
    plan.steps.append(Run(("systemd-sysusers", sysusers)))
    plan.steps.append(MakeDir(CONFIG_DIR, 0o750, SERVICE_USER))
    env = config.SYSTEM_ENV_FILE
    if os.path.exists(env):
        plan.notes.append(f"keeping the existing {env}")
    else:
        plan.steps.append(WriteFile(env, render_env_example(), 0o640, SERVICE_USER,
                                    keep_existing=True))
        plan.notes.append(f"edit {env} (set CLI_PROXY_API_URL at least) before starting")
    plan.steps.append(WriteFile(os.path.join(SYSTEM_UNIT_DIR, UNIT), render_unit(
        system=True, exec_start=exec_line(command, env)), 0o644))


def plan_uninstall(*, system: bool, euid: int, environ: dict[str, str] | None = None) -> Plan:
    """What ``service uninstall`` does: stop and disable, remove the unit, reload. The
    configuration, the database and the system user stay."""
    plan = Plan()
    if system and euid != 0:
        plan.errors.append("--system needs root: run it with sudo")
    path = unit_path(system, environ)
    if path is None:
        plan.errors.append("no home directory, so no user service to remove")
        return plan
    plan.steps.append(Run(systemctl(system, "disable", "--now", UNIT), may_fail=True))
    if os.path.exists(path):
        plan.steps.append(Remove(path))
    else:
        plan.notes.append(f"{path} does not exist")
    plan.steps.append(Run(systemctl(system, "daemon-reload")))
    kept = (f"{config.SYSTEM_ENV_FILE}, {config.SYSTEM_STATE_DIR} and the user "
            f"{SERVICE_USER}" if system else "the env file and the database")
    plan.notes.append(f"kept {kept}")
    return plan


def control_argv(action: str, *, system: bool, follow: bool = False,
                 lines: int | None = None) -> tuple[str, ...]:
    """The systemctl/journalctl command for start, stop, restart, reload, status or
    logs."""
    if action == "status":
        return systemctl(system, "--no-pager", "status", UNIT)
    if action == "logs":
        argv = ["journalctl", *(() if system else ("--user",)), "-u", UNIT]
        if lines is not None:
            argv += ["-n", str(lines)]
        return (*argv, *(("-f",) if follow else ("--no-pager",)))
    return systemctl(system, action, UNIT)
