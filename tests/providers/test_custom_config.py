"""The custom-provider document: every check with the original's messages, no secret ever
echoed, tokens from the environment, and the redacted view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent_cli_proxy import config
from agent_cli_proxy.config import (
    ConfigError,
    ConfigIssue,
    load_providers,
    load_settings,
    provider_document_issues,
    settings_for_tests,
)
from agent_cli_proxy.providers.custom_config import (
    REDACTED,
    ProviderAuth,
    check_document,
    registry_view,
    resolve_tokens,
)

SECRET = "sk-live-DO-NOT-SHOW-0123456789"


@pytest.fixture(autouse=True)
def no_system_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a real /etc/agent-cli-proxy out of every test."""
    monkeypatch.setattr(config, "SYSTEM_ENV_FILE", str(tmp_path / "etc" / "proxy.env"))


def good(**overrides: Any) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "id": "glm", "type": "openai-compatible", "paths": ["/v1/chat/completions"],
        "upstreamBaseUrl": "https://open.bigmodel.cn/api/paas/v4/",
        "upstreamPath": "/chat/completions", "models": ["glm"],
        "headers": {"X-Team": "blue"},
        "auth": {"type": "bearer", "env": "GLM_API_KEY"}, "stripProviderField": True}
    provider.update(overrides)
    return provider


def issues(*providers: Any) -> list[tuple[str, str]]:
    return check_document({"providers": list(providers)})[1]


def test_a_valid_document_describes_its_providers() -> None:
    local = {"id": "local", "type": "anthropic", "paths": ["/v1/messages"],
             "upstreamBaseUrl": "HTTP://LocalHost:11434"}
    providers, problems = check_document({"providers": [good(), local]})
    assert problems == []
    glm, plain = providers
    assert glm.upstream_base_url == "https://open.bigmodel.cn/api/paas/v4"  # no trailing /
    assert glm.auth == ProviderAuth("bearer", env="GLM_API_KEY")
    assert (glm.headers, glm.strip_provider_field, glm.transform) == (
        (("X-Team", "blue"),), True, None)
    # Defaults: any model, client credentials preserved, body untouched.
    assert plain.upstream_base_url == "http://localhost:11434"
    assert (plain.models, plain.auth.type, plain.strip_provider_field, plain.upstream_path,
            plain.headers) == ((), "preserve", False, None, ())
    assert check_document({"providers": []}) == ((), [])


def test_model_lists_match_by_prefix_and_an_empty_list_matches_anything() -> None:
    (glm, anything), _ = check_document({"providers": [
        good(models=["glm-4", "glm-z1"]), good(id="any", models=[])]})
    assert glm.accepts_model("glm-4") and glm.accepts_model("glm-4.6")
    assert not glm.accepts_model("glm-5") and not glm.accepts_model(None)
    assert anything.accepts_model("whatever") and anything.accepts_model(None)


def test_document_shape_messages() -> None:
    assert check_document([]) == ((), [("providers", "must be contained in an object")])
    assert check_document({}) == ((), [("providers", "must be an array")])
    assert check_document({"providers": {}})[1] == [("providers", "must be an array")]
    assert issues(good(), "glm") == [("providers[1]", "must be an object")]


def test_every_field_message_names_the_provider_and_field() -> None:
    assert issues({}) == [
        ("providers[0].id", "must be a non-empty string"),
        ("providers[0].type", "must be one of openai-compatible, anthropic"),
        ("providers[0].paths", "must be a non-empty string array"),
        ("providers[0].upstreamBaseUrl", "must be a non-empty http(s) URL string"),
    ]
    assert issues(good(id=" ", type="openai", paths=[])) == [
        ("providers[0].id", "must be a non-empty string"),
        ("providers[0].type", "must be one of openai-compatible, anthropic"),
        ("providers[0].paths", "must be a non-empty string array"),
    ]
    assert issues(good(paths=["/v1/messages", "", 3, "v1/x"])) == [
        ("providers[0].paths[1]", "must be a non-empty string"),
        ("providers[0].paths[2]", "must be a non-empty string"),
        ("providers[0].paths[3]", "must start with /"),
    ]
    assert issues(good(upstreamBaseUrl="ftp://x")) == [
        ("providers[0].upstreamBaseUrl", "must be an http(s) URL")]
    assert issues(good(upstreamBaseUrl="http://")) == [
        ("providers[0].upstreamBaseUrl", "must be a parseable http(s) URL")]
    assert issues(good(upstreamBaseUrl=7)) == [
        ("providers[0].upstreamBaseUrl", "must be a non-empty http(s) URL string")]
    assert issues(good(upstreamPath="")) == [
        ("providers[0].upstreamPath", "must be a non-empty string")]
    assert issues(good(models="glm")) == [("providers[0].models", "must be a string array")]
    assert issues(good(models=["glm", 4])) == [("providers[0].models", "must be a string array")]
    assert issues(good(models=[""])) == [("providers[0].models[0]", "must be a non-empty string")]
    assert issues(good(headers=[])) == [("providers[0].headers", "must be an object")]
    assert issues(good(headers={"": "x", "X-N": 1, "Host": "h", "Bad Name": "v"})) == [
        ("providers[0].headers", "must not contain empty header names"),
        ("providers[0].headers.X-N", "must be a string"),
        ("providers[0].headers.Host", "is set by the proxy for its own connection"),
        ("providers[0].headers", "must contain only valid header names"),
    ]
    assert issues(good(stripProviderField="yes")) == [
        ("providers[0].stripProviderField", "must be a boolean")]
    assert issues(good(transform="opencode")) == [
        ("providers[0].transform", "must be one of claude-code")]
    assert issues(good(transform="claude-code")) == []


