"""Account attribution through the real proxy: real OpenAI and Anthropic SDK clients call
the proxy (waitress, loopback), which forwards to a fake CLIProxyAPI; the proxy's own
attribution service does the rest.

* exact attribution by ``X-CPA-TRACE-ID`` for several accounts;
* fallback correlation without it, over v6 ``/usage`` and the v7 usage queue;
* the per-account admin endpoints add up exactly to the per-request rows;
* a management API that is down, disabled (404) or rejects the key: calls are still
  served and recorded, CLIProxyAPI is asked a bounded number of times, a warning is
  logged and ``/ready`` says why.

One hand-moved clock is shared by the proxy and the fake, so recorded times, CPA's usage
timestamps, the management client's backoff and ``/ready``'s cache all follow the test;
the correlator loop is ticked by hand, as the supervisor would every 15 s.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import anthropic
import openai
import pytest

from agent_cli_proxy.config import Settings
from agent_cli_proxy.storage.accounts import account_usage_mismatches
from agent_cli_proxy.storage.daily_usage import daily_usage_mismatches
from agent_cli_proxy.workers.accounts import AccountAttribution
from tests import wire
from tests.conftest import (
    RunningProxy,
    event_fields,
    event_name,
    logged_events,
    start_proxy,
    wait_until,
)
from tests.fake_cliproxy import DEFAULT_KEY, FakeCliProxy
from tests.fake_upstream import Script
from tests.hand_clock import HandClock
from tests.web.test_admin import get

NOON = float(calendar.timegm((2026, 8, 20, 12, 0, 0)))
BEFORE_MIDNIGHT = float(calendar.timegm((2026, 8, 20, 23, 58, 0)))
TICK_S = 15.0  # CLIPROXY_CORRELATION_INTERVAL_MS
ACCOUNTS = (("alice@example.com", "claude"), ("bob@example.com", "claude"),
            ("carol@example.com", "codex"), ("dave@example.com", "codex"))
USER = [{"role": "user", "content": "hi"}]


@dataclass
class Stack:
    """A fake CPA, the proxy in front of it, the clock they share, and one client of each
    SDK (kept, with its keep-alive connection, as a coding tool keeps it)."""

    cpa: FakeCliProxy
    proxy: RunningProxy
    clock: HandClock

    def __post_init__(self) -> None:
        self.anthropic = anthropic.Anthropic(base_url=self.proxy.url, api_key="sk-ant-client",
                                             max_retries=0, timeout=30)
        self.openai = openai.OpenAI(base_url=self.proxy.url + "/v1", api_key="sk-client-key",
                                    max_retries=0, timeout=30)

    def close(self) -> None:
        self.anthropic.close()
        self.openai.close()
        self.proxy.stop()
        self.cpa.close()

    @property
    def accounts(self) -> AccountAttribution:
        service = self.proxy.app.services.accounts
        assert service is not None, "CLIPROXY_MGMT_KEY is set: attribution must be wired"
        return cast(AccountAttribution, service)

    def tick(self) -> None:
        """One run of the correlator loop, an interval after the last."""
        self.clock.advance(TICK_S)
        self.accounts.run_once()

    def claude(self, *, stream: bool = False, model: str = "claude-sonnet-4-6") -> None:
        if stream:
            with self.anthropic.messages.stream(model=model, max_tokens=64,
                                                messages=USER) as events:
                assert events.get_final_text() == "Hello"
        else:
            self.anthropic.messages.create(model=model, max_tokens=64, messages=USER)

    def chat(self, *, stream: bool = False) -> None:
        if stream:
            chunks = list(self.openai.chat.completions.create(model="gpt-5", messages=USER,
                                                              stream=True))
            assert chunks
        else:
            self.openai.chat.completions.create(model="gpt-5", messages=USER)

    def responses(self) -> None:
        events = list(self.openai.responses.create(model="gpt-5-codex", input="hi",
                                                   stream=True))
        assert events[-1].type == "response.completed"

    def served_by(self) -> list[tuple[str | None, str | None]]:
        """(e-mail, auth_index) of the account CPA picked for each call, in order."""
        with self.cpa.lock:
            events = list(self.cpa.events)
        return [(e.account.email, e.account.auth_index) if e.account else (None, None)
                for e in events]

    def attributed(self) -> list[tuple[str | None, str | None]]:
        return [(r["cliproxy_account"], r["cliproxy_auth_index"]) for r in self.proxy.rows()]

    def ready(self) -> tuple[int, dict[str, Any]]:
        self.clock.advance(5)  # past /ready's 3 s cache
        status, body = get(self.proxy.url, "/ready")
        return status, body


@pytest.fixture
def stack(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def build(preset: str, *, key: str = DEFAULT_KEY, start: float = NOON,
              **overrides: Any) -> Stack:
        clock = HandClock(start)
        cpa = FakeCliProxy.like(preset, clock=clock.time)
        for email, provider in ACCOUNTS:
            cpa.add_account(email, provider, access_token=f"tok-{email}")
        # No auth dir: a test must never read (or call vendors for) this machine's own.
        settings = make_settings(cli_proxy_api_url=cpa.url, cliproxy_mgmt_key=key,
                                 cliproxy_auth_dir="", **overrides)
        made.append(Stack(cpa, start_proxy(settings, clock=clock), clock))
        return made[-1]

    yield build
    for built in made:
        built.close()


def assert_consistent(proxy: RunningProxy) -> None:
    assert account_usage_mismatches(proxy.db) == []
    assert daily_usage_mismatches(proxy.db) == []


# -- exact: the trace header -----------------------------------------------------------------


def test_trace_header_attributes_each_call_to_its_account(stack: Callable[..., Stack]
                                                          ) -> None:
    s = stack("v7")
    s.tick()  # the loop's first run loads the account map
    for _ in range(2):
        s.claude()
        s.claude(stream=True)
        s.chat(stream=True)
        s.responses()
    rows = s.proxy.final_rows(8)
    assert all(r["lifecycle_status"] == "completed" for r in rows)
    expected = s.served_by()
    assert {email for email, _ in expected} == {email for email, _ in ACCOUNTS}
    # Attributed on the request thread right after each row is finalized.
    wait_until(lambda: s.attributed() == expected, what="every call attributed")
    assert rows[0]["total_tokens"] == wire.CLAUDE_BUCKETS.total_tokens
    assert_consistent(s.proxy)
    for _ in range(4):
        s.tick()
    # A CPA that sends trace headers is never asked for usage records.
    assert s.cpa.management_requests("/usage") == []
    assert s.cpa.management_requests("/usage-queue") == []
    assert len(s.cpa.management_requests("/auth-files")) == 1
    status, body = s.ready()
    check = body["checks"]["accounts"]
    assert status == 200
    assert (check["status"], check["state"], check["mode"], check["accounts"]) == \
        ("pass", "ok", "trace", 4)


def test_an_account_added_after_the_map_is_resolved_by_the_loop(
        stack: Callable[..., Stack]) -> None:
    s = stack("v7")
    s.tick()
    erin = s.cpa.add_account("erin@example.com", "claude", access_token="tok-erin")
    s.cpa.pinned = erin.auth_index
    s.claude()
    s.proxy.final_rows(1)
    wait_until(lambda: s.attributed() == [(None, erin.auth_index)], what="the auth_index")
    s.tick()  # the unknown index refreshes the map once
    assert s.attributed() == [("erin@example.com", erin.auth_index)]
    assert len(s.cpa.management_requests("/auth-files")) == 2
    assert_consistent(s.proxy)


# -- fallback: CPA's usage records -----------------------------------------------------------


@pytest.mark.parametrize(("preset", "mode"), [("v6", "usage"), ("v7-untraced", "usage-queue")])
def test_fallback_correlation_without_the_trace_header(stack: Callable[..., Stack],
                                                       preset: str, mode: str) -> None:
    s = stack(preset)
    s.tick()
    s.claude()
    s.clock.advance(40)  # further apart than CPA's timestamps may be from ours
    s.chat(stream=True)  # the client asks no usage; CPA and the proxy count it anyway
    s.clock.advance(40)
    s.responses()
    s.clock.advance(40)
    s.cpa.script(Script(429, pieces=[b'{"type":"error","error":{"type":"rate_limit_error",'
                                     b'"message":"slow down"}}'], framing="length"))
    with pytest.raises(anthropic.RateLimitError):
        s.claude()
    s.clock.advance(40)
    s.claude(stream=True)
    rows = s.proxy.final_rows(5)
    assert rows[3]["status"] == 429
    assert s.attributed() == [(None, None)] * 5  # no trace header from this CPA
    s.tick()
    assert s.attributed() == s.served_by()
    assert {email for email, _ in s.served_by()} == {email for email, _ in ACCOUNTS}
    status = s.accounts.status()
    assert (status["mode"], status["attributed"]) == (mode, {"trace": 0, "correlated": 5})
    if mode == "usage":
        assert len(s.cpa.management_requests("/usage")) == 1
        assert s.cpa.management_requests("/usage-queue") == []
    else:
        assert len(s.cpa.management_requests("/usage")) == 1  # the 404 that is remembered
        assert s.cpa.queue == type(s.cpa.queue)()  # popped
    assert_consistent(s.proxy)
    for _ in range(3):
        s.tick()  # nothing left to attribute: CPA is not asked again
    assert len(s.cpa.management_requests("/usage")) == 1
    _, body = s.ready()
    check = body["checks"]["accounts"]
    assert (check["status"], check["state"], check["mode"]) == ("pass", "ok", mode)


def test_correlation_prices_the_model_cpa_used(stack: Callable[..., Stack]) -> None:
    s = stack("v6")
    s.tick()
    s.cpa.response_aliases = {wire.CLAUDE_MODEL: "team-sonnet"}  # CPA force-mapping
    s.claude(model="team-sonnet")
    (row,) = s.proxy.final_rows(1)
    assert (row["model"], row["cost_status"], row["cost_usd"]) == ("team-sonnet", "pending", 0)
    s.tick()
    (row,) = s.proxy.rows()
    assert row["cliproxy_account"] == "alice@example.com"
    assert (row["actual_model"], row["cost_model"], row["cost_status"]) == \
        (wire.CLAUDE_MODEL, wire.CLAUDE_MODEL, "ok")
    assert row["cost_usd"] > 0
    assert_consistent(s.proxy)


# -- the per-account usage endpoints add up to the rows --------------------------------------


def row_totals(proxy: RunningProxy) -> dict[str, tuple[int, int, float]]:
    """Per account from the per-request rows: (requests, tokens, cost)."""
    rows = proxy.db.reader().execute(
        "SELECT cliproxy_account, COUNT(*), SUM(total_tokens), SUM(cost_usd) "
        "FROM request_logs WHERE cliproxy_account IS NOT NULL "
        "GROUP BY cliproxy_account").fetchall()
    return {str(r[0]): (int(r[1]), int(r[2]), float(r[3])) for r in rows}


def summed(items: list[dict[str, Any]], count: str = "request_count"
           ) -> dict[str, tuple[int, int, float]]:
    totals: dict[str, tuple[int, int, float]] = {}
    for item in items:
        n, tokens, cost = totals.get(item["cliproxy_account"], (0, 0, 0.0))
        totals[item["cliproxy_account"]] = (n + item[count], tokens + item["total_tokens"],
                                            cost + item["cost_usd"])
    return totals


def same(got: dict[str, tuple[int, int, float]],
         want: dict[str, tuple[int, int, float]]) -> bool:
    # Counts exactly. Costs are sums of floats taken in another order (per day and model
    # first), so they may differ in the last bit; a real drift is many orders larger.
    return got.keys() == want.keys() and all(
        got[k][:2] == want[k][:2] and got[k][2] == pytest.approx(want[k][2], rel=1e-12)
        for k in want)


@pytest.mark.parametrize("preset", ["v7", "v6"])
def test_account_endpoints_add_up_to_the_rows(stack: Callable[..., Stack],
                                              preset: str) -> None:
    s = stack(preset, start=BEFORE_MIDNIGHT)  # the calls span two UTC days
    s.tick()
    for i in range(8):
        s.clock.advance(35)
        if i == 5:
            s.cpa.script(Script(500, pieces=[b'{"error":{"message":"boom"}}'],
                                framing="length"))
            with pytest.raises(openai.InternalServerError):
                s.chat()
        elif i == 6:
            s.cpa.response_aliases = {wire.CLAUDE_MODEL: "team-sonnet"}
            s.claude(model="team-sonnet")  # re-priced on the upstream model when correlated
            s.cpa.response_aliases = {}
        else:
            (s.claude, s.chat, s.responses)[i % 3]()
        s.proxy.final_rows(i + 1)
        s.accounts.run_once()  # the loop runs between calls too
    s.tick()
    # A traced row gets its account just after it is finalized, on the request thread.
    rows = wait_until(lambda: (r := s.proxy.rows()) and all(
        x["cliproxy_account"] is not None for x in r) and r, what="every call attributed")
    assert {r["started_at"][:10] for r in rows} == {"2026-08-20", "2026-08-21"}
    aliased = rows[6]
    assert aliased["model"] == "team-sonnet"
    if preset == "v6":  # correlation learnt the upstream model and priced the call on it
        assert (aliased["cost_model"], aliased["cost_status"]) == (wire.CLAUDE_MODEL, "ok")
    else:  # a trace header names the account, not the model: the alias has no price
        assert (aliased["cost_model"], aliased["cost_status"]) == (None, "pending")
    want = row_totals(s.proxy)
    assert sum(n for n, _, _ in want.values()) == 8

    days = [get(s.proxy.url, f"/admin/usage/accounts?day={d}")
            for d in ("2026-08-20", "2026-08-21")]
    assert [status for status, _ in days] == [200, 200]
    assert same(summed(days[0][1] + days[1][1]), want)
    _, today = get(s.proxy.url, "/admin/usage/accounts")  # today: the hand clock's day
    assert today == days[1][1]
    status, ranged = get(s.proxy.url, "/admin/usage/accounts/range?from=2026-08-20"
                                      "&to=2026-08-21")
    assert status == 200 and same(summed(ranged), want)
    for query in ("", "?from=2026-08-20&to=2026-08-21"):
        status, summary = get(s.proxy.url, "/admin/usage/accounts/summary" + query)
        assert status == 200 and same(summed(summary), want)
    # Each token bucket too, per account and day, against the rows themselves.
    buckets = ("prompt_tokens", "completion_tokens", "cache_creation_tokens",
               "cache_read_tokens", "reasoning_tokens", "total_tokens")
    for _, items in days:
        for item in items:
            row = s.proxy.db.reader().execute(
                "SELECT COUNT(*), " + ", ".join(f"SUM({b})" for b in buckets)
                + " FROM request_logs WHERE cliproxy_account = ? AND provider = ? AND "
                "model = ? AND substr(started_at, 1, 10) = ?",
                (item["cliproxy_account"], item["provider"], item["model"],
                 item["day"])).fetchone()
            assert (item["request_count"], *(item[b] for b in buckets)) == tuple(row)
    assert_consistent(s.proxy)


# -- a management API that does not work ----------------------------------------------------


@pytest.mark.parametrize(("problem", "state", "most"), [
    ("down", "unreachable", 7), ("disabled", "disabled", 2), ("bad key", "unauthorized", 3)])
def test_broken_management_api_keeps_the_proxy_serving(stack: Callable[..., Stack],
                                                        problem: str, state: str,
                                                        most: int) -> None:
    s = stack("v6", key="wrong-key" if problem == "bad key" else DEFAULT_KEY,
              cliproxy_correlation_lookback_ms=3_600_000)
    s.cpa.management_down = problem == "down"
    s.cpa.management_enabled = problem != "disabled"
    with logged_events("accounts", lambda r: (r.levelname, event_name(r),
                                              event_fields(r))) as events:
        s.tick()
        for _ in range(10):  # ten minutes of traffic, the loop and admins refreshing
            s.claude()
            s.chat(stream=True)
            status, _ = get(s.proxy.url, "/admin/quotas?refresh=true")
            assert status == 200
            for _ in range(4):
                s.tick()
    rows = s.proxy.final_rows(20)
    assert all(r["lifecycle_status"] == "completed" for r in rows)
    assert all(r["cliproxy_account"] is None for r in rows)
    # No spin: the shared client's backoff bounds what CPA is asked, whoever asks.
    assert len(s.cpa.management_requests()) <= most
    assert s.cpa.ban_counter() < 5
    warnings = [f for level, name, f in events
                if level == "WARNING" and name == "accounts.management_unavailable"]
    assert warnings and warnings[0]["state"] == state
    assert "wrong-key" not in json.dumps(events, default=str)

    status, body = s.ready()
    assert status == 200  # served and recorded: not a reason to leave the rotation
    assert body["status"] == "warn"
    check = body["checks"]["accounts"]
    assert (check["status"], check["state"]) == ("warn", state)
    assert "calls are not attributed" in check["output"]
    assert check["lastError"]
    _, quotas = get(s.proxy.url, "/admin/quotas")
    assert quotas["status"]["warnings"]  # the quota side says so too

    if problem == "down":
        # CPA's management API comes back: the calls made meanwhile are attributed.
        s.cpa.management_down = False
        for _ in range(21):  # the longest unreachable backoff is 5 minutes
            s.tick()
        assert s.attributed() == s.served_by()
        _, body = s.ready()
        assert (body["checks"]["accounts"]["status"],
                body["checks"]["accounts"]["state"]) == ("pass", "ok")
        assert_consistent(s.proxy)
