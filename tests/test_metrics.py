"""The metrics registry and the proxy's instruments, checked through a strict parser of the
Prometheus text exposition format 0.0.4 (written here, so the tests need no client library).
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_cli_proxy import proxy_metrics
from agent_cli_proxy.metrics import (
    MAX_LABEL_CHARS,
    OTHER,
    Counter,
    Gauge,
    Histogram,
    Registry,
    format_value,
)
from agent_cli_proxy.proxy_metrics import ProxyMetrics

# -- a strict parser -----------------------------------------------------------------------


class ExpositionError(AssertionError):
    pass


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Family:
    name: str
    type: str
    help: str
    samples: list[Sample] = field(default_factory=list)

    def get(self, name: str | None = None, **labels: str) -> float:
        """The value of the one sample named *name* (the family's by default) with *labels*."""
        wanted = name or self.name
        found = [s.value for s in self.samples if s.name == wanted and s.labels == labels]
        if len(found) != 1:
            raise KeyError(f"{wanted}{labels}: {len(found)} samples")
        return found[0]

    def series(self, name: str | None = None) -> list[dict[str, str]]:
        wanted = name or self.name
        return [s.labels for s in self.samples if s.name == wanted]


_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_FLOAT = re.compile(r"[+-]?(?:Inf|NaN|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\Z")
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}


def _value(text: str, where: str) -> float:
    if not _FLOAT.match(text) or text in {"+NaN", "-NaN"}:
        raise ExpositionError(f"{where}: bad value {text!r}")
    return float(text)


def _unescape_help(text: str, where: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if nxt not in {"\\", "n"}:
                raise ExpositionError(f"{where}: bad escape in HELP")
            out.append("\n" if nxt == "n" else nxt)
        else:
            out.append(ch)
    return "".join(out)


def _labels(text: str, pos: int, where: str) -> tuple[dict[str, str], int]:
    """Parse ``{a="x",b="y"}`` starting at text[pos] == "{"; return labels and end position."""
    labels: dict[str, str] = {}
    pos += 1
    if text[pos:pos + 1] == "}":
        raise ExpositionError(f"{where}: empty label braces")
    while True:
        m = _LABEL_NAME.match(text, pos)
        if not m:
            raise ExpositionError(f"{where}: bad label name at {pos}")
        name = m.group()
        if name in labels:
            raise ExpositionError(f"{where}: label {name} twice")
        pos = m.end()
        if text[pos:pos + 2] != '="':
            raise ExpositionError(f"{where}: expected =\" after {name}")
        pos += 2
        out: list[str] = []
        while True:
            if pos >= len(text):
                raise ExpositionError(f"{where}: unterminated label value")
            ch = text[pos]
            if ch == "\\":
                nxt = text[pos + 1:pos + 2]
                if nxt not in {"\\", '"', "n"}:
                    raise ExpositionError(f"{where}: bad escape \\{nxt}")
                out.append("\n" if nxt == "n" else nxt)
                pos += 2
            elif ch == '"':
                pos += 1
                break
            else:
                out.append(ch)
                pos += 1
        labels[name] = "".join(out)
        if text[pos:pos + 1] == ",":
            pos += 1
        elif text[pos:pos + 1] == "}":
            return labels, pos + 1
        else:
            raise ExpositionError(f"{where}: expected , or }} after label {name}")


def _owner(sample: str, families: dict[str, Family]) -> Family | None:
    for family in families.values():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            if family.name + suffix == sample:
                return family
    return None


def parse_exposition(text: str) -> dict[str, Family]:
    """Parse *text* strictly; raise ExpositionError on anything a strict reader would reject
    or that our output must never do (split families, missing HELP/TYPE, bad histograms)."""
    if text and not text.endswith("\n"):
        raise ExpositionError("output does not end with a newline")
    families: dict[str, Family] = {}
    current: Family | None = None
    pending_help: tuple[str, str] | None = None
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for number, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {number}"
        if not line:
            raise ExpositionError(f"{where}: empty line")
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) < 3 or parts[1] not in {"HELP", "TYPE"}:
                raise ExpositionError(f"{where}: unexpected comment {line!r}")
            name = parts[2]
            if not _METRIC_NAME.fullmatch(name):
                raise ExpositionError(f"{where}: bad metric name {name!r}")
            if name in families:
                raise ExpositionError(f"{where}: {parts[1]} for {name} again (family split)")
            if parts[1] == "HELP":
                if pending_help is not None:
                    raise ExpositionError(f"{where}: HELP without TYPE before it")
                pending_help = (name, _unescape_help(parts[3] if len(parts) == 4 else "",
                                                     where))
                continue
            if len(parts) != 4 or parts[3] not in _TYPES:
                raise ExpositionError(f"{where}: bad TYPE line")
            if pending_help is None or pending_help[0] != name:
                raise ExpositionError(f"{where}: TYPE {name} without its HELP just before")
            current = families[name] = Family(name, parts[3], pending_help[1])
            pending_help = None
            continue
        if pending_help is not None:
            raise ExpositionError(f"{where}: HELP not followed by TYPE")
        m = _METRIC_NAME.match(line)
        if not m:
            raise ExpositionError(f"{where}: bad sample {line!r}")
        name, pos = m.group(), m.end()
        labels: dict[str, str] = {}
        if line[pos:pos + 1] == "{":
            labels, pos = _labels(line, pos, where)
        rest = line[pos:]
        if not rest.startswith(" "):
            raise ExpositionError(f"{where}: no space before the value")
        fields = rest[1:].split(" ")
        if len(fields) not in {1, 2} or (len(fields) == 2 and not re.fullmatch(r"-?\d+",
                                                                             fields[1])):
            raise ExpositionError(f"{where}: bad value/timestamp {rest!r}")
        value = _value(fields[0], where)
        owner = _owner(name, families)
        if owner is None:
            raise ExpositionError(f"{where}: sample {name} has no TYPE before it")
        if owner is not current:
            raise ExpositionError(f"{where}: sample of {owner.name} after another family "
                                  "began (families interleaved)")
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ExpositionError(f"{where}: duplicate series {key}")
        seen.add(key)
        if owner.type == "counter" and not value >= 0:
            raise ExpositionError(f"{where}: counter {name} = {value}")
        if "le" in labels and not (owner.type == "histogram" and name.endswith("_bucket")):
            raise ExpositionError(f"{where}: le label outside histogram buckets")
        owner.samples.append(Sample(name, labels, value))
    if pending_help is not None:
        raise ExpositionError("HELP at the end without TYPE")
    for family in families.values():
        if family.type == "histogram":
            _check_histogram(family)
    return families


