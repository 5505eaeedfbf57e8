"""``agent-cli-proxy paths``: the same locations ``serve`` would use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.cli_helpers import invoke, private_home, tree, user_env


def test_json_in_a_fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = private_home(tmp_path, monkeypatch)
    result = invoke(["paths", "--json"])
    assert result.exit_code == 0
    found = json.loads(result.stdout)
    data = str(home / ".local" / "share" / "agent-cli-proxy")
    assert found == {
        "envFile": None,
        "envFileSearch": [str(user_env(home)), str(tmp_path / "etc" / "system.env")],
        "envPath": str(user_env(home)),
        "configDir": str(user_env(home).parent),
        "dataDir": data, "stateDir": data, "cacheDir": data,
        "dbPath": f"{data}/proxy.db", "pricingCachePath": f"{data}/pricing-cache.json",
        "providersPath": None, "providersSource": None,
        "userUnit": str(home / ".config" / "systemd" / "user" / "agent-cli-proxy.service"),
        "systemUnit": "/etc/systemd/system/agent-cli-proxy.service"}
    # No upstream configured: paths still answers, and points at doctor on stderr.
    assert "doctor" in result.stderr
    assert tree(home) == set()


def test_follows_xdg_and_the_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private_home(tmp_path, monkeypatch)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    env = tmp_path / "cfg" / "agent-cli-proxy" / ".env"
    env.parent.mkdir(parents=True)
    providers = tmp_path / "providers.json"
    providers.write_text('{"providers": []}')
    env.write_text(f"CLI_PROXY_API_URL=http://127.0.0.1:9\nPROVIDERS_CONFIG_PATH={providers}\n"
                   f"PRICING_CACHE_PATH={tmp_path / 'cache' / 'prices.json'}\n")
    result = invoke(["paths", "--json"])
    assert result.exit_code == 0 and result.stderr == ""
    found = json.loads(result.stdout)
    assert found["envFile"] == str(env)
    assert found["dbPath"] == str(tmp_path / "xdg-data" / "agent-cli-proxy" / "proxy.db")
    assert found["cacheDir"] == str(tmp_path / "cache")
    assert found["providersPath"] == str(providers)
    assert found["providersSource"] == "PROVIDERS_CONFIG_PATH"
    assert found["userUnit"] == str(tmp_path / "cfg" / "systemd" / "user" /
                                    "agent-cli-proxy.service")

    named = tmp_path / "named.env"
    named.write_text("CLI_PROXY_API_URL=http://127.0.0.1:9\n"
                     f"AGENT_CLI_PROXY_DATA_DIR={tmp_path / 'data'}\n")
    text = invoke(["paths", "--env-file", str(named)])
    assert text.exit_code == 0
    lines = dict(line.split(": ", 1) for line in text.stdout.splitlines())
    assert lines["env file"].strip() == str(named)
    assert lines["database"].strip() == str(tmp_path / "data" / "proxy.db")
    assert lines["data dir"].strip() == str(tmp_path / "data")
