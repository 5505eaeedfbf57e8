"""Settings: defaults, validation, sources and their precedence, paths, docs in step with code."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
import stat
import subprocess
import types
import typing
from collections.abc import Mapping
from pathlib import Path

import pytest

from agent_cli_proxy import config, config_values
from agent_cli_proxy.config import (
    FIELDS,
    Computed,
    ConfigError,
    ConfigIssue,
    Settings,
    describe,
    ensure_directories,
    load_settings,
    settings_for_tests,
)
from agent_cli_proxy.envfile import parse_env_text

MAN_PAGE = Path(__file__).resolve().parent.parent / "man" / "agent-cli-proxy.env.5"
SECRETS = {"ADMIN_API_KEY", "CLI_PROXY_API_KEY", "CLIPROXY_MGMT_KEY", "DASHBOARD_PASSWORD_HASH",
           "DASHBOARD_SESSION_SECRET"}


@pytest.fixture(autouse=True)
def no_system_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a real /etc/agent-cli-proxy out of every test."""
    monkeypatch.setattr(config, "SYSTEM_ENV_FILE", str(tmp_path / "etc" / "proxy.env"))
    monkeypatch.setattr(config, "SYSTEM_STATE_DIR", str(tmp_path / "var-lib"))
    monkeypatch.setattr(config, "SYSTEM_CACHE_DIR", str(tmp_path / "var-cache"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def env(home: Path, **values: str) -> dict[str, str]:
    return {"HOME": str(home), "CLI_PROXY_API_URL": "http://127.0.0.1:8317", **values}


def issues_of(environ: dict[str, str], env_file: str | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ, env_file)
    return caught.value.issues


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


# --- defaults and the table -----------------------------------------------------------------


def test_documented_defaults(home: Path) -> None:
    settings = load_settings(env(home))
    assert settings.proxy_port == 3100
    assert settings.proxy_host == "127.0.0.1"
    assert settings.proxy_threads == 256
    assert settings.stale_pending_max_age_ms == 300_000
    assert settings.max_request_body_bytes == 25_000_000
    assert settings.cli_proxy_api_key == "proxy"
    assert settings.upstream_connect_timeout_ms == 10_000
    assert settings.upstream_timeout_ms == 300_000
    assert settings.upstream_stream_first_byte_timeout_ms == 900_000
    assert settings.cch_positions == (4, 7, 20)
    assert settings.proxy_require_api_key is False
    assert settings.trust_proxy_headers is False
    assert settings.client_name_mapping == {}
    assert settings.log_level == "info" and settings.log_format == "json"
    assert settings.db_path == str(home / ".local/share/agent-cli-proxy/proxy.db")
    assert settings.pricing_cache_path == str(
        home / ".local/share/agent-cli-proxy/pricing-cache.json")
    assert settings.is_loopback_host
    assert settings.warnings == ()
    assert settings.env_file is None


def test_every_plain_default_is_the_table_default(home: Path) -> None:
    settings = load_settings(env(home))
    for field in FIELDS:
        if not isinstance(field.default, Computed) and field.name != "PROXY_LOCAL_OK":
            assert getattr(settings, field.attr) == field.default, field.name


def test_table_and_dataclass_agree() -> None:
    attributes = [f.name for f in dataclasses.fields(Settings)]
    assert attributes == [field.attr for field in FIELDS] + ["warnings", "env_file"]
    assert len({field.name for field in FIELDS}) == len(FIELDS)
    assert all(field.name == field.name.upper() and field.help and field.section
               for field in FIELDS)
    assert {field.name for field in FIELDS if field.secret} == SECRETS


def test_values_have_the_declared_types(home: Path) -> None:
    hints = typing.get_type_hints(Settings)
    settings = load_settings(env(home))
    for field in FIELDS:
        value = getattr(settings, field.attr)
        declared = typing.get_origin(hints[field.attr]) or hints[field.attr]
        if declared is types.UnionType:
            declared = hints[field.attr]  # isinstance takes a union as it is
        if declared is Mapping or declared is typing.Mapping:
            declared = Mapping
        assert isinstance(value, declared), field.name
        # bool is an int: an int setting must not come out as one, nor the reverse.
        assert isinstance(value, bool) == (declared is bool), field.name


def test_millisecond_settings_are_ints(home: Path) -> None:
    settings = load_settings(env(home, UPSTREAM_TIMEOUT_MS="1.5", PRICING_CACHE_TTL_MS="1e3"))
    assert settings.upstream_timeout_ms == 2  # rounded up: a positive value stays positive
    assert settings.pricing_cache_ttl_ms == 1000
    for field in FIELDS:
        if field.name.endswith("_MS"):
            assert type(getattr(settings, field.attr)) is int, field.name


def test_secrets_stay_out_of_repr() -> None:
    settings = settings_for_tests(admin_api_key="hunter2-admin", cli_proxy_api_key="hunter2-up")
    assert "hunter2" not in repr(settings)
    hidden = {f.name for f in dataclasses.fields(Settings) if not f.repr}
    assert hidden == {name.lower() for name in SECRETS}


# --- validators -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "raw", "message"), [
    ("PROXY_PORT", "0", "must be an integer from 1 to 65535"),
    ("PROXY_PORT", "65536", "must be an integer from 1 to 65535"),
    ("PROXY_PORT", "31.5", "must be an integer from 1 to 65535"),
    ("PROXY_PORT", "http", "must be an integer from 1 to 65535"),
    ("PROXY_PORT", "", "must be an integer from 1 to 65535"),
    ("PROXY_THREADS", "0", "must be an integer from 1 to 10000"),
    ("PROXY_THREADS", "10001", "must be an integer from 1 to 10000"),
    ("MAX_REQUEST_BODY_BYTES", "1000000001", "must be an integer from 1 to 1000000000"),
    ("COST_BACKFILL_CHUNK_SIZE", "100001", "must be an integer from 1 to 100000"),
    ("UPSTREAM_MAX_RETRIES", "101", "must be an integer from 0 to 100"),
    ("UPSTREAM_MAX_RETRIES", "-1", "must be an integer from 0 to 100"),
    ("RATE_LIMIT_MAX_RETRIES", "21", "must be an integer from 1 to 20"),
    ("LOGIN_RATE_LIMIT_MAX_ATTEMPTS", "0", "must be an integer from 1 to 100"),
    ("UPSTREAM_CIRCUIT_BREAKER_OPEN_AFTER_FAILURES", "1001", "must be an integer from 1 to 1000"),
    ("STALE_PENDING_MAX_AGE_MS", "0", "must be a positive finite number"),
    ("PRICING_CACHE_TTL_MS", "-5", "must be a positive finite number"),
    ("COST_BACKFILL_LOOKBACK_MS", "NaN", "must be a positive finite number"),
    ("UPSTREAM_TIMEOUT_MS", "Infinity", "must be a positive finite number"),
    ("UPSTREAM_TIMEOUT_MS", "", "must be a positive finite number"),
    ("UPSTREAM_TIMEOUT_MS", "1_000", "must be a positive finite number"),
    ("QUOTA_REFRESH_TIMEOUT_MS", "1e13", "must be at most 1000000000000 (about 31 years)"),
    ("TRUST_PROXY_HEADERS", "maybe", "must be a boolean (true/false, yes/no, or 1/0)"),
    ("DISABLE_SHUTDOWN_HANDLERS", "", "must be a boolean (true/false, yes/no, or 1/0)"),
    ("PROXY_REQUIRE_API_KEY", "on", "must be a boolean (true/false, yes/no, or 1/0)"),
    ("LOG_LEVEL", "trace", "must be one of debug, info, warn, error"),
    ("LOG_FORMAT", "xml", "must be one of json, pretty"),
    ("CLI_PROXY_API_URL", "ftp://example.com", "must be an http(s) URL"),
    ("CLI_PROXY_API_URL", "localhost:8317", "must be an http(s) URL"),
    ("CLI_PROXY_API_URL", "not a url", "must be a parseable http(s) URL"),
    ("CLI_PROXY_API_URL", "http://", "must be a parseable http(s) URL"),
    ("CLI_PROXY_API_URL", "http://host:99999", "must be a parseable http(s) URL"),
    ("CLI_PROXY_API_URL", "http://host/v1?x=1", "must be an http(s) URL without a query or "
                                                "fragment"),
    ("CCH_POSITIONS", "4,7,20", "must be JSON array of finite non-negative integers"),
    ("CCH_POSITIONS", "", "must be JSON array of finite non-negative integers"),
    ("CCH_POSITIONS", '{"a": 1}', "must be an array"),
    ("PRICING_OVERRIDES_JSON", "[]", "must be a JSON object"),
    ("PRICING_ALIASES_JSON", '"x"', "must be a JSON object"),
])
def test_invalid_values_name_the_variable(home: Path, name: str, raw: str, message: str) -> None:
    assert issues_of(env(home, **{name: raw})) == [ConfigIssue(name, message)]


