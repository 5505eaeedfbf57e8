"""``agent-cli-proxy providers`` as a real process: init, path, show, and reload against a
real running proxy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agent_cli_proxy.config import Settings
from agent_cli_proxy.providers.custom_config import check_document
from tests.cli.test_serve import _free_port
from tests.conftest import RunningProxy, start_proxy

SECRET = "sk-literal-never-printed"
DOC = {"providers": [
    {"id": "alpha", "type": "anthropic", "paths": ["/v1/messages"], "models": ["claude-x"],
     "upstreamBaseUrl": "http://127.0.0.1:9/", "headers": {"X-Key": SECRET},
     "auth": {"type": "x-api-key", "value": SECRET, "header": "api-key"}},
    {"id": "glm", "type": "openai-compatible", "paths": ["/v1/chat/completions"],
     "upstreamBaseUrl": "https://open.bigmodel.cn/api/paas/v4",
     "auth": {"type": "bearer", "env": "GLM_API_KEY"}},
]}


def run(tmp_path: Path, *args: str, **env_values: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: no user env file, no inherited settings.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path / "home"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "xdg"),
           "CLI_PROXY_API_URL": "http://127.0.0.1:9", **env_values}
    env = {k: v for k, v in env.items() if v}
    return subprocess.run([sys.executable, "-m", "agent_cli_proxy", "providers", *args],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def doc_file(tmp_path: Path) -> Path:
    path = tmp_path / "providers.json"
    path.write_text(json.dumps(DOC))
    return path


def test_init_writes_a_valid_starter_and_never_overwrites_without_force(
        tmp_path: Path) -> None:
    default = tmp_path / "config" / "agent-cli-proxy" / "providers.json"
    result = run(tmp_path, "init")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Created providers config: {default}\n"
    assert f"set PROVIDERS_CONFIG_PATH={default}" in result.stderr
    providers, problems = check_document(json.loads(default.read_text()))
    assert problems == [] and [p.id for p in providers] == ["local", "glm"]
    # Provider keys go in this file: private from the start, whatever the umask.
    assert default.stat().st_mode & 0o777 == 0o600
    assert default.parent.stat().st_mode & 0o777 == 0o700

    default.write_text("mine")
    again = run(tmp_path, "init")
    assert again.returncode == 1 and "--force" in again.stderr
    assert default.read_text() == "mine"
    assert run(tmp_path, "init", "--force").returncode == 0
    assert default.read_text() != "mine"

    # Where PROVIDERS_CONFIG_PATH points (and without a valid configuration: first setup).
    named = tmp_path / "etc" / "providers.json"
    result = run(tmp_path, "init", PROVIDERS_CONFIG_PATH=str(named), CLI_PROXY_API_URL="")
    assert result.returncode == 0 and named.exists()
    assert "PROVIDERS_CONFIG_PATH=" not in result.stderr
    other = tmp_path / "other.json"
    assert run(tmp_path, "init", "--path", str(other)).returncode == 0 and other.exists()


def test_path_names_the_source(tmp_path: Path, doc_file: Path) -> None:
    assert run(tmp_path, "path").stdout == "(no custom providers configured)\n"
    assert run(tmp_path, "path", PROVIDERS_CONFIG_PATH=str(doc_file)).stdout == (
        f"{doc_file}\n")
    assert run(tmp_path, "path", PROVIDERS_JSON=json.dumps(DOC),
               PROVIDERS_CONFIG_PATH=str(doc_file)).stdout == "PROVIDERS_JSON inline\n"
    # The file to fix is found even when it (or anything else) is broken.
    doc_file.write_text("{")
    broken = run(tmp_path, "path", PROVIDERS_CONFIG_PATH=str(doc_file), CLI_PROXY_API_URL="")
    assert (broken.returncode, broken.stdout) == (0, f"{doc_file}\n")
    assert "configuration has problems" in broken.stderr


def test_show_prints_providers_without_credentials(tmp_path: Path, doc_file: Path) -> None:
    result = run(tmp_path, "show", PROVIDERS_CONFIG_PATH=str(doc_file))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "TYPE", "PATHS", "MODELS", "AUTH", "UPSTREAM"]
    assert [line.split()[0] for line in lines[1:]] == ["cliproxyapi", "alpha", "glm"]
    assert "x-api-key [redacted] in api-key" in lines[2]
    assert "bearer $GLM_API_KEY (unset)" in lines[3]
    assert "GLM_API_KEY, which is not set" in result.stderr
    shown = run(tmp_path, "show", "--json", PROVIDERS_CONFIG_PATH=str(doc_file),
                GLM_API_KEY=SECRET)
    assert shown.returncode == 0 and shown.stderr == ""
    view = json.loads(shown.stdout)
    assert view["providers"][2]["auth"] == {"type": "bearer", "env": "GLM_API_KEY",
                                            "envSet": True}
    assert SECRET not in shown.stdout + result.stdout + result.stderr


def test_show_reports_an_invalid_document_as_a_configuration_error(tmp_path: Path) -> None:
    bad = {"providers": [{**DOC["providers"][0], "auth": {"type": SECRET, "value": SECRET}}]}
    result = run(tmp_path, "show", PROVIDERS_JSON=json.dumps(bad))
    assert result.returncode == 78
    assert "providers[0].auth.type: must be one of none, preserve, bearer, x-api-key" in (
        result.stderr)
    assert SECRET not in result.stderr + result.stdout


@pytest.fixture
def served(make_settings: Callable[..., Settings], doc_file: Path) -> Iterator[RunningProxy]:
    proxy = start_proxy(make_settings(providers_config_path=str(doc_file),
                                      admin_api_key="adm-key"))
    yield proxy
    proxy.stop()


def test_reload_tells_the_running_server(tmp_path: Path, served: RunningProxy,
                                         doc_file: Path) -> None:
    port = str(urlsplit(served.url).port)
    ok = run(tmp_path, "reload", PROXY_PORT=port, ADMIN_API_KEY="adm-key")
    assert (ok.returncode, ok.stdout) == (0, "Reloaded providers: 2 (alpha, glm)\n")

    wrong_key = run(tmp_path, "reload", PROXY_PORT=port, ADMIN_API_KEY="nope-key")
    assert wrong_key.returncode == 1 and "HTTP 401" in wrong_key.stderr

    # The server's file breaks (this command's own configuration names none).
    doc_file.write_text(json.dumps({"providers": [{"id": "alpha"}]}))
    refused = run(tmp_path, "reload", PROXY_PORT=port, ADMIN_API_KEY="adm-key")
    assert refused.returncode == 78
    assert "kept its providers" in refused.stderr
    assert "providers[0].type: must be one of openai-compatible, anthropic" in refused.stderr
    assert [p.id for p in served.app.services.providers.current.providers] == ["alpha", "glm"]


def test_reload_without_a_running_server_fails_clearly(tmp_path: Path) -> None:
    port = str(_free_port())
    result = run(tmp_path, "reload", PROXY_PORT=port)
    assert result.returncode == 1
    assert f"no proxy answers on 127.0.0.1:{port}" in result.stderr
