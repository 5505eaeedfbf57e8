"""Account attribution against a fake CLIProxyAPI on loopback and a real SQLite file.

Calls go through the real recorder and the real upstream client to the fake's data plane
(a small stand-in for ``web.proxy``: send, hand the headers to the recorder, read the
body through the usage capture, finalize); the attribution loop is ticked by hand while
a hand-moved clock stands in for time.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_cli_proxy.config import Settings, settings_for_tests
from agent_cli_proxy.providers.routes import classify
from agent_cli_proxy.proxy_metrics import ProxyMetrics
from agent_cli_proxy.storage.accounts import account_usage_mismatches, add_account_cost_delta
from agent_cli_proxy.storage.costs import cost_audit_for
from agent_cli_proxy.storage.daily_usage import daily_usage_mismatches
from agent_cli_proxy.storage.database import Database, open_database
from agent_cli_proxy.storage.requests import get_request
from agent_cli_proxy.upstream.capture import UsageCapture
from agent_cli_proxy.upstream.client import Timeouts, UpstreamClient
from agent_cli_proxy.upstream.management import ManagementClient
from agent_cli_proxy.upstream.relay import RelayResult
from agent_cli_proxy.usage.cost import compute_cost
from agent_cli_proxy.usage.identify import Identity
from agent_cli_proxy.usage.pricing import PriceTable
from agent_cli_proxy.web.recorder import CallRecorder
from agent_cli_proxy.workers import accounts as accounts_worker
from agent_cli_proxy.workers.accounts import LOOP_NAME, AccountAttribution
from agent_cli_proxy.workers.backfill import CostBackfill
from agent_cli_proxy.workers.supervisor import Supervisor
from tests import wire
from tests.conftest import RunningProxy, event_fields, event_name, logged_events
from tests.fake_cliproxy import DEFAULT_KEY, FakeCliProxy
from tests.fake_upstream import Script
from tests.hand_clock import HandClock
from tests.web.test_admin import get

NOW_S = float(calendar.timegm((2026, 8, 20, 12, 0, 0)))
TICK_S = 15.0
CLIENT_KEY = "sk-client-secret-do-not-store"
_RATES = {"claude-sonnet-4-5-20250929": ("anthropic", {"input": 3, "output": 15,
                                                       "cache_read": 0.3, "cache_write": 3.75}),
          "gpt-5-2025-08-07": ("openai", {"input": 1.25, "output": 10, "cache_read": 0.125}),
          "gpt-5-codex": ("openai", {"input": 1.25, "output": 10, "cache_read": 0.125})}
TABLE = PriceTable.from_models_dev(
    {vendor: {"id": vendor, "models": {m: {"id": m, "cost": cost}
                                       for m, (v, cost) in _RATES.items() if v == vendor}}
     for vendor in ("anthropic", "openai")}, fetched_at=NOW_S - 60, source="test")
MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}


@dataclasses.dataclass
class Env:
    cpa: FakeCliProxy
    db: Database
    clock: HandClock
    pool: UpstreamClient
    management: ManagementClient
    attribution: AccountAttribution
    settings: Settings

    def call(self, path: str, body: dict[str, Any]) -> int:
        """One LLM call through the recorder, as the proxy makes it; returns the row id."""
        row_id, finish = self.start_call(path, body)
        finish()
        return row_id

    def start_call(self, path: str, body: dict[str, Any]) -> tuple[int, Callable[[], None]]:
        """Send a call and read its answer, leaving its row pending until ``finish()``."""
        raw = json.dumps(body).encode()
        call = classify("POST", path, raw)
        assert call is not None
        recorder = CallRecorder(self.db, self.clock, lambda: TABLE, ProxyMetrics(), call, path,
                                accounts=self.attribution)
        recorder.start(Identity("claude-code", None, "claude-code", None, None, "test"),
                       method="POST", user_agent="test", source_ip=None, msg_id=None,
                       originator=None)
        recorder.sending()
        response = self.pool.send("POST", self.cpa.url + path,
                                  [("Content-Type", "application/json"),
                                   ("Authorization", f"Bearer {CLIENT_KEY}")],
                                  raw, Timeouts(connect=5, read=5))
        recorder.headers_received(response.status, response.headers)
        capture = UsageCapture(call.family, content_type=response.headers.get("Content-Type"),
                               content_encoding=response.headers.get("Content-Encoding"))
        data = response.read()
        response.release_conn()
        capture.feed(data)
        capture.finish()
        assert recorder.row_id is not None

        def finish() -> None:
            recorder.relayed(RelayResult("completed", len(data)), capture, response.status)
        return recorder.row_id, finish

    def row(self, row_id: int) -> dict[str, Any]:
        row = get_request(self.db, row_id)
        assert row is not None
        return row

    def tick(self) -> None:
        self.clock.advance(TICK_S)
        self.attribution.run_once()

    def restart(self) -> AccountAttribution:
        """A new process: new client state, new attribution, the same database."""
        self.management = ManagementClient(self.pool, self.cpa.url, DEFAULT_KEY,
                                           clock=self.clock)
        self.attribution = AccountAttribution(self.db, self.settings, self.management,
                                              lambda: TABLE, clock=self.clock)
        return self.attribution


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Any]:
    made: list[Env] = []

    def build(preset: str, *, key: str = DEFAULT_KEY, **options: Any) -> Env:
        clock = HandClock(NOW_S)
        cpa = FakeCliProxy.like(preset, clock=clock.time, **options)
        cpa.add_account("alice@example.com", "claude")
        cpa.add_account("carol@example.com", "codex")
        db = open_database(tmp_path / f"proxy-{len(made)}.db")
        pool = UpstreamClient(maxsize=4)
        settings = settings_for_tests(cli_proxy_api_url=cpa.url, cliproxy_mgmt_key=key,
                                      db_path=str(tmp_path / f"proxy-{len(made)}.db"))
        management = ManagementClient(pool, cpa.url, key, clock=clock)
        env = Env(cpa, db, clock, pool, management,
                  AccountAttribution(db, settings, management, lambda: TABLE, clock=clock),
                  settings)
        made.append(env)
        return env

    yield build
    for env in made:
        env.pool.close()
        env.cpa.close()
        env.db.close()


def account_totals(db: Database) -> dict[str, tuple[int, int, float]]:
    """Per account: (requests, tokens, cost) from daily_account_usage."""
    rows = db.reader().execute(
        "SELECT cliproxy_account, SUM(request_count), SUM(total_tokens), SUM(cost_usd) "
        "FROM daily_account_usage GROUP BY 1").fetchall()
    return {r[0]: (r[1], r[2], round(r[3], 9)) for r in rows}


def row_totals(db: Database) -> dict[str, tuple[int, int, float]]:
    rows = db.reader().execute(
        "SELECT cliproxy_account, COUNT(*), SUM(total_tokens), SUM(cost_usd) FROM "
        "request_logs WHERE cliproxy_account IS NOT NULL GROUP BY 1").fetchall()
    return {r[0]: (r[1], r[2], round(r[3], 9)) for r in rows}


def assert_consistent(db: Database) -> None:
    assert account_usage_mismatches(db) == []
    assert daily_usage_mismatches(db) == []
    assert account_totals(db) == row_totals(db)


# -- exact: the trace header ----------------------------------------------------------------


def test_trace_header_attributes_the_row_when_it_is_finalized(make_env: Any) -> None:
    env = make_env("v7")
    env.attribution.run_once()  # loads the account map
    alice = env.cpa.accounts[0]
    first = env.call("/v1/messages", MESSAGES)
    second = env.call("/v1/chat/completions", CHAT)
    row = env.row(first)
    assert (row["cliproxy_account"], row["cliproxy_auth_index"], row["cliproxy_source"]) == \
        ("alice@example.com", alice.auth_index, "alice@example.com")
    assert row["correlated_at"] == "2026-08-20T12:00:00.000Z"
    assert env.row(second)["cliproxy_account"] == "carol@example.com"
    assert_consistent(env.db)
    assert account_totals(env.db)["alice@example.com"][:2] == (
        1, wire.CLAUDE_BUCKETS.total_tokens)
    env.tick()
    # A CPA that sends trace headers is never asked for usage records.
    assert env.cpa.management_requests("/usage") == []
    assert env.cpa.management_requests("/usage-queue") == []
    assert len(env.cpa.queue) == 2  # nothing popped from other consumers
    status = env.attribution.status()
    assert (status["state"], status["mode"], status["accounts"]) == ("ok", "trace", 2)
    assert status["attributed"] == {"trace": 2, "correlated": 0}


def test_a_map_miss_refreshes_auth_files_once(make_env: Any) -> None:
    env = make_env("v7")
    env.attribution.run_once()
    assert len(env.cpa.management_requests("/auth-files")) == 1
    dave = env.cpa.add_account("dave@example.com", "claude")  # logged in after the map
    env.cpa.pinned = dave.auth_index
    row_id = env.call("/v1/messages", MESSAGES)
    # On the request thread nothing is fetched: the row keeps the index for the loop.
    assert (env.row(row_id)["cliproxy_account"], env.row(row_id)["cliproxy_auth_index"]) == \
        (None, dave.auth_index)
    assert account_usage_mismatches(env.db) == []
    env.tick()
    assert len(env.cpa.management_requests("/auth-files")) == 2
    assert env.row(row_id)["cliproxy_account"] == "dave@example.com"
    for _ in range(3):
        env.tick()
    assert len(env.cpa.management_requests("/auth-files")) == 2  # fresh map, no misses

    # An index CPA no longer lists: one refresh for it, then it waits for the periodic one.
    ghost = env.cpa.add_account("ghost@example.com", "claude")
    env.cpa.pinned = ghost.auth_index
    lost = env.call("/v1/messages", MESSAGES)
    env.cpa.accounts.remove(ghost)
    for _ in range(4):
        env.tick()
    assert len(env.cpa.management_requests("/auth-files")) == 3
    assert env.row(lost)["cliproxy_account"] is None
    assert_consistent(env.db)


def test_rows_of_a_vanished_account_never_starve_the_others(
        make_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts_worker, "MAX_ROWS", 2)  # a batch smaller than the ghosts
    env = make_env("v7")
    env.attribution.run_once()
    ghost = env.cpa.add_account("ghost@example.com", "claude")
    env.cpa.pinned = ghost.auth_index
    lost = [env.call("/v1/messages", MESSAGES) for _ in range(3)]
    env.cpa.accounts.remove(ghost)
    dave = env.cpa.add_account("dave@example.com", "claude")
    env.cpa.pinned = dave.auth_index
    found = env.call("/v1/messages", MESSAGES)
    env.tick()
    assert env.row(found)["cliproxy_account"] == "dave@example.com"
    assert [env.row(r)["cliproxy_account"] for r in lost] == [None] * 3
    assert_consistent(env.db)


def test_a_malformed_trace_header_is_no_attribution(make_env: Any) -> None:
    env = make_env("v7")
    env.attribution.run_once()
    env.cpa.script(Script(pieces=wire.messages_json().pieces, framing="length",
                          headers=[("X-CPA-TRACE-ID", "not-a-trace")]))
    env.cpa.trace_header = False
    row_id = env.call("/v1/messages", MESSAGES)
    row = env.row(row_id)
    assert (row["cliproxy_account"], row["cliproxy_auth_index"]) == (None, None)
    assert row["lifecycle_status"] == "completed"


def test_a_later_price_keeps_account_totals_exact(make_env: Any) -> None:
    env = make_env("v7")
    env.attribution.run_once()
    env.cpa.response_aliases = {wire.CLAUDE_MODEL: "team-sonnet"}
    row_id = env.call("/v1/messages", {**MESSAGES, "model": "team-sonnet"})
    assert env.row(row_id)["cost_status"] == "pending"  # attributed, not priced yet
    # What the cost backfill does once the model has a price (storage.costs owns it).
    with env.db.write() as conn:
        conn.execute("UPDATE request_logs SET cost_usd = 0.25, cost_status = 'ok' "
                     "WHERE id = ?", (row_id,))
        conn.execute("UPDATE daily_usage SET cost_usd = cost_usd + 0.25")
        add_account_cost_delta(conn, row_id, 0.25)
    assert_consistent(env.db)
    assert account_totals(env.db)["alice@example.com"][2] == 0.25



def test_the_cost_backfill_keeps_account_totals_exact(make_env: Any) -> None:
    env = make_env("v6")
    prices = [PriceTable.from_models_dev({}, fetched_at=NOW_S - 60, source="test")]
    env.attribution = AccountAttribution(env.db, env.settings, env.management,
                                         lambda: prices[0], clock=env.clock)
    env.cpa.response_aliases = {wire.CLAUDE_MODEL: "team-sonnet"}  # CPA force-mapping
    aliased = env.call("/v1/messages", {**MESSAGES, "model": "team-sonnet"})
    env.clock.advance(40)
    plain = env.call("/v1/chat/completions", CHAT)  # priced when it ended
    env.tick()  # both attributed; the upstream model learnt, but it has no price yet
    row = env.row(aliased)
    assert (row["cliproxy_account"], row["cost_model"], row["cost_status"]) == \
        ("alice@example.com", wire.CLAUDE_MODEL, "pending")
    assert env.row(plain)["cliproxy_account"] == "carol@example.com"
    assert account_totals(env.db)["alice@example.com"][2] == 0

    prices[0] = TABLE  # prices arrive
    env.clock.advance(60)
    report = CostBackfill(env.db, env.settings, lambda: prices[0], clock=env.clock).run_once()
    assert (report.scanned, report.changed) == (1, 1)
    # Priced as the model CPA used, not the alias the client asked for (which has none).
    claude = compute_cost(TABLE, wire.CLAUDE_MODEL, "anthropic", wire.CLAUDE_BUCKETS)
    chat = compute_cost(TABLE, wire.CHAT_MODEL, "openai", wire.CHAT_BUCKETS)
    assert (env.row(aliased)["cost_status"], env.row(aliased)["cost_usd"]) == \
        ("ok", claude.cost_usd)
    totals = account_totals(env.db)
    assert totals["alice@example.com"][2] == round(claude.cost_usd, 9)
    assert totals["carol@example.com"][2] == round(chat.cost_usd, 9)
    assert_consistent(env.db)


# -- fallback: usage records --------------------------------------------------------------


def test_v6_usage_correlates_calls_of_any_status(make_env: Any) -> None:
    env = make_env("v6")
    ok = env.call("/v1/messages", MESSAGES)
    env.clock.advance(40)
    chat = env.call("/v1/chat/completions", CHAT)
    env.clock.advance(40)
    env.cpa.script(Script(429, pieces=[b'{"error":{"type":"rate_limit_error"}}'],
                          framing="length"))
    refused = env.call("/v1/messages", MESSAGES)
    assert env.row(refused)["status"] == 429
    assert env.row(ok)["cliproxy_auth_index"] is None  # no trace header from this CPA
    env.tick()
    assert [env.row(r)["cliproxy_account"] for r in (ok, chat, refused)] == \
        ["alice@example.com", "carol@example.com", "alice@example.com"]
    assert env.row(chat)["cliproxy_auth_index"] == env.cpa.accounts[1].auth_index
    assert env.row(ok)["actual_model"] == wire.CLAUDE_MODEL
    assert len(env.cpa.management_requests("/usage")) == 1
    status = env.attribution.status()
    assert (status["mode"], status["attributed"]["correlated"]) == ("usage", 3)
    assert_consistent(env.db)
    # The client API key CPA keys /usage by is nowhere in the database.
    with sqlite3.connect(env.db.path) as conn:
        dump = "\n".join(conn.iterdump())
    assert CLIENT_KEY not in dump
    env.tick()
    assert len(env.cpa.management_requests("/usage")) == 1  # nothing left to attribute


def test_v7_usage_queue_is_popped_when_usage_is_gone(make_env: Any) -> None:
    env = make_env("v7-untraced")
    first = env.call("/v1/messages", MESSAGES)
    with logged_events("accounts", lambda r: (event_name(r), event_fields(r))) as events:
        env.tick()
    assert env.row(first)["cliproxy_account"] == "alice@example.com"
    assert [n for n, _ in events].count("accounts.usage_queue_in_use") == 1
    assert len(env.cpa.management_requests("/usage")) == 1  # 404 once, then remembered
    assert len(env.cpa.queue) == 0
    env.clock.advance(20)
    second = env.call("/v1/responses", {"model": "gpt-5-codex", "input": "hi"})
    env.tick()
    assert env.row(second)["cliproxy_account"] == "carol@example.com"
    assert len(env.cpa.management_requests("/usage")) == 1
    assert env.attribution.status()["mode"] == "usage-queue"
    assert_consistent(env.db)


def test_a_popped_record_waits_in_memory_for_its_row(make_env: Any) -> None:
    env = make_env("v7-untraced")
    first = env.call("/v1/messages", MESSAGES)
    env.clock.advance(3)
    late, finish = env.start_call("/v1/chat/completions", CHAT)  # still streaming
    env.tick()  # pops both records; only the first row is final
    assert env.row(first)["cliproxy_account"] == "alice@example.com"
    assert env.row(late)["lifecycle_status"] == "pending"
    assert len(env.cpa.queue) == 0
    finish()
    env.tick()
    assert env.row(late)["cliproxy_account"] == "carol@example.com"
    assert_consistent(env.db)


def test_each_detail_is_matched_at_most_once_ever(make_env: Any) -> None:
    env = make_env("v6")
    first = env.call("/v1/messages", MESSAGES)
    env.tick()
    assert env.row(first)["cliproxy_account"] == "alice@example.com"
    # A second, identical call whose usage CPA never recorded (or recorded elsewhere):
    # the only detail that fits it is the first call's, already used.
    env.clock.advance(5)
    events = len(env.cpa.events)
    second = env.call("/v1/messages", MESSAGES)
    del env.cpa.events[events:]
    for _ in range(3):
        env.tick()
    assert env.row(second)["cliproxy_account"] is None
    env.restart()  # and not after a restart either
    env.tick()
    assert env.row(second)["cliproxy_account"] is None
    assert len(env.cpa.management_requests("/usage")) == 5
    assert_consistent(env.db)


def test_cost_is_recomputed_when_cpa_names_the_upstream_model(make_env: Any) -> None:
    env = make_env("v6")
    env.cpa.response_aliases = {wire.CLAUDE_MODEL: "team-sonnet"}  # CPA force-mapping
    row_id = env.call("/v1/messages", {**MESSAGES, "model": "team-sonnet"})
    before = env.row(row_id)
    assert (before["model"], before["cost_status"], before["cost_usd"]) == \
        ("team-sonnet", "pending", 0)
    env.tick()
    after = env.row(row_id)
    expected = compute_cost(TABLE, wire.CLAUDE_MODEL, "anthropic", wire.CLAUDE_BUCKETS)
    assert after["model"] == "team-sonnet"  # what the client was told stays
    assert after["actual_model"] == wire.CLAUDE_MODEL
    assert (after["cost_status"], after["cost_usd"]) == ("ok", expected.cost_usd)
    assert after["cost_usd"] > 0
    assert (after["cost_model"], after["cost_provider"]) == (wire.CLAUDE_MODEL, "anthropic")
    audit = cost_audit_for(env.db, row_id)[-1]
    assert audit["base_cost_usd"] == expected.cost_usd
    assert audit["detail"]["trigger"] == "cliproxy_correlation"
    assert_consistent(env.db)


def test_v7_alias_field_matches_the_requested_name(make_env: Any) -> None:
    env = make_env("v7-untraced")
    env.cpa.response_aliases = {wire.CLAUDE_MODEL: "team-sonnet"}
    row_id = env.call("/v1/messages", {**MESSAGES, "model": "team-sonnet"})
    env.tick()
    row = env.row(row_id)
    assert (row["cliproxy_account"], row["actual_model"], row["cost_status"]) == \
        ("alice@example.com", wire.CLAUDE_MODEL, "ok")
    assert_consistent(env.db)


def test_tokens_the_stream_did_not_report_come_from_cpa(make_env: Any) -> None:
    env = make_env("v6")
    row_id = env.call("/v1/chat/completions", {**CHAT, "stream": True})  # no include_usage
    assert env.row(row_id)["total_tokens"] == 0
    env.tick()
    row = env.row(row_id)
    assert (row["prompt_tokens"], row["cache_read_tokens"], row["completion_tokens"],
            row["reasoning_tokens"], row["total_tokens"]) == (200, 1000, 300, 120, 1500)
    expected = compute_cost(TABLE, wire.CHAT_MODEL, "openai", wire.CHAT_BUCKETS)
    assert (row["cost_status"], row["cost_usd"]) == ("ok", expected.cost_usd)
    assert_consistent(env.db)


def test_daily_account_usage_equals_the_rows_per_account(make_env: Any) -> None:
    env = make_env("v7")
    env.attribution.run_once()
    for i in range(6):
        env.clock.advance(7)
        env.call("/v1/messages" if i % 2 else "/v1/chat/completions",
                 MESSAGES if i % 2 else CHAT)
    env.cpa.trace_header = False
    env.cpa.version = "v7.1.0"
    env.attribution = env.restart()  # now an older CPA: correlation takes over
    env.attribution.run_once()
    for _ in range(3):
        env.clock.advance(9)
        env.call("/v1/messages", MESSAGES)
    env.tick()
    totals = account_totals(env.db)
    assert totals == row_totals(env.db)
    assert totals["alice@example.com"][0] == 6 and totals["carol@example.com"][0] == 3
    assert_consistent(env.db)


# -- a management API that does not work ------------------------------------------------------


@pytest.mark.parametrize(("problem", "state", "most"), [
    ("down", "unreachable", 7), ("disabled", "disabled", 1), ("bad key", "unauthorized", 3)])
def test_broken_management_api_never_spins(make_env: Any, problem: str, state: str,
                                           most: int) -> None:
    env = make_env("v6", key="wrong-key" if problem == "bad key" else DEFAULT_KEY)
    env.cpa.management_down = problem == "down"
    env.cpa.management_enabled = problem != "disabled"
    row_id = env.call("/v1/messages", MESSAGES)  # a row waiting for its account
    with logged_events("accounts", lambda r: (r.levelname, event_name(r),
                                              event_fields(r))) as events:
        for _ in range(40):  # ten minutes of ticks
            env.tick()
    assert len(env.cpa.management_requests()) <= most
    assert env.cpa.ban_counter() < 5
    assert env.row(row_id)["cliproxy_account"] is None
    warnings = [f for level, name, f in events
                if level == "WARNING" and name == "accounts.management_unavailable"]
    assert warnings and warnings[0]["state"] == state
    status = env.attribution.status()
    assert status["state"] == state and status["last_error"]
    assert "wrong-key" not in json.dumps(events, default=str)


def test_the_loop_registers_as_correlator(make_env: Any) -> None:
    env = make_env("v7")
    supervisor = Supervisor(clock=env.clock)
    env.attribution.register(supervisor)
    assert supervisor.status()[LOOP_NAME]["interval_s"] == 15.0


def test_ready_says_why_accounts_are_not_attributed(make_env: Any,
                                                    proxy: RunningProxy) -> None:
    env = make_env("v6", key="wrong-key")
    env.attribution.run_once()
    proxy.app.services = dataclasses.replace(proxy.app.services, accounts=env.attribution)
    status, body = get(proxy.url, "/ready")
    assert status == 200  # calls are still served and recorded
    check = body["checks"]["accounts"]
    assert check["status"] == "warn" and check["state"] == "unauthorized"
    assert "rejects CLIPROXY_MGMT_KEY" in check["output"]
    assert "invalid management key" in check["lastError"]
    assert body["status"] == "warn"