@pytest.mark.parametrize(("name", "raw", "expected"), [
    ("PROXY_PORT", " 8080 ", 8080),
    ("PROXY_PORT", "3.1e3", 3100),
    ("PROXY_PORT", "65535", 65535),
    ("MAX_REQUEST_BODY_BYTES", "1000000000", 1_000_000_000),
    ("UPSTREAM_MAX_RETRIES", "0", 0),  # the original rejected 0; "no retries" is legitimate
    ("TRUST_PROXY_HEADERS", " YES ", True),
    ("TRUST_PROXY_HEADERS", "0", False),
    ("PROXY_REQUIRE_API_KEY", "true", True),
    ("LOG_LEVEL", "WARNING", "warn"),
    ("LOG_LEVEL", "Debug", "debug"),
    ("LOG_FORMAT", "pretty", "pretty"),
    ("CCH_POSITIONS", "[1, 2.0, 0]", (1, 2, 0)),
    ("CCH_POSITIONS", "[]", ()),
    ("TOOL_PREFIX", "", "mcp_"),  # an empty string means unset for strings
    ("PROXY_HOST", "  ", "127.0.0.1"),
    ("CLAUDE_CODE_VERSION", "2.2.0", "2.2.0"),
])
def test_valid_values(home: Path, name: str, raw: str, expected: object) -> None:
    assert getattr(load_settings(env(home, **{name: raw})), name.lower()) == expected


