"""The proxy as a macOS launchd agent: its property list and the launchctl commands.

A per-user agent in ``~/Library/LaunchAgents`` (there is no system variant: the system
service is systemd's). ``start`` loads it (``bootstrap``; it runs at load) and ``stop``
unloads it (``bootout``), so launchd's ``KeepAlive`` never fights a stop; it restarts the
proxy only when it exits with a failure.
"""

from __future__ import annotations

import os
import plistlib
from collections.abc import Sequence

from agent_cli_proxy.service_plan import Plan, Remove, Run, WriteFile

LABEL = "ai.agent-cli-proxy"  # the original's label, so its agent is replaced, not doubled
LOG_NAME = "agent-cli-proxy.log"


def plist_path(home: str) -> str:
    return os.path.join(home, "Library", "LaunchAgents", LABEL + ".plist")


def log_path(home: str) -> str:
    return os.path.join(home, "Library", "Logs", LOG_NAME)


def render_plist(command: Sequence[str], env_file: str, home: str) -> str:
    """The agent's property list: run ``serve --env-file`` at load, restart on failure."""
    document = {
        "Label": LABEL,
        "ProgramArguments": [*command, "serve", "--env-file", env_file],
        "RunAtLoad": True,
        # Exit 0 is a requested stop; 78 (bad configuration) is throttled by launchd.
        "KeepAlive": {"SuccessfulExit": False},
        # SIGTERM drains open streams for SHUTDOWN_DRAIN_MS (10 s) before the exit.
        "ExitTimeOut": 30,
        "ProcessType": "Background",
        "StandardOutPath": log_path(home),
        "StandardErrorPath": log_path(home),
    }
    return plistlib.dumps(document, sort_keys=False).decode("utf-8")


def _domain() -> str:
    return f"gui/{os.getuid()}"


def plan_install(*, command: Sequence[str], env_file: str, home: str, now: bool) -> Plan:
    plan = Plan()
    env = os.path.abspath(env_file)
    if not os.path.exists(env):
        plan.errors.append(f"{env} does not exist; write it first with: agent-cli-proxy init")
    plan.steps.append(WriteFile(plist_path(home), render_plist(command, env, home), 0o644))
    if now:
        plan.steps.append(Run(("launchctl", "bootstrap", _domain(), plist_path(home))))
    else:
        plan.notes.append("start it with: agent-cli-proxy service start")
    return plan


def plan_uninstall(*, home: str) -> Plan:
    plan = Plan()
    plan.steps.append(Run(("launchctl", "bootout", f"{_domain()}/{LABEL}"), may_fail=True))
    if os.path.exists(plist_path(home)):
        plan.steps.append(Remove(plist_path(home)))
    plan.notes.append("kept the env file and the database")
    return plan


def control_argv(action: str, *, home: str, follow: bool = False,
                 lines: int | None = None) -> tuple[str, ...]:
    target = f"{_domain()}/{LABEL}"
    if action == "start":
        return ("launchctl", "bootstrap", _domain(), plist_path(home))
    if action == "stop":
        return ("launchctl", "bootout", target)
    if action == "restart":
        return ("launchctl", "kickstart", "-k", target)
    if action == "reload":
        return ("launchctl", "kill", "SIGHUP", target)
    if action == "status":
        return ("launchctl", "print", target)
    argv = ["tail", "-n", str(lines if lines is not None else 100)]
    return (*argv, *(["-F"] if follow else []), log_path(home))