def _check_histogram(family: Family) -> None:
    groups: dict[tuple[tuple[str, str], ...], dict[str, list[Sample]]] = {}
    for s in family.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        groups.setdefault(key, {}).setdefault(s.name[len(family.name):], []).append(s)
    for key, parts in groups.items():
        buckets = parts.get("_bucket", [])
        if not buckets or len(parts.get("_sum", [])) != 1 or len(parts.get("_count", [])) != 1:
            raise ExpositionError(f"{family.name}{key}: needs buckets, one _sum, one _count")
        bounds = [_value(b.labels.get("le", "?"), family.name) for b in buckets]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ExpositionError(f"{family.name}{key}: le not increasing")
        if bounds[-1] != math.inf:
            raise ExpositionError(f"{family.name}{key}: last bucket is not +Inf")
        counts = [b.value for b in buckets]
        if counts != sorted(counts):
            raise ExpositionError(f"{family.name}{key}: buckets not cumulative")
        if counts[-1] != parts["_count"][0].value:
            raise ExpositionError(f"{family.name}{key}: +Inf bucket != _count")


# -- the parser is strict --------------------------------------------------------------------

GOOD = ('# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 1\n'
        '# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\n'
        'h_sum 3.5\nh_count 2\n')


@pytest.mark.parametrize(("broken", "why"), [
    (GOOD + 'a_total{x="2"} 1\n', "interleaved"),
    (GOOD + "# HELP a_total A.\n", "split"),
    (GOOD[:-1], "newline"),
    (GOOD.replace('x="1"', 'x="\\t"'), "escape"),
    (GOOD.replace('x="1"', 'x="1",'), "bad label name"),
    (GOOD.replace("# HELP a_total A.\n", ""), "HELP"),
    (GOOD.replace('h_bucket{le="1"} 1', 'h_bucket{le="1"} 3'), "cumulative"),
    (GOOD.replace('le="+Inf"', 'le="2"'), "+Inf"),
    (GOOD.replace("h_count 2", "h_count 3"), "_count"),
    (GOOD.replace("h_sum 3.5", "h_sum 3,5"), "value"),
    (GOOD + "\n", "empty line"),
    (GOOD.replace('a_total{x="1"} 1', 'a_total{x="1"} 1\na_total{x="1"} 2'), "duplicate"),
    ('# HELP g G.\n# TYPE g gauge\nother 1\n', "no TYPE"),
])
def test_parser_rejects(broken: str, why: str) -> None:
    parse_exposition(GOOD)
    with pytest.raises(ExpositionError, match=re.escape(why)):
        parse_exposition(broken)