@pytest.mark.parametrize(("raw", "normalized"), [
    ("http://localhost:8317/", "http://localhost:8317"),
    ("HTTP://Example.COM:80/api//", "http://example.com/api"),
    ("https://proxy.example:443", "https://proxy.example"),
    ("https://proxy.example:8443/base/", "https://proxy.example:8443/base"),
    ("http://[::1]:8317/", "http://[::1]:8317"),
    ("  http://127.0.0.1:8317  ", "http://127.0.0.1:8317"),
])
def test_upstream_url_is_normalized(home: Path, raw: str, normalized: str) -> None:
    assert load_settings(env(home, CLI_PROXY_API_URL=raw)).cli_proxy_api_url == normalized


def test_cch_positions_reports_each_bad_element(home: Path) -> None:
    issues = issues_of(env(home, CCH_POSITIONS='[4, -1, 2.5, true, "7", 3.0]'))
    assert issues == [ConfigIssue(f"CCH_POSITIONS[{i}]", "must be a finite non-negative integer")
                      for i in (1, 2, 3, 4)]


def test_client_name_mapping(home: Path) -> None:
    settings = load_settings(env(home, CLIENT_NAME_MAPPING="k1=alice, k2 = bob ,k3=x=y"))
    assert settings.client_name_mapping == {"k1": "alice", "k2": "bob", "k3": "x=y"}
    issues = issues_of(env(home, CLIENT_NAME_MAPPING="a=b,,c=,=d,e"))
    assert issues == [ConfigIssue(f"CLIENT_NAME_MAPPING[{i}]", "must be a non-empty key=value "
                                  "entry") for i in (1, 2, 3, 4)]


def test_pricing_overrides(home: Path) -> None:
    good = {"local-model": {"input": 1, "output": 2.5, "cache_read": 0.5, "input_audio": 9}}
    settings = load_settings(env(home, PRICING_OVERRIDES_JSON=json.dumps(good)))
    assert settings.pricing_overrides_json == {
        "local-model": {"input": 1.0, "output": 2.5, "cache_read": 0.5}}
    bad = ('{"a": 3, "b": {"input": 1}, "c": {"input": true, "output": 1},'
           ' "d": {"input": 1, "output": 1, "cache_write": -1, "reasoning": Infinity}}')
    assert issues_of(env(home, PRICING_OVERRIDES_JSON=bad)) == [
        ConfigIssue("PRICING_OVERRIDES_JSON.a", "must be a pricing object"),
        ConfigIssue("PRICING_OVERRIDES_JSON.b", "must include non-negative numeric input and "
                                                "output"),
        ConfigIssue("PRICING_OVERRIDES_JSON.c", "must include non-negative numeric input and "
                                                "output"),
        ConfigIssue("PRICING_OVERRIDES_JSON.d.cache_write", "must be a non-negative finite "
                                                            "number"),
        ConfigIssue("PRICING_OVERRIDES_JSON.d.reasoning", "must be a non-negative finite number"),
    ]
    [issue] = issues_of(env(home, PRICING_OVERRIDES_JSON="{oops"))
    assert issue.name == "PRICING_OVERRIDES_JSON"
    assert issue.message.startswith("must be valid JSON: ")


def test_pricing_aliases(home: Path) -> None:
    settings = load_settings(env(home, PRICING_ALIASES_JSON='{"kimi-for-coding": " kimi-k2 "}'))
    assert settings.pricing_aliases_json == {"kimi-for-coding": "kimi-k2"}
    assert issues_of(env(home, PRICING_ALIASES_JSON='{"a": "", "b": 3, "c": "ok"}')) == [
        ConfigIssue("PRICING_ALIASES_JSON.a", "must be a non-empty string"),
        ConfigIssue("PRICING_ALIASES_JSON.b", "must be a non-empty string"),
    ]
    assert load_settings(env(home, PRICING_ALIASES_JSON=" ")).pricing_aliases_json == {}


def test_providers_json_syntax(home: Path, tmp_path: Path) -> None:
    [issue] = issues_of(env(home, PROVIDERS_JSON="{not json"))
    assert issue.name == "PROVIDERS_JSON" and issue.message.startswith("must be valid JSON: ")
    doc = '{"providers": []}'
    assert load_settings(env(home, PROVIDERS_JSON=doc)).providers_json == doc

    missing = str(tmp_path / "missing.json")
    assert issues_of(env(home, PROVIDERS_CONFIG_PATH=missing)) == [
        ConfigIssue("PROVIDERS_CONFIG_PATH", "could not be read: No such file or directory")]
    broken = write(tmp_path / "providers.json", "[1,")
    [issue] = issues_of(env(home, PROVIDERS_CONFIG_PATH=str(broken)))
    assert issue.name == "PROVIDERS_CONFIG_PATH" and "must be valid JSON" in issue.message
    good = write(tmp_path / "good.json", doc)
    assert load_settings(env(home, PROVIDERS_CONFIG_PATH=str(good))).providers_config_path == str(
        good)

    # Inline wins: the file is then not read at all, only noted.
    settings = load_settings(env(home, PROVIDERS_JSON=doc, PROVIDERS_CONFIG_PATH=missing))
    assert settings.warnings == (
        "PROVIDERS_CONFIG_PATH is ignored because PROVIDERS_JSON is set",)


