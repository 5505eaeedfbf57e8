"""Talking to upstreams: urllib3 pools, timeouts, the streaming relay, the SSE parser."""
