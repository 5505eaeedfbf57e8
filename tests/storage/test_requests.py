"""The request_logs repository: pending → final, daily_usage, cost_audit, boot recovery."""

from __future__ import annotations

import calendar
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_cli_proxy.storage import (
    Database,
    Finalization,
    PendingRow,
    daily_usage_mismatches,
    finalize,
    get_daily_usage,
    get_request,
    insert_pending,
    iso_utc,
    list_requests,
    recover_stale_pending,
)
from agent_cli_proxy.storage.requests import finalize_in, insert_final_in, insert_pending_in
from agent_cli_proxy.usage.model import Usage

MakePending = Callable[..., PendingRow]

NOW_MS = calendar.timegm((2026, 11, 28, 18, 59, 31)) * 1000 + 701
MAX_AGE_MS = 600_000

USAGE = Usage(prompt_tokens=10, cache_read_tokens=2, cache_creation_tokens=3,
              completion_tokens=5, reasoning_tokens=1, cache_creation_1h_tokens=3)


def fin(**overrides: Any) -> Finalization:
    values: dict[str, Any] = {
        "lifecycle_status": "completed", "status": 200, "model": "gpt-4o-2024-08-06",
        "actual_model": "gpt-4o-2024-08-06", "usage": USAGE, "streamed": True,
        "latency_ms": 1234, "finished_at": "2026-11-21T18:59:32.935Z",
        "cost_usd": 7.25e-05, "cost_status": "ok", "cost_source": "pricing",
        "upstream_latency_ms": 200,
    }
    values.update(overrides)
    return Finalization(**values)


def audit_rows(db: Database, row_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in db.reader().execute(
        "SELECT request_log_id, model, provider, source, base_cost_usd, calc_at"
        " FROM cost_audit WHERE request_log_id = ? ORDER BY id", (row_id,))]


def test_iso_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(NOW_MS / 1000) == "2026-11-28T18:59:31.701Z"
    # Rounding up to the next second carries into the seconds field.
    assert iso_utc(1.9996) == "1970-01-01T00:00:02.000Z"
    assert iso_utc(1.001) == "1970-01-01T00:00:01.001Z"


def test_insert_pending(db: Database, make_pending: MakePending) -> None:
    row_id = insert_pending(db, make_pending(msg_id="m-1", agent="jongi"))
    row = get_request(db, row_id)
    assert row is not None
    assert row["lifecycle_status"] == "pending"
    assert row["cost_status"] == "unresolved"
    assert row["incomplete"] == 0
    assert row["status"] is None
    assert row["finalized_at"] is None
    assert row["streamed"] == 1
    assert row["source"] == "proxy"
    assert (row["requested_model"], row["session_id"], row["identify_rule"]) == (
        "gpt-4o", "sess-abcdef123", "user-agent")
    assert (row["msg_id"], row["agent"]) == ("m-1", "jongi")
    assert get_request(db, row_id + 1) is None


def test_finalize_round_trip(db: Database, make_pending: MakePending) -> None:
    row_id = insert_pending(db, make_pending())
    assert finalize(db, row_id, fin()) is True
    row = get_request(db, row_id)
    assert row is not None
    assert row["lifecycle_status"] == "completed"
    assert row["incomplete"] == 0
    assert row["status"] == 200
    # The response's model replaces the stored one; the requested one is kept.
    assert (row["model"], row["requested_model"], row["actual_model"]) == (
        "gpt-4o-2024-08-06", "gpt-4o", "gpt-4o-2024-08-06")
    assert {k: row[k] for k in ("prompt_tokens", "cache_read_tokens", "cache_creation_tokens",
                                "completion_tokens", "reasoning_tokens",
                                "cache_creation_1h_tokens", "total_tokens")} == {
        "prompt_tokens": 10, "cache_read_tokens": 2, "cache_creation_tokens": 3,
        "completion_tokens": 5, "reasoning_tokens": 1, "cache_creation_1h_tokens": 3,
        "total_tokens": 20}
    assert (row["cost_usd"], row["cost_status"]) == (7.25e-05, "ok")
    assert row["finished_at"] == row["finalized_at"] == "2026-11-21T18:59:32.935Z"
    assert (row["latency_ms"], row["upstream_latency_ms"], row["upstream_status"]) == (
        1234, 200, None)

    assert get_daily_usage(db, "2026-11-21") == [{
        "day": "2026-11-21", "provider": "openai", "model": "gpt-4o-2024-08-06",
        "request_count": 1, "prompt_tokens": 10, "completion_tokens": 5,
        "cache_creation_tokens": 3, "cache_read_tokens": 2, "total_tokens": 20,
        "cost_usd": 7.25e-05}]
    assert audit_rows(db, row_id) == [{
        "request_log_id": row_id, "model": "gpt-4o-2024-08-06", "provider": "openai",
        "source": "pricing", "base_cost_usd": 7.25e-05, "calc_at": "2026-11-21 18:59:32"}]
    assert daily_usage_mismatches(db) == []


