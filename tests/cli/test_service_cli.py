"""``agent-cli-proxy service``: dry runs change nothing; real runs write the rendered unit
and call systemctl/journalctl (stand-in scripts on PATH that record their arguments)."""

from __future__ import annotations

import os
import plistlib
import stat
import sys
from pathlib import Path

import pytest

from agent_cli_proxy import config, service, service_launchd
from tests.cli.cli_helpers import invoke, private_home, tree, user_env

SYSTEM_PATHS = (Path("/etc/systemd/system/agent-cli-proxy.service"),
                Path("/etc/sysusers.d/agent-cli-proxy.conf"), Path("/etc/agent-cli-proxy"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = private_home(tmp_path, monkeypatch)
    env = user_env(home)
    env.parent.mkdir(parents=True)
    env.write_text("CLI_PROXY_API_URL=http://127.0.0.1:9\n")
    return home


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """systemctl and journalctl stand-ins that append their arguments to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("systemctl", "journalctl", "systemd-sysusers"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_user_install_dry_run_shows_everything_and_writes_nothing(home: Path) -> None:
    before = tree(home)
    result = invoke(["service", "install", "--dry-run", "--now"])
    assert result.exit_code == 0, result.output
    unit = home / ".config" / "systemd" / "user" / "agent-cli-proxy.service"
    expected = service.render_unit(system=False, exec_start=service.exec_line(
        service.current_command(), str(user_env(home))))
    assert f"would write {unit} (mode 0644):" in result.output
    shown = [line.removeprefix("    ") for line in result.output.splitlines()
             if line.startswith("    ") or line == ""]
    assert "\n".join(shown).strip() == expected.strip()
    assert "would run: systemctl --user daemon-reload" in result.output
    assert "would run: systemctl --user enable --now agent-cli-proxy.service" in result.output
    assert "--env-file " + str(user_env(home)) in result.output
    assert tree(home) == before


def test_user_install_needs_an_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = private_home(tmp_path, monkeypatch)
    result = invoke(["service", "install", "--dry-run"])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "agent-cli-proxy init" in result.output
    assert tree(home) == set()


@pytest.mark.skipif(os.geteuid() != 0, reason="the system install is for root")
def test_system_install_dry_run_as_root_writes_nothing(home: Path) -> None:
    existing = {p for p in SYSTEM_PATHS if p.exists()}
    result = invoke(["service", "install", "--system", "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "would write /etc/systemd/system/agent-cli-proxy.service (mode 0644):" in out
    assert "    User=agent-cli-proxy" in out and "    Type=notify" in out
    assert "    StateDirectory=agent-cli-proxy" in out
    assert "    CacheDirectory=agent-cli-proxy" in out
    assert f"serve --env-file {config.SYSTEM_ENV_FILE}" in out
    assert ("would create directory /etc/agent-cli-proxy (mode 0750, group "
            "agent-cli-proxy)") in out
    assert f"would write {config.SYSTEM_ENV_FILE} (mode 0640, group agent-cli-proxy" in out
    assert "    #CLI_PROXY_API_URL=" in out  # the example env file, every variable in it
    assert "would run: systemctl daemon-reload" in out
    assert "dry run: nothing was changed" in out
    assert {p for p in SYSTEM_PATHS if p.exists()} == existing
    assert not Path(config.SYSTEM_ENV_FILE).exists()


def test_system_install_is_refused_without_root() -> None:
    plan = service.plan_install(system=True, command=[service.PACKAGED_EXECUTABLE],
                                env_file=None, now=False, euid=1000)
    assert any("needs root" in e for e in plan.errors)


def test_system_takes_no_env_file(home: Path) -> None:
    result = invoke(["service", "install", "--system", "--env-file", "/x.env", "--dry-run"])
    assert result.exit_code == 2


def test_user_install_uninstall_and_control(home: Path, recorder: Path) -> None:
    result = invoke(["service", "install"])
    assert result.exit_code == 0, result.output
    unit = home / ".config" / "systemd" / "user" / "agent-cli-proxy.service"
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert unit.read_text() == service.render_unit(system=False, exec_start=service.exec_line(
        service.current_command(), str(user_env(home))))
    assert calls(recorder) == ["systemctl --user daemon-reload"]

    for args, call in (
            (["start"], "systemctl --user start agent-cli-proxy.service"),
            (["stop"], "systemctl --user stop agent-cli-proxy.service"),
            (["restart", "--system"], "systemctl restart agent-cli-proxy.service"),
            (["reload"], "systemctl --user reload agent-cli-proxy.service"),
            (["status"], "systemctl --user --no-pager status agent-cli-proxy.service"),
            (["logs", "-n", "20"], "journalctl --user -u agent-cli-proxy.service -n 20 "
                                   "--no-pager"),
            (["logs", "--system", "--follow"], "journalctl -u agent-cli-proxy.service -f")):
        recorder.unlink()
        assert invoke(["service", *args]).exit_code == 0, args
        assert calls(recorder) == [call]

    recorder.unlink()
    result = invoke(["service", "uninstall"])
    assert result.exit_code == 0, result.output
    assert not unit.exists()
    assert calls(recorder) == ["systemctl --user disable --now agent-cli-proxy.service",
                               "systemctl --user daemon-reload"]


def test_a_failing_systemctl_is_exit_1(home: Path, recorder: Path) -> None:
    (recorder.parent / "bin" / "systemctl").write_text("#!/bin/sh\nexit 3\n")
    result = invoke(["service", "status"])
    assert result.exit_code == 1


def test_without_systemctl(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = invoke(["service", "start"])
    assert result.exit_code == 1
    assert "systemctl not found" in result.output
    before = tree(home)
    result = invoke(["service", "install"])
    assert result.exit_code == 1 and "systemctl not found" in result.output
    assert tree(home) == before  # refused before writing anything


def test_unit_words_are_quoted_for_systemd() -> None:
    assert service.unit_quote("/usr/bin/agent-cli-proxy") == "/usr/bin/agent-cli-proxy"
    assert service.unit_quote("/home/a b/.env") == '"/home/a b/.env"'
    assert service.unit_quote("/x/100%/$HOME") == '"/x/100%%/$$HOME"'
    assert service.unit_quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    with pytest.raises(ValueError, match="control character"):
        service.unit_quote("a\nb")


def test_current_command() -> None:
    script = Path(sys.executable).parent / "agent-cli-proxy"
    if script.exists():
        assert service.current_command(str(script)) == [str(script)]
    assert service.current_command("/somewhere/pytest") == [
        os.path.abspath(sys.executable), "-m", "agent_cli_proxy"]


def test_launchd_agent(tmp_path: Path) -> None:
    env = tmp_path / "proxy.env"
    env.write_text("CLI_PROXY_API_URL=http://127.0.0.1:9\n")
    plan = service_launchd.plan_install(command=["/opt/acp/bin/agent-cli-proxy"],
                                        env_file=str(env), home=str(tmp_path), now=True)
    assert plan.errors == []
    write, load = plan.steps
    assert write.path == str(tmp_path / "Library/LaunchAgents/ai.agent-cli-proxy.plist")
    document = plistlib.loads(write.text.encode())
    assert document["ProgramArguments"] == ["/opt/acp/bin/agent-cli-proxy", "serve",
                                            "--env-file", str(env)]
    assert document["KeepAlive"] == {"SuccessfulExit": False}
    assert load.argv[:2] == ("launchctl", "bootstrap")
    assert service_launchd.control_argv("logs", home=str(tmp_path), follow=True)[-2:] == (
        "-F", str(tmp_path / "Library/Logs/agent-cli-proxy.log"))
