"""Errors of the upstream client name the problem without quoting what was sent."""

from __future__ import annotations

import socket

import pytest

from agent_cli_proxy.upstream.client import Timeouts, UpstreamClient, UpstreamError


def test_a_header_value_that_cannot_be_sent_is_not_quoted_back() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:  # never reached
        port = server.getsockname()[1]
        pool = UpstreamClient(maxsize=1)
        try:
            with pytest.raises(UpstreamError) as caught:
                pool.send("POST", f"http://127.0.0.1:{port}/v1/messages",
                          [("Authorization", "Bearer sk-SECRET\nX-A: b")], b"{}",
                          Timeouts(connect=5, read=5))
        finally:
            pool.close()
    assert caught.value.message == ("could not send the request upstream: a request header "
                                    "cannot be sent as it is")
    assert "SECRET" not in str(caught.value)