def test_auth_messages() -> None:
    one_of = "must be one of none, preserve, bearer, x-api-key"
    for auth in ("none", "preserve", {"type": "none"}, {"type": "x-api-key", "value": "k",
                                                        "header": "api-key"}):
        assert issues(good(auth=auth)) == [], auth
    assert issues(good(auth="basic")) == [("providers[0].auth", one_of)]
    assert issues(good(auth=3)) == [("providers[0].auth", one_of)]
    assert issues(good(auth={"type": "basic", "value": "v"})) == [
        ("providers[0].auth.type", one_of)]
    assert issues(good(auth={"type": "", "value": "v"})) == [
        ("providers[0].auth.type", "must be a non-empty string")]
    assert issues(good(auth={"value": "v"})) == [
        ("providers[0].auth.type", "must be a non-empty string")]
    assert issues(good(auth={"type": "bearer", "value": "v", "token": "t", "scheme": "x"})) == [
        ("providers[0].auth.token", "is not supported"),
        ("providers[0].auth.scheme", "is not supported"),
    ]
    assert issues(good(auth={"type": "bearer", "env": "", "header": 5})) == [
        ("providers[0].auth.env", "must be a non-empty string"),
        ("providers[0].auth.header", "must be a non-empty string"),
    ]
    # A token is needed to set one, and only one source of it makes sense.
    assert issues(good(auth="bearer")) == [
        ("providers[0].auth", "must be an object with env or value when the type is bearer")]
    assert issues(good(auth={"type": "x-api-key"})) == [
        ("providers[0].auth", "must name env or value when the type is x-api-key")]
    assert issues(good(auth={"type": "bearer", "env": "E", "value": "v"})) == [
        ("providers[0].auth", "must name only one of env and value")]


def test_ids_are_unique_and_the_default_upstreams_id_is_taken() -> None:
    assert issues(good(), good(), good(id="cliproxyapi")) == [
        ("providers[1].id", "must be unique (providers[0] has it)"),
        ("providers[2].id", "must not be cliproxyapi, the default upstream's id"),
    ]


def test_no_message_ever_repeats_a_secret() -> None:
    bad = [
        good(auth={"type": "bearer", "value": SECRET, "extra": SECRET}),
        good(id="b", auth={"type": SECRET, "value": SECRET}),
        good(id="c", auth={"type": "bearer", "value": SECRET + "\r\nX-Evil: 1"}),
        good(id="d", headers={"Authorization": SECRET + "\n", "X-Key": [SECRET]}),
        good(id="e", auth=SECRET),
    ]
    problems = issues(*bad)
    assert len(problems) == 6
    assert SECRET not in json.dumps(problems)
    with pytest.raises(ConfigError) as caught:
        load_settings({"CLI_PROXY_API_URL": "http://127.0.0.1:8317",
                       "PROVIDERS_JSON": json.dumps({"providers": bad})})
    assert SECRET not in str(caught.value)
    assert "providers[0].auth.extra is not supported" in str(caught.value)


def test_schema_problems_are_configuration_errors(tmp_path: Path) -> None:
    base = {"HOME": str(tmp_path), "CLI_PROXY_API_URL": "http://127.0.0.1:8317"}
    doc = json.dumps({"providers": [good(type="x")]})
    with pytest.raises(ConfigError) as caught:
        load_settings({**base, "PROVIDERS_JSON": doc})
    assert caught.value.issues == [
        ConfigIssue("providers[0].type", "must be one of openai-compatible, anthropic")]
    path = tmp_path / "providers.json"
    path.write_text(doc)
    with pytest.raises(ConfigError) as caught:
        load_settings({**base, "PROVIDERS_CONFIG_PATH": str(path)})
    assert [i.name for i in caught.value.issues] == ["providers[0].type"]
    assert provider_document_issues({"providers": [good()]}) == []


