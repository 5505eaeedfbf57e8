"""The life of one recorded LLM call: a ``pending`` row when it starts, and exactly one
finalization (``completed``, ``error`` or ``aborted``) when it ends.

Both writes go to the app's :class:`RowWriter` and the call goes on without waiting for
a commit (the writer puts many calls in one transaction). Without a writer (and with
PROXY_REQUIRE_API_KEY, where a call must never be served unrecorded) the pending row is
committed before the upstream is asked and the outcome before the call is done.

Recording must never stand between a client and its answer: a failed insert is logged and
the call is proxied without a row; a failed finalization is logged and left to the
boot-time recovery of stale pending rows.

With account attribution configured (CLIPROXY_MGMT_KEY), the CLIProxyAPI trace header of
the upstream's answer is kept and handed to the attribution service once the row is
final (:class:`TraceSink`); attribution failing never affects the call either.
"""

from __future__ import annotations

import json
import os
import random
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Protocol

from agent_cli_proxy.clock import Clock
from agent_cli_proxy.log import get_logger
from agent_cli_proxy.providers.routes import LLMCall
from agent_cli_proxy.proxy_metrics import ProxyMetrics
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.storage.requests import (
    Finalization,
    PendingRow,
    finalize,
    insert_pending,
    iso_utc,
)
from agent_cli_proxy.storage.row_writer import PendingTicket, RowWriter
from agent_cli_proxy.upstream.capture import UsageCapture
from agent_cli_proxy.upstream.cpa_headers import TRACE_HEADER, Trace, parse_trace_id
from agent_cli_proxy.upstream.relay import RelayResult
from agent_cli_proxy.usage.cost import CostResult, compute_cost
from agent_cli_proxy.usage.identify import Identity
from agent_cli_proxy.usage.model import Usage
from agent_cli_proxy.usage.pricing import PriceTable

_log = get_logger("lifecycle")
ERROR_SAMPLE_CHARS = 300
# json.dumps with any option builds a new encoder per call; one, built once, writes the same.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), default=str)


# Request ids: a generator of their own, seeded from the system at start and again in a
# forked child (server workers), so nothing that seeds the shared one repeats them.
_IDS = random.Random()
os.register_at_fork(after_in_child=_IDS.seed)


def _request_id() -> str:
    """A random (version 4) UUID naming one call in rows and logs. Not a secret: unlike
    ``uuid4()``'s system call, the generator keeps the interpreter lock (each hand-over
    costs the call a thread switch under load)."""
    return str(uuid.UUID(int=_IDS.getrandbits(128), version=4))


class TraceSink(Protocol):
    """Who attributes a finalized row to the CLIProxyAPI account its trace header names
    (``workers.accounts.AccountAttribution``)."""

    def traced(self, row_id: int, trace: Trace) -> None: ...


