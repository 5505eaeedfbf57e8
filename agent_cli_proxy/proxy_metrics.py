"""The proxy's instruments: what ``GET /metrics`` reports about calls, prices and loops.

Counters and histograms are updated on the request path by the call recorder; gauges of
today's usage, price freshness and loop health are filled at scrape time from values the
handler reads. Built on the registry in :mod:`agent_cli_proxy.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from agent_cli_proxy import __version__
from agent_cli_proxy.metrics import (
    DEFAULT_MAX_SERIES,
    Counter,
    Gauge,
    Histogram,
    HistogramHandle,
    Metric,
    Registry,
    ScalarHandle,
    clean_labels,
)

PREFIX = "agent_cli_proxy_"
TOKEN_TYPES = ("prompt", "cache_read", "cache_creation", "completion", "reasoning")
"""``type`` label values of ``tokens_total``: the Usage buckets (DESIGN.md "Token buckets")."""

# Coding-agent calls run from under a second to many minutes (long streamed answers).
DURATION_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFB_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120)
# What the proxy adds per call: sub-millisecond to a few milliseconds when healthy.
OVERHEAD_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                      0.25, 0.5, 1)
# The TypeScript original's histograms (its README): same names, labels and buckets in ms.
LEGACY_BUCKETS_MS = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


def _label(value: str | None) -> str:
    return value.strip() if value and value.strip() else "unknown"


def _positive(value: float | None) -> float:
    """*value* when it is a finite positive number, else 0 (never raise on the request path)."""
    return value if value is not None and math.isfinite(value) and value > 0 else 0.0


# Kinds of call (provider, model, tool, status, outcome, streamed) whose series are kept
# at hand; models are the clients' choice, so it starts over past this.
_MAX_REMEMBERED_CALLS = 1024


class _CallSeries:
    """The series :meth:`ProxyMetrics.request_finished` updates for one kind of call
    (those it updates for every call; a token bucket's and the time to first byte's on
    first use, so none shows before it counts anything)."""

    __slots__ = ("_tokens", "_ttfb", "cost", "duration", "legacy", "legacy_max", "requests",
                 "who")

    def __init__(self, who: tuple[str, str, str], requests: ScalarHandle, cost: ScalarHandle,
                 duration: HistogramHandle, legacy: HistogramHandle,
                 legacy_max: ScalarHandle) -> None:
        self.who = who
        self.requests = requests
        self.cost = cost
        self.duration = duration
        self.legacy = legacy
        self.legacy_max = legacy_max
        self._tokens: dict[str, ScalarHandle] = {}  # by usage key
        self._ttfb: HistogramHandle | None = None

    def add_tokens(self, family: Counter, name: str, count: int) -> None:
        handle = self._tokens.get(name)
        if handle is None:
            kind = name.removesuffix("_tokens")
            if kind not in TOKEN_TYPES:
                return  # a total or a breakdown of a bucket
            handle = self._tokens[name] = family.handle((*self.who, kind))
        handle.add(count)

    def observe_ttfb(self, family: Histogram, seconds: float) -> None:
        if self._ttfb is None:
            self._ttfb = family.handle(self.who[:1])
        self._ttfb.observe(seconds)


class ProxyMetrics:
    """The proxy's instruments, and the calls the request path makes to feed them.

    Pair the calls: :meth:`request_started` when the proxy endpoint takes an LLM call,
    :meth:`request_finished` exactly once when that call has been recorded (whatever the
    outcome: completed, error, aborted, refused before the upstream). Durations are seconds
    on a monotonic clock, measured by the caller:

    * ``duration_s`` — from :meth:`request_started` to the end of the call: the response
      body closed (the whole stream) and the outcome recorded (committed, or handed to
      the row writer, which commits it a moment later).
    * ``upstream_s`` — the upstream's share: from the moment the proxy starts sending the
      request upstream (pool checkout and connect included) until the upstream response is
      over (last body byte read, or the upstream error or timeout). ``None`` when nothing
      was sent upstream.
    * ``ttfb_s`` — from starting to send the request upstream until the response headers
      (the upstream's first byte) arrived. ``None`` when they never did.

    ``proxy_overhead_seconds`` observes ``duration_s - upstream_s`` (at least 0; the whole
    ``duration_s`` when ``upstream_s`` is None): what the proxy adds around the upstream
    call — parsing, identification, auth, the pending row before it; the last flush, cost
    and recording the outcome after it. Work interleaved with a stream (parsing each chunk,
    handing it to the server) overlaps upstream time and is not counted; a client too slow
    to take a stream shows in ``upstream_s`` only once the server's buffer is full.
    TensorZero and LiteLLM define their overhead metric the same way (total minus upstream).

    Scrape-time families (today's usage, pricing, loops) are built fresh on each scrape by
    :meth:`scrape_families` from values the endpoint reads, so nothing here goes stale.
    """

    def __init__(self, *, max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.max_series = max_series
        self.registry = r = Registry()
        client = ("model", "tool")  # values chosen by clients: these fold into "other"
        self.up = r.gauge(PREFIX + "up", "1 while the proxy answers.")
        self.up.set(1)
        self.build_info = r.gauge(PREFIX + "build_info", "Version of the running proxy.",
                                  ("version",))
        self.build_info.set(1, (__version__,))
        self.requests = r.counter(
            PREFIX + "requests_total", "LLM calls recorded, by outcome.",
            ("provider", "model", "tool", "status", "lifecycle_status"),
            max_series=max_series, fold=client)
        self.tokens = r.counter(
            PREFIX + "tokens_total", "Tokens of recorded LLM calls, by disjoint bucket "
            "(reasoning is part of completion).", ("provider", "model", "tool", "type"),
            max_series=max_series * len(TOKEN_TYPES), fold=client)
        self.cost = r.counter(PREFIX + "cost_usd_total", "Cost of recorded LLM calls in USD.",
                              ("provider", "model", "tool"), max_series=max_series, fold=client)
        self.in_flight = r.gauge(PREFIX + "in_flight_requests",
                                 "LLM calls started and not yet finished.", summed=True)
        self.duration = r.histogram(
            PREFIX + "request_duration_seconds", "Whole LLM call, stream included, seconds.",
            ("provider", "streamed"), buckets=DURATION_BUCKETS_S, max_series=max_series)
        self.overhead = r.histogram(
            PREFIX + "proxy_overhead_seconds",
            "Time the proxy adds to an LLM call: duration minus upstream time, seconds.",
            buckets=OVERHEAD_BUCKETS_S)
        self.ttfb = r.histogram(
            PREFIX + "upstream_ttfb_seconds",
            "From sending the request upstream to its first response byte, seconds.",
            ("provider",), buckets=TTFB_BUCKETS_S, max_series=max_series)
        legacy = ("provider", "status", "lifecycle_status", "streamed")
        self.legacy_duration = r.histogram(
            PREFIX + "proxy_request_duration_ms",
            "Proxied request duration in milliseconds, from request entry to finalization.",
            legacy, buckets=LEGACY_BUCKETS_MS, max_series=max_series)
        self.legacy_duration_max = r.gauge(
            PREFIX + "proxy_request_duration_ms_max", "Longest proxied request, milliseconds.",
            legacy, max_series=max_series)
        self._overhead, self._in_flight = self.overhead.handle(()), self.in_flight.handle(())
        self._calls: dict[tuple[str, str | None, str | None, int, str, bool], _CallSeries] = {}
        self.ready_duration = r.histogram(
            PREFIX + "ready_check_duration_ms", "Readiness check duration in milliseconds.",
            ("status",), buckets=LEGACY_BUCKETS_MS, max_series=max_series)
        self.ready_duration_max = r.gauge(
            PREFIX + "ready_check_duration_ms_max", "Longest readiness check, milliseconds.",
            ("status",), max_series=max_series)

    def merged(self, others: Iterable[Mapping[str, Any]]) -> ProxyMetrics:
        """A copy of these instruments with other processes' exports
        (``registry.export()``) added in: what ``/metrics`` shows for several workers."""
        combined = ProxyMetrics(max_series=self.max_series)
        for exported in [self.registry.export(), *(dict(e) for e in others)]:
            combined.registry.absorb(exported)  # folds nothing (Metric.absorb)
        return combined

    # -- request path ------------------------------------------------------------------------

    def request_started(self) -> None:
        self._in_flight.add(1.0)

    def request_finished(self, *, provider: str, model: str | None, tool: str | None,
                         status: int, lifecycle: str, streamed: bool, duration_s: float,
                         upstream_s: float | None = None, ttfb_s: float | None = None,
                         usage_tokens: Mapping[str, int] | None = None,
                         cost_usd: float = 0.0) -> None:
        """Count one finished call. Never raises on odd values: negative or non-finite
        times and costs count as 0, empty names as ``unknown``.

        *usage_tokens* maps bucket to count; keys are :data:`TOKEN_TYPES`, with or without
        the ``_tokens`` suffix (so the Usage field names work too); other keys (totals,
        the 1-hour cache breakdown) are ignored, being sums or parts of those buckets.
        """
        self._in_flight.add(-1.0)
        call_kind = (provider, model, tool, status, lifecycle, streamed)
        handles = self._calls.get(call_kind) or self._call_handles(call_kind)
        duration = _positive(duration_s)
        handles.requests.add(1.0)
        for name, count in (usage_tokens or {}).items():
            if isinstance(count, int) and count > 0:
                handles.add_tokens(self.tokens, name, count)
        handles.cost.add(_positive(cost_usd))
        handles.duration.observe(duration)
        self._overhead.observe(max(0.0, duration - _positive(upstream_s)))
        if ttfb_s is not None:
            handles.observe_ttfb(self.ttfb, _positive(ttfb_s))
        duration_ms = _positive(duration * 1000)  # 0 past the largest float
        handles.legacy.observe(duration_ms)
        handles.legacy_max.raise_to(duration_ms)

    def _call_handles(self, call_kind: tuple[str, str | None, str | None, int, str, bool]
                      ) -> _CallSeries:
        """The series one kind of call updates, found once and remembered (labels cleaned
        once: the model is the client's choice)."""
        provider, model, tool, status, lifecycle, streamed = call_kind
        provider_, model_, tool_, status_text, state = clean_labels(
            (_label(provider), _label(model), _label(tool), str(status), _label(lifecycle)))
        legacy = (provider_, status_text, state, "true" if streamed else "false")
        handles = _CallSeries(
            (provider_, model_, tool_),
            self.requests.handle((provider_, model_, tool_, status_text, state)),
            self.cost.handle((provider_, model_, tool_)),
            self.duration.handle((provider_, legacy[3])),
            self.legacy_duration.handle(legacy), self.legacy_duration_max.handle(legacy))
        if len(self._calls) >= _MAX_REMEMBERED_CALLS:
            self._calls.clear()
        self._calls[call_kind] = handles
        return handles

    def ready_checked(self, *, status: str, duration_s: float) -> None:
        """One uncached ``/ready`` evaluation: overall status (pass/warn/fail), seconds."""
        ms = _positive(duration_s) * 1000
        self.ready_duration.observe(ms, (_label(status),))
        self.ready_duration_max.set_max(ms, (_label(status),))

    # -- scrape time -------------------------------------------------------------------------

    def scrape_families(self, *, today: Iterable[Mapping[str, Any]] | None = None,
                        pricing: Mapping[str, Any] | None = None,
                        pricing_degraded: bool | None = None,
                        loops: Mapping[str, Mapping[str, Any]] | None = None,
                        breakers: Iterable[Mapping[str, Any]] | None = None
                        ) -> list[Metric[Any]]:
        """Families built for one scrape from values read by the endpoint.

        *today*: today's ``daily_usage`` rows (``provider``, ``model``, ``request_count``,
        ``total_tokens``, ``cost_usd``) — the original's ``*_today`` families, as gauges.
        *pricing*: the price service's ``status()``; *loops*: the supervisor's ``status()``
        (``{name: {running, runs, failures, last_success_at}}``). None leaves a family out.
        """
        families: list[Metric[Any]] = []
        if today is not None:
            families.extend(self._today(today))
        if pricing is not None and isinstance(pricing.get("age_s"), int | float):
            age = Gauge(PREFIX + "pricing_age_seconds", "Age of the price table in use.")
            age.set(float(pricing["age_s"]))
            families.append(age)
        if pricing_degraded is not None:
            degraded = Gauge(PREFIX + "pricing_degraded",
                             "1 when prices are the built-in table or older than allowed.")
            degraded.set(1 if pricing_degraded else 0)
            families.append(degraded)
        if loops is not None:
            families.extend(self._loops(loops))
        if breakers is not None:
            families.extend(self._breakers(breakers))
        # A series per long-lived family that has overflowed (most never do): the sign that
        # a client sends unbounded names, or that max_series is too small here. (The
        # scrape-time families are rebuilt each time: their overflow shows as "other" rows.)
        folded = Counter(PREFIX + "metrics_label_sets_folded_total",
                         'Updates counted under "other" (new label set, family full).',
                         ("family",))
        for family in self.registry.metrics():
            count = family.folded()
            if count:
                folded.inc((family.name,), count)
        families.append(folded)
        return families

    def _breakers(self, snapshots: Iterable[Mapping[str, Any]]) -> list[Metric[Any]]:
        state = Gauge(PREFIX + "breaker_state",
                      "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open.",
                      ("breaker",), max_series=self.max_series)
        failures = Gauge(PREFIX + "breaker_failures",
                         "Consecutive upstream failures counted by the breaker.", ("breaker",),
                         max_series=self.max_series)
        codes = {"closed": 0, "half-open": 1, "open": 2}
        for snap in snapshots:
            key = (str(snap.get("providerId")),)
            state.set(codes.get(str(snap.get("state")), 0), key)
            failures.set(float(snap.get("failures") or 0), key)
        return [state, failures]

    def _today(self, rows: Iterable[Mapping[str, Any]]) -> list[Metric[Any]]:
        labels = ("provider", "model")
        specs = (("requests_today", "request_count", "LLM calls today (UTC)."),
                 ("tokens_today", "total_tokens", "Tokens of LLM calls today (UTC)."),
                 ("cost_usd_today", "cost_usd", "Cost of LLM calls today (UTC), USD."))
        gauges = [(Gauge(PREFIX + name, help, labels, max_series=self.max_series,
                         fold=("model",)), column) for name, column, help in specs]
        for row in rows:
            key = (_label(row.get("provider")), _label(row.get("model")))
            for gauge, column in gauges:
                value = row.get(column)
                number = float(value) if isinstance(value, int | float) else 0.0
                # Folded rows add up under "other"; a cost that is not finite counts as 0.
                gauge.inc(key, number if math.isfinite(number) else 0.0)
        return [gauge for gauge, _column in gauges]

    def _loops(self, loops: Mapping[str, Mapping[str, Any]]) -> list[Metric[Any]]:
        up = Gauge(PREFIX + "loop_up", "1 while the background loop's thread runs.", ("loop",))
        failures = Gauge(PREFIX + "loop_failures",
                         "Consecutive failed runs of the background loop.", ("loop",))
        runs = Counter(PREFIX + "loop_runs_total", "Runs of the background loop.", ("loop",))
        success = Gauge(PREFIX + "loop_last_success_timestamp_seconds",
                        "When the background loop last succeeded, Unix time.", ("loop",))
        for name, state in loops.items():
            up.set(1 if state.get("running") else 0, (name,))
            count = state.get("failures")
            failures.set(count if isinstance(count, int) else 0, (name,))
            done = state.get("runs")
            runs.inc((name,), done if isinstance(done, int) and done > 0 else 0)
            last = state.get("last_success_at")
            if isinstance(last, int | float):
                success.set(float(last), (name,))
        return [up, failures, runs, success]
