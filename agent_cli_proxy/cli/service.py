"""``agent-cli-proxy service``: install, remove and control the proxy as a service.

systemd (a user unit, or with ``--system`` the system service) on Linux, a launchd agent on
macOS. The plans and unit texts are :mod:`agent_cli_proxy.service`'s; this module picks the
platform, prints, and maps failures to exit status 1.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:  # imports wait until a command runs: --help stays light
    from agent_cli_proxy.service_plan import Plan

SYSTEM_OPTION = click.option(
    "--system", is_flag=True,
    help="The system service (root only) instead of the calling user's own service.")
DRY_RUN_OPTION = click.option(
    "--dry-run", is_flag=True,
    help="Print every file that would be written and every command that would run; "
    "change nothing.")


def command() -> click.Group:
    """Build the ``service`` group; ``cli.main`` registers it."""

    @click.group("service")
    def service() -> None:
        """Install, remove and control the proxy as a systemd or launchd service."""

    @service.command("install")
    @SYSTEM_OPTION
    @click.option("--env-file", type=click.Path(dir_okay=False), default=None,
                  help="The env file the user service reads. Default: "
                  "~/.config/agent-cli-proxy/.env. The system service always reads "
                  "/etc/agent-cli-proxy/agent-cli-proxy.env.")
    @click.option("--now", is_flag=True, help="Also enable the service and start it.")
    @DRY_RUN_OPTION
    def install(system: bool, env_file: str | None, now: bool, dry_run: bool) -> None:
        """Write the service definition (a systemd unit or launchd agent) for this program."""
        from agent_cli_proxy import config, service_launchd
        from agent_cli_proxy import service as systemd

        if system and env_file is not None:
            raise click.UsageError("--env-file is for the user service; the system service "
                                   "reads /etc/agent-cli-proxy/agent-cli-proxy.env")
        command = systemd.current_command()
        if _launchd():
            _no_system_on_macos(system)
            env = env_file or config.user_env_file()
            if env is None:
                _fail("no home directory; give --env-file")
            plan = service_launchd.plan_install(command=command, env_file=env,
                                                home=_home(), now=now)
        else:
            plan = systemd.plan_install(system=system, command=command, env_file=env_file,
                                        now=now, euid=os.geteuid())
        _carry_out(plan, dry_run)

    @service.command("uninstall")
    @SYSTEM_OPTION
    @DRY_RUN_OPTION
    def uninstall(system: bool, dry_run: bool) -> None:
        """Stop and disable the service and remove its definition (not its data)."""
        from agent_cli_proxy import service as systemd
        from agent_cli_proxy import service_launchd

        if _launchd():
            _no_system_on_macos(system)
            plan = service_launchd.plan_uninstall(home=_home())
        else:
            plan = systemd.plan_uninstall(system=system, euid=os.geteuid())
        _carry_out(plan, dry_run)

    for action, text in (("start", "Start the service."), ("stop", "Stop the service."),
                         ("restart", "Restart the service."),
                         ("reload", "Make the running service read its custom providers "
                          "again (SIGHUP)."),
                         ("status", "Show whether the service runs (exit 1 when it does "
                          "not).")):
        service.add_command(_control_command(action, text))

    @service.command("logs")
    @SYSTEM_OPTION
    @click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
    @click.option("--lines", "-n", type=click.IntRange(min=0), default=None,
                  help="Show only the last N lines.")
    def logs(system: bool, follow: bool, lines: int | None) -> None:
        """Show the service's log (journalctl, or the launchd agent's log file)."""
        _control("logs", system, follow=follow, lines=lines)

    return service


def _control_command(action: str, text: str) -> click.Command:
    @click.command(action, help=text)
    @SYSTEM_OPTION
    def control(system: bool) -> None:
        _control(action, system)

    return control


def _control(action: str, system: bool, *, follow: bool = False,
             lines: int | None = None) -> None:
    from agent_cli_proxy import service as systemd
    from agent_cli_proxy import service_launchd
    from agent_cli_proxy.service_plan import ServiceError, missing_program, run_command

    if _launchd():
        _no_system_on_macos(system)
        argv = service_launchd.control_argv(action, home=_home(), follow=follow, lines=lines)
    else:
        argv = systemd.control_argv(action, system=system, follow=follow, lines=lines)
    problem = missing_program(argv[0])
    if problem is not None:
        _fail(problem)
    try:
        code = run_command(argv)
    except ServiceError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:  # the usual end of --follow
        code = 0
    sys.exit(0 if code == 0 else 1)


def _carry_out(plan: Plan, dry_run: bool) -> None:
    """Print the plan (dry run) or do it; exit 1 when it cannot be done."""
    from agent_cli_proxy.service_plan import (
        ServiceError,
        describe,
        execute,
        missing_program,
        required_programs,
    )

    missing = [m for m in map(missing_program, required_programs(plan)) if m is not None]
    if dry_run:
        for line in describe(plan):
            click.echo(line)
        for note in [*missing, *plan.notes]:
            click.echo(f"note: {note}")
        for error in plan.errors:
            click.echo(f"agent-cli-proxy: a real run would refuse: {error}", err=True)
        click.echo("dry run: nothing was changed")
        sys.exit(1 if plan.errors else 0)
    for error in [*plan.errors, *missing]:
        click.echo(f"agent-cli-proxy: {error}", err=True)
    if plan.errors or missing:
        sys.exit(1)
    try:
        execute(plan, click.echo)
    except ServiceError as exc:
        _fail(str(exc))
    for note in plan.notes:
        click.echo(f"note: {note}")


def _launchd() -> bool:
    return sys.platform == "darwin"


def _no_system_on_macos(system: bool) -> None:
    if system:
        _fail("--system is for systemd; on macOS the proxy runs as a launchd agent of the "
              "user (omit --system)")


def _home() -> str:
    home = os.path.expanduser("~")
    if home == "~":
        _fail("no home directory")
    return home


def _fail(message: str) -> NoReturn:
    click.echo(f"agent-cli-proxy: {message}", err=True)
    sys.exit(1)
