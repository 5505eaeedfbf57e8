"""In-process metrics: a tiny thread-safe registry (the proxy's own instruments are in
``proxy_metrics``).

This module owns the numbers behind ``GET /metrics`` and how they are written in the
Prometheus text exposition format 0.0.4: one block per family (``# HELP``, ``# TYPE``,
then every sample of that family, never interleaved with another family), label values
escaped (``\\`` ``"`` and newline), the output ending with a newline. It is pure: no I/O,
nothing imported from the package but its version; ``web.metrics`` reads the database, prices and
loops at scrape time and hands the values in.

Increments run on the request path, so each metric has its own lock held only for a dict
lookup and an addition; rendering snapshots a metric under its lock and formats outside it.
A caller that updates the same series call after call takes a handle on it
(``handle()``: the series itself, no label checks or lookups per update).

**Bounded cardinality.** Label values that come from clients (model names, tool names) are
unbounded, and a client sending random model names must not grow memory without limit.
Each metric keeps at most ``max_series`` distinct label sets (default
:data:`DEFAULT_MAX_SERIES`). Once it is full, a *new* label set is folded: the values of its
foldable labels (``fold``, by default every label) are replaced by :data:`OTHER` and the
sample is counted there; label sets already present keep counting as before. Folded series
are admitted past the cap, which stays bounded because the labels that are not folded take
values fixed by the code (provider, status, type). Every fold is counted
(:meth:`Metric.folded`) so the operator can see the cap being hit. Label values longer than
:data:`MAX_LABEL_CHARS` are cut.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

__all__ = ["CONTENT_TYPE", "DEFAULT_MAX_SERIES", "MAX_LABEL_CHARS", "OTHER", "Counter",
           "Gauge", "Histogram", "HistogramHandle", "Metric", "Registry", "ScalarHandle",
           "clean_labels", "escape_label_value", "format_value"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_MAX_SERIES = 500
MAX_LABEL_CHARS = 200
OTHER = "other"

LabelValues = tuple[str, ...]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _clean(value: object) -> str:
    """A label value that can always be rendered: client-chosen strings may hold lone
    surrogates (not UTF-8 encodable) or be arbitrarily long."""
    text = value if isinstance(value, str) else str(value)
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:MAX_LABEL_CHARS]


def clean_labels(labels: Sequence[object]) -> LabelValues:
    """Label values made renderable once, for the ``*_clean`` updates: the request path
    counts one call in several families with the same client-chosen values."""
    return tuple(_clean(v) for v in labels)


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: integers without ``.0``, ``+Inf``, ``NaN``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _labels_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


S = TypeVar("S")


class Metric(Generic[S]):
    """One family: a name, its help text, its label names and one series per label set."""

    kind: ClassVar[str] = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (), *,
                 max_series: int = DEFAULT_MAX_SERIES, fold: Sequence[str] | None = None
                 ) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        names = tuple(labelnames)
        for label in names:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} on {name}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate label names on {name}")
        folded = names if fold is None else tuple(fold)
        if not set(folded) <= set(names) or (names and not folded):
            raise ValueError(f"fold must name some of the labels of {name}")
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.name = name
        self.help = help
        self.labelnames = names
        self.max_series = max_series
        self._fold_mask = tuple(label in folded for label in names)
        self._lock = threading.Lock()
        self._series: dict[LabelValues, S] = {}
        self._folded = 0
        if not names:
            # An unlabelled family shows its zero from the first scrape (rate() needs a start).
            self._series[()] = self._new_series()

    def _new_series(self) -> S:
        raise NotImplementedError

    def _values(self, labels: Sequence[str]) -> LabelValues:
        self._check_arity(labels)
        return tuple(_clean(v) for v in labels)

    def _check_arity(self, labels: Sequence[object]) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels!r}")

    def _series_for(self, values: LabelValues) -> S:
        """The series a sample with *values* goes to, created if new. Hold the lock."""
        series = self._series.get(values)
        if series is not None:
            return series
        if len(self._series) >= self.max_series:
            self._folded += 1
            values = tuple(OTHER if f else v for v, f in zip(values, self._fold_mask, strict=True))
            series = self._series.get(values)
            if series is not None:
                return series
        series = self._series[values] = self._new_series()
        return series

    def _unfolded(self, values: LabelValues) -> S | None:
        """The series of *values* (label values from :func:`clean_labels`), created if new;
        None when the metric is full and has no such series (its updates fold)."""
        self._check_arity(values)
        with self._lock:
            series = self._series.get(values)
            if series is None:
                if len(self._series) >= self.max_series:
                    return None
                series = self._series[values] = self._new_series()
        return series

    def folded(self) -> int:
        """How many updates went to an ``other`` series because their label set was new and
        the metric was full (a label set sent ten times counts ten)."""
        with self._lock:
            return self._folded

    def sample_names(self) -> tuple[str, ...]:
        return (self.name,)

    def export(self) -> dict[str, Any]:
        """Every series and the fold count as JSON-able data, for another process to
        :meth:`absorb` (several server processes, one ``/metrics``)."""
        with self._lock:
            series = [[list(k), self._export_series(v)] for k, v in self._series.items()]
            return {"series": series, "folded": self._folded}

    def absorb(self, exported: dict[str, Any]) -> None:
        """Add another process's :meth:`export` of this family into this one.

        Never folds: each export is already bounded by its own process's cap (its folds
        arrive counted), and a merged copy lives for one scrape."""
        with self._lock:
            for labels, value in exported.get("series", ()):
                values = tuple(str(v) for v in labels)
                if len(values) == len(self.labelnames):
                    series = self._series.get(values)
                    if series is None:
                        series = self._series[values] = self._new_series()
                    self._absorb_series(series, value)
            self._folded += int(exported.get("folded", 0))

    def _export_series(self, series: S) -> Any:
        raise NotImplementedError

    def _absorb_series(self, series: S, value: Any) -> None:
        raise NotImplementedError

    def render(self) -> list[str]:
        """``# HELP``, ``# TYPE`` and every sample line of this family, sorted by labels."""
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        lines.extend(self._sample_lines())
        return lines

    def _sample_lines(self) -> list[str]:
        raise NotImplementedError


