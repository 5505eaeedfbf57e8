"""contrib/ is generated: the units, sysusers/tmpfiles entries and the example env file are
exactly what ``agent_cli_proxy`` renders, so what packages install never drifts from what
``service install`` writes and from ``config.FIELDS``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from agent_cli_proxy import config, service
from agent_cli_proxy.config import FIELDS, Computed, load_settings
from agent_cli_proxy.env_template import example_value, render_env_example
from agent_cli_proxy.envfile import parse_env_text

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted(service.packaged_files()))
def test_contrib_file_is_the_rendered_text(path: str) -> None:
    assert (ROOT / path).read_text(encoding="utf-8") == service.packaged_files()[path], (
        f"{path} drifted; regenerate it from agent_cli_proxy.service.packaged_files()")


def test_the_units_run_the_packaged_program() -> None:
    files = service.packaged_files()
    system = files["contrib/systemd/agent-cli-proxy.service"]
    assert ("ExecStart=/usr/bin/agent-cli-proxy serve --env-file "
            "/etc/agent-cli-proxy/agent-cli-proxy.env\n") in system
    for line in ("Type=notify", "User=agent-cli-proxy", "StateDirectory=agent-cli-proxy",
                 "CacheDirectory=agent-cli-proxy", "ProtectSystem=strict",
                 "RestartPreventExitStatus=78", "WantedBy=multi-user.target"):
        assert f"\n{line}\n" in system, line
    user = files["contrib/systemd/agent-cli-proxy-user.service"]
    assert ("ExecStart=/usr/bin/agent-cli-proxy serve --env-file "
            "%E/agent-cli-proxy/.env\n") in user
    assert "\nWantedBy=default.target\n" in user and "User=" not in user


def test_example_lists_every_variable_once_commented_out() -> None:
    text = render_env_example()
    assert parse_env_text(text) == ({}, [])  # nothing is set by the file as shipped
    for field in FIELDS:
        assert text.count(f"\n#{field.name}=") == 1, field.name
        assert f"# {field.help}\n" in text


def test_uncommented_example_lines_mean_the_defaults(tmp_path: Path) -> None:
    """Every line with a fixed default, uncommented, sets that default again. (A computed
    default has an empty line to fill in: its value depends on other settings.)"""
    fixed = {f.name for f in FIELDS if not isinstance(f.default, Computed)}
    lines = [line[1:] for line in render_env_example().splitlines()
             if line.startswith("#") and line[1:].partition("=")[0] in fixed]
    assert len(lines) == len(fixed)
    env = tmp_path / "all.env"
    env.write_text("\n".join([*lines, "CLI_PROXY_API_URL=http://127.0.0.1:8317"]) + "\n")
    env.chmod(0o600)  # it holds the sample upstream key
    settings = load_settings({"HOME": str(tmp_path)}, env_file=str(env))
    for field in FIELDS:
        if isinstance(field.default, Computed) or field.name == "CLI_PROXY_API_URL":
            continue
        assert getattr(settings, field.attr) == field.default, field.name
    assert settings.warnings == ()


def test_example_values() -> None:
    by_name = {f.name: f for f in FIELDS}
    assert example_value(by_name["PROXY_PORT"]) == "3100"
    assert example_value(by_name["CCH_POSITIONS"]) == "[4,7,20]"
    assert example_value(by_name["DB_PATH"]) == ""  # computed: depends on the home
    assert example_value(by_name["PROXY_LOCAL_OK"]) == ""


def _verify(unit: Path, *args: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *args, str(unit)],
                            capture_output=True, text=True, timeout=60, env=env)
    # Other units installed on the machine may draw complaints of their own; ours none.
    ours = [line for line in result.stderr.splitlines() if "agent-cli-proxy" in line]
    assert result.returncode == 0 and ours == [], result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The rendered units, with an executable that exists here in place of /usr/bin's."""
    files = service.packaged_files()
    for name, flags in (("agent-cli-proxy.service", ()),
                        ("agent-cli-proxy-user.service", ("--user",))):
        directory = tmp_path / name
        directory.mkdir()
        unit = directory / "agent-cli-proxy.service"
        unit.write_text(files[f"contrib/systemd/{name}"].replace(
            service.PACKAGED_EXECUTABLE, "/bin/true"))
        # A user manager's checks need a runtime directory, even offline; a short one, as
        # socket units of the machine put socket paths (at most 108 bytes) under it.
        with tempfile.TemporaryDirectory(prefix="acp-") as runtime:
            _verify(unit, *flags, env={**os.environ, "XDG_RUNTIME_DIR": runtime})


def test_system_defaults_follow_the_unit(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The /etc env file means StateDirectory= for the database, CacheDirectory= for prices."""
    system_env = tmp_path / "system.env"
    system_env.write_text("CLI_PROXY_API_URL=http://127.0.0.1:9\n")
    monkeypatch.setattr(config, "SYSTEM_ENV_FILE", str(system_env))
    settings = load_settings({}, env_file=str(system_env))
    assert settings.db_path == "/var/lib/agent-cli-proxy/proxy.db"
    assert settings.pricing_cache_path == "/var/cache/agent-cli-proxy/pricing-cache.json"
    unit = service.packaged_files()["contrib/systemd/agent-cli-proxy.service"]
    assert "\nStateDirectory=agent-cli-proxy\n" in unit
    assert "\nCacheDirectory=agent-cli-proxy\n" in unit
