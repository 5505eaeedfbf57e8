"""fetch_prices against a real loopback HTTP server: success, encodings, every failure."""

from __future__ import annotations

import gzip
import json
import socket
from pathlib import Path

import pytest
import urllib3

from agent_cli_proxy.upstream.models_dev import PriceFetchError, display_url, fetch_prices
from tests.fake_upstream import FakeUpstream, Script

SNAPSHOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "models-dev-api.json"
SMALL = {"anthropic": {"id": "anthropic", "models": {
    "claude-sonnet-4-5": {"id": "claude-sonnet-4-5", "cost": {"input": 3, "output": 15}}}}}


def closed_port_url() -> str:
    """A loopback URL nobody listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api.json"


def serve(upstream: FakeUpstream, body: bytes, *, status: int = 200, framing: str = "length",
          headers: list[tuple[str, str]] | None = None, **extra: object) -> str:
    upstream.script(Script(status=status, pieces=[body], framing=framing,
                           headers=headers or [], **extra))  # type: ignore[arg-type]
    return upstream.url + "/api.json"


def fetch_error(url: str, **kwargs: object) -> str:
    with pytest.raises(PriceFetchError) as info:
        fetch_prices(url, timeout_s=kwargs.pop("timeout_s", 5.0), **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_plain_json_is_returned_with_the_fetch_time(upstream: FakeUpstream) -> None:
    url = serve(upstream, json.dumps(SMALL).encode())
    data, fetched_at = fetch_prices(url, timeout_s=5, now=lambda: 1234.5)
    assert data == SMALL
    assert fetched_at == 1234.5
    request = upstream.last()
    assert (request.method, request.path) == ("GET", "/api.json")
    assert request.header("Accept") == "application/json"
    assert request.header("Accept-Encoding") == "gzip"
    assert (request.header("User-Agent") or "").startswith("agent-cli-proxy/")


def test_the_real_snapshot_round_trips(upstream: FakeUpstream) -> None:
    if not SNAPSHOT.is_file():
        pytest.skip("models.dev snapshot not present")
    raw = SNAPSHOT.read_bytes()
    data, _ = fetch_prices(serve(upstream, raw, framing="chunked"), timeout_s=10)
    assert data == json.loads(raw)
    assert "anthropic" in data


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_gzip_is_decoded(upstream: FakeUpstream, framing: str) -> None:
    url = serve(upstream, gzip.compress(json.dumps(SMALL).encode()), framing=framing,
                headers=[("Content-Encoding", "gzip")])
    data, _ = fetch_prices(url, timeout_s=5)
    assert data == SMALL


def test_a_given_pool_is_used_and_reused(upstream: FakeUpstream) -> None:
    pool = urllib3.PoolManager()
    try:
        for _ in range(2):
            data, _ = fetch_prices(serve(upstream, json.dumps(SMALL).encode()), timeout_s=5,
                                   pool=pool)
            assert data == SMALL
    finally:
        pool.clear()
    assert len(upstream.requests) == 2


def test_http_error_status(upstream: FakeUpstream) -> None:
    message = fetch_error(serve(upstream, b'{"error":"boom"}', status=500))
    assert message == f"{upstream.url}/api.json answered HTTP 500"


def test_not_json(upstream: FakeUpstream) -> None:
    message = fetch_error(serve(upstream, b"<html>maintenance</html>"))
    assert "did not return JSON" in message


def test_json_that_is_not_an_object(upstream: FakeUpstream) -> None:
    message = fetch_error(serve(upstream, b"[1, 2, 3]"))
    assert message.endswith("returned JSON list, expected an object")


def test_too_large_by_declared_length(upstream: FakeUpstream) -> None:
    message = fetch_error(serve(upstream, b"{}" + b" " * 200), max_bytes=100)
    assert "sent 202 bytes, more than the 100-byte limit" in message


def test_too_large_while_streaming(upstream: FakeUpstream) -> None:
    message = fetch_error(serve(upstream, b"{}" + b" " * 200, framing="chunked"), max_bytes=100)
    assert "more than the 100-byte limit" in message


def test_gzip_bomb_is_stopped_at_the_limit(upstream: FakeUpstream) -> None:
    bomb = gzip.compress(b"{" + b" " * 10_000 + b"}")
    assert len(bomb) < 1000
    url = serve(upstream, bomb, headers=[("Content-Encoding", "gzip")])
    assert "expands beyond the 1000-byte limit" in fetch_error(url, max_bytes=1000)


@pytest.mark.parametrize(("body", "expected"), [
    (b"not gzip at all", "corrupt gzip body"),
    (gzip.compress(json.dumps(SMALL).encode())[:-12], "truncated gzip body"),
])
def test_broken_gzip(upstream: FakeUpstream, body: bytes, expected: str) -> None:
    url = serve(upstream, body, headers=[("Content-Encoding", "gzip")])
    assert expected in fetch_error(url)


def test_unasked_encoding_is_refused(upstream: FakeUpstream) -> None:
    url = serve(upstream, b"{}", headers=[("Content-Encoding", "br")])
    assert "Content-Encoding 'br'" in fetch_error(url)


def test_connection_refused() -> None:
    url = closed_port_url()
    message = fetch_error(url)
    assert message.startswith(f"could not fetch {url}: ")
    assert "refused" in message.lower()
    assert "HTTPConnection(" not in message


def test_body_cut_short(upstream: FakeUpstream) -> None:
    upstream.script(Script(pieces=[b'{"a": ', b"1}"], framing="length", drop_after=1))
    assert "failed" in fetch_error(upstream.url + "/api.json")


def test_silence_past_the_timeout(upstream: FakeUpstream) -> None:
    script = upstream.script(Script(pieces=[b'{"a": ', b"1}"], framing="chunked",
                                    pause_after=1))
    try:
        message = fetch_error(upstream.url + "/api.json", timeout_s=0.2)
    finally:
        script.release.set()
    assert "timed out" in message.lower()


def test_not_an_http_url() -> None:
    assert "is not an http:// or https:// URL" in fetch_error("file:///etc/passwd")


def test_credentials_never_reach_the_message(upstream: FakeUpstream) -> None:
    serve(upstream, b"{}", status=503)
    url = upstream.url.replace("http://", "http://mirror-user:hunter2@") + "/api.json"
    message = fetch_error(url)
    assert "hunter2" not in message and "mirror-user" not in message
    assert "answered HTTP 503" in message


def test_display_url() -> None:
    assert display_url("https://u:p@example.org:8443/a.json?x=1") == (
        "https://example.org:8443/a.json?x=1")
    assert display_url("https://models.dev/api.json") == "https://models.dev/api.json"
