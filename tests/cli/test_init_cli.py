"""``agent-cli-proxy init``: a private env file, by flags or questions, never overwritten
by accident, secrets taken from the environment and never shown."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from agent_cli_proxy.config import load_settings
from agent_cli_proxy.envfile import read_env_file
from agent_cli_proxy.setup_config import merged_text, write_env_file
from tests.cli.cli_helpers import invoke, private_home, tree, user_env

SECRET = "s3cr3t-upstream-key-value"
MGMT = "mgmt-key-not-for-your-eyes"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return private_home(tmp_path, monkeypatch)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_non_interactive_writes_a_private_valid_file(home: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY_SRC", SECRET)
    monkeypatch.setenv("MGMT_SRC", MGMT)
    args = ["init", "--non-interactive", "--cliproxy-api-url", "http://127.0.0.1:8317",
            "--cliproxy-api-key-env", "UPSTREAM_KEY_SRC", "--cliproxy-mgmt-key-env",
            "MGMT_SRC", "--port", "3999", "--cliproxy-auth-dir", str(home / "auths")]
    assert SECRET not in " ".join(args) and MGMT not in " ".join(args)
    result = invoke(args)
    assert result.exit_code == 0, result.output
    path = user_env(home)
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert SECRET not in result.output and MGMT not in result.output
    assert "CLI_PROXY_API_KEY (secret)" in result.output
    values = read_env_file(str(path))[0]
    assert values == {"PROXY_PORT": "3999", "CLI_PROXY_API_URL": "http://127.0.0.1:8317",
                      "CLIPROXY_AUTH_DIR": str(home / "auths"),
                      "CLI_PROXY_API_KEY": SECRET, "CLIPROXY_MGMT_KEY": MGMT}
    settings = load_settings({"HOME": str(home)})  # found by the default search
    assert settings.env_file == str(path)
    assert (settings.proxy_port, settings.cli_proxy_api_key) == (3999, SECRET)


def test_an_existing_file_is_never_overwritten_without_force_or_merge(home: Path) -> None:
    path = user_env(home)
    path.parent.mkdir(parents=True)
    path.write_text("CLI_PROXY_API_URL=http://127.0.0.1:1\n# mine\n")
    before = path.read_bytes()
    result = invoke(["init", "--non-interactive", "--cliproxy-api-url", "http://127.0.0.1:2"])
    assert result.exit_code == 1
    assert "already exists" in result.output and "--force" in result.output
    assert "--merge" in result.output
    assert path.read_bytes() == before


def test_force_replaces_the_file(home: Path) -> None:
    path = user_env(home)
    path.parent.mkdir(parents=True)
    path.write_text("CLI_PROXY_API_URL=http://127.0.0.1:1\nPROXY_PORT=4000\n")
    result = invoke(["init", "--non-interactive", "--force", "--cliproxy-api-url",
                     "http://127.0.0.1:2"])
    assert result.exit_code == 0, result.output
    assert read_env_file(str(path))[0] == {"CLI_PROXY_API_URL": "http://127.0.0.1:2"}


def test_merge_keeps_lines_and_changes_only_what_is_given(home: Path) -> None:
    path = user_env(home)
    path.parent.mkdir(parents=True)
    path.write_text("# my notes\nCLI_PROXY_API_URL=http://127.0.0.1:1\nPROXY_PORT=4000\n"
                    "LOG_LEVEL=debug\nPROXY_PORT=4001\n")
    path.chmod(0o640)
    result = invoke(["init", "--non-interactive", "--merge", "--port", "4100", "--data-dir",
                     str(home / "state dir")])
    assert result.exit_code == 0, result.output
    assert path.read_text() == ("# my notes\nCLI_PROXY_API_URL=http://127.0.0.1:1\n"
                                "LOG_LEVEL=debug\nPROXY_PORT=4100\n"
                                f'AGENT_CLI_PROXY_DATA_DIR="{home / "state dir"}"\n')
    assert _mode(path) == 0o640  # a replaced file keeps its group-read bit
    settings = load_settings({"HOME": str(home)})
    assert settings.db_path == str(home / "state dir" / "proxy.db")


def test_force_and_merge_together_is_a_usage_error(home: Path) -> None:
    result = invoke(["init", "--non-interactive", "--force", "--merge",
                     "--cliproxy-api-url", "http://127.0.0.1:2"])
    assert result.exit_code == 2
    assert not user_env(home).exists()


def test_a_secret_variable_that_is_not_set_is_a_usage_error(home: Path) -> None:
    result = invoke(["init", "--non-interactive", "--cliproxy-api-url", "http://127.0.0.1:2",
                     "--admin-token-env", "NOT_SET_ANYWHERE"])
    assert result.exit_code == 2
    assert "--admin-token-env names NOT_SET_ANYWHERE" in result.output
    assert tree(home) == set()


def test_non_interactive_needs_the_upstream_url(home: Path) -> None:
    result = invoke(["init", "--non-interactive"])
    assert result.exit_code == 2 and "--cliproxy-api-url" in result.output
    assert tree(home) == set()


def test_an_invalid_result_is_refused_before_anything_is_written(home: Path) -> None:
    result = invoke(["init", "--non-interactive", "--cliproxy-api-url", "ftp://nowhere"])
    assert result.exit_code == 78
    assert "CLI_PROXY_API_URL" in result.output
    assert tree(home) == set()  # not even the directory


def test_a_host_off_loopback_gets_an_admin_token(home: Path) -> None:
    result = invoke(["init", "--non-interactive", "--cliproxy-api-url", "http://127.0.0.1:2",
                     "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    token = read_env_file(str(user_env(home)))[0]["ADMIN_API_KEY"]
    assert len(token) == 32 and token not in result.output


def test_questions(home: Path) -> None:
    path = home / "elsewhere" / "proxy.env"
    answers = "\n".join([
        "127.0.0.1",  # host
        "3200",  # port
        "http://127.0.0.1:8400",  # upstream
        SECRET,  # upstream key (hidden)
        "y",  # generate an admin key
        "y", MGMT,  # account attribution, its key (hidden)
        "n",  # quotas
    ]) + "\n"
    result = invoke(["init", "--env-file", str(path)], input=answers)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output and MGMT not in result.output
    values = read_env_file(str(path))[0]
    assert values["CLI_PROXY_API_KEY"] == SECRET and values["CLIPROXY_MGMT_KEY"] == MGMT
    assert values["PROXY_PORT"] == "3200" and len(values["ADMIN_API_KEY"]) == 32
    assert "CLIPROXY_AUTH_DIR" not in values
    assert f"--env-file {path}" in result.output  # the next steps name the file


def test_questions_with_merge_default_to_the_current_values(home: Path) -> None:
    path = user_env(home)
    path.parent.mkdir(parents=True)
    path.write_text(f"CLI_PROXY_API_URL=http://127.0.0.1:8500\nCLI_PROXY_API_KEY={SECRET}\n")
    # Enter everywhere: keep each value; no admin key, no attribution, no quotas.
    result = invoke(["init", "--merge"], input="\n\n\n\n\n\n\n")
    assert result.exit_code == 0, result.output
    values = read_env_file(str(path))[0]
    assert values["CLI_PROXY_API_URL"] == "http://127.0.0.1:8500"
    assert values["CLI_PROXY_API_KEY"] == SECRET
    assert "ADMIN_API_KEY" not in values


def test_merged_text_rules() -> None:
    text = "export A=1\n; systemd comment\nB=2\nA=3\n"
    assert merged_text(text, {"A": "x y", "C": "4"}) == (
        '; systemd comment\nB=2\nA="x y"\nC=4\n')


def test_a_new_file_for_a_group_is_group_readable(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getegid()).gr_name
    path = tmp_path / "etc" / "proxy.env"
    mode = write_env_file(str(path), "A=1\n", replace=False, group=group)
    assert mode == 0o640 and _mode(path) == 0o640
    path.chmod(0o644)  # others may read it now …
    assert write_env_file(str(path), "A=2\n", replace=True) == 0o640  # … not after a rewrite
    assert _mode(path) == 0o640 and path.read_text() == "A=2\n"
