"""What a server process needs to be one of several (PROXY_WORKERS > 1) and still look
like one proxy from outside.

Every worker accepts connections on the shared port and serves LLM calls itself. The
first worker also has a private loopback listener, and everything else (the admin API,
``/metrics``, ``/ready``, the OpenAPI document) is its job alone: the other workers check
access as usual, then hand such requests to it (:class:`PrimaryLink`), marked with a
secret made for this run, so admin state (breakers, quotas, reloads, background loops)
lives in one place. Their own instruments reach the first worker's ``/metrics`` through
files in a private directory (:class:`SharedMetrics`), written every second.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3
from werkzeug.wrappers import Request, Response

from agent_cli_proxy.log import get_logger
from agent_cli_proxy.proxy_metrics import ProxyMetrics
from agent_cli_proxy.web.errors import json_error
from agent_cli_proxy.workers.supervisor import Supervisor

_log = get_logger("workers")
FORWARDED_HEADER = "X-Agent-Cli-Proxy-Worker"
_FORWARDED_ENVIRON = "HTTP_" + FORWARDED_HEADER.upper().replace("-", "_")
# Not relayed either way: they describe one connection, not the message.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade", "content-length",
                         FORWARDED_HEADER.lower()})
PUBLISH_INTERVAL_S = 1.0


@dataclass(frozen=True)
class WorkerRole:
    """This process's place among the workers."""

    index: int
    """0 for the first worker (admin, metrics, background work), 1.. for the others."""
    count: int
    primary_port: int
    """The first worker's private listener on 127.0.0.1."""
    secret: str
    """Marks requests one worker hands another; made afresh for each run."""
    share_dir: str
    """Private directory (0700) of the workers' metrics files."""

    @property
    def primary(self) -> bool:
        return self.index == 0

    def forwarded(self, environ: dict[str, Any]) -> bool:
        """A request another worker handed over (after checking its access)."""
        mark = environ.get(_FORWARDED_ENVIRON)
        if not isinstance(mark, str):
            return False
        # WSGI header values are Latin-1 text; compared as bytes, any value is safe.
        return hmac.compare_digest(mark.encode("latin-1", "replace"),
                                   self.secret.encode("latin-1"))

    def on_private_listener(self, environ: dict[str, Any]) -> bool:
        """The request came in on the first worker's private listener (waitress names
        the listening socket's port)."""
        return self.primary and environ.get("SERVER_PORT") == str(self.primary_port)


class PrimaryLink:
    """The other workers' way to the first one, for everything but LLM calls."""

    def __init__(self, role: WorkerRole, *, timeout_s: float = 120.0) -> None:
        self._secret = role.secret
        self._pool = urllib3.HTTPConnectionPool(
            "127.0.0.1", role.primary_port, maxsize=4, block=False, retries=False,
            timeout=urllib3.Timeout(connect=5.0, read=timeout_s))

    def forward(self, request: Request, body_limit: int) -> Response:
        body = request.stream.read(body_limit + 1)
        if len(body) > body_limit:
            return json_error(413, "request_too_large",
                              f"request body exceeds {body_limit} bytes")
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() not in _HOP_BY_HOP}
        headers[FORWARDED_HEADER] = self._secret
        target = quote(request.path, safe="/:@!$&'()*+,;=-._~")
        if request.query_string:
            target += "?" + request.query_string.decode("latin-1")
        try:
            answer = self._pool.urlopen(request.method, target, body=body or None,
                                        headers=headers, redirect=False,
                                        preload_content=True, decode_content=False)
        except urllib3.exceptions.HTTPError as exc:
            _log.warning("workers.primary_unreachable", error=str(exc), path=request.path)
            return json_error(502, "primary_unavailable",
                              "the first worker, which answers this route, did not answer")
        response = Response(answer.data, status=answer.status)
        response.headers.clear()
        for name, value in answer.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                response.headers.add(name, value)
        length = answer.headers.get("Content-Length")
        if request.method == "HEAD" and length is not None:
            # The size of what a GET would get, not of this empty body.
            response.headers["Content-Length"] = length
        return response

    def close(self) -> None:
        self._pool.close()


class SharedMetrics:
    """Workers' instruments, combined for the first worker's ``/metrics``."""

    def __init__(self, role: WorkerRole, metrics: ProxyMetrics) -> None:
        self._dir = Path(role.share_dir)
        self._index = role.index
        self._metrics = metrics

    def publish(self) -> None:
        """Write this worker's counts (a whole file swapped in: never read half-written)."""
        data = json.dumps(self._metrics.registry.export(), separators=(",", ":"))
        final = self._dir / f"worker-{self._index}.json"
        partial = self._dir / f".worker-{self._index}.json.partial"
        partial.write_text(data)
        os.replace(partial, final)

    def register(self, supervisor: Supervisor) -> None:
        """Add the ``metrics-share`` loop (workers other than the first)."""
        supervisor.add("metrics-share", self.publish, interval_s=PUBLISH_INTERVAL_S,
                       max_backoff_s=PUBLISH_INTERVAL_S * 5)

    def combined(self) -> ProxyMetrics:
        """This worker's instruments with every other worker's last published counts."""
        return self._metrics.merged(self._others())

    def _others(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for path in sorted(self._dir.glob("worker-*.json")):
            if path.name == f"worker-{self._index}.json":
                continue
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                if isinstance(data, dict):
                    found.append(data)
        return found