# -- registry ------------------------------------------------------------------------------


def test_render_groups_each_family_with_help_and_type() -> None:
    reg = Registry()
    c = reg.counter("req_total", "Requests.", ("provider", "model"))
    g = reg.gauge("in_flight", "In flight.")
    h = reg.histogram("dur_seconds", "Duration.", ("provider",), buckets=(0.1, 1, 10))
    for model in ("b", "a"):
        c.inc(("openai", model))
        h.observe(0.5, ("openai",))
        c.inc(("anthropic", model), 2)
    g.inc()
    g.inc()
    g.dec()
    text = reg.render()
    fams = parse_exposition(text)
    assert list(fams) == ["req_total", "in_flight", "dur_seconds"]
    assert fams["req_total"].type == "counter" and fams["req_total"].help == "Requests."
    assert fams["req_total"].get(provider="anthropic", model="a") == 2
    assert fams["in_flight"].get() == 1
    dur = fams["dur_seconds"]
    assert dur.get("dur_seconds_count", provider="openai") == 2
    assert dur.get("dur_seconds_sum", provider="openai") == 1.0
    assert dur.get("dur_seconds_bucket", provider="openai", le="0.1") == 0
    assert dur.get("dur_seconds_bucket", provider="openai", le="1") == 2
    # Series sorted by label values: deterministic output.
    assert fams["req_total"].series()[0] == {"provider": "anthropic", "model": "a"}


def test_unlabelled_families_show_zero_from_the_start() -> None:
    reg = Registry()
    reg.counter("c_total", "C.")
    reg.histogram("h", "H.", buckets=(1,))
    fams = parse_exposition(reg.render())
    assert fams["c_total"].get() == 0
    assert fams["h"].get("h_count") == 0 and fams["h"].get("h_bucket", le="+Inf") == 0
    assert Registry().render() == ""


def test_histogram_buckets_are_le_inclusive() -> None:
    h = Histogram("h", "H.", buckets=(1, 2, 5))
    for value in (0, 1, 1.0000001, 2, 5, 7, 1e9):
        h.observe(value)
    counts, total = h.snapshot()
    assert counts == [2, 4, 5, 7]
    assert total == pytest.approx(0 + 1 + 1.0000001 + 2 + 5 + 7 + 1e9)
    fams = parse_exposition(Registry().render([h]))
    assert [s.labels["le"] for s in fams["h"].samples if s.name == "h_bucket"] == [
        "1", "2", "5", "+Inf"]


@pytest.mark.parametrize(("value", "text"), [
    (1, "1"), (1.0, "1"), (0.25, "0.25"), (-3.0, "-3"), (1e-7, "1e-07"), (math.inf, "+Inf"),
    (-math.inf, "-Inf"), (math.nan, "NaN"), (2.0**60, "1.152921504606847e+18"),
])
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text
    assert math.isnan(_value(text, "")) if math.isnan(value) else _value(text, "") == value


@given(st.lists(st.text(max_size=40), min_size=1, max_size=5, unique=True))
def test_label_values_round_trip(values: list[str]) -> None:
    g = Gauge("g", "Help with \\ backslash\nand newline.", ("v",))
    for i, value in enumerate(values):
        g.set(i, (value,))
    fam = parse_exposition(Registry().render([g]))["g"]
    assert fam.help == "Help with \\ backslash\nand newline."
    assert {s.labels["v"]: s.value for s in fam.samples} == {v: i for i, v in enumerate(values)}


