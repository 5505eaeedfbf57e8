"""Logs: one JSON object per line with named events and request ids; never a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from agent_cli_proxy import log
from tests.conftest import RunningProxy
from tests.web.test_relay_formats import post


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    loggers = [logging.getLogger(name) for name in ("agent_cli_proxy", "waitress")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    stream = io.StringIO()
    log.configure("debug", "json", stdout=stream, stderr=stream)
    yield stream
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate


def test_lines_are_json_events_with_request_ids_and_no_secrets(
        captured: io.StringIO, proxy: RunningProxy) -> None:
    post(proxy, "/v1/messages", {"model": "claude-haiku-4-5", "stream": True, "messages": []},
         {"Authorization": "Bearer sk-ant-client-secret-1", "x-api-key": "sk-client-secret-2"})
    proxy.final_rows()
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    events = {line["event"] for line in lines}
    assert {"lifecycle.pre_logged", "passthrough.upstream_headers",
            "passthrough.stream_first_chunk", "lifecycle.finalized"} <= events
    request_ids = {line.get("request_id") for line in lines
                   if line["event"].startswith(("lifecycle.", "passthrough."))}
    assert len(request_ids) == 1 and None not in request_ids
    text = captured.getvalue()
    for secret in ("sk-ant-client-secret-1", "sk-client-secret-2", "upstream-secret"):
        assert secret not in text


def test_pretty_format_and_redaction() -> None:
    stream = io.StringIO()
    loggers = [logging.getLogger(name) for name in ("agent_cli_proxy", "waitress")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        log.configure("info", "pretty", stdout=stream, stderr=stream)
        log.get_logger("test").info("demo.event", model="gpt-5", headers={
            "Authorization": "Bearer x", "X-Api-Key": "y"}, access_token="z", total_tokens=3)
    finally:
        for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
    line = stream.getvalue().strip()
    assert " INFO demo.event model=gpt-5 " in line
    assert "total_tokens=3" in line  # data, not a secret
    for secret in ("Bearer x", '"y"', "=z"):
        assert secret not in line