def test_every_problem_at_once_each_named_once(home: Path) -> None:
    environ = {
        "HOME": str(home),
        "PROXY_PORT": "70000",
        "CCH_POSITIONS": "[-1]",
        "PRICING_CACHE_TTL_MS": "0",
        "CLIENT_NAME_MAPPING": "nokey",
        "UPSTREAM_MAX_RETRIES": "x",
        # The original read the breaker variables twice and reported them twice.
        "UPSTREAM_CIRCUIT_BREAKER_OPEN_AFTER_FAILURES": "0",
        "UPSTREAM_CIRCUIT_BREAKER_HALF_OPEN_AFTER_MS": "-1",
        "UPSTREAM_CIRCUIT_BREAKER_EVICT_AFTER_MS": "",
        "MAX_REQUEST_BODY_BYTES": "0",
        "TRUST_PROXY_HEADERS": "sometimes",
        "PROXY_HOST": "0.0.0.0",
        "PROXY_REQUIRE_API_KEY": "false",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    names = [issue.name for issue in caught.value.issues]
    assert names == [
        "CLI_PROXY_API_URL",  # first, as in the original
        "UPSTREAM_MAX_RETRIES",
        "UPSTREAM_CIRCUIT_BREAKER_OPEN_AFTER_FAILURES",
        "UPSTREAM_CIRCUIT_BREAKER_HALF_OPEN_AFTER_MS",
        "UPSTREAM_CIRCUIT_BREAKER_EVICT_AFTER_MS",
        "PROXY_PORT",
        "MAX_REQUEST_BODY_BYTES",
        "TRUST_PROXY_HEADERS",
        "CLIENT_NAME_MAPPING[0]",
        "CCH_POSITIONS[0]",
        "PRICING_CACHE_TTL_MS",
        "PROXY_REQUIRE_API_KEY",
    ]
    text = str(caught.value)
    assert text.startswith("Configuration validation failed: CLI_PROXY_API_URL is required "
                           "unless PROXY_LOCAL_OK=1 permits the local default; UPSTREAM_MAX_")
    assert text.endswith("; PROXY_REQUIRE_API_KEY must be true when PROXY_HOST is not loopback")
    assert caught.value.code == "CONFIG_INVALID"


def test_config_error_survives_pickling() -> None:
    error = ConfigError([ConfigIssue("PROXY_PORT", "must be an integer from 1 to 65535")])
    copy = pickle.loads(pickle.dumps(error))
    assert copy.issues == error.issues and str(copy) == str(error)


# --- PROXY_LOCAL_OK, hosts, warnings --------------------------------------------------------


def test_upstream_url_is_required(home: Path) -> None:
    message = "is required unless PROXY_LOCAL_OK=1 permits the local default"
    assert issues_of({"HOME": str(home)}) == [ConfigIssue("CLI_PROXY_API_URL", message)]
    assert issues_of({"HOME": str(home), "CLI_PROXY_API_URL": "  "}) == [
        ConfigIssue("CLI_PROXY_API_URL", message)]
    # Only the exact value 1 counts, as in the original; anything else is pointed out.
    assert issues_of({"HOME": str(home), "PROXY_LOCAL_OK": "true"}) == [
        ConfigIssue("CLI_PROXY_API_URL", message)]
    settings = load_settings(env(home, PROXY_LOCAL_OK="yes"))
    assert settings.warnings == ("PROXY_LOCAL_OK is ignored: only the value 1 enables it",)
    assert settings.proxy_local_ok is False


def test_proxy_local_ok_permits_the_local_default(home: Path) -> None:
    settings = load_settings({"HOME": str(home), "PROXY_LOCAL_OK": "1"})
    assert settings.cli_proxy_api_url == "http://localhost:8317"
    assert settings.proxy_local_ok is True
    assert settings.warnings == (
        "CLI_PROXY_API_URL defaulted to http://localhost:8317 because PROXY_LOCAL_OK=1",)
    # An invalid URL is reported as such, not replaced by the default.
    assert issues_of({"HOME": str(home), "PROXY_LOCAL_OK": "1", "CLI_PROXY_API_URL": "x"}) == [
        ConfigIssue("CLI_PROXY_API_URL", "must be a parseable http(s) URL")]


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("localhost", True), ("LOCALHOST ", True), ("::1", True),
    ("[::1]", True), ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
    ("192.168.1.10", False), ("proxy.example", False),
])
def test_loopback_hosts(home: Path, host: str, loopback: bool) -> None:
    settings = load_settings(env(home, PROXY_HOST=host, PROXY_REQUIRE_API_KEY="true"))
    assert settings.is_loopback_host is loopback
    assert config_values.is_loopback(host) is loopback