class _Scalar(Metric[list[float]]):
    """A counter or gauge: one float per label set (kept in a one-item list, mutable)."""

    def _new_series(self) -> list[float]:
        return [0.0]

    def value(self, labels: Sequence[str] = ()) -> float:
        """The current value for *labels* (0 when never touched); for tests and reports."""
        values = self._values(labels)
        with self._lock:
            series = self._series.get(values)
            return series[0] if series is not None else 0.0

    merge_max: bool = False
    """How :meth:`absorb` combines two processes' values: add them (counters, a gauge of
    things in flight) or keep the larger (a gauge of a maximum, or of a fact like ``up``)."""

    def _export_series(self, series: list[float]) -> Any:
        return series[0]

    def handle(self, values: LabelValues) -> ScalarHandle:
        """A handle on the series of *values* (label values from :func:`clean_labels`),
        created if new, for a caller that updates the same series call after call: no
        label checks or lookups per update. When the metric is full and has no such
        series, each update goes where :meth:`Counter.inc` would put it (folded, and
        counted)."""
        return ScalarHandle(self, values, self._unfolded(values))

    def _absorb_series(self, series: list[float], value: Any) -> None:
        number = float(value)
        series[0] = max(series[0], number) if self.merge_max else series[0] + number

    def _sample_lines(self) -> list[str]:
        with self._lock:
            snapshot = [(k, v[0]) for k, v in self._series.items()]
        snapshot.sort()
        return [f"{self.name}{_labels_text(self.labelnames, k)} {format_value(v)}"
                for k, v in snapshot]


class ScalarHandle:
    """One counter or gauge series, from :meth:`_Scalar.handle`."""

    __slots__ = ("_cell", "_lock", "_metric", "_values")

    def __init__(self, metric: _Scalar, values: LabelValues, cell: list[float] | None) -> None:
        self._metric = metric
        self._values = values
        self._lock = metric._lock
        self._cell = cell  # None: the metric was full, every update folds

    def add(self, amount: float) -> None:
        """Add *amount* (finite; for a counter not negative: the caller's to check)."""
        with self._lock:
            cell = self._cell
            if cell is None:
                cell = self._metric._series_for(self._values)
            cell[0] += amount

    def raise_to(self, value: float) -> None:
        """Keep the largest value (:meth:`Gauge.set_max`; *value* at least 0, which a new
        series starts from)."""
        with self._lock:
            cell = self._cell
            if cell is None:
                cell = self._metric._series_for(self._values)
            if value > cell[0]:
                cell[0] = value