def test_escaping_is_exact() -> None:
    g = Gauge("g", "G.", ("v",))
    g.set(1, ('a\\b"c\nd',))
    assert 'g{v="a\\\\b\\"c\\nd"} 1\n' in Registry().render([g])


def test_long_label_values_are_cut() -> None:
    c = Counter("c_total", "C.", ("model",))
    c.inc(("m" * 10_000,))
    (sample,) = parse_exposition(Registry().render([c]))["c_total"].samples
    assert sample.labels["model"] == "m" * MAX_LABEL_CHARS


def test_cardinality_cap_folds_new_label_sets_into_other() -> None:
    c = Counter("req_total", "R.", ("provider", "model"), max_series=3, fold=("model",))
    for i in range(10):
        c.inc(("openai", f"random-{i}"))
    c.inc(("anthropic", "random-x"))
    c.inc(("openai", "random-0"), 5)  # admitted before the cap: still its own series
    fam = parse_exposition(Registry().render([c]))["req_total"]
    assert fam.get(provider="openai", model="random-0") == 6
    assert fam.get(provider="openai", model=OTHER) == 7
    assert fam.get(provider="anthropic", model=OTHER) == 1
    assert len(fam.samples) == 5  # 3 + one "other" per provider (provider is not folded)
    assert c.folded() == 8
    assert sum(s.value for s in fam.samples) == 16  # nothing lost


def test_cardinality_cap_folds_every_label_by_default() -> None:
    h = Histogram("h", "H.", ("a", "b"), buckets=(1,), max_series=2)
    for i in range(1000):
        h.observe(0.5, (str(i), str(i)))
    fam = parse_exposition(Registry().render([h]))["h"]
    assert len(fam.series("h_count")) == 3
    assert fam.get("h_count", a=OTHER, b=OTHER) == 998


def test_concurrent_updates_are_exact() -> None:
    reg = Registry()
    c = reg.counter("c_total", "C.", ("k",))
    g = reg.gauge("g", "G.")
    h = reg.histogram("h", "H.", ("k",), buckets=(0.5, 1))
    threads, rounds = 8, 5000
    start = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        start.wait()
        for i in range(rounds):
            key = (str(i % 3),)
            c.inc(key)
            g.inc()
            h.observe(0.25 if i % 2 else 0.75, key)
            g.dec()

    def scrape() -> None:
        start.wait()
        try:
            for _ in range(50):
                parse_exposition(reg.render())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    workers.append(threading.Thread(target=scrape))
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors
    assert sum(c.value((str(k),)) for k in range(3)) == threads * rounds
    assert g.value() == 0
    total = sum(h.snapshot((str(k),))[0][-1] for k in range(3))
    assert total == threads * rounds
    below = sum(h.snapshot((str(k),))[0][0] for k in range(3))
    assert below == threads * rounds // 2