class CallRecorder:
    """Owns the request_logs row of one LLM call."""

    def __init__(self, db: Database, clock: Clock, prices: Callable[[], PriceTable],
                 metrics: ProxyMetrics, call: LLMCall, path: str, *,
                 accounts: TraceSink | None = None,
                 rows: RowWriter | None = None) -> None:
        self._db = db
        self._rows = rows
        self._ticket: PendingTicket | None = None
        self._clock = clock
        self._prices = prices
        self._metrics = metrics
        self._tool: str | None = None
        self._send_started: float | None = None
        self._ttfb_s: float | None = None
        self.call = call
        self.path = path
        self.request_id = _request_id()
        self.row_id: int | None = None
        self._started = clock.monotonic()
        self._upstream_latency_ms: int | None = None
        self._lock = threading.Lock()
        self._done = False
        self._accounts = accounts
        self._trace: Trace | None = None
        metrics.request_started()

    def start(self, identity: Identity, *, method: str, user_agent: str | None,
              source_ip: str | None, msg_id: str | None, originator: str | None,
              api_key_id: int | None = None, actual_provider: str | None = None) -> None:
        """Write the pending row (hand it to the writer, when there is one).
        *actual_provider*: the upstream serving the call (``cliproxyapi`` or a custom
        provider's id)."""
        meta = {"method": method, "originator": originator, "session_id": identity.session_id,
                "tool_version": identity.tool_version}
        self._tool = identity.tool
        row = PendingRow(
            provider=self.call.provider,
            model=self.call.requested_model or "unknown",
            requested_model=self.call.requested_model,
            tool=identity.tool,
            client_id=identity.client_id,
            path=self.path,
            streamed=self.call.stream,
            started_at=iso_utc(self._clock.time()),
            request_id=self.request_id,
            meta_json=_COMPACT_JSON.encode(meta),
            user_agent=user_agent,
            source_ip=source_ip,
            agent=identity.agent,
            msg_id=msg_id,
            session_id=identity.session_id,
            identify_rule=identity.rule,
            proxy_api_key_id=api_key_id,
            actual_provider=actual_provider,
        )
        if self._rows is not None:
            self._ticket = self._rows.submit(row)
            return
        try:
            self.row_id = insert_pending(self._db, row)
        except Exception:
            _log.exception("lifecycle.prelog_failed", request_id=self.request_id, path=self.path)
            return
        _log.debug("lifecycle.pre_logged", request_id=self.request_id, row_id=self.row_id,
                   provider=row.provider, model=row.model, tool=row.tool,
                   client_id=row.client_id, path=self.path)

    def sending(self) -> None:
        """The request is about to go upstream (pool checkout and connect included)."""
        self._send_started = self._clock.monotonic()

    def headers_received(self, status: int,
                         headers: Mapping[str, str] | None = None) -> None:
        """The upstream answered *status*; its *headers* may carry CLIProxyAPI's
        ``X-CPA-TRACE-ID`` (kept for attribution, parsed defensively)."""
        self._upstream_latency_ms = self._elapsed_ms()
        if self._send_started is not None:
            self._ttfb_s = self._clock.monotonic() - self._send_started
        if headers is not None and self._accounts is not None:
            self._trace = parse_trace_id(headers.get(TRACE_HEADER))
        _log.debug("passthrough.upstream_headers", request_id=self.request_id, status=status,
                   latency_ms=self._upstream_latency_ms,
                   cliproxy_auth_index=self._trace.auth_index if self._trace else None)

    def first_chunk(self) -> None:
        """The first piece of a stream is ready for the client (time to first token)."""
        _log.debug("passthrough.stream_first_chunk", request_id=self.request_id,
                   latency_ms=self._elapsed_ms(), upstream_latency_ms=self._upstream_latency_ms)

    def _elapsed_ms(self) -> int:
        return max(0, round((self._clock.monotonic() - self._started) * 1000))

    def fail(self, status: int, code: str, message: str, *,
             upstream_status: int | None = None) -> None:
        """The call ended before any response reached the client."""
        self._finalize("error", status, code, message, usage=Usage(), model=None,
                       upstream_status=upstream_status, streamed=None)

    def abandoned(self, reason: str) -> None:
        """The client left (or the proxy stopped) before the upstream answered."""
        self._finalize("aborted", 499, "aborted", reason, usage=Usage(), model=None,
                       upstream_status=None, streamed=None)

    def relayed(self, result: RelayResult, capture: UsageCapture, status: int) -> None:
        """The relay closed: completed, cut by an upstream error, or abandoned.

        *status* is the upstream's, which the client was given with the headers; an
        abandoned call is recorded as 499 (client closed request), whatever it was.
        """
        lifecycle, client_status = "completed", status
        code: str | None = None
        message: str | None = None
        if result.outcome == "aborted":
            lifecycle, client_status = "aborted", 499
            code, message = "aborted", result.abort_reason or "aborted"
        elif result.outcome == "error":
            err = result.error
            lifecycle = "error"
            code = "upstream_timeout" if err is not None and err.kind == "timeout" else (
                "stream_error")
            if err is not None and err.code:
                code = err.code
            message = err.message if err is not None else "stream error"
        elif status >= 400:
            sample = " ".join(capture.sample.split())[:ERROR_SAMPLE_CHARS]
            lifecycle, code = "error", "upstream_error"
            message = f"upstream HTTP {status}" + (f": {sample}" if sample else "")
        self._finalize(lifecycle, client_status, code, message, usage=capture.usage or Usage(),
                       model=capture.model, upstream_status=status,
                       streamed=capture.is_event_stream)

    def _price(self, model: str | None, usage: Usage) -> CostResult:
        try:
            return compute_cost(self._prices(), model, self.call.provider, usage)
        except Exception:
            # Never lose the row over a price: it stays "pending" for the backfill.
            _log.exception("cost.compute_failed", request_id=self.request_id, model=model)
            return CostResult(0.0, "pending", None, None, {"error": "pricing failed"})

    def _finalize(self, lifecycle: str, status: int, code: str | None, message: str | None, *,
                  usage: Usage, model: str | None, upstream_status: int | None,
                  streamed: bool | None) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        upstream_end = self._clock.monotonic()
        cost = self._price(model or self.call.requested_model, usage)
        try:
            if self.row_id is not None or self._ticket is not None:
                self._write(lifecycle, status, code, message, usage=usage, model=model,
                            upstream_status=upstream_status, streamed=streamed, cost=cost)
        finally:
            # Once per call, row or no row: it is what brings the in-flight gauge down.
            self._metrics.request_finished(
                provider=self.call.provider, model=model or self.call.requested_model,
                tool=self._tool, status=status, lifecycle=lifecycle, streamed=bool(streamed),
                duration_s=self._clock.monotonic() - self._started,
                upstream_s=(upstream_end - self._send_started
                            if self._send_started is not None else None),
                ttfb_s=self._ttfb_s, usage_tokens=_token_counts(usage),
                cost_usd=cost.cost_usd)

    def _write(self, lifecycle: str, status: int, code: str | None, message: str | None, *,
               usage: Usage, model: str | None, upstream_status: int | None,
               streamed: bool | None, cost: CostResult) -> None:
        fin = Finalization(
            lifecycle_status=lifecycle,
            status=status,
            model=model,
            actual_model=model,
            usage=usage,
            streamed=streamed,
            latency_ms=self._elapsed_ms(),
            finished_at=iso_utc(self._clock.time()),
            error_code=code,
            error_message=message,
            upstream_status=upstream_status if upstream_status != status else None,
            upstream_latency_ms=self._upstream_latency_ms,
            cost_usd=cost.cost_usd,
            cost_status=cost.status,
            cost_rule=cost.rule,
            cost_price_key=cost.price_key,
            cost_detail_json=cost.detail_json,
        )
        if self._ticket is not None and self._rows is not None:
            self._rows.finish(self._ticket, fin,
                              lambda row_id, updated: self._finished(row_id, updated, fin))
            return
        assert self.row_id is not None
        try:
            updated = finalize(self._db, self.row_id, fin)
        except Exception:
            _log.exception("lifecycle.finalize_failed", request_id=self.request_id,
                           row_id=self.row_id)
            return
        self._finished(self.row_id, updated, fin)

    def _finished(self, row_id: int, updated: bool, fin: Finalization) -> None:
        """After the outcome is committed (in the row writer's thread, when there is
        one)."""
        self.row_id = row_id
        lifecycle = fin.lifecycle_status
        event = "lifecycle.aborted" if lifecycle == "aborted" else "lifecycle.finalized"
        _log.info(event, request_id=self.request_id, row_id=row_id, updated=updated,
                  lifecycle_status=lifecycle, status=fin.status, path=self.path,
                  model=fin.model or self.call.requested_model,
                  total_tokens=fin.usage.total_tokens, cost_usd=fin.cost_usd,
                  cost_status=fin.cost_status, latency_ms=fin.latency_ms)
        if updated:
            self._attribute()

    def _attribute(self) -> None:
        # After finalize: attribution only ever touches a final row, and counts it in
        # daily_account_usage with its final tokens and cost.
        if self._trace is None or self._accounts is None or self.row_id is None:
            return
        try:
            self._accounts.traced(self.row_id, self._trace)
        except Exception:
            _log.exception("accounts.attribution_failed", request_id=self.request_id,
                           row_id=self.row_id)


def _token_counts(usage: Usage) -> dict[str, int]:
    return {"prompt": usage.prompt_tokens, "cache_read": usage.cache_read_tokens,
            "cache_creation": usage.cache_creation_tokens,
            "completion": usage.completion_tokens, "reasoning": usage.reasoning_tokens}
