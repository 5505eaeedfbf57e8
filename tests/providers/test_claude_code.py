"""The Claude Code bypass transform (spec §8.3), with the original's bugs (§12.10) fixed."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from werkzeug.datastructures import Headers

from agent_cli_proxy.config import settings_for_tests
from agent_cli_proxy.providers.claude_code import (
    IDENTITY,
    REQUIRED_BETAS,
    ClaudeCodeOptions,
    JsonToolNameRestorer,
    SseToolNameRestorer,
    billing_text,
    is_claude_code,
    response_rewriter,
    rewrite_request,
    tool_name_map,
)
from agent_cli_proxy.upstream.relay import Transform

FIXTURES = Path(__file__).parent.parent / "usage" / "fixtures"
OPTIONS = ClaudeCodeOptions(
    version="2.1.87",
    cch_salt="59cf53e54c78",
    cch_positions=(4, 7, 20),
    tool_prefix="mcp_",
    session_id="11111111-2222-3333-4444-555555555555",
)
BILLING_HI = "x-anthropic-billing-header: cc_version=2.1.87.201; cc_entrypoint=sdk-cli; cch=8f434;"


def body_of(obj: dict[str, Any], options: ClaudeCodeOptions = OPTIONS) -> dict[str, Any]:
    _, body = rewrite_request([], json.dumps(obj).encode(), options)
    out: dict[str, Any] = json.loads(body)
    return out


def texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["text"] for b in blocks]


# -- options ----------------------------------------------------------------------------------


def test_options_from_settings_share_one_session_per_process() -> None:
    settings = settings_for_tests(claude_code_version="9.9.9", tool_prefix="x_")
    first = ClaudeCodeOptions.from_settings(settings)
    assert (first.version, first.cch_salt, first.cch_positions, first.tool_prefix) == (
        "9.9.9", "59cf53e54c78", (4, 7, 20), "x_")
    assert uuid.UUID(first.session_id).version == 4
    assert ClaudeCodeOptions.from_settings(settings_for_tests()).session_id == first.session_id


# -- step 2: billing header -------------------------------------------------------------------


def test_billing_test_vector() -> None:
    assert billing_text("hi", OPTIONS) == BILLING_HI
    out = body_of({"messages": [{"role": "user", "content": "hi"}]})
    assert texts(out["system"]) == [BILLING_HI, IDENTITY]


def test_billing_positions_count_utf16_code_units_like_javascript() -> None:
    text = "ab\U0001f600cdefgh"  # the emoji is two UTF-16 units: position 4 is "c", 7 is "f"
    suffix = hashlib.sha256(b"59cf53e54c78cf02.1.87").hexdigest()[:3]
    cch = hashlib.sha256(text.encode()).hexdigest()[:5]
    assert billing_text(text, OPTIONS) == (
        f"x-anthropic-billing-header: cc_version=2.1.87.{suffix}; cc_entrypoint=sdk-cli; "
        f"cch={cch};"
    )


def test_billing_text_comes_from_the_first_user_message_first_text_block() -> None:
    out = body_of({"messages": [
        {"role": "assistant", "content": "ignored"},
        {"role": "user", "content": [{"type": "image", "source": {}}, {"type": "text",
                                                                       "text": "hi"}]},
        {"role": "user", "content": "later"},
    ]})
    assert out["system"][0]["text"] == BILLING_HI
    no_text = body_of({"messages": [{"role": "user", "content": [{"type": "image"}]}]})
    assert no_text["system"][0]["text"] == billing_text("", OPTIONS)


def test_no_user_message_no_billing_block() -> None:
    out = body_of({"system": "Be brief.", "messages": [{"role": "assistant", "content": "x"}]})
    # Step 4 needs a user message: without one the system keeps everything.
    assert texts(out["system"]) == [IDENTITY, "Be brief."]


# -- steps 1, 3, 4: system ---------------------------------------------------------------------


def test_string_system_moves_into_string_user_content() -> None:
    out = body_of({"model": "m", "system": "Be brief.", "messages": [
        {"role": "user", "content": "hi"}]})
    assert out["system"] == [{"type": "text", "text": BILLING_HI},
                             {"type": "text", "text": IDENTITY}]
    assert out["messages"] == [{"role": "user", "content": "Be brief.\n\nhi"}]
    assert list(out) == ["model", "system", "messages"]  # an existing key keeps its place


def test_absent_or_empty_system_gets_just_the_core_blocks() -> None:
    systems: list[dict[str, Any]] = [{}, {"system": ""}, {"system": []}]
    for system in systems:
        out = body_of({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 5} | system)
        assert texts(out["system"]) == [BILLING_HI, IDENTITY]
        assert out["messages"] == [{"role": "user", "content": "hi"}]
    # An absent system key is added after the others.
    assert list(body_of({"model": "m", "messages": []})) == ["model", "messages", "system"]


def test_block_system_extras_become_a_leading_text_block_in_list_content() -> None:
    out = body_of({"system": [
        {"type": "text", "text": "One."},
        {"type": "text", "text": "Two.", "cache_control": {"type": "ephemeral"}},
    ], "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    assert texts(out["system"]) == [BILLING_HI, IDENTITY]
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "One.\n\nTwo."}, {"type": "text", "text": "hi"}]


def test_sanitising_opencode_paragraphs() -> None:
    system = (
        "You are OpenCode, the best coding agent on the planet.\n\n"
        "Use tools.\n\n"
        "For help see github.com/anomalyco/opencode\nor ask.\n\n"
        "Docs: opencode.ai/docs.\n\n"
        "It is best if OpenCode honestly says so; if OpenCode honestly unsure, ask.\n\n  "
    )
    out = body_of({"system": [
        {"type": "text", "text": system, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "You are OpenCode."},  # empty after sanitising: dropped
    ], "messages": [{"role": "assistant", "content": "x"}]})
    assert out["system"] == [
        {"type": "text", "text": IDENTITY},
        {"type": "text", "cache_control": {"type": "ephemeral"}, "text":
         "Use tools.\n\nIt is best if the assistant honestly says so; "
         "if OpenCode honestly unsure, ask."},
    ]


def test_identity_already_first_adds_nothing() -> None:
    out = body_of({"system": [{"type": "text", "text": IDENTITY}, {"type": "text",
                                                                   "text": "Rules."}],
                   "messages": [{"role": "user", "content": "hi"}]})
    assert texts(out["system"]) == [IDENTITY]  # no billing block either
    assert out["messages"][0]["content"] == "Rules.\n\nhi"


def test_user_content_of_another_shape_keeps_system_whole() -> None:
    out = body_of({"system": "Rules.", "messages": [{"role": "user", "content": None}]})
    assert texts(out["system"]) == [billing_text("", OPTIONS), IDENTITY, "Rules."]
    assert out["messages"] == [{"role": "user", "content": None}]


# -- step 5: tool names ------------------------------------------------------------------------


def test_tool_names_are_prefixed_and_capitalised() -> None:
    original = {
        "tools": [{"name": "bash", "input_schema": {}}, {"name": "Read", "type": "custom"},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "tool", "name": "bash"},
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "ok", "name": "bash"},
                {"type": "tool_use", "id": "t1", "name": "bash", "input": {}},
                {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},
                {"type": "tool_use", "id": "t2", "name": "todowrite", "input": {}},
            ]},
        ],
    }
    out = body_of(original)
    assert [t["name"] for t in out["tools"]] == ["mcp_Bash", "mcp_Read", "web_search"]
    assert out["tool_choice"] == {"type": "tool", "name": "mcp_Bash"}
    assert [b["name"] for b in out["messages"][1]["content"]] == [
        "bash", "mcp_Bash", "web_search", "mcp_Todowrite"]
    assert tool_name_map(json.dumps(original).encode(), OPTIONS) == {
        "mcp_Bash": "bash", "mcp_Read": "Read", "mcp_Todowrite": "todowrite"}


def test_configured_prefix_is_used() -> None:
    options = ClaudeCodeOptions("2.1.87", "s", (1,), "x__", "sid")
    body = json.dumps({"tools": [{"name": "grep"}]}).encode()
    assert body_of({"tools": [{"name": "grep"}]}, options)["tools"] == [{"name": "x__Grep"}]
    assert tool_name_map(body, options) == {"x__Grep": "grep"}


# -- bodies left alone -------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe{}",
    '{"a": 1}'.encode("utf-16"),
    b'{"system": 5, "messages": []}',
    b'{"system": ["a string"], "messages": []}',
    b'{"system": [{"type": "image"}], "messages": []}',
    b'{"messages": {"role": "user"}}',
])
def test_other_bodies_are_forwarded_unchanged(body: bytes) -> None:
    headers, out = rewrite_request([("Content-Length", str(len(body)))], body, OPTIONS)
    assert out == body
    assert ("Content-Length", str(len(body))) in headers
    assert dict(headers)["user-agent"] == "claude-cli/2.1.87 (external, cli)"
    assert tool_name_map(body, OPTIONS) == {}


def test_lone_surrogates_survive_reserialising() -> None:
    body = b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}'
    out = json.loads(rewrite_request([], body, OPTIONS)[1])
    assert out["messages"][0]["content"] == "a\ud800b"
    assert out["system"][0]["text"] == billing_text("a\ud800b", OPTIONS)


# -- headers -----------------------------------------------------------------------------------


def test_headers_replaced_whatever_their_case_others_kept_in_order() -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'
    client = [
        ("Host", "proxy"),
        ("User-Agent", "opencode/1.18.33"),
        ("Content-Length", str(len(body))),
        ("X-APP", "other"),
        ("anthropic-version", "2023-06-01"),
        ("ANTHROPIC-BETA", "structured-outputs-2025-11-13, oauth-2025-04-20"),
        ("x-session-id", "ses_1"),
        ("anthropic-beta", "context-1m-2025-08-07,structured-outputs-2025-11-13,,"),
        ("X-Stainless-OS", "Plan9"),
    ]
    headers, new_body = rewrite_request(client, body, OPTIONS)
    assert headers[:4] == [
        ("Host", "proxy"),
        ("Content-Length", str(len(new_body))),
        ("anthropic-version", "2023-06-01"),
        ("x-session-id", "ses_1"),
    ]
    forced = dict(headers[4:])
    assert len(forced) == len(headers) - 4  # each set once
    assert forced["user-agent"] == "claude-cli/2.1.87 (external, cli)"
    assert forced["x-app"] == "cli"
    assert forced["x-claude-code-session-id"] == OPTIONS.session_id
    assert forced["x-stainless-arch"] in {"x64", "arm64"}
    assert forced["x-stainless-os"] in {"Linux", "MacOS", "Windows"}
    assert forced["x-stainless-lang"] == "js"
    assert forced["x-stainless-runtime"] == "node"
    assert forced["x-stainless-runtime-version"].startswith("v")
    assert forced["anthropic-dangerous-direct-browser-access"] == "true"
    # The client's betas are kept, after the required ones, each once.
    assert forced["anthropic-beta"].split(",") == [
        *REQUIRED_BETAS, "structured-outputs-2025-11-13", "context-1m-2025-08-07"]


def test_betas_without_client_betas() -> None:
    headers, _ = rewrite_request([], b"{}", OPTIONS)
    assert dict(headers)["anthropic-beta"] == (
        "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14")


# -- is_claude_code ----------------------------------------------------------------------------


def _captures() -> list[tuple[str, str, list[tuple[str, str]]]]:
    cases = []
    for path in sorted(FIXTURES.glob("*.json")):
        doc = json.loads(path.read_text())
        for index, request in enumerate(doc["requests"]):
            headers = [(name, value) for name, value in request["headers"]]
            cases.append((f"{path.stem}[{index}]", doc["tool"], headers))
    return cases


CAPTURES = _captures()


@pytest.mark.parametrize(("tool", "headers"), [(t, h) for _, t, h in CAPTURES],
                         ids=[i for i, _, _ in CAPTURES])
def test_is_claude_code_on_real_captures(tool: str, headers: list[tuple[str, str]]) -> None:
    expected = tool == "claude-code"
    assert is_claude_code(Headers(headers)) is expected
    assert is_claude_code(dict(headers)) is expected
    assert is_claude_code({k.lower(): v for k, v in headers}) is expected
    assert is_claude_code({k.upper(): v for k, v in headers}) is expected


def test_captures_cover_both_answers() -> None:
    tools = {tool for _, tool, _ in CAPTURES}
    assert "claude-code" in tools
    assert {"opencode", "codex"} <= tools


def test_is_claude_code_other_signals() -> None:
    assert is_claude_code({"x-app": "cli", "X-Claude-Code-Session-Id": "s"})
    assert not is_claude_code({"x-app": "cli"})
    assert not is_claude_code({"anthropic-beta": "claude-code-20250219"})
    assert not is_claude_code({"User-Agent": "opencode/1.18.33 claude-cli/1.0"})
    assert not is_claude_code({})
    # What the transform sends is recognised: a second proxy leaves it alone.
    headers, _ = rewrite_request([("User-Agent", "opencode/1")], b"{}", OPTIONS)
    assert is_claude_code(Headers(headers))


# -- responses ---------------------------------------------------------------------------------

NAMES = {"mcp_Bash": "Bash", "mcp_Read": "read"}


def run(transform: Transform, chunks: list[bytes]) -> bytes:
    return b"".join(transform.feed(c) for c in chunks) + transform.finish()


def test_response_rewriter_choice() -> None:
    sse, js = SseToolNameRestorer, JsonToolNameRestorer
    assert isinstance(response_rewriter("text/event-stream", True, OPTIONS, NAMES), sse)
    assert isinstance(response_rewriter("Text/Event-Stream; charset=utf-8", False, OPTIONS,
                                        NAMES), sse)
    assert isinstance(response_rewriter("application/json", False, OPTIONS, NAMES), js)
    assert isinstance(response_rewriter("application/json; charset=utf-8", True, OPTIONS,
                                        NAMES), js)
    assert isinstance(response_rewriter(None, True, OPTIONS, NAMES), sse)
    assert response_rewriter(None, False, OPTIONS, NAMES) is None
    for other in ("text/plain", "application/octet-stream", "application/gzip", "text/html"):
        assert response_rewriter(other, True, OPTIONS, NAMES) is None
    assert response_rewriter("application/json", False, OPTIONS) is None  # nothing to restore
    assert response_rewriter("text/event-stream", True, OPTIONS, {}) is None


def test_json_response_restores_only_tool_use_names() -> None:
    body = json.dumps({
        "id": "msg_1", "type": "message", "role": "assistant",
        "content": [
            {"type": "text", "text": "calling mcp_Bash", "name": "mcp_Bash"},
            {"type": "tool_use", "id": "t1", "name": "mcp_Bash", "input": {"name": "mcp_Read"}},
            {"type": "tool_use", "id": "t2", "name": "mcp_Other", "input": {}},
            {"type": "tool_use", "id": "t3", "name": "mcp_Read", "input": {}},
        ],
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }).encode()
    transform = response_rewriter("application/json", False, OPTIONS, NAMES)
    assert transform is not None
    out = run(transform, [body[:10], body[10:]])
    content = json.loads(out)["content"]
    assert [b.get("name") for b in content] == ["mcp_Bash", "Bash", "mcp_Other", "read"]
    assert content[1]["input"] == {"name": "mcp_Read"}
    assert json.loads(out) | {"content": None} == json.loads(body) | {"content": None}


@pytest.mark.parametrize("body", [
    b'{"type":"error","error":{"type":"overloaded_error","message":"mcp_Bash"}}',
    b'{ "content" : [ {"type": "text", "text": "hi"} ] }',
    b'{"content": [{"type": "tool_use", "name": "mcp_Grep"}]}',
    b"not json at all",
    b"\x1f\x8b\x08\x00compressed",
    b"",
])
def test_json_response_without_changes_is_byte_identical(body: bytes) -> None:
    assert run(JsonToolNameRestorer(NAMES), [body]) == body


def sse(*events: tuple[str, dict[str, Any]], eol: str = "\n") -> bytes:
    lines = []
    for name, data in events:
        lines += [f"event: {name}", f"data: {json.dumps(data)}", ""]
    return (eol.join(lines) + eol).encode()


STREAM_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "content": [], "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
        "type": "text_delta", "text": 'say {"name": "mcp_Bash"} \u00e9'}}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_1", "name": "mcp_Bash", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {
        "type": "input_json_delta", "partial_json": '{"name": "mcp_Read"}'}}),
    ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_2", "name": "mcp_Unknown", "input": {}}}),
    ("content_block_start", {"type": "content_block_start", "index": 3, "content_block": {
        "type": "tool_use", "id": "toolu_3", "name": "mcp_Read", "input": {}}}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                       "usage": {"output_tokens": 5}}),
    ("message_stop", {"type": "message_stop"}),
]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_sse_restores_tool_use_starts_and_passes_everything_else_byte_identical(
    eol: str,
) -> None:
    stream = sse(*STREAM_EVENTS, eol=eol)
    out = run(SseToolNameRestorer(NAMES), [stream])
    sep = eol.encode()
    in_lines, out_lines = stream.split(sep), out.split(sep)
    assert len(in_lines) == len(out_lines)
    changed = [(a, b) for a, b in zip(in_lines, out_lines, strict=True) if a != b]
    assert [json.loads(b[6:])["content_block"]["name"] for _, b in changed] == ["Bash", "read"]
    for before, after in changed:
        assert after.startswith(b"data: {")
        assert json.loads(after[6:]) | {"content_block": None} == (
            json.loads(before[6:]) | {"content_block": None})


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_sse_any_split_gives_the_unsplit_output(eol: str) -> None:
    stream = sse(*STREAM_EVENTS, eol=eol)
    whole = run(SseToolNameRestorer(NAMES), [stream])
    for cut in range(len(stream) + 1):
        assert run(SseToolNameRestorer(NAMES), [stream[:cut], stream[cut:]]) == whole, cut
    assert run(SseToolNameRestorer(NAMES), [stream[i : i + 1] for i in
                                            range(len(stream))]) == whole


def test_sse_releases_each_complete_line_at_once() -> None:
    transform = SseToolNameRestorer(NAMES)
    start = sse(STREAM_EVENTS[3])
    rewritten = run(SseToolNameRestorer(NAMES), [start])
    assert b'"name":"Bash"' in rewritten
    out = transform.feed(start + b"event: content_block_delta\ndata: {")
    assert out == rewritten + b"event: content_block_delta\n"  # only "data: {" held
    assert transform.feed(b'"type": "ping"}\n\n') == b'data: {"type": "ping"}\n\n'
    assert transform.finish() == b""


def test_sse_unterminated_last_line_is_rewritten_at_finish() -> None:
    line = b'data:{"type":"content_block_start","index":0,"content_block":' \
           b'{"type":"tool_use","id":"t","name":"mcp_Bash","input":{}}}'
    transform = SseToolNameRestorer(NAMES)
    assert transform.feed(line) == b""
    assert transform.finish() == line.replace(b"mcp_Bash", b"Bash")


def test_sse_large_lines() -> None:
    start = {"type": "content_block_start", "index": 0, "content_block": {
        "type": "tool_use", "id": "t", "name": "mcp_Bash", "input": {}, "pad": "x" * 200_000}}
    big = f"data: {json.dumps(start)}\n\n".encode()
    out = run(SseToolNameRestorer(NAMES), [big[i : i + 4096] for i in range(0, len(big), 4096)])
    assert json.loads(out[6:])["content_block"]["name"] == "Bash"  # under the limit: rewritten
    # Over the limit the line is not held back: it passes as it comes, whole or split.
    transform = SseToolNameRestorer(NAMES, max_line_bytes=1000)
    assert transform.feed(big[:999]) == b""
    assert transform.feed(big[999:1500]) == big[:1500]
    assert transform.feed(big[1500:]) == big[1500:]
    assert transform.finish() == b""
    assert run(SseToolNameRestorer(NAMES, max_line_bytes=1000), [big]) == big
    for cut in range(0, len(big), 997):
        transform = SseToolNameRestorer(NAMES, max_line_bytes=1000)
        assert run(transform, [big[:cut], big[cut:]]) == big


def test_sse_garbage_passes_unchanged() -> None:
    data = (b'data: {"type":"content_block_start","content_block":{"type":"tool_use",'
            b'"name":"mcp_Bash"\n\n\x1f\x8b\xff\xfe\r\n: comment "tool_use"\n\n')
    for cut in range(len(data) + 1):
        assert run(SseToolNameRestorer(NAMES), [data[:cut], data[cut:]]) == data


# -- round trip --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Bash", "bash", "todoWrite", "mcp_thing"])
def test_round_trip_restores_the_exact_client_name(name: str) -> None:
    request = json.dumps({"tools": [{"name": name, "input_schema": {}}],
                          "messages": [{"role": "user", "content": "hi"}]}).encode()
    names = tool_name_map(request, OPTIONS)
    _, sent = rewrite_request([], request, OPTIONS)
    upstream_name = json.loads(sent)["tools"][0]["name"]
    assert upstream_name == "mcp_" + name[0].upper() + name[1:]

    stream = sse(("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "tool_use", "id": "t",
                                                            "name": upstream_name,
                                                            "input": {}}}))
    transform = response_rewriter("text/event-stream", True, OPTIONS, names)
    assert transform is not None
    out = run(transform, [stream])
    assert json.loads(out.split(b"\n")[1][6:])["content_block"]["name"] == name

    body = json.dumps({"content": [{"type": "tool_use", "id": "t", "name": upstream_name,
                                    "input": {}}]}).encode()
    transform = response_rewriter("application/json", False, OPTIONS, names)
    assert transform is not None
    assert json.loads(run(transform, [body]))["content"][0]["name"] == name