def test_finalize_twice_counts_once(db: Database, make_pending: MakePending) -> None:
    row_id = insert_pending(db, make_pending())
    assert finalize(db, row_id, fin()) is True
    second = fin(lifecycle_status="aborted", status=499, error_code="aborted",
                 usage=Usage(prompt_tokens=999), cost_usd=1.0)
    assert finalize(db, row_id, second) is False
    row = get_request(db, row_id)
    assert row is not None
    assert (row["lifecycle_status"], row["prompt_tokens"], row["error_code"]) == (
        "completed", 10, None)
    assert [r["request_count"] for r in get_daily_usage(db, "2026-11-21")] == [1]
    assert len(audit_rows(db, row_id)) == 1
    assert finalize(db, 424242, fin()) is False


def test_finalize_error_keeps_model_and_marks_incomplete(
        db: Database, make_pending: MakePending) -> None:
    row_id = insert_pending(db, make_pending(model="claude-sonnet-4", provider="anthropic",
                                             streamed=False))
    outcome = fin(lifecycle_status="error", status=502, model=None, actual_model=None,
                  usage=Usage(), streamed=None, error_code="upstream_error",
                  error_message="upstream HTTP 503: overloaded", cost_usd=0.0,
                  cost_status="pending", cost_source="guard", upstream_status=503)
    assert finalize(db, row_id, outcome)
    row = get_request(db, row_id)
    assert row is not None
    assert (row["model"], row["streamed"], row["incomplete"], row["status"],
            row["upstream_status"]) == ("claude-sonnet-4", 0, 1, 502, 503)
    assert row["error_message"] == "upstream HTTP 503: overloaded"
    # Errors are requests too: counted once, with zero tokens.
    assert [(r["model"], r["request_count"]) for r in get_daily_usage(db, "2026-11-21")] == [
        ("claude-sonnet-4", 1)]
    assert audit_rows(db, row_id)[0]["source"] == "guard"


def test_finalization_rejects_unknown_statuses() -> None:
    with pytest.raises(ValueError, match="lifecycle_status"):
        fin(lifecycle_status="pending")
    with pytest.raises(ValueError, match="cost_status"):
        fin(cost_status="unresolved")




def test_recover_stale_pending(db: Database, make_pending: MakePending) -> None:
    old = insert_pending(db, make_pending(started_at=iso_utc((NOW_MS - 3_600_000) / 1000),
                                          request_id="old"))
    young = insert_pending(db, make_pending(started_at=iso_utc((NOW_MS - 60_000) / 1000),
                                            request_id="young"))
    done = insert_pending(db, make_pending(started_at=iso_utc((NOW_MS - 7_200_000) / 1000),
                                           request_id="done"))
    assert finalize(db, done, fin(finished_at="2026-11-28T16:59:35.000Z"))

    assert recover_stale_pending(db, MAX_AGE_MS, NOW_MS) == 1
    row = get_request(db, old)
    assert row is not None
    assert (row["lifecycle_status"], row["error_message"], row["incomplete"],
            row["cost_status"]) == ("aborted", "boot-recovery", 1, "pending")
    assert row["finalized_at"] == row["finished_at"] == "2026-11-28T18:59:31.701Z"
    young_row = get_request(db, young)
    assert young_row is not None and young_row["lifecycle_status"] == "pending"
    done_row = get_request(db, done)
    assert done_row is not None and done_row["lifecycle_status"] == "completed"

    # The recovered row is a request in daily_usage (the original forgot it).
    counts = {r["model"]: r["request_count"] for r in get_daily_usage(db, "2026-11-28")}
    assert counts == {"gpt-4o": 1, "gpt-4o-2024-08-06": 1}
    assert daily_usage_mismatches(db) == []
    # Recovered rows are final: a late finalize must not count them twice.
    assert finalize(db, old, fin()) is False
    assert recover_stale_pending(db, MAX_AGE_MS, NOW_MS) == 0
    assert finalize(db, young, fin()) is True
    assert daily_usage_mismatches(db) == []


def test_list_requests_newest_first(db: Database, make_pending: MakePending) -> None:
    ids = [insert_pending(db, make_pending(started_at=f"2026-11-2{i}T00:00:00.000Z"))
           for i in range(5)]
    listed = list_requests(db, limit=2, offset=1)
    assert [r["id"] for r in listed] == [ids[3], ids[2]]
    assert "identify_rule" in listed[0]