@pytest.mark.parametrize("build", [
    lambda: Counter("9bad", "x"),
    lambda: Counter("ok_total", "x", ("bad-label",)),
    lambda: Counter("ok_total", "x", ("__reserved",)),
    lambda: Counter("ok_total", "x", ("a", "a")),
    lambda: Counter("ok_total", "x", ("a",), fold=("b",)),
    lambda: Counter("ok_total", "x", ("a",), fold=()),
    lambda: Histogram("h", "x", ("le",), buckets=(1,)),
    lambda: Histogram("h", "x", buckets=(2, 1)),
    lambda: Histogram("h", "x", buckets=()),
    lambda: Histogram("h", "x", buckets=(1, math.nan)),
])
def test_invalid_definitions_are_refused(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


def test_invalid_updates_are_refused() -> None:
    c = Counter("c_total", "C.", ("a",))
    with pytest.raises(ValueError):
        c.inc(("x",), -1)
    with pytest.raises(ValueError):
        c.inc(("x",), math.nan)
    with pytest.raises(ValueError):
        c.inc(("x", "y"))
    with pytest.raises(ValueError):
        Histogram("h", "H.", buckets=(1,)).observe(math.inf)


def test_names_cannot_collide() -> None:
    reg = Registry()
    reg.histogram("x", "X.", buckets=(1,))
    with pytest.raises(ValueError):
        reg.counter("x_count", "C.")
    with pytest.raises(ValueError):
        reg.render([Gauge("x", "again")])
    reg.gauge("x_max", "the original's companion gauge name is fine")


def test_gauge_set_max_keeps_the_largest() -> None:
    g = Gauge("g", "G.", ("k",))
    g.set_max(5, ("a",))
    g.set_max(3, ("a",))
    g.set_max(-2, ("b",))
    assert (g.value(("a",)), g.value(("b",))) == (5, -2)


P_FOLDED = "agent_cli_proxy_metrics_label_sets_folded_total"

# -- ProxyMetrics --------------------------------------------------------------------------


def finish(m: ProxyMetrics, **overrides: object) -> None:
    call: dict[str, object] = {
        "provider": "openai", "model": "gpt-5", "tool": "codex", "status": 200,
        "lifecycle": "completed", "streamed": True, "duration_s": 2.0, "upstream_s": 1.995,
        "ttfb_s": 0.4, "usage_tokens": {"prompt": 200, "cache_read": 1000, "completion": 300,
                                        "reasoning": 120, "cache_creation": 0},
        "cost_usd": 0.0125,
    }
    call.update(overrides)
    m.request_finished(**call)  # type: ignore[arg-type]


def test_request_path_counts_one_call() -> None:
    m = ProxyMetrics()
    m.request_started()
    assert m.in_flight.value() == 1
    finish(m)
    fams = parse_exposition(m.registry.render(m.scrape_families()))
    who = {"provider": "openai", "model": "gpt-5", "tool": "codex"}
    assert fams["agent_cli_proxy_in_flight_requests"].get() == 0
    assert fams["agent_cli_proxy_requests_total"].get(
        **who, status="200", lifecycle_status="completed") == 1
    tokens = fams["agent_cli_proxy_tokens_total"]
    assert {s.labels["type"]: s.value for s in tokens.samples} == {
        "prompt": 200, "cache_read": 1000, "completion": 300, "reasoning": 120}
    assert fams["agent_cli_proxy_cost_usd_total"].get(**who) == 0.0125
    dur = fams["agent_cli_proxy_request_duration_seconds"]
    assert dur.get("agent_cli_proxy_request_duration_seconds_sum", provider="openai",
                   streamed="true") == 2.0
    over = fams["agent_cli_proxy_proxy_overhead_seconds"]
    assert over.get("agent_cli_proxy_proxy_overhead_seconds_sum") == pytest.approx(0.005)
    assert over.get("agent_cli_proxy_proxy_overhead_seconds_bucket", le="0.01") == 1
    assert over.get("agent_cli_proxy_proxy_overhead_seconds_bucket", le="0.0025") == 0
    ttfb = fams["agent_cli_proxy_upstream_ttfb_seconds"]
    assert ttfb.get("agent_cli_proxy_upstream_ttfb_seconds_bucket", provider="openai",
                    le="0.5") == 1
    legacy = fams["agent_cli_proxy_proxy_request_duration_ms"]
    labels = {"provider": "openai", "status": "200", "lifecycle_status": "completed",
              "streamed": "true"}
    assert legacy.get("agent_cli_proxy_proxy_request_duration_ms_sum", **labels) == 2000
    assert legacy.get("agent_cli_proxy_proxy_request_duration_ms_bucket", le="2500",
                      **labels) == 1
    assert fams["agent_cli_proxy_proxy_request_duration_ms_max"].get(**labels) == 2000
    assert fams["agent_cli_proxy_up"].type == "gauge" and fams["agent_cli_proxy_up"].get() == 1


def test_request_finished_tolerates_odd_values() -> None:
    m = ProxyMetrics()
    m.request_started()
    finish(m, model=None, tool="", duration_s=math.nan, upstream_s=None, ttfb_s=None,
           cost_usd=math.inf, lifecycle="aborted", status=499,
           usage_tokens={"prompt_tokens": 7, "total_tokens": 7, "cache_creation_1h_tokens": 3,
                         "completion_tokens": -1, "bogus": 9})
    fams = parse_exposition(m.registry.render())
    who = {"provider": "openai", "model": "unknown", "tool": "unknown"}
    assert fams["agent_cli_proxy_requests_total"].get(
        **who, status="499", lifecycle_status="aborted") == 1
    assert fams["agent_cli_proxy_tokens_total"].series() == [{**who, "type": "prompt"}]
    assert fams["agent_cli_proxy_cost_usd_total"].get(**who) == 0
    over = fams["agent_cli_proxy_proxy_overhead_seconds"]
    assert over.get("agent_cli_proxy_proxy_overhead_seconds_count") == 1
    assert fams["agent_cli_proxy_upstream_ttfb_seconds"].samples == []


def test_overhead_is_the_whole_duration_without_upstream_and_never_negative() -> None:
    m = ProxyMetrics()
    finish(m, duration_s=0.003, upstream_s=None)
    finish(m, duration_s=1.0, upstream_s=1.5)
    counts, total = m.overhead.snapshot()
    assert total == pytest.approx(0.003)
    assert counts[-1] == 2


def test_random_model_names_stay_bounded() -> None:
    m = ProxyMetrics(max_series=20)
    for i in range(500):
        finish(m, model=f"attack-{i}")
    fams = parse_exposition(m.registry.render(m.scrape_families()))
    requests = fams["agent_cli_proxy_requests_total"]
    assert len(requests.samples) <= 21
    assert sum(s.value for s in requests.samples) == 500
    assert requests.get(provider="openai", model=OTHER, tool=OTHER, status="200",
                        lifecycle_status="completed") == 480
    folded = fams["agent_cli_proxy_metrics_label_sets_folded_total"]
    assert folded.get(family="agent_cli_proxy_requests_total") == 480
    assert folded.get(family="agent_cli_proxy_cost_usd_total") == 480
    assert {s.labels["family"] for s in folded.samples} == {
        "agent_cli_proxy_requests_total", "agent_cli_proxy_cost_usd_total",
        "agent_cli_proxy_tokens_total"}
    assert len(fams["agent_cli_proxy_tokens_total"].samples) <= 20 * 5 + 4


def test_ready_checks() -> None:
    m = ProxyMetrics()
    m.ready_checked(status="pass", duration_s=0.004)
    m.ready_checked(status="pass", duration_s=0.030)
    fams = parse_exposition(m.registry.render())
    ready = fams["agent_cli_proxy_ready_check_duration_ms"]
    assert ready.get("agent_cli_proxy_ready_check_duration_ms_bucket", status="pass",
                     le="25") == 1
    assert ready.get("agent_cli_proxy_ready_check_duration_ms_count", status="pass") == 2
    assert fams["agent_cli_proxy_ready_check_duration_ms_max"].get(status="pass") == 30


def test_scrape_families_today_pricing_loops() -> None:
    m = ProxyMetrics(max_series=2)
    rows = [
        {"provider": "anthropic", "model": "claude", "request_count": 3, "total_tokens": 900,
         "cost_usd": 0.5},
        {"provider": "openai", "model": "gpt-5", "request_count": 2, "total_tokens": 100,
         "cost_usd": math.nan},
        {"provider": "openai", "model": "gpt-4", "request_count": 1, "total_tokens": 10,
         "cost_usd": 0.25},
        {"provider": "openai", "model": "o3", "request_count": 4, "total_tokens": 40,
         "cost_usd": None},
    ]
    loops: dict[str, dict[str, Any]] = {
        "cost-backfill": {"running": True, "runs": 7, "failures": 0,
                          "last_success_at": 1_700_000_000.5},
        "pricing-refresh": {"running": False, "runs": 2, "failures": 3,
                            "last_success_at": None}}
    families = m.scrape_families(today=rows, pricing={"age_s": 12.5, "source": "cache"},
                                 pricing_degraded=True, loops=loops)
    fams = parse_exposition(m.registry.render(families))
    for name in ("up", "requests_today", "tokens_today", "cost_usd_today"):
        assert fams[f"agent_cli_proxy_{name}"].type == "gauge"  # §12.23: never counters
    req = fams["agent_cli_proxy_requests_today"]
    assert req.get(provider="anthropic", model="claude") == 3
    assert req.get(provider="openai", model="gpt-5") == 2
    assert req.get(provider="openai", model=OTHER) == 5  # folded rows add up
    assert fams["agent_cli_proxy_cost_usd_today"].get(provider="openai", model="gpt-5") == 0
    assert fams["agent_cli_proxy_pricing_age_seconds"].get() == 12.5
    assert fams["agent_cli_proxy_pricing_degraded"].get() == 1
    assert fams["agent_cli_proxy_loop_up"].get(loop="cost-backfill") == 1
    assert fams["agent_cli_proxy_loop_up"].get(loop="pricing-refresh") == 0
    assert fams["agent_cli_proxy_loop_failures"].get(loop="pricing-refresh") == 3
    assert fams["agent_cli_proxy_loop_runs_total"].get(loop="cost-backfill") == 7
    success = fams["agent_cli_proxy_loop_last_success_timestamp_seconds"]
    assert success.series() == [{"loop": "cost-backfill"}]
    # Fresh families per scrape: yesterday's rows are gone on the next one.
    assert fams[P_FOLDED].samples == []  # only long-lived families count their folds
    fams = parse_exposition(m.registry.render(m.scrape_families(today=[])))
    assert fams["agent_cli_proxy_requests_today"].samples == []
    assert "agent_cli_proxy_pricing_age_seconds" not in fams
    assert "agent_cli_proxy_loop_up" not in fams


def test_label_values_that_cannot_be_encoded_never_break_rendering() -> None:
    counter = Counter("demo_total", "Demo.", ("model",))
    counter.inc(("\ud800bad",))
    registry = Registry()
    registry.register(counter)
    text = registry.render()
    text.encode("utf-8")  # would raise with a lone surrogate left in
    assert 'demo_total{model="?bad"} 1' in text


def test_several_processes_counts_add_up_and_maxima_stay_maxima() -> None:
    """What /metrics shows for several workers: each one's export absorbed into one."""
    first, second = ProxyMetrics(), ProxyMetrics()
    for metrics, duration in ((first, 0.2), (second, 3.0), (second, 0.05)):
        metrics.request_started()
        metrics.request_finished(provider="anthropic", model="claude-x", tool="claude-code",
                                 status=200, lifecycle="completed", streamed=True,
                                 duration_s=duration, upstream_s=duration / 2, ttfb_s=0.01,
                                 usage_tokens={"prompt": 10, "completion": 5}, cost_usd=0.5)
    second.request_started()  # one still in flight over there
    merged = first.merged([json.loads(json.dumps(second.registry.export()))])
    labels = ("anthropic", "claude-x", "claude-code", "200", "completed")
    assert merged.requests.value(labels) == 3
    assert merged.tokens.value(("anthropic", "claude-x", "claude-code", "prompt")) == 30
    assert merged.cost.value(("anthropic", "claude-x", "claude-code")) == 1.5
    assert merged.in_flight.value() == 1  # summed
    assert merged.up.value() == 1  # a fact, not a count: not 2
    legacy = ("anthropic", "200", "completed", "true")
    assert merged.legacy_duration_max.value(legacy) == 3000  # the largest, not the sum
    counts, total = merged.duration.snapshot(("anthropic", "true"))
    assert counts[-1] == 3 and total == pytest.approx(3.25)
    # The originals are untouched.
    assert first.requests.value(labels) == 1 and second.requests.value(labels) == 2


def test_merging_full_families_folds_nothing_more() -> None:
    first, second = ProxyMetrics(max_series=2), ProxyMetrics(max_series=2)
    for metrics, models in ((first, "abc"), (second, "xyz")):
        for model in models:
            metrics.request_started()
            metrics.request_finished(provider="openai", model=model, tool="t", status=200,
                                     lifecycle="completed", streamed=False, duration_s=0.1)
    merged = first.merged([second.registry.export()])
    assert merged.requests.folded() == first.requests.folded() + second.requests.folded()
    counted = {labels[1]: value for labels, value in
               ((k, v[0]) for k, v in merged.requests._series.items())}
    assert counted == {"a": 1, "b": 1, "x": 1, "y": 1, "other": 2}
    again = first.merged([second.registry.export()])  # the same, scrape after scrape
    assert {k: v[0] for k, v in again.requests._series.items()} == {
        k: v[0] for k, v in merged.requests._series.items()}


_CALL = st.fixed_dictionaries({
    "provider": st.sampled_from(["openai", "anthropic", " ", ""]),
    "model": st.one_of(st.none(), st.sampled_from(["gpt-5", "claude", "m\n\"x", "é"])),
    "tool": st.one_of(st.none(), st.sampled_from(["codex", "claude-code", ""])),
    "status": st.sampled_from([200, 429, 502]),
    "lifecycle": st.sampled_from(["completed", "error", "aborted"]),
    "streamed": st.booleans(),
    "duration_s": st.one_of(st.floats(allow_nan=True), st.sampled_from([0.0, 0.2, 3.0])),
    "upstream_s": st.one_of(st.none(), st.floats(min_value=-1, max_value=10)),
    "ttfb_s": st.one_of(st.none(), st.floats(min_value=-1, max_value=10)),
    "usage_tokens": st.one_of(st.none(), st.dictionaries(
        st.sampled_from(["prompt", "completion_tokens", "reasoning", "total_tokens", "x"]),
        st.integers(min_value=-5, max_value=10**6), max_size=4)),
    "cost_usd": st.one_of(st.floats(allow_nan=True), st.just(0.25)),
})


@given(calls=st.lists(_CALL, max_size=40), max_series=st.integers(min_value=1, max_value=4))
def test_remembered_series_count_what_the_folding_path_counts(
        calls: list[dict[str, Any]], max_series: int) -> None:
    # request_finished keeps each kind of call's series at hand; what it counts (folds
    # into "other" included) must be what the families' own methods count, label set
    # by label set.
    fast, slow = ProxyMetrics(max_series=max_series), ProxyMetrics(max_series=max_series)
    for call in calls:
        fast.request_started()
        fast.request_finished(**call)
        slow.in_flight.inc()
        _label_by_label(slow, **call)
    assert fast.registry.render() == slow.registry.render()
    assert [m.folded() for m in fast.registry.metrics()] == [
        m.folded() for m in slow.registry.metrics()]


def _label_by_label(m: ProxyMetrics, *, provider: str, model: str | None, tool: str | None,
                    status: int, lifecycle: str, streamed: bool, duration_s: float,
                    upstream_s: float | None, ttfb_s: float | None,
                    usage_tokens: dict[str, int] | None, cost_usd: float) -> None:
    """What request_finished counts, through each family's folding methods."""
    m.in_flight.dec()
    label, positive = proxy_metrics._label, proxy_metrics._positive
    who = (label(provider), label(model), label(tool))
    state, streamed_text = label(lifecycle), "true" if streamed else "false"
    m.requests.inc((*who, str(status), state))
    for key, count in (usage_tokens or {}).items():
        kind = key.removesuffix("_tokens")
        if kind in proxy_metrics.TOKEN_TYPES and isinstance(count, int) and count > 0:
            m.tokens.inc((*who, kind), count)
    m.cost.inc(who, positive(cost_usd))
    duration = positive(duration_s)
    m.duration.observe(duration, (who[0], streamed_text))
    m.overhead.observe(max(0.0, duration - positive(upstream_s)))
    if ttfb_s is not None:
        m.ttfb.observe(positive(ttfb_s), (who[0],))
    legacy = (who[0], str(status), state, streamed_text)
    m.legacy_duration.observe(positive(duration * 1000), legacy)
    m.legacy_duration_max.set_max(positive(duration * 1000), legacy)


def test_handles_update_their_series_and_fold_as_the_methods_do() -> None:
    c = Counter("c_total", "help", ("a",), max_series=1)
    h = Histogram("h", "help", ("a",), buckets=(1, 2), max_series=1)
    counter, histogram = c.handle(("x",)), h.handle(("x",))
    counter.add(2)
    histogram.observe(1.5)
    assert c.value(("x",)) == 2 and h.snapshot(("x",)) == ([0, 1, 1], 1.5)
    assert c.folded() == 0 and h.folded() == 0
    # Full: a new label set's updates fold into "other", each one counted.
    folded_counter, folded_histogram = c.handle(("y",)), h.handle(("y",))
    for _ in range(2):
        folded_counter.add(1)
        folded_histogram.observe(0.5)
    assert c.value((OTHER,)) == 2 and h.snapshot((OTHER,)) == ([2, 2, 2], 1.0)
    assert c.folded() == 2 and h.folded() == 2 and c.value(("y",)) == 0