def test_tokens_come_from_the_environment_then_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "proxy.env"
    env_file.write_text("FILE_KEY=from-file\nBOTH_KEY=file-loses\n")
    doc = {"providers": [
        good(id="a", auth={"type": "bearer", "env": "FILE_KEY"}),
        good(id="b", auth={"type": "x-api-key", "env": "BOTH_KEY"}),
        good(id="c", auth={"type": "bearer", "env": "UNSET_KEY"}),
        good(id="d", auth={"type": "bearer", "value": "literal"}),
    ]}
    settings = settings_for_tests(providers_json=json.dumps(doc), env_file=str(env_file))
    loaded = load_providers(settings, {"BOTH_KEY": "from-env"})
    assert loaded.source == "PROVIDERS_JSON" and loaded.path is None
    assert [p.auth.token for p in loaded.providers] == ["from-file", "from-env", None,
                                                        "literal"]
    assert loaded.warnings == ("provider c: auth.env names UNSET_KEY, which is not set; its "
                               "requests are sent without a credential",)
    assert "from-file" not in repr(loaded) and "literal" not in repr(loaded)


def test_load_providers_rereads_the_file_and_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "providers.json"
    path.write_text(json.dumps({"providers": [good()]}))
    settings = settings_for_tests(providers_config_path=str(path))
    loaded = load_providers(settings, {})
    assert (loaded.source, loaded.path, [p.id for p in loaded.providers]) == (
        "PROVIDERS_CONFIG_PATH", str(path), ["glm"])
    path.write_text("{")
    with pytest.raises(ConfigError) as caught:
        load_providers(settings, {})
    assert caught.value.issues[0].name == "PROVIDERS_CONFIG_PATH"
    path.unlink()
    with pytest.raises(ConfigError) as caught:
        load_providers(settings, {})
    assert caught.value.issues[0].message.startswith("could not be read")
    assert load_providers(settings_for_tests(), {}).providers == ()


def test_the_view_never_shows_a_credential() -> None:
    doc = {"providers": [
        good(headers={"Authorization": f"Bearer {SECRET}", "X-Team": SECRET},
             auth={"type": "x-api-key", "value": SECRET, "header": "api-key"},
             upstreamBaseUrl="https://llm.example/v1"),
        good(id="env", auth={"type": "bearer", "env": "GLM_API_KEY"}),
    ]}
    settings = settings_for_tests(providers_json=json.dumps(doc))
    loaded = load_providers(settings, {"GLM_API_KEY": SECRET})
    view = registry_view("http://user:pw@127.0.0.1:8317", loaded)
    assert SECRET not in json.dumps(view) and "pw" not in json.dumps(view)
    default, literal, from_env = view["providers"]
    assert default["id"] == "cliproxyapi" and default["upstreamBaseUrl"] == (
        "http://127.0.0.1:8317")
    assert literal["headers"] == ["Authorization", "X-Team"]
    assert literal["auth"] == {"type": "x-api-key", "value": REDACTED, "header": "api-key"}
    assert literal["upstreamBaseUrl"] == "https://llm.example/v1"
    assert from_env["auth"] == {"type": "bearer", "env": "GLM_API_KEY", "envSet": True}
    assert (view["source"], view["path"]) == ("PROVIDERS_JSON", None)


@pytest.mark.parametrize(("change", "name", "message"), [
    ({"upstreamBaseUrl": f"https://user:{SECRET}@llm.example/v1"}, "upstreamBaseUrl",
     "must not contain user:password (use auth instead)"),
    ({"headers": {"X-Org": "Z\u00fcrich"}}, "headers.X-Org",
     "must be one line of printable ASCII characters"),
    ({"auth": {"type": "bearer", "value": SECRET + "\n# old"}}, "auth.value",
     "must be one line of printable ASCII characters"),
    ({"auth": {"type": "x-api-key", "value": SECRET, "header": "Content-Length"}},
     "auth.header", "is set by the proxy for its own connection"),
    ({"paths": ["/v1/chat completions"]}, "paths[0]",
     "must be a request path (visible ASCII, no spaces, query or fragment)"),
    ({"upstreamPath": "/v1/x\r\nX: y"}, "upstreamPath",
     "must be a request path (visible ASCII, no spaces)"),
    ({"id": " glm "}, "id", "must be visible ASCII characters without spaces or /"),
    ({"id": "a/b"}, "id", "must be visible ASCII characters without spaces or /"),
])
def test_values_that_could_not_be_sent_as_they_are_are_refused(
        change: dict[str, object], name: str, message: str) -> None:
    _, issues = check_document({"providers": [good(**change)]})
    assert (f"providers[0].{name}", message) in issues
    assert SECRET not in repr(issues)


def test_a_token_from_the_environment_with_a_second_line_is_not_sent() -> None:
    (provider,), _ = check_document({"providers": [
        good(auth={"type": "bearer", "env": "GLM_API_KEY"})]})
    (resolved,), warnings = resolve_tokens((provider,), {"GLM_API_KEY": SECRET + "\nx"}.get)
    assert resolved.auth.token is None
    assert len(warnings) == 1 and SECRET not in warnings[0]