def test_non_loopback_host_requires_proxy_keys(home: Path) -> None:
    assert load_settings(env(home, PROXY_HOST="0.0.0.0")).proxy_require_api_key is True
    assert load_settings(env(home, PROXY_HOST="0.0.0.0", PROXY_REQUIRE_API_KEY="yes")
                         ).proxy_require_api_key is True
    assert issues_of(env(home, PROXY_HOST="0.0.0.0", PROXY_REQUIRE_API_KEY="0")) == [
        ConfigIssue("PROXY_REQUIRE_API_KEY", "must be true when PROXY_HOST is not loopback")]
    # A bad boolean is reported once, not also as "must be true".
    assert issues_of(env(home, PROXY_HOST="0.0.0.0", PROXY_REQUIRE_API_KEY="nah")) == [
        ConfigIssue("PROXY_REQUIRE_API_KEY", "must be a boolean (true/false, yes/no, or 1/0)")]
    # On loopback it may be switched on, and the admin key is not required anywhere.
    assert load_settings(env(home, PROXY_REQUIRE_API_KEY="1")).proxy_require_api_key is True


def test_placeholder_secrets_are_warned_about(home: Path) -> None:
    settings = load_settings(env(home, ADMIN_API_KEY="ChangeMe"))
    assert settings.warnings == ("ADMIN_API_KEY uses a placeholder value; replace it with a "
                                 "unique random secret before exposure",)
    # The default upstream key "proxy" is fine between two loopback processes...
    assert load_settings(env(home)).warnings == ()
    # ...but not across a network.
    remote = load_settings(env(home, CLI_PROXY_API_URL="https://cliproxy.example"))
    assert remote.warnings == ("CLI_PROXY_API_KEY uses a placeholder value; replace it with a "
                               "unique random secret before exposure",)


def test_relative_state_paths_are_warned_about(home: Path) -> None:
    settings = load_settings(env(home, DB_PATH="data/proxy.db"))
    assert settings.db_path == "data/proxy.db"
    assert settings.warnings == ("DB_PATH should be an absolute path; data/proxy.db depends on "
                                 "the working directory",)
    assert load_settings(env(home, DB_PATH=":memory:")).warnings == ()


# --- paths ----------------------------------------------------------------------------------


def test_state_paths_follow_xdg_from_the_given_environ(home: Path, tmp_path: Path) -> None:
    base = {"PROXY_LOCAL_OK": "1"}
    settings = load_settings({**base, "HOME": str(home)})
    assert settings.db_path == str(home / ".local/share/agent-cli-proxy/proxy.db")

    data_home = tmp_path / "xdg-data"
    settings = load_settings({**base, "HOME": str(home), "XDG_DATA_HOME": str(data_home)})
    assert settings.db_path == str(data_home / "agent-cli-proxy/proxy.db")
    assert settings.pricing_cache_path == str(data_home / "agent-cli-proxy/pricing-cache.json")

    # The XDG spec says to ignore relative values.
    settings = load_settings({**base, "HOME": str(home), "XDG_DATA_HOME": "relative"})
    assert settings.db_path == str(home / ".local/share/agent-cli-proxy/proxy.db")

    data_dir = tmp_path / "explicit"
    settings = load_settings({**base, "HOME": str(home), "XDG_DATA_HOME": str(data_home),
                              "AGENT_CLI_PROXY_DATA_DIR": str(data_dir)})
    assert settings.db_path == str(data_dir / "proxy.db")
    assert settings.pricing_cache_path == str(data_dir / "pricing-cache.json")

    explicit = str(tmp_path / "db" / "x.db")
    settings = load_settings({**base, "HOME": str(home), "DB_PATH": explicit})
    assert settings.db_path == explicit
    assert settings.pricing_cache_path == str(home / ".local/share/agent-cli-proxy/"
                                              "pricing-cache.json")


def test_no_home_in_the_given_environ_never_means_the_real_home() -> None:
    settings = load_settings({"PROXY_LOCAL_OK": "1"})
    assert settings.db_path == os.path.join("data", "proxy.db")
    assert any(w.startswith("DB_PATH should be an absolute path") for w in settings.warnings)