class Counter(_Scalar):
    """A value that only goes up (until the process restarts)."""

    kind = "counter"

    def inc(self, labels: Sequence[str] = (), amount: float = 1.0) -> None:
        self.inc_clean(self._values(labels), amount)

    def inc_clean(self, values: LabelValues, amount: float = 1.0) -> None:
        """:meth:`inc` with label values from :func:`clean_labels`."""
        if not (amount >= 0 and math.isfinite(amount)):
            raise ValueError(f"{self.name}: a counter only goes up by a finite amount")
        self._check_arity(values)
        with self._lock:
            self._series_for(values)[0] += amount


class Gauge(_Scalar):
    """A value that goes up and down. Several processes' values are combined by keeping
    the largest (``summed=True``: by adding them, for counts of things in progress)."""

    kind = "gauge"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (), *,
                 max_series: int = DEFAULT_MAX_SERIES, fold: Sequence[str] | None = None,
                 summed: bool = False) -> None:
        super().__init__(name, help, labelnames, max_series=max_series, fold=fold)
        self.merge_max = not summed

    def set(self, value: float, labels: Sequence[str] = ()) -> None:
        values = self._values(labels)
        with self._lock:
            self._series_for(values)[0] = float(value)

    def inc(self, labels: Sequence[str] = (), amount: float = 1.0) -> None:
        values = self._values(labels)
        with self._lock:
            self._series_for(values)[0] += amount

    def dec(self, labels: Sequence[str] = (), amount: float = 1.0) -> None:
        self.inc(labels, -amount)

    def set_max(self, value: float, labels: Sequence[str] = ()) -> None:
        """Keep the largest value seen (a new series starts at *value*)."""
        self.set_max_clean(value, self._values(labels))

    def set_max_clean(self, value: float, values: LabelValues) -> None:
        """:meth:`set_max` with label values from :func:`clean_labels`."""
        self._check_arity(values)
        with self._lock:
            before = len(self._series)
            series = self._series_for(values)
            if len(self._series) > before or value > series[0]:
                series[0] = float(value)


