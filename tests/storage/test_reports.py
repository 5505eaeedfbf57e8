"""Read-only admin reports: exact shapes, orderings, filters, legacy NULLs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agent_cli_proxy.storage import (
    Database,
    Finalization,
    PendingRow,
    account_usage_for_day,
    account_usage_range,
    accounts_summary,
    finalize,
    get_request,
    insert_pending,
    list_logs,
    normalize_log_row,
    providers_for_day,
    stats,
    usage_for_day,
    usage_range,
    usage_summary,
    usage_trend,
)
from agent_cli_proxy.storage.quotas import latest_snapshots
from agent_cli_proxy.usage.model import Usage

MakePending = Callable[..., PendingRow]

INJECTIONS = ("x' OR 1=1 --", "' OR '1'='1", "opencode; DROP TABLE request_logs; --",
              "%", "*", "\\", "opencode' --")


def add_row(db: Database, make_pending: MakePending, *, started_at: str,
            provider: str = "openai", model: str = "gpt-4o", tool: str = "opencode",
            client_id: str = "c1", lifecycle: str | None = "completed",
            status: int | None = None, prompt: int = 10, completion: int = 5,
            cache_read: int = 0, cache_creation: int = 0, cost: float = 0.5) -> int:
    """A request_logs row through the real write path; lifecycle None leaves it pending."""
    row_id = insert_pending(db, make_pending(started_at=started_at, provider=provider,
                                             model=model, tool=tool, client_id=client_id))
    if lifecycle is None:
        return row_id
    outcome = Finalization(
        lifecycle_status=lifecycle,
        status=status if status is not None else (200 if lifecycle == "completed" else 502),
        model=model, actual_model=model,
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion,
                    cache_read_tokens=cache_read, cache_creation_tokens=cache_creation),
        streamed=False, latency_ms=100, finished_at=started_at, cost_usd=cost,
        cost_status="ok" if cost > 0 else "pending")
    assert finalize(db, row_id, outcome)
    return row_id


def add_account_usage(db: Database, day: str, provider: str, model: str, account: str,
                      auth_index: str | None, requests: int, tokens: int,
                      cost: float | None, reasoning: int | None = 0) -> None:
    with db.write() as conn:
        conn.execute(
            "INSERT INTO daily_account_usage (day, provider, model, cliproxy_account,"
            " cliproxy_auth_index, request_count, prompt_tokens, completion_tokens,"
            " cache_creation_tokens, cache_read_tokens, reasoning_tokens, total_tokens,"
            " cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?, ?)",
            (day, provider, model, account, auth_index, requests, tokens, reasoning,
             tokens, cost))


def add_quota(db: Database, timestamp: str, provider: str, account: str, quota_type: str,
              used_pct: float | None) -> int:
    with db.write() as conn:
        cur = conn.execute(
            "INSERT INTO quota_snapshots (timestamp, provider, account, quota_type,"
            " used_pct, remaining, remaining_raw, resets_at, raw_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (timestamp, provider, account, quota_type, used_pct,
             None if used_pct is None else 100 - used_pct,
             None if used_pct is None else f"{100 - used_pct:.2f}%",
             "2026-11-22T00:00:00.000Z", "{}"))
        assert cur.lastrowid is not None
        return cur.lastrowid


def daily(day: str, provider: str, model: str, count: int, prompt: int, completion: int,
          cost: float, cache_creation: int = 0, cache_read: int = 0) -> dict[str, Any]:
    return {"day": day, "provider": provider, "model": model, "request_count": count,
            "prompt_tokens": prompt, "completion_tokens": completion,
            "cache_creation_tokens": cache_creation, "cache_read_tokens": cache_read,
            "total_tokens": prompt + completion + cache_creation + cache_read,
            "cost_usd": cost}


# -- empty database ----------------------------------------------------------------------

def test_empty_database(db: Database) -> None:
    assert usage_for_day(db, "2026-11-21") == []
    assert usage_range(db, "2026-01-01", "2026-12-31") == []
    assert providers_for_day(db, "2026-11-21") == []
    assert account_usage_for_day(db, "2026-11-21") == []
    assert account_usage_range(db, "2026-01-01", "2026-12-31") == []
    assert accounts_summary(db, "2026-01-01", "2026-12-31") == []
    assert usage_trend(db, since_iso="2000-01-01T00:00:00.000Z", provider=None, model=None,
                       tool=None) == []
    assert list_logs(db, limit=50, offset=0) == []
    assert stats(db) == {"total_requests": 0, "total_tokens": 0, "total_cost_usd": 0.0,
                         "first_request_at": None, "last_request_at": None}
    assert isinstance(stats(db)["total_cost_usd"], float)
    assert usage_summary([]) == {"requests": 0, "total_tokens": 0, "cost_usd": 0.0}


# -- daily_usage ------------------------------------------------------------------------

@pytest.fixture
def three_days(db: Database, make_pending: MakePending) -> Database:
    add_row(db, make_pending, started_at="2026-11-20T23:59:59.999Z", cost=0.25)
    add_row(db, make_pending, started_at="2026-11-21T00:00:00.000Z", provider="openai",
            model="gpt-4o", cost=0.5)
    add_row(db, make_pending, started_at="2026-11-21T10:00:00.000Z", provider="openai",
            model="gpt-4o", prompt=20, completion=1, cost=0.25, cache_read=4)
    add_row(db, make_pending, started_at="2026-11-21T11:00:00.000Z", provider="anthropic",
            model="claude-sonnet-4", lifecycle="error", prompt=0, completion=0, cost=0.0)
    add_row(db, make_pending, started_at="2026-11-21T12:00:00.000Z", provider="openai",
            model="gpt-4.1", cache_creation=7, cost=1.0)
    # Pending rows are not in daily_usage yet.
    add_row(db, make_pending, started_at="2026-11-21T13:00:00.000Z", lifecycle=None)
    add_row(db, make_pending, started_at="2026-11-23T08:00:00.000Z", provider="anthropic",
            model="claude-opus-4", cost=2.0)
    return db


def test_usage_for_day(three_days: Database) -> None:
    assert usage_for_day(three_days, "2026-11-21") == [
        daily("2026-11-21", "anthropic", "claude-sonnet-4", 1, 0, 0, 0.0),
        daily("2026-11-21", "openai", "gpt-4.1", 1, 10, 5, 1.0, cache_creation=7),
        daily("2026-11-21", "openai", "gpt-4o", 2, 30, 6, 0.75, cache_read=4),
    ]
    rows = usage_for_day(three_days, "2026-11-21")
    assert all(isinstance(r["cost_usd"], float) for r in rows)
    assert list(rows[0]) == ["day", "provider", "model", "request_count", "prompt_tokens",
                             "completion_tokens", "cache_creation_tokens",
                             "cache_read_tokens", "total_tokens", "cost_usd"]
    assert usage_for_day(three_days, "2026-11-22") == []


def test_usage_summary(three_days: Database) -> None:
    assert usage_summary(usage_for_day(three_days, "2026-11-21")) == {
        "requests": 4, "total_tokens": 0 + 22 + 40, "cost_usd": 1.75}


def test_usage_range_inclusive_newest_first(three_days: Database) -> None:
    days = usage_range(three_days, "2026-11-20", "2026-11-23")
    # 2026-11-22 has no rows and is left out, as the original does.
    assert [d["date"] for d in days] == ["2026-11-23", "2026-11-21", "2026-11-20"]
    assert list(days[0]) == ["date", "requests", "total_tokens", "cost_usd", "breakdown"]
    assert days[0] == {"date": "2026-11-23", "requests": 1, "total_tokens": 15,
                       "cost_usd": 2.0,
                       "breakdown": [daily("2026-11-23", "anthropic", "claude-opus-4", 1,
                                           10, 5, 2.0)]}
    assert days[1]["breakdown"] == usage_for_day(three_days, "2026-11-21")
    assert (days[1]["requests"], days[1]["total_tokens"], days[1]["cost_usd"]) == (
        4, 62, 1.75)
    # Both ends are included; a single-day range is that day.
    assert [d["date"] for d in usage_range(three_days, "2026-11-21", "2026-11-23")] == [
        "2026-11-23", "2026-11-21"]
    assert [d["date"] for d in usage_range(three_days, "2026-11-20", "2026-11-20")] == [
        "2026-11-20"]
    assert usage_range(three_days, "2026-11-22", "2026-11-22") == []
    assert usage_range(three_days, "2026-11-23", "2026-11-20") == []


def test_providers_for_day(three_days: Database) -> None:
    assert providers_for_day(three_days, "2026-11-21") == [
        {"provider": "anthropic", "request_count": 1, "total_tokens": 0, "cost_usd": 0.0},
        {"provider": "openai", "request_count": 3, "total_tokens": 62, "cost_usd": 1.75},
    ]
    assert isinstance(providers_for_day(three_days, "2026-11-21")[0]["cost_usd"], float)


# -- daily_account_usage -----------------------------------------------------------------

@pytest.fixture
def accounts(db: Database) -> Database:
    add_account_usage(db, "2026-11-20", "anthropic", "claude-sonnet-4", "b@x", "1", 3, 300,
                      0.3)
    add_account_usage(db, "2026-11-21", "openai", "gpt-5", "a@x", "7", 2, 200, 1.5,
                      reasoning=40)
    add_account_usage(db, "2026-11-21", "anthropic", "claude-sonnet-4", "b@x", "1", 1, 100,
                      0.1)
    add_account_usage(db, "2026-11-21", "anthropic", "claude-opus-4", "a@x", None, 1, 50,
                      2.0)
    add_account_usage(db, "2026-11-22", "anthropic", "claude-opus-4", "a@x", None, 4, 10,
                      0.5)
    return db


def account_row(day: str, provider: str, model: str, account: str, auth: str | None,
                requests: int, tokens: int, cost: float, reasoning: int = 0
                ) -> dict[str, Any]:
    return {"day": day, "provider": provider, "model": model, "cliproxy_account": account,
            "cliproxy_auth_index": auth, "request_count": requests, "prompt_tokens": tokens,
            "completion_tokens": 0, "cache_creation_tokens": 0, "cache_read_tokens": 0,
            "reasoning_tokens": reasoning, "total_tokens": tokens, "cost_usd": cost}


def test_account_usage_for_day(accounts: Database) -> None:
    assert account_usage_for_day(accounts, "2026-11-21") == [
        account_row("2026-11-21", "anthropic", "claude-opus-4", "a@x", None, 1, 50, 2.0),
        account_row("2026-11-21", "openai", "gpt-5", "a@x", "7", 2, 200, 1.5, reasoning=40),
        account_row("2026-11-21", "anthropic", "claude-sonnet-4", "b@x", "1", 1, 100, 0.1),
    ]


def test_account_usage_range(accounts: Database) -> None:
    rows = account_usage_range(accounts, "2026-11-20", "2026-11-21")
    assert [(r["day"], r["cliproxy_account"], r["provider"], r["model"]) for r in rows] == [
        ("2026-11-21", "a@x", "anthropic", "claude-opus-4"),
        ("2026-11-21", "a@x", "openai", "gpt-5"),
        ("2026-11-21", "b@x", "anthropic", "claude-sonnet-4"),
        ("2026-11-20", "b@x", "anthropic", "claude-sonnet-4"),
    ]
    assert rows[-1] == account_row("2026-11-20", "anthropic", "claude-sonnet-4", "b@x", "1",
                                   3, 300, 0.3)
    assert [r["day"] for r in account_usage_range(accounts, "2026-11-22", "2026-11-30")] == [
        "2026-11-22"]


def test_accounts_summary(accounts: Database) -> None:
    assert accounts_summary(accounts, "2026-11-20", "2026-11-22") == [
        {"cliproxy_account": "a@x", "cliproxy_auth_index": None, "provider": "anthropic",
         "request_count": 5, "total_tokens": 60, "cost_usd": 2.5},
        {"cliproxy_account": "a@x", "cliproxy_auth_index": "7", "provider": "openai",
         "request_count": 2, "total_tokens": 200, "cost_usd": 1.5},
        {"cliproxy_account": "b@x", "cliproxy_auth_index": "1", "provider": "anthropic",
         "request_count": 4, "total_tokens": 400, "cost_usd": pytest.approx(0.4)},
    ]
    # Range ends are inclusive.
    only_first = accounts_summary(accounts, "2026-11-20", "2026-11-20")
    assert [(r["cliproxy_account"], r["request_count"]) for r in only_first] == [("b@x", 3)]


# -- trend ---------------------------------------------------------------------------------

@pytest.fixture
def hours(db: Database, make_pending: MakePending) -> Database:
    add_row(db, make_pending, started_at="2026-11-21T16:59:59.999Z")  # before since
    add_row(db, make_pending, started_at="2026-11-21T17:00:00.000Z", cost=0.25)
    add_row(db, make_pending, started_at="2026-11-21T17:59:59.999Z", provider="anthropic",
            model="claude-sonnet-4", tool="claude-code", lifecycle="error", prompt=3,
            completion=0, cost=0.0)
    add_row(db, make_pending, started_at="2026-11-21T18:00:00.000Z", cache_read=2,
            cache_creation=4, cost=1.0)
    add_row(db, make_pending, started_at="2026-11-21T18:30:00.000Z", lifecycle="aborted",
            status=499)
    add_row(db, make_pending, started_at="2026-11-21T18:45:00.000Z", lifecycle=None)
    add_row(db, make_pending, started_at="2026-11-21T21:10:00.000Z", tool="claude-code",
            cost=0.125)
    return db


def trend(db: Database, since: str = "2026-11-21T17:00:00.000Z",
          **filters: str | None) -> list[dict[str, Any]]:
    values: dict[str, str | None] = {"provider": None, "model": None, "tool": None}
    values.update(filters)
    return usage_trend(db, since_iso=since, provider=values["provider"],
                       model=values["model"], tool=values["tool"])


def test_usage_trend_buckets(hours: Database) -> None:
    buckets = trend(hours)
    assert buckets == [
        {"hour": "2026-11-21T17:00:00.000Z", "requests": 2, "prompt_tokens": 13,
         "completion_tokens": 5, "cache_read_tokens": 0, "cache_creation_tokens": 0,
         "total_tokens": 18, "cost_usd": 0.25, "errors": 1},
        # The pending row at 18:45 is not counted; the aborted one is, not as an error.
        {"hour": "2026-11-21T18:00:00.000Z", "requests": 2, "prompt_tokens": 20,
         "completion_tokens": 10, "cache_read_tokens": 2, "cache_creation_tokens": 4,
         "total_tokens": 36, "cost_usd": 1.5, "errors": 0},
        # Empty hours (19:00, 20:00) are left out.
        {"hour": "2026-11-21T21:00:00.000Z", "requests": 1, "prompt_tokens": 10,
         "completion_tokens": 5, "cache_read_tokens": 0, "cache_creation_tokens": 0,
         "total_tokens": 15, "cost_usd": 0.125, "errors": 0},
    ]
    assert all(isinstance(b["cost_usd"], float) for b in buckets)
    # since_iso is inclusive and compared as text.
    assert [b["hour"] for b in trend(hours, since="2026-11-21T18:00:00.000Z")] == [
        "2026-11-21T18:00:00.000Z", "2026-11-21T21:00:00.000Z"]
    assert trend(hours, since="2026-11-21T21:10:00.001Z") == []
    assert trend(hours, since="2026-11-21T00:00:00.000Z")[0] == {
        "hour": "2026-11-21T16:00:00.000Z", "requests": 1, "prompt_tokens": 10,
        "completion_tokens": 5, "cache_read_tokens": 0, "cache_creation_tokens": 0,
        "total_tokens": 15, "cost_usd": 0.5, "errors": 0}


def test_usage_trend_filters(hours: Database) -> None:
    by_tool = trend(hours, tool="claude-code")
    assert [(b["hour"], b["requests"], b["errors"]) for b in by_tool] == [
        ("2026-11-21T17:00:00.000Z", 1, 1), ("2026-11-21T21:00:00.000Z", 1, 0)]
    combined = trend(hours, tool="claude-code", provider="openai", model="gpt-4o")
    assert [(b["hour"], b["requests"]) for b in combined] == [("2026-11-21T21:00:00.000Z", 1)]
    assert trend(hours, provider="anthropic", model="gpt-4o") == []
    assert [b["requests"] for b in trend(hours, model="claude-sonnet-4")] == [1]
    # Empty strings are "no filter", like a blank query parameter in the original.
    assert trend(hours, provider="", model="", tool="") == trend(hours)
    for value in INJECTIONS:
        assert trend(hours, provider=value) == []
        assert trend(hours, model=value, tool=value) == []
    assert trend(hours, since="x' OR 1=1 --") == []


# -- stats -------------------------------------------------------------------------------

def test_stats_counts_every_row(hours: Database) -> None:
    assert stats(hours) == {
        # Pending rows too: /admin/stats counts all rows, as the original.
        "total_requests": 7, "total_tokens": 15 + 15 + 3 + 21 + 15 + 0 + 15,
        "total_cost_usd": 0.5 + 0.25 + 1.0 + 0.5 + 0.125,
        "first_request_at": "2026-11-21T16:59:59.999Z",
        "last_request_at": "2026-11-21T21:10:00.000Z",
    }


# -- logs ------------------------------------------------------------------------------

@pytest.fixture
def logs(db: Database, make_pending: MakePending) -> dict[str, int]:
    ids = {
        "a": add_row(db, make_pending, started_at="2026-11-21T10:00:00.000Z"),
        "b": add_row(db, make_pending, started_at="2026-11-21T11:00:00.000Z",
                     tool="claude-code", client_id="c2", provider="anthropic",
                     model="claude-sonnet-4"),
        "c": add_row(db, make_pending, started_at="2026-11-21T11:00:00.000Z",
                     tool="claude-code", client_id="c2", provider="anthropic",
                     model="claude-sonnet-4", lifecycle="error", status=502),
        "d": add_row(db, make_pending, started_at="2026-11-21T12:00:00.000Z",
                     lifecycle=None),
        "e": add_row(db, make_pending, started_at="2026-11-21T09:00:00.000Z",
                     tool="claude-code", lifecycle="aborted", status=499),
    }
    return ids


def ids_of(rows: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in rows]


def test_list_logs_order_and_paging(db: Database, logs: dict[str, int]) -> None:
    everything = list_logs(db, limit=50, offset=0)
    # started_at desc; the two rows started at the same instant, newest id first.
    assert ids_of(everything) == [logs["d"], logs["c"], logs["b"], logs["a"], logs["e"]]
    assert ids_of(list_logs(db, limit=2, offset=1)) == [logs["c"], logs["b"]]
    assert ids_of(list_logs(db, limit=2, offset=4)) == [logs["e"]]
    assert list_logs(db, limit=2, offset=5) == []
    # Full rows: every column, as the detail view has them.
    full = get_request(db, logs["c"])
    assert full is not None
    assert everything[1] == normalize_log_row(full)
    assert set(everything[1]) >= {"id", "provider", "model", "tool", "client_id", "status",
                                   "lifecycle_status", "cost_status", "started_at",
                                   "meta_json", "cliproxy_account", "msg_id",
                                   "requested_model", "upstream_status"}


def test_list_logs_filters(db: Database, logs: dict[str, int]) -> None:
    assert ids_of(list_logs(db, limit=50, offset=0, tool="claude-code")) == [
        logs["c"], logs["b"], logs["e"]]
    assert ids_of(list_logs(db, limit=50, offset=0, tool="claude-code", client_id="c2")) == [
        logs["c"], logs["b"]]
    assert ids_of(list_logs(db, limit=50, offset=0, tool="claude-code", client_id="c2",
                            lifecycle_status="error")) == [logs["c"]]
    assert ids_of(list_logs(db, limit=50, offset=0, model="claude-sonnet-4",
                            http_status=200)) == [logs["b"]]
    assert ids_of(list_logs(db, limit=50, offset=0, http_status=499)) == [logs["e"]]
    assert ids_of(list_logs(db, limit=50, offset=0, lifecycle_status="pending")) == [
        logs["d"]]
    assert list_logs(db, limit=50, offset=0, tool="opencode", client_id="c2") == []
    assert list_logs(db, limit=50, offset=0, http_status=404) == []
    assert ids_of(list_logs(db, limit=1, offset=1, tool="claude-code")) == [logs["b"]]
    # Blank text filters are ignored (the original ignored empty query parameters).
    assert len(list_logs(db, limit=50, offset=0, tool="", client_id="", model="",
                         lifecycle_status="")) == 5


def test_list_logs_sql_looking_values_match_nothing(db: Database,
                                                    logs: dict[str, int]) -> None:
    for value in INJECTIONS:
        assert list_logs(db, limit=50, offset=0, tool=value) == []
        assert list_logs(db, limit=50, offset=0, client_id=value) == []
        assert list_logs(db, limit=50, offset=0, model=value) == []
        assert list_logs(db, limit=50, offset=0, lifecycle_status=value) == []
    # Nothing was dropped or changed.
    assert len(list_logs(db, limit=50, offset=0)) == 5


def test_list_logs_counts_only_matching_rows_with_like_wildcards(
        db: Database, make_pending: MakePending) -> None:
    add_row(db, make_pending, started_at="2026-11-21T10:00:00.000Z", tool="op%")
    add_row(db, make_pending, started_at="2026-11-21T10:00:01.000Z", tool="opencode")
    assert [r["tool"] for r in list_logs(db, limit=50, offset=0, tool="op%")] == ["op%"]
    assert list_logs(db, limit=50, offset=0, tool="op_ncode") == []


# -- quota_snapshots ---------------------------------------------------------------------

def test_latest_snapshots_are_each_accounts_newest_refresh(db: Database) -> None:
    add_quota(db, "2026-11-21T10:00:00.000Z", "codex", "z@x", "week", 10.0)
    add_quota(db, "2026-11-21T12:00:00.000Z", "codex", "z@x", "week", 30.0)
    add_quota(db, "2026-11-21T11:00:00.000Z", "codex", "z@x", "5h", 50.0)  # not refreshed
    newest_claude = add_quota(db, "2026-11-21T12:00:00.000Z", "claude", "a@x", "5h", None)
    add_quota(db, "2026-11-21T09:00:00.000Z", "claude", "a@x", "5h", 99.0)
    # Two snapshots with the same timestamp: the later insert wins, and only one is listed.
    add_quota(db, "2026-11-21T12:00:00.000Z", "claude", "a@x", "week", 1.0)
    tied = add_quota(db, "2026-11-21T12:00:00.000Z", "claude", "a@x", "week", 2.0)
    add_quota(db, "2026-11-21T08:00:00.000Z", "claude", "b@x", "week", 70.0)

    snaps = latest_snapshots(db)
    assert [(s["provider"], s["account"], s["quota_type"], s["used_pct"]) for s in snaps] == [
        ("claude", "a@x", "5h", None),
        ("claude", "a@x", "week", 2.0),
        ("claude", "b@x", "week", 70.0),
        ("codex", "z@x", "week", 30.0),
    ]
    assert snaps[0]["id"] == newest_claude
    assert snaps[1] == {"id": tied, "timestamp": "2026-11-21T12:00:00.000Z",
                        "provider": "claude", "account": "a@x", "quota_type": "week",
                        "used_pct": 2.0, "remaining": 98.0, "remaining_raw": "98.00%",
                        "resets_at": "2026-11-22T00:00:00.000Z", "raw_json": "{}",
                        "model": None}
    assert latest_snapshots(db, provider="claude", account="b@x") == [snaps[2]]


# -- legacy NULLs ------------------------------------------------------------------------

def test_legacy_null_columns_read_as_zero(db: Database) -> None:
    with db.write() as conn:
        conn.execute(
            "INSERT INTO daily_usage (day, provider, model, request_count, prompt_tokens,"
            " completion_tokens, cache_creation_tokens, cache_read_tokens, total_tokens,"
            " cost_usd) VALUES ('2026-01-02', 'openai', 'gpt-4', 1, NULL, NULL, NULL, NULL,"
            " NULL, NULL)")
        conn.execute(
            "INSERT INTO request_logs (provider, model, path, started_at, lifecycle_status,"
            " cost_status, prompt_tokens, completion_tokens, cache_creation_tokens,"
            " cache_read_tokens, total_tokens, reasoning_tokens, cost_usd)"
            " VALUES ('openai', 'gpt-4', '/v1/chat/completions', '2026-01-02T03:04:05.000Z',"
            " 'completed', 'pending', NULL, NULL, NULL, NULL, NULL, NULL, NULL)")
    add_account_usage(db, "2026-01-02", "openai", "gpt-4", "a@x", None, 1, 0, None,
                      reasoning=None)

    assert usage_for_day(db, "2026-01-02") == [daily("2026-01-02", "openai", "gpt-4", 1,
                                                     0, 0, 0.0)]
    assert usage_range(db, "2026-01-01", "2026-01-31")[0]["cost_usd"] == 0.0
    assert providers_for_day(db, "2026-01-02") == [
        {"provider": "openai", "request_count": 1, "total_tokens": 0, "cost_usd": 0.0}]
    acc = account_usage_for_day(db, "2026-01-02")[0]
    assert (acc["reasoning_tokens"], acc["cost_usd"]) == (0, 0.0)
    assert isinstance(acc["cost_usd"], float)
    assert accounts_summary(db, "2026-01-01", "2026-01-31")[0]["cost_usd"] == 0.0

    row = list_logs(db, limit=1, offset=0)[0]
    assert {c: row[c] for c in ("prompt_tokens", "completion_tokens",
                                "cache_creation_tokens", "cache_read_tokens",
                                "total_tokens", "reasoning_tokens", "cost_usd")} == {
        "prompt_tokens": 0, "completion_tokens": 0, "cache_creation_tokens": 0,
        "cache_read_tokens": 0, "total_tokens": 0, "reasoning_tokens": 0, "cost_usd": 0.0}
    assert isinstance(row["cost_usd"], float)
    assert row["status"] is None  # only counters are normalised
    assert stats(db) == {"total_requests": 1, "total_tokens": 0, "total_cost_usd": 0.0,
                         "first_request_at": "2026-01-02T03:04:05.000Z",
                         "last_request_at": "2026-01-02T03:04:05.000Z"}
    assert trend(db, since="2026-01-01T00:00:00.000Z") == [
        {"hour": "2026-01-02T03:00:00.000Z", "requests": 1, "prompt_tokens": 0,
         "completion_tokens": 0, "cache_read_tokens": 0, "cache_creation_tokens": 0,
         "total_tokens": 0, "cost_usd": 0.0, "errors": 0}]
