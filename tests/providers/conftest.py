"""Helpers for provider tests: run SSE text through the real parser and an extractor."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent_cli_proxy.providers.extract import Extracted, stream_extractor
from agent_cli_proxy.providers.routes import Family
from agent_cli_proxy.upstream.sse import SSEParser

StreamRunner = Callable[[Family, str | bytes], Extracted]


def run_stream(family: Family, stream: str | bytes, chunk_size: int = 0) -> Extracted:
    """Parse ``stream`` (whole, or in ``chunk_size`` pieces) and extract usage from it."""
    data = stream.encode() if isinstance(stream, str) else stream
    parser = SSEParser()
    extractor = stream_extractor(family)
    step = chunk_size or len(data) or 1
    for i in range(0, len(data), step):
        for event in parser.feed(data[i : i + step]):
            extractor.feed(event)
    for event in parser.finish():
        extractor.feed(event)
    return Extracted(extractor.usage, extractor.model)


@pytest.fixture
def stream_usage() -> StreamRunner:
    """``stream_usage(family, sse_text)`` → Extracted, also checked byte-by-byte."""

    def run(family: Family, stream: str | bytes) -> Extracted:
        whole = run_stream(family, stream)
        assert run_stream(family, stream, chunk_size=1) == whole
        return whole

    return run
