"""A relay ends a Content-Length answer as soon as its last byte is in hand."""

from __future__ import annotations

from agent_cli_proxy.upstream.client import Timeouts, UpstreamClient
from agent_cli_proxy.upstream.relay import Relay, RelayResult
from tests.fake_upstream import FakeUpstream, Script

ANSWER = b'{"id":"msg_1","usage":{}}'


def test_a_client_leaving_after_the_last_byte_does_not_make_the_call_aborted() -> None:
    upstream = FakeUpstream()
    pool = UpstreamClient(maxsize=1)
    results: list[RelayResult] = []
    try:
        upstream.script(Script(pieces=[b'{"id":"msg_1",', b'"usage":{}}'], framing="length"))
        response = pool.send("POST", upstream.url + "/v1/messages", [], b"{}",
                             Timeouts(connect=5, read=5))
        relay = Relay(response, results.append)
        body = b""
        while len(body) < len(ANSWER):
            body += next(relay)
        # The client has the whole answer and hangs up before asking for more.
        relay.abort("client disconnected")
        relay.close()
    finally:
        pool.close()
        upstream.close()
    assert body == ANSWER
    (result,) = results
    assert (result.outcome, result.abort_reason) == ("completed", None)