def test_concurrent_writers(db: Database, make_pending: MakePending) -> None:
    threads, per_thread = 8, 50
    errors: list[BaseException] = []
    start = threading.Barrier(threads)
    outcomes = ("completed", "error", "aborted")

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                row_id = insert_pending(db, make_pending(
                    request_id=f"{n}-{i}", model=f"m{i % 3}",
                    started_at=f"2026-11-{20 + i % 2}T00:00:00.000Z"))
                # Readers run alongside the writer on their own connections.
                assert get_request(db, row_id) is not None
                assert finalize(db, row_id, fin(
                    lifecycle_status=outcomes[i % 3], model=None,
                    usage=Usage(prompt_tokens=i, completion_tokens=1), cost_usd=0.001))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []
    total = db.reader().execute(
        "SELECT SUM(request_count), SUM(prompt_tokens) FROM daily_usage").fetchone()
    assert tuple(total) == (threads * per_thread, threads * sum(range(per_thread)))
    assert db.reader().execute("SELECT COUNT(*) FROM cost_audit").fetchone()[0] == 400
    assert daily_usage_mismatches(db) == []


def test_finalize_counts_the_day_the_call_started(db: Database,
                                                  make_pending: MakePending) -> None:
    # daily_usage and the audit come from the values the UPDATE stored (RETURNING),
    # not from the finalization: the day is the row's started_at, the model the stored one.
    row_id = insert_pending(db, make_pending(started_at="2026-11-20T23:59:59.999Z"))
    assert finalize(db, row_id, fin(model=None, actual_model=None,
                                    finished_at="2026-11-21T00:00:01.000Z"))
    assert [(r["day"], r["model"], r["request_count"], r["cost_usd"])
            for r in get_daily_usage(db, "2026-11-20")] == [("2026-11-20", "gpt-4o", 1,
                                                              7.25e-05)]
    assert get_daily_usage(db, "2026-11-21") == []
    (audit,) = audit_rows(db, row_id)
    assert (audit["model"], audit["base_cost_usd"], audit["calc_at"]) == (
        "gpt-4o", 7.25e-05, "2026-11-21 00:00:01")
    assert daily_usage_mismatches(db) == []


@given(st.lists(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),
                max_size=20))
def test_iso_utc_matches_strftime_whatever_the_order(times: list[float]) -> None:
    # iso_utc reuses the text of the last second it formatted.
    for t in [*times, *times[::-1]]:
        ms = round(t * 1000)
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
        assert iso_utc(t) == f"{expected}.{ms % 1000:03d}Z"


@pytest.mark.parametrize("outcome", [
    fin(),
    fin(model=None, actual_model=None, streamed=None, status=None, upstream_latency_ms=None),
    fin(lifecycle_status="error", status=502, error_code="upstream_error",
        error_message="upstream HTTP 502", upstream_status=500, usage=Usage(),
        cost_usd=0.0, cost_status="pending", cost_source=None, cost_rule="vendor",
        cost_price_key="openai/gpt-4o", cost_detail_json='{"x":1}'),
    fin(lifecycle_status="aborted", status=499, streamed=False, error_code="aborted",
        error_message="client disconnected", cost_status="unsupported"),
], ids=["completed", "nothing-named", "error", "aborted"])
def test_insert_final_stores_what_pending_then_finalize_store(
        db: Database, make_pending: MakePending, outcome: Finalization) -> None:
    # The row writer's one INSERT for a call whose outcome came with its pending row.
    with db.write() as conn:
        two_steps = insert_pending_in(conn, make_pending(request_id="a", proxy_api_key_id=None,
                                                         actual_provider="cliproxyapi"))
        assert finalize_in(conn, two_steps, outcome)
        one_step = insert_final_in(conn, make_pending(request_id="b", proxy_api_key_id=None,
                                                      actual_provider="cliproxyapi"), outcome)
    first, second = get_request(db, two_steps), get_request(db, one_step)
    assert first is not None and second is not None
    differ = {"id", "request_id"}
    assert {k: v for k, v in first.items() if k not in differ} == {
        k: v for k, v in second.items() if k not in differ}
    audits = [tuple(r)[1:] for r in db.reader().execute(
        "SELECT request_log_id, model, provider, source, base_cost_usd, calc_at, rule,"
        " price_key, detail_json FROM cost_audit ORDER BY request_log_id")]
    assert len(audits) == 2 and audits[0] == audits[1]
    day = db.reader().execute("SELECT request_count, total_tokens, cost_usd FROM daily_usage"
                              ).fetchall()
    assert [tuple(r) for r in day] == [(2, 2 * outcome.usage.total_tokens,
                                        2 * outcome.cost_usd)]
    assert daily_usage_mismatches(db) == []
