"""Is the upstream up? One cheap probe of its health route, for ``/ready``.

CLIProxyAPI answers ``GET /healthz`` with 200 since v6.9.10; older builds only have
``GET /``. A 4xx is not "up" (a missing route proves only that something listens), so
``/`` is tried only when ``/healthz`` does not exist, and only a 2xx passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent_cli_proxy.upstream.client import Timeouts, UpstreamClient, UpstreamError

HEALTH_PATHS = ("/healthz", "/")


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    status: int | None
    path: str
    output: str
    elapsed_ms: float


def probe_upstream(client: UpstreamClient, base_url: str, timeout_s: float) -> Probe:
    started = time.monotonic()
    status: int | None = None
    path = HEALTH_PATHS[0]
    output = ""
    for path in HEALTH_PATHS:
        try:
            response = client.send("GET", base_url + path, [("Accept", "application/json")],
                                   None, Timeouts(connect=timeout_s, read=timeout_s))
        except UpstreamError as exc:
            status, output = None, exc.message
            break
        status = response.status
        # The status is the answer. Closing (not releasing) never hands a partly read
        # connection back to the pool; at one probe per few seconds, reuse is not worth it.
        response.close()
        output = f"HTTP {status} from {path}"
        if status != 404:
            break
    elapsed = round((time.monotonic() - started) * 1000, 1)
    return Probe(status is not None and 200 <= status < 300, status, path, output, elapsed)
