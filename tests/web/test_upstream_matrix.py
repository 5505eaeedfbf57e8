"""Every way an upstream misbehaves, side by side: for each, what the client gets, what
the row says, what the breaker counts, and that the next request works.

Each case runs against its own proxy and upstream on a port of its own, so a case can
start with no upstream at all (refused), or with a socket that accepts and never reads,
and then bring a working upstream up on the same port for the follow-up request.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from agent_cli_proxy.config import settings_for_tests
from tests import wire
from tests.conftest import RunningProxy, start_proxy
from tests.fake_upstream import FakeUpstream, Script
from tests.web.test_admin import get

CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
CLAUDE_STREAM = {"model": "claude-haiku-4-5", "stream": True, "max_tokens": 10,
                 "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Case:
    upstream: str = "fake"  # "fake" | "refuse" (nothing listens) | "hang" (never accepts)
    script: Callable[[], list[Script]] = list
    body: dict[str, Any] = field(default_factory=lambda: CHAT)
    path: str = "/v1/chat/completions"
    status: int = 200
    error_code: str | None = None  # in the client's JSON error, when there is one
    cut: bool = False  # the answer started and broke off
    headers: dict[str, str] = field(default_factory=dict)
    row: tuple[str, int, str | None] = ("completed", 200, None)
    failures: int = 0  # what the breaker counted


def _answer(**kw: Any) -> Callable[[], list[Script]]:
    return lambda: [Script(**kw)]


STREAM = wire.messages_stream()
CASES = {
    "refused": Case(upstream="refuse", status=502, error_code="upstream_unavailable",
                    row=("error", 502, "upstream_unavailable"), failures=1),
    "accepts and hangs": Case(upstream="hang", status=504, error_code="upstream_timeout",
                              row=("error", 504, "upstream_timeout")),
    # A long non-streaming call may just be thinking: its timeout is not held against
    # the upstream. A stream that sends no headers is (its first byte should be prompt).
    "slow headers": Case(script=_answer(pieces=[b"{}"], delay_headers=threading.Event()),
                         status=504, error_code="upstream_timeout",
                         row=("error", 504, "upstream_timeout")),
    # Nothing has reached the client before the first byte: it gets a clean error.
    "slow first byte": Case(
        script=_answer(content_type=STREAM.content_type, pieces=STREAM.pieces,
                       pause_after=0),
        body=CLAUDE_STREAM, path="/v1/messages", status=504, error_code="upstream_timeout",
        row=("error", 504, "upstream_timeout"), failures=1),
    "reset mid-stream": Case(
        script=_answer(content_type=STREAM.content_type, pieces=STREAM.pieces,
                       drop_after=3),
        body=CLAUDE_STREAM, path="/v1/messages", status=200, cut=True,
        row=("error", 200, "stream_error"), failures=1),
    "429 with Retry-After": Case(
        script=_answer(status=429, pieces=[b'{"error":{"type":"rate_limit_error"}}'],
                       headers=[("Retry-After", "7")], framing="length"),
        status=429, headers={"retry-after": "7"}, row=("error", 429, "upstream_error")),
    "5xx": Case(script=_answer(status=500, content_type="text/html",
                               pieces=[b"<h1>Internal Server Error</h1>"], framing="length"),
                status=500, row=("error", 500, "upstream_error"), failures=1),
    "garbage body": Case(script=_answer(pieces=[b"\x00\xffnot json{"], framing="length")),
    "keep-alive closed between requests": Case(
        script=lambda: [Script(pieces=wire.chat_json().pieces, framing="length",
                               vanish_after=True)] * 2),
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _placeholder(kind: str, port: int) -> Iterator[None]:
    """What listens on *port* until the real upstream comes up: nothing (connections are
    refused) or a socket whose backlog accepts connections nobody ever reads."""
    if kind != "hang":
        yield
        return
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(16)
        yield


def _call(proxy: RunningProxy, case: Case) -> tuple[int, dict[str, str], bytes, bool]:
    url = urlsplit(proxy.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("POST", case.path, body=json.dumps(case.body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        try:
            return resp.status, headers, resp.read(), False
        except http.client.IncompleteRead as exc:
            return resp.status, headers, exc.partial, True
    finally:
        conn.close()


@pytest.mark.parametrize("name", list(CASES))
def test_misbehaving_upstream(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    port = _free_port()
    settings = settings_for_tests(
        cli_proxy_api_url=f"http://127.0.0.1:{port}", cli_proxy_api_key="k",
        db_path=str(tmp_path / "proxy.db"), pricing_cache_path=str(tmp_path / "p.json"),
        pricing_url=f"http://127.0.0.1:{port}/api.json", proxy_threads=8,
        upstream_timeout_ms=300, upstream_stream_first_byte_timeout_ms=300,
        upstream_max_retries=0)
    proxy = start_proxy(settings)
    upstream: FakeUpstream | None = None
    try:
        with _placeholder(case.upstream, port):
            if case.upstream == "fake":
                upstream = FakeUpstream(port)
                for script in case.script():
                    upstream.script(script)
            status, headers, body, cut = _call(proxy, case)
        assert (status, cut) == (case.status, case.cut)
        for header, value in case.headers.items():
            assert headers[header] == value
        if case.error_code is not None:
            assert json.loads(body)["error"]["code"] == case.error_code
        (row,) = proxy.final_rows()
        assert (row["lifecycle_status"], row["status"], row["error_code"]) == case.row
        (breaker,) = get(proxy.url, "/admin/breakers")[1]["breakers"]
        assert (breaker["state"], breaker["failures"]) == ("closed", case.failures)

        if upstream is None:  # the upstream comes (back) up
            upstream = FakeUpstream(port)
        status, _, body, cut = _call(proxy, Case(body=CHAT))
        assert (status, cut) == (200, False) and json.loads(body)["usage"]
        row = proxy.final_rows(2)[-1]
        assert (row["lifecycle_status"], row["total_tokens"] > 0) == ("completed", True)
        assert get(proxy.url, "/admin/breakers")[1]["breakers"][0]["failures"] == 0
    finally:
        if upstream is not None:
            upstream.close()
        proxy.stop()