class _HistogramSeries:
    __slots__ = ("counts", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0


class HistogramHandle:
    """One histogram series, from :meth:`Histogram.handle`."""

    __slots__ = ("_bounds", "_lock", "_metric", "_series", "_values")

    def __init__(self, metric: Histogram, values: LabelValues,
                 series: _HistogramSeries | None) -> None:
        self._metric = metric
        self._values = values
        self._lock = metric._lock
        self._bounds = metric.buckets
        self._series = series  # None: the metric was full, every update folds

    def observe(self, value: float) -> None:
        """:meth:`Histogram.observe` (*value* finite, the caller's to check)."""
        index = bisect.bisect_left(self._bounds, value)
        with self._lock:
            series = self._series
            if series is None:
                series = self._metric._series_for(self._values)
            series.counts[index] += 1
            series.sum += value


class Histogram(Metric[_HistogramSeries]):
    """Observations counted in fixed buckets; rendered cumulative (``le`` inclusive) with
    ``_bucket{le="+Inf"}`` equal to ``_count``, and ``_sum``."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float], max_series: int = DEFAULT_MAX_SERIES,
                 fold: Sequence[str] | None = None) -> None:
        bounds = [float(b) for b in buckets]
        if bounds and bounds[-1] == math.inf:
            bounds.pop()
        if not bounds or any(not math.isfinite(b) for b in bounds) or any(
                a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"{name}: buckets must be finite and strictly increasing")
        if "le" in labelnames:
            raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
        self.buckets = tuple(bounds)
        self._le = (*(format_value(b) for b in bounds), "+Inf")
        super().__init__(name, help, labelnames, max_series=max_series, fold=fold)

    def _new_series(self) -> _HistogramSeries:
        return _HistogramSeries(len(self.buckets))

    def observe(self, value: float, labels: Sequence[str] = ()) -> None:
        self.observe_clean(value, self._values(labels))

    def observe_clean(self, value: float, values: LabelValues) -> None:
        """:meth:`observe` with label values from :func:`clean_labels`."""
        if not math.isfinite(value):
            raise ValueError(f"{self.name}: cannot observe {value!r}")
        self._check_arity(values)
        index = bisect.bisect_left(self.buckets, value)  # first bound >= value: le is inclusive
        with self._lock:
            series = self._series_for(values)
            series.counts[index] += 1
            series.sum += value

    def handle(self, values: LabelValues) -> HistogramHandle:
        """As :meth:`_Scalar.handle`, for a histogram series."""
        return HistogramHandle(self, values, self._unfolded(values))

    def snapshot(self, labels: Sequence[str] = ()) -> tuple[list[int], float]:
        """(cumulative bucket counts ending with +Inf, sum) for *labels*; for tests."""
        values = self._values(labels)
        with self._lock:
            series = self._series.get(values)
            counts = list(series.counts) if series is not None else [0] * (len(self.buckets) + 1)
            total = series.sum if series is not None else 0.0
        return _cumulative(counts), total

    def sample_names(self) -> tuple[str, ...]:
        return tuple(self.name + suffix for suffix in _HISTOGRAM_SUFFIXES)

    def _export_series(self, series: _HistogramSeries) -> Any:
        return [list(series.counts), series.sum]

    def _absorb_series(self, series: _HistogramSeries, value: Any) -> None:
        counts, total = value
        if len(counts) == len(series.counts):  # the same buckets (the same version)
            series.counts = [a + int(b) for a, b in zip(series.counts, counts, strict=True)]
            series.sum += float(total)

    def _sample_lines(self) -> list[str]:
        with self._lock:
            snapshot = [(k, list(s.counts), s.sum) for k, s in self._series.items()]
        snapshot.sort(key=lambda item: item[0])
        lines: list[str] = []
        names = (*self.labelnames, "le")
        for key, counts, total in snapshot:
            cumulative = _cumulative(counts)
            for le, count in zip(self._le, cumulative, strict=True):
                lines.append(f"{self.name}_bucket{_labels_text(names, (*key, le))} {count}")
            labels = _labels_text(self.labelnames, key)
            lines.append(f"{self.name}_sum{labels} {format_value(total)}")
            lines.append(f"{self.name}_count{labels} {cumulative[-1]}")
        return lines


def _cumulative(counts: list[int]) -> list[int]:
    out: list[int] = []
    running = 0
    for count in counts:
        running += count
        out.append(running)
    return out


M = TypeVar("M", bound=Metric[Any])


class Registry:
    """The families of one process (or one app, in tests), rendered in registration order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, Metric[Any]] = {}

    def register(self, metric: M) -> M:
        with self._lock:
            _check_unique([*self._metrics.values(), metric])
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = (), *,
                max_series: int = DEFAULT_MAX_SERIES, fold: Sequence[str] | None = None
                ) -> Counter:
        return self.register(Counter(name, help, labelnames, max_series=max_series, fold=fold))

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = (), *,
              max_series: int = DEFAULT_MAX_SERIES, fold: Sequence[str] | None = None,
              summed: bool = False) -> Gauge:
        return self.register(Gauge(name, help, labelnames, max_series=max_series, fold=fold,
                                   summed=summed))

    def histogram(self, name: str, help: str, labelnames: Sequence[str] = (), *,
                  buckets: Sequence[float], max_series: int = DEFAULT_MAX_SERIES,
                  fold: Sequence[str] | None = None) -> Histogram:
        return self.register(Histogram(name, help, labelnames, buckets=buckets,
                                       max_series=max_series, fold=fold))

    def metrics(self) -> list[Metric[Any]]:
        with self._lock:
            return list(self._metrics.values())

    def export(self) -> dict[str, Any]:
        """Every family's :meth:`Metric.export`, by name."""
        return {metric.name: metric.export() for metric in self.metrics()}

    def absorb(self, exported: dict[str, Any]) -> None:
        """Add another process's :meth:`export` in; families this one lacks are skipped."""
        with self._lock:
            families = dict(self._metrics)
        for name, data in exported.items():
            family = families.get(name)
            if family is not None and isinstance(data, dict):
                family.absorb(data)

    def render(self, extra: Iterable[Metric[Any]] = ()) -> str:
        """The exposition text of every registered family, then *extra* (families built for
        one scrape). Raises ValueError if a sample name would belong to two families."""
        families = [*self.metrics(), *extra]
        _check_unique(families)
        lines = [line for family in families for line in family.render()]
        return "\n".join(lines) + "\n" if lines else ""


def _check_unique(families: Sequence[Metric[Any]]) -> None:
    seen: set[str] = set()
    for family in families:
        names = {family.name, *family.sample_names()}
        if names & seen:
            raise ValueError(f"metric {family.name} collides with another family")
        seen |= names


# -- the proxy's instruments -----------------------------------------------------------------
