"""classify() reads most bodies with the plain C parse; it must say exactly what the
first-occurrence reading (a Python hook for every object) says, for every body."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_cli_proxy.providers import routes
from agent_cli_proxy.providers.openai_chat import inject_include_usage
from agent_cli_proxy.providers.routes import LLMCall, classify, classify_parsed


def reference(body: bytes) -> LLMCall:
    """classify() of /v1/messages as it was: always the first-occurrence reading."""
    obj, repeated = routes._read_members(body)
    return LLMCall(routes.Family.ANTHROPIC, "anthropic", routes._model_of(obj),
                   routes.wants_stream(obj.get("stream")) if obj is not None else False,
                   ambiguous=bool(repeated & {"model", "stream"}))


KEYS = st.sampled_from(['"model"', '"stream"', '"mod\\u0065l"', '"\\u0073tream"',
                        '"MODEL"', '"messages"', '"provider"', '"x"', '"model "'])
VALUES = st.sampled_from(['"m1"', '"m2"', "true", "false", '"true"', "null", "1", "[]",
                          '{"model":"inner","model":"twice"}', '"\\u00e9t\\u00e9"',
                          '"a \\"model\\" b"', '{"stream":true}'])


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    members = draw(st.lists(st.tuples(KEYS, VALUES), max_size=6))
    text = "{" + ",".join(f"{k}:{v}" for k, v in members) + "}"
    prefix = draw(st.sampled_from(["", " ", "\ufeff"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-16"]))
    return (prefix + text).encode(encoding)


@given(bodies())
def test_same_reading_as_the_first_occurrence_parse(body: bytes) -> None:
    assert classify("POST", "/v1/messages", body) == reference(body)


@given(st.binary(max_size=64))
def test_same_reading_for_any_bytes(body: bytes) -> None:
    assert classify("POST", "/v1/messages", body) == reference(body)


@pytest.mark.parametrize("body", [
    b'{"model":"a","mod\\u0065l":"b"}',  # an escape spelling a second "model"
    b'{"model":"a","model":"b"}',
    b'{"stream":false,"\\u0073tream":true,"model":"m"}',
])
def test_repeated_keys_in_any_spelling_stay_ambiguous(body: bytes) -> None:
    call, parsed = classify_parsed("POST", "/v1/messages", body)
    assert call is not None and call.ambiguous and call.requested_model in ("a", "m")
    assert parsed is None  # the slow, exact path was taken


def test_the_plain_parse_is_handed_on_only_when_it_is_the_text_parse() -> None:
    body = b'{"model":"gpt-5","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    call, parsed = classify_parsed("POST", "/v1/chat/completions", body)
    assert call is not None and call.stream and parsed == json.loads(body)
    assert inject_include_usage(body, parsed) == inject_include_usage(body)
    # UTF-16 is JSON to json.loads(bytes) but never spliced into: no parse handed on.
    assert classify_parsed("POST", "/v1/chat/completions", body.decode().encode("utf-16")
                           )[1] is None


@given(st.sampled_from([
    b'{"model":"m","stream":true}',
    b'{"model":"m","stream":true,"stream_options":{"x":1}}',
    b'{"model":"m","stream":true,"stream_options":null}',
    b'{"model":"m","stream":"true","stream_options":{"include_usage":true}}',
    b'{"model":"m","stream":false}',
]))
def test_include_usage_is_the_same_with_the_handed_on_parse(body: bytes) -> None:
    parsed = json.loads(body.decode())
    before = json.dumps(parsed)
    assert inject_include_usage(body, parsed) == inject_include_usage(body)
    assert json.dumps(parsed) == before  # the caller's object is left as it was