def test_system_env_file_means_system_state_dir(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    system_file = write(tmp_path / "etc" / "proxy.env", "CLI_PROXY_API_URL=http://127.0.0.1:1\n")
    settings = load_settings({"HOME": str(tmp_path / "no-user-file")})
    assert settings.env_file == str(system_file)
    assert settings.db_path == str(tmp_path / "var-lib" / "proxy.db")
    assert settings.pricing_cache_path == str(tmp_path / "var-cache" / "pricing-cache.json")
    # Same when a unit names the file explicitly; an explicit data dir still wins.
    settings = load_settings({"AGENT_CLI_PROXY_DATA_DIR": "/srv/acp"}, env_file=str(system_file))
    assert settings.db_path == "/srv/acp/proxy.db"


# --- env file: format, discovery, precedence ------------------------------------------------


def test_env_file_format() -> None:
    text = "\n".join([
        "\ufeff# a comment",
        "   ",
        "; systemd comment",
        "PLAIN=value with spaces  ",
        "export EXPORTED=1",
        "FIRST=a=b=c",
        'JSON="line\\nbreak \\"quoted\\" \\u00e9"',
        "SINGLE='lit\\eral \"x\"'",
        "EMPTY=",
        "  SPACED  =  padded  ",
        "DUP=one",
        "DUP=two",
        "no equals sign here",
        "1BAD=x",
        'BROKEN="unterminated',
        "HALF='open",
        'NOTSTR="a" trailing',
    ]) + "\r\n"
    values, problems = parse_env_text(text)
    assert values == {
        "PLAIN": "value with spaces",
        "EXPORTED": "1",
        "FIRST": "a=b=c",
        "JSON": 'line\nbreak "quoted" é',
        "SINGLE": 'lit\\eral "x"',
        "EMPTY": "",
        "SPACED": "padded",
        "DUP": "two",
    }
    assert [(p.line, p.message) for p in problems] == [
        (13, "is not a NAME=value line"),
        (14, "does not start with a valid variable name"),
        (15, "BROKEN has a badly quoted value"),
        (16, "HALF has a badly quoted value"),
        (17, "NOTSTR has a badly quoted value"),
    ]


def test_bad_env_file_lines_are_issues_without_values(home: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "proxy.env",
                 "CLI_PROXY_API_URL=http://127.0.0.1:1\nADMIN_API_KEY=\"s3cr3t-value\n"
                 "PROXY_PORT=99999\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"HOME": str(home)}, env_file=str(path))
    assert caught.value.issues == [
        ConfigIssue(f"{path}:2", "ADMIN_API_KEY has a badly quoted value"),
        ConfigIssue("PROXY_PORT", "must be an integer from 1 to 65535"),
    ]
    assert "s3cr3t" not in str(caught.value)


def test_precedence_defaults_env_file_process_env(home: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "proxy.env",
                 "PROXY_PORT=4000\nTOOL_PREFIX=file_\nCLI_PROXY_API_URL=http://127.0.0.1:1\n")
    settings = load_settings({"HOME": str(home), "PROXY_PORT": "5000"}, env_file=str(path))
    assert settings.proxy_port == 5000  # process environment beats the file
    assert settings.tool_prefix == "file_"  # the file beats the default
    assert settings.proxy_threads == 256  # default
    assert settings.env_file == str(path)


def test_env_file_discovery(home: Path, tmp_path: Path) -> None:
    line = "CLI_PROXY_API_URL=http://127.0.0.1:1\n"
    # No file anywhere: fine, nothing read.
    assert load_settings({"HOME": str(home), "PROXY_LOCAL_OK": "1"}).env_file is None

    system = write(tmp_path / "etc" / "proxy.env", line + "PROXY_PORT=1001\n")
    assert load_settings({"HOME": str(home)}).env_file == str(system)

    user = write(home / ".config" / "agent-cli-proxy" / ".env", line + "PROXY_PORT=1002\n")
    settings = load_settings({"HOME": str(home)})
    assert (settings.env_file, settings.proxy_port) == (str(user), 1002)
    assert settings.db_path.startswith(str(home))  # the user file is not the system service

    xdg = write(tmp_path / "xdg" / "agent-cli-proxy" / ".env", line + "PROXY_PORT=1003\n")
    settings = load_settings({"HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert (settings.env_file, settings.proxy_port) == (str(xdg), 1003)

    named = write(tmp_path / "named.env", line + "PROXY_PORT=1004\n")
    settings = load_settings({"HOME": str(home), "AGENT_CLI_PROXY_ENV": str(named)})
    assert (settings.env_file, settings.proxy_port) == (str(named), 1004)

    explicit = write(tmp_path / "explicit.env", line + "PROXY_PORT=1005\n")
    settings = load_settings({"HOME": str(home), "AGENT_CLI_PROXY_ENV": str(named)},
                             env_file=str(explicit))
    assert (settings.env_file, settings.proxy_port) == (str(explicit), 1005)


def test_named_env_files_must_exist(home: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.env")
    assert issues_of({"HOME": str(home)}, env_file=missing) == [
        ConfigIssue("--env-file", f"{missing} does not exist")]
    assert issues_of({"HOME": str(home), "AGENT_CLI_PROXY_ENV": missing}) == [
        ConfigIssue("AGENT_CLI_PROXY_ENV", f"{missing} does not exist")]
    assert issues_of({"HOME": str(home)}, env_file=str(tmp_path)) == [
        ConfigIssue(str(tmp_path), "could not be read: Is a directory")]


def test_env_file_can_set_the_data_dir(home: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "proxy.env", f"PROXY_LOCAL_OK=1\nAGENT_CLI_PROXY_DATA_DIR="
                                         f"{tmp_path / 'state'}\n")
    settings = load_settings({"HOME": str(home)}, env_file=str(path))
    assert settings.db_path == str(tmp_path / "state" / "proxy.db")


# --- secrets --------------------------------------------------------------------------------


def test_secret_from_name_file(home: Path, tmp_path: Path) -> None:
    secret = write(tmp_path / "admin-key", "from-file\n")
    settings = load_settings(env(home, ADMIN_API_KEY_FILE=str(secret)))
    assert settings.admin_api_key == "from-file"  # trailing newline stripped
    # NAME_FILE may also sit in the env file.
    path = write(tmp_path / "proxy.env", f"PROXY_LOCAL_OK=1\nCLIPROXY_MGMT_KEY_FILE={secret}\n")
    settings = load_settings({"HOME": str(home)}, env_file=str(path))
    assert settings.cliproxy_mgmt_key == "from-file"


def test_a_secret_file_with_a_second_line_is_refused_without_echoing_it(
        home: Path, tmp_path: Path) -> None:
    secret = write(tmp_path / "key", "cpa-SECRET-123\n# rotated 2026-11\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env(home, CLI_PROXY_API_KEY_FILE=str(secret)))
    (issue,) = caught.value.issues
    assert issue.name == "CLI_PROXY_API_KEY"
    assert "one line of printable ASCII" in issue.message
    assert "cpa-SECRET" not in str(caught.value)


def test_secret_from_systemd_credentials(home: Path, tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    write(credentials / "CLI_PROXY_API_KEY", "from-credential\n")
    settings = load_settings(env(home, CREDENTIALS_DIRECTORY=str(credentials)))
    assert settings.cli_proxy_api_key == "from-credential"
    assert settings.admin_api_key == ""  # other names simply absent


def test_secret_precedence(home: Path, tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    write(credentials / "ADMIN_API_KEY", "credential")
    named = write(tmp_path / "named", "named-file")
    path = write(tmp_path / "proxy.env", "PROXY_LOCAL_OK=1\nADMIN_API_KEY=env-file\n")

    def admin_key(**environ: str) -> str:
        full = {"HOME": str(home), **environ}
        return load_settings(full, env_file=str(path)).admin_api_key

    assert admin_key() == "env-file"
    assert admin_key(CREDENTIALS_DIRECTORY=str(credentials)) == "credential"
    assert admin_key(CREDENTIALS_DIRECTORY=str(credentials),
                     ADMIN_API_KEY_FILE=str(named)) == "named-file"
    assert admin_key(CREDENTIALS_DIRECTORY=str(credentials), ADMIN_API_KEY_FILE=str(named),
                     ADMIN_API_KEY="process") == "process"
    # An empty value never hides a secret supplied another way.
    assert admin_key(ADMIN_API_KEY="", ADMIN_API_KEY_FILE=str(named)) == "named-file"
    empty = write(tmp_path / "empty", "\n")
    assert admin_key(ADMIN_API_KEY_FILE=str(empty)) == "env-file"


def test_unreadable_secret_file_is_an_issue(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert issues_of(env(home, DASHBOARD_SESSION_SECRET_FILE=str(missing))) == [
        ConfigIssue("DASHBOARD_SESSION_SECRET_FILE",
                    f"could not read {missing}: No such file or directory")]
    # An unreadable credential names the variable; a directory stands in for "unreadable".
    credentials = tmp_path / "creds"
    (credentials / "CLIPROXY_MGMT_KEY").mkdir(parents=True)
    [issue] = issues_of(env(home, CREDENTIALS_DIRECTORY=str(credentials)))
    assert issue.name == "CLIPROXY_MGMT_KEY" and issue.message.startswith("could not read ")


def test_world_readable_env_file_with_secrets_is_warned_about(home: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "proxy.env", "PROXY_LOCAL_OK=1\nADMIN_API_KEY=k-29f8a7\n",
                 mode=0o644)
    settings = load_settings({"HOME": str(home)}, env_file=str(path))
    assert f"{path} is readable by every user but holds ADMIN_API_KEY" in settings.warnings[-1]
    assert all("k-29f8a7" not in warning for warning in settings.warnings)
    path.chmod(0o600)
    settings = load_settings({"HOME": str(home)}, env_file=str(path))
    assert not any("readable by every user" in warning for warning in settings.warnings)


# --- helpers --------------------------------------------------------------------------------


def test_ensure_directories_creates_private_parents(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    settings = settings_for_tests(db_path=str(existing / "a" / "b" / "proxy.db"),
                                  pricing_cache_path=str(tmp_path / "cache" / "prices.json"))
    ensure_directories(settings)
    for created in (existing / "a", existing / "a" / "b", tmp_path / "cache"):
        assert created.is_dir()
        assert stat.S_IMODE(created.stat().st_mode) == 0o700, created
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # not ours to change
    ensure_directories(settings)  # idempotent


def test_ensure_directories_reports_the_variable(tmp_path: Path) -> None:
    blocker = write(tmp_path / "file", "x")
    settings = settings_for_tests(db_path=str(blocker / "sub" / "proxy.db"),
                                  pricing_cache_path=str(tmp_path / "ok" / "prices.json"))
    with pytest.raises(ConfigError) as caught:
        ensure_directories(settings)
    [issue] = caught.value.issues
    assert issue.name == "DB_PATH"
    assert issue.message.startswith(f"directory {blocker / 'sub'} could not be created: ")
    assert (tmp_path / "ok").is_dir()  # the other one was still made


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_ensure_directories_reports_unwritable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    settings = settings_for_tests(pricing_cache_path=str(locked / "prices.json"))
    with pytest.raises(ConfigError) as caught:
        ensure_directories(settings)
    assert caught.value.issues == [
        ConfigIssue("PRICING_CACHE_PATH", f"directory {locked} is not writable")]


def test_ensure_directories_skips_memory_database() -> None:
    ensure_directories(dataclasses.replace(settings_for_tests(), pricing_cache_path=""))


def test_settings_for_tests() -> None:
    settings = settings_for_tests(proxy_port=0, proxy_threads=8)
    assert (settings.proxy_port, settings.proxy_threads) == (0, 8)
    assert settings.cli_proxy_api_url == "http://localhost:8317"
    assert settings.db_path == ":memory:"
    assert settings.warnings == () and settings.env_file is None
    assert settings_for_tests(proxy_host="0.0.0.0").proxy_require_api_key is True
    assert settings_for_tests(proxy_host="0.0.0.0",
                              proxy_require_api_key=False).proxy_require_api_key is False
    with pytest.raises(TypeError):
        settings_for_tests(no_such_setting=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.proxy_port = 1  # type: ignore[misc]


def test_describe_masks_secrets() -> None:
    providers = '{"providers": [{"id": "glm", "auth": {"type": "bearer", "value": "sk-2"}}]}'
    settings = settings_for_tests(admin_api_key="adm-123", client_name_mapping={"sk-1": "alice"},
                                  providers_json=providers)
    described = describe(settings)
    assert list(described) == [field.name for field in FIELDS]
    assert described["ADMIN_API_KEY"] == "[set]"
    assert described["CLI_PROXY_API_KEY"] == "[set]"
    assert described["CLIPROXY_MGMT_KEY"] == ""
    assert described["CLIENT_NAME_MAPPING"] == ["alice"]
    assert described["PROVIDERS_JSON"] == "[set]"
    assert described["CCH_POSITIONS"] == [4, 7, 20]
    assert described["PROXY_PORT"] == 3100
    dumped = json.dumps(described)
    assert "adm-123" not in dumped and "sk-1" not in dumped and "sk-2" not in dumped


# --- documentation --------------------------------------------------------------------------


def _man_entries() -> dict[str, str]:
    """``{NAME: default text}`` from the page's ``.BR NAME " (default: …)"`` entry headings."""
    text = MAN_PAGE.read_text(encoding="utf-8")
    return dict(re.findall(r'^\.BR ([A-Z][A-Z0-9_]+) " \(default: (.*)\)"$', text, re.M))


def test_man_page_lists_every_variable() -> None:
    text = MAN_PAGE.read_text(encoding="utf-8")
    for field in FIELDS:
        assert field.name in text, field.name
    assert set(_man_entries()) == {field.name for field in FIELDS}


def test_man_page_defaults_match_the_table() -> None:
    entries = _man_entries()
    for field in FIELDS:
        if not isinstance(field.default, Computed):
            shown = field.default_doc.replace("-", "\\-") or "empty"
            assert entries[field.name] == shown, field.name


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_man_page_renders_without_warnings() -> None:
    result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN_PAGE)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stderr == ""


def test_trusting_proxy_headers_requires_client_keys(home: Path) -> None:
    settings = load_settings(env(home, TRUST_PROXY_HEADERS="true"))
    assert settings.proxy_require_api_key is True  # clients come from elsewhere
    (issue,) = issues_of(env(home, TRUST_PROXY_HEADERS="true", PROXY_REQUIRE_API_KEY="false"))
    assert issue.name == "PROXY_REQUIRE_API_KEY"
    assert "TRUST_PROXY_HEADERS" in issue.message


def test_urls_show_no_credentials(home: Path) -> None:
    settings = load_settings(env(home, CLI_PROXY_API_URL="http://user:pa55@127.0.0.1:8317",
                                 PRICING_URL="https://me:tok@mirror.example/api.json"))
    shown = describe(settings)
    assert shown["CLI_PROXY_API_URL"] == "http://127.0.0.1:8317"
    assert shown["PRICING_URL"] == "https://mirror.example/api.json"


# --- inspect_settings: every problem, and settings anyway (doctor, paths) ------------------


def test_inspect_settings_reports_and_falls_back(home: Path, tmp_path: Path) -> None:
    settings, issues = config.inspect_settings(env(home, PROXY_PORT="huge", LOG_LEVEL="loud"))
    assert [i.name for i in issues] == issues_names(env(home, PROXY_PORT="huge",
                                                        LOG_LEVEL="loud"))
    assert (settings.proxy_port, settings.log_level) == (3100, "info")  # the defaults
    missing = str(tmp_path / "missing.env")
    settings, issues = config.inspect_settings(env(home), env_file=missing)
    assert [i.name for i in issues] == ["--env-file"] and settings.env_file is None
    unreadable = tmp_path / "bad.env"
    unreadable.write_bytes(b"\xff\xfe not utf-8")
    settings, issues = config.inspect_settings(env(home), env_file=str(unreadable))
    assert issues[0].name == str(unreadable) and settings.env_file == str(unreadable)


def issues_names(environ: dict[str, str]) -> list[str]:
    return [i.name for i in issues_of(environ)]


def test_user_env_file_and_search_order(home: Path, tmp_path: Path) -> None:
    assert config.user_env_file({"HOME": str(home)}) == str(
        home / ".config" / "agent-cli-proxy" / ".env")
    xdg = {"HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    assert config.env_file_candidates(xdg) == [
        str(tmp_path / "cfg" / "agent-cli-proxy" / ".env"), config.SYSTEM_ENV_FILE]
    assert config.env_file_candidates({}) == [config.SYSTEM_ENV_FILE]
