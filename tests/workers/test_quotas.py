"""The quota refresh job against a fake CLIProxyAPI (api-call) and a fake vendor (auth-dir
fallback), with a real SQLite file. Only time is faked (a hand-moved clock)."""

from __future__ import annotations

import calendar
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_cli_proxy.config import Settings, settings_for_tests
from agent_cli_proxy.providers.quotas import VendorUrls
from agent_cli_proxy.storage import Database, iso_utc, open_database
from agent_cli_proxy.storage.quotas import latest_snapshots, snapshot_history
from agent_cli_proxy.upstream.client import UpstreamClient
from agent_cli_proxy.upstream.management import ManagementClient
from agent_cli_proxy.workers.quotas import LOOP_NAME, QuotaService
from agent_cli_proxy.workers.supervisor import Supervisor
from tests.conftest import event_fields, event_name, logged_events
from tests.fake_cliproxy import DEFAULT_KEY, FakeCliProxy
from tests.fake_cliproxy_quota import CLAUDE_USAGE, TOKEN_PATHS, FakeVendor
from tests.hand_clock import LoopClock

NOW = float(calendar.timegm((2026, 8, 20, 10, 0, 0)))
STAMP = "2026-08-20T10:00:00.000Z"


@pytest.fixture
def clock() -> LoopClock:
    return LoopClock(NOW)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "proxy.db")
    yield database
    database.close()


@pytest.fixture
def cpa(clock: LoopClock) -> Iterator[FakeCliProxy]:
    fake = FakeCliProxy(clock=clock.time)
    yield fake
    fake.close()


@pytest.fixture
def http() -> Iterator[UpstreamClient]:
    client = UpstreamClient(maxsize=4)
    yield client
    client.close()


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"quota_refresh_interval_ms": 300_000,
                              "quota_refresh_timeout_ms": 5_000}
    return settings_for_tests(**{**values, **overrides})


def management(cpa: FakeCliProxy, http: UpstreamClient, clock: LoopClock,
               key: str = DEFAULT_KEY) -> ManagementClient:
    return ManagementClient(http, cpa.url, key, clock=clock)


def add_all_providers(cpa: FakeCliProxy) -> None:
    cpa.add_account("carol@example.com", "codex", access_token="tok-codex",
                    id_token={"chatgpt_account_id": "acct-7f3e", "plan_type": "plus"})
    cpa.add_account("alice@example.com", "claude", access_token="tok-claude")
    cpa.add_account("gem@example.com", "gemini-cli", project_id="proj-g",
                    token={"access_token": "tok-gemini"})
    cpa.add_account("anti@example.com", "antigravity", project_id="proj-a",
                    access_token="tok-anti")
    cpa.add_account("kim@example.com", "kimi", access_token="tok-kimi")


def rows(db: Database) -> list[dict[str, Any]]:
    return [dict(r) for r in db.reader().execute("SELECT * FROM quota_snapshots ORDER BY id")]


def by_account(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["account"]: a for a in result["accounts"]}


# -- through CLIProxyAPI's api-call --------------------------------------------------------

def test_snapshots_for_every_provider_through_api_call(
        db: Database, cpa: FakeCliProxy, http: UpstreamClient, clock: LoopClock) -> None:
    add_all_providers(cpa)
    service = QuotaService(db, settings(), management=management(cpa, http, clock),
                           clock=clock)
    result = service.refresh()
    assert result["source"] == "management"
    assert result["timestamp"] == STAMP
    accounts = by_account(result)
    assert {a: (r["provider"], r["status"]) for a, r in accounts.items()} == {
        "carol@example.com": ("codex", "active"),
        "alice@example.com": ("claude", "active"),
        "gem@example.com": ("gemini-cli", "active"),
        "anti@example.com": ("antigravity", "active"),
        "kim@example.com": ("kimi", "active"),
    }
    windows = {(r["provider"], r["quota_type"]): r["used_pct"] for r in rows(db)}
    assert windows == {
        ("codex", "5h"): 37.0, ("codex", "week"): 61.0,
        ("claude", "5h"): 42.0, ("claude", "week"): 18.5,
        ("gemini-cli", "gemini-2.5-pro"): 20.0, ("gemini-cli", "gemini-2.5-flash"): 0.0,
        ("antigravity", "claude:5h"): 75.0, ("antigravity", "gemini-pro"): 50.0,
        ("kimi", "week"): 25.0, ("kimi", "5h"): 20.0,
    }
    assert result["inserted"] == 10
    codex = accounts["carol@example.com"]
    assert codex["plan"] == "plus"
    assert codex["auth_index"] == cpa.accounts[0].auth_index
    assert codex["windows"][0] | {"raw_json": None} == {
        "timestamp": STAMP, "provider": "codex", "account": "carol@example.com",
        "quota_type": "5h", "window": "5h", "used_pct": 37.0, "remaining": 63.0,
        "remaining_raw": "63.00%", "resets_at": "2026-08-20T10:50:00.000Z",
        "raw_json": None, "model": None}
    assert codex["local_usage"]["five_hour"] == {
        "since": "2026-08-20T05:00:00.000Z", "requests": 0, "total_tokens": 0,
        "cost_usd": 0.0}
    # The proxy sent the placeholder, never a token; CPA put the token in.
    sent = [c["header"]["Authorization"] for c in cpa.api_calls]
    assert sent == ["Bearer $TOKEN$"] * 5
    codex_file = cpa.accounts[0].file
    (call,) = codex_file["fake_quota_calls"]
    assert call["header"]["Authorization"] == "Bearer tok-codex"
    assert call["header"]["Chatgpt-Account-Id"] == "acct-7f3e"
    gemini_call = cpa.accounts[2].file["fake_quota_calls"][0]
    assert json.loads(gemini_call["data"]) == {"project": "proj-g"}
    assert service.status()["last_source"] == "management"
    assert service.status()["warnings"] == []


def test_history_accumulates_and_latest_is_the_newest_refresh(
        db: Database, cpa: FakeCliProxy, http: UpstreamClient, clock: LoopClock) -> None:
    claude = cpa.add_account("alice@example.com", "claude", access_token="tok")
    service = QuotaService(db, settings(), management=management(cpa, http, clock),
                           clock=clock)
    service.refresh()
    clock.now += 300
    later = {**CLAUDE_USAGE, "five_hour": {"utilization": 50, "resets_at": None},
             "seven_day": None}
    claude.file["fake_quota"] = {"status": 200, "body": later}
    service.refresh()
    clock.now += 3600
    service.refresh()
    assert len(rows(db)) == 2 + 1 + 1
    latest = latest_snapshots(db)
    # The weekly window went away: the newest refresh has only the 5 h one.
    assert [(r["quota_type"], r["used_pct"], r["timestamp"]) for r in latest] == [
        ("5h", 50.0, "2026-08-20T11:05:00.000Z")]
    history = snapshot_history(db, since="2026-08-20T00:00:00.000Z")
    assert [(b["timestamp"], b["quota_type"], b["used_pct"], b["max_used_pct"],
             b["samples"]) for b in history] == [
        ("2026-08-20T10:00:00.000Z", "5h", 50.0, 50.0, 2),
        ("2026-08-20T10:00:00.000Z", "week", 18.5, 18.5, 1),
        ("2026-08-20T11:00:00.000Z", "5h", 50.0, 50.0, 1),
    ]
    assert snapshot_history(db, since=STAMP, provider="codex") == []
    assert len(snapshot_history(db, since="2026-08-20T11:00:00.000Z",
                                account="alice@example.com")) == 1


def test_vendor_401_and_a_missing_token_concern_one_account(
        db: Database, cpa: FakeCliProxy, http: UpstreamClient, clock: LoopClock) -> None:
    cpa.add_account("alice@example.com", "claude", access_token="tok-a",
                    fake_quota={"status": 401, "body": {"error": {"message": "expired"}}})
    cpa.add_account("bob@example.com", "claude")  # no token: CPA answers 400
    cpa.add_account("carol@example.com", "codex", access_token="tok-c")
    service = QuotaService(db, settings(), management=management(cpa, http, clock),
                           clock=clock)
    with logged_events("quota", lambda r: (event_name(r), event_fields(r))) as events:
        result = service.refresh()
    accounts = by_account(result)
    assert accounts["alice@example.com"]["status"] == "unauthorized"
    assert accounts["alice@example.com"]["error"] == "HTTP 401: expired"
    assert accounts["bob@example.com"]["status"] == "error"
    assert "auth token not found" in accounts["bob@example.com"]["error"]
    assert accounts["carol@example.com"]["status"] == "active"
    assert {r["account"] for r in rows(db)} == {"carol@example.com"}
    assert len(cpa.api_calls) == 3  # one each: nothing is retried
    failed = [f["account"] for e, f in events if e == "quota.probe_failed"]
    assert failed == ["alice@example.com", "bob@example.com"]


@pytest.mark.parametrize(("knob", "reason"), [("management_down", "unreachable"),
                                              ("management_disabled", "disabled"),
                                              ("wrong_key", "unauthorized")])
def test_management_api_unavailable_is_a_warning_with_bounded_requests(
        db: Database, cpa: FakeCliProxy, http: UpstreamClient, clock: LoopClock, knob: str,
        reason: str) -> None:
    cpa.add_account("alice@example.com", "claude", access_token="tok")
    cpa.management_down = knob == "management_down"
    cpa.management_enabled = knob != "management_disabled"
    key = "wrong" if knob == "wrong_key" else DEFAULT_KEY
    service = QuotaService(db, settings(), management=management(cpa, http, clock, key),
                           clock=clock)
    with logged_events("quota", lambda r: (r.levelname, event_name(r))) as events:
        results = [service.refresh() for _ in range(5)]  # the loop, or an impatient admin
    first, last = results[0], results[-1]
    assert first["source"] is None
    assert first["accounts"] == [] and first["inserted"] == 0
    assert [w["reason"] for w in first["warnings"]] == [reason]
    # Later refreshes are refused by the client's backoff without asking CPA.
    assert [w["reason"] for w in last["warnings"]] in ([reason], ["backoff"])
    assert service.status()["warnings"] == last["warnings"]
    # One warning; the repeats of the same trouble are logged quietly.
    assert [lvl for lvl, e in events if e == "quota.source_unavailable"].count(
        "WARNING") == 1 + (knob == "wrong_key")
    # The client's backoff keeps CPA from being asked again before time moves on.
    assert len(cpa.management_requests()) == 1
    assert cpa.ban_counter() == (1 if knob == "wrong_key" else 0)
    assert rows(db) == []


def test_api_call_route_missing_stops_the_refresh_after_one_call(
        db: Database, cpa: FakeCliProxy, http: UpstreamClient, clock: LoopClock) -> None:
    for name in ("a", "b", "c"):
        cpa.add_account(f"{name}@example.com", "claude", access_token="tok")
    service = QuotaService(db, settings(), management=management(cpa, http, clock),
                           clock=clock)
    original = cpa._route  # an older CLIProxyAPI without /api-call

    def without_api_call(rec: Any) -> tuple[int, Any]:
        return (404, None) if rec.path.endswith("/api-call") else original(rec)

    cpa._route = without_api_call  # type: ignore[method-assign]
    result = service.refresh()
    statuses = [a["status"] for a in result["accounts"]]
    assert statuses == ["error"] * 3
    assert len(cpa.management_requests("/api-call")) == 1  # not one per account
    assert [w["reason"] for w in result["warnings"]] == ["disabled"]



def test_a_slow_vendor_times_out_its_account_not_the_management_api(
        db: Database, cpa: FakeCliProxy, http: UpstreamClient, clock: LoopClock) -> None:
    add_all_providers(cpa)
    slow = threading.Event()
    cpa.accounts[1].file["fake_quota_hold"] = slow  # Claude's usage endpoint hangs
    client = management(cpa, http, clock)  # its own timeout (15 s) is not the probe's
    service = QuotaService(db, settings(quota_refresh_timeout_ms=250), management=client,
                           clock=clock)
    try:
        with logged_events("quota", lambda r: (r.levelname, event_name(r))) as events:
            result = service.refresh()
    finally:
        slow.set()
    accounts = by_account(result)
    claude = accounts.pop("alice@example.com")
    assert claude["status"] == "error"
    assert "did not answer /api-call within 0.25 s" in claude["error"]
    # The refresh went on to the other accounts, through the same management API …
    assert {r["status"] for r in accounts.values()} == {"active"}
    assert len(cpa.management_requests("/api-call")) == 5
    assert result["warnings"] == []
    assert ("WARNING", "quota.source_unavailable") not in events
    # … which is not marked unreachable: account attribution carries on at once.
    assert client.status()["state"] == "ok"
    assert client.status()["retry_after_s"] is None
    asked = len(cpa.management_requests("/auth-files"))
    assert client.auth_files()
    assert len(cpa.management_requests("/auth-files")) == asked + 1


def test_cpa_hanging_up_on_api_call_still_marks_it_unreachable(
        db: Database, cpa: FakeCliProxy, http: UpstreamClient, clock: LoopClock) -> None:
    cpa.add_account("alice@example.com", "claude", access_token="tok")
    cpa.add_account("bob@example.com", "claude", access_token="tok")
    client = management(cpa, http, clock)
    service = QuotaService(db, settings(quota_refresh_timeout_ms=250), management=client,
                           clock=clock)
    original = cpa._route

    def gone_after_one_probe(rec: Any) -> tuple[int, Any]:
        if rec.path.endswith("/api-call"):
            cpa.management_down = True  # the next management request is hung up on
        return original(rec)

    cpa._route = gone_after_one_probe  # type: ignore[method-assign]
    result = service.refresh()
    assert [a["status"] for a in result["accounts"]] == ["active", "error"]
    # Not a slow vendor: CPA itself is gone, and the shared client backs off.
    assert client.status()["state"] == "unreachable"
    assert [w["reason"] for w in result["warnings"]] == ["unreachable"]


# -- the auth-dir fallback -----------------------------------------------------------------

def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    fake = FakeVendor({"tok-codex", "tok-claude", "tok-gemini", "tok-anti", "tok-kimi"})
    yield fake
    fake.close()


def auth_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "auth"
    directory.mkdir()
    write(directory / "codex-carol@example.com-plus.json",
          {"type": "codex", "email": "carol@example.com", "access_token": "tok-codex",
           "refresh_token": "rt-never-used", "account_id": "acct-7f3e",
           "expired": "2026-08-30T00:00:00Z"})
    write(directory / "claude-alice@example.com.json",
          {"type": "claude", "email": "alice@example.com", "access_token": "tok-claude",
           "refresh_token": "rt-never-used", "expired": "2026-08-30T00:00:00Z"})
    write(directory / "gem@example.com-proj-g.json",
          {"type": "gemini", "email": "gem@example.com", "project_id": "proj-g",
           "token": {"access_token": "tok-gemini", "refresh_token": "rt",
                     "expiry": "2026-08-30T00:00:00Z",
                     "token_uri": "https://oauth2.googleapis.com/token"}})
    write(directory / "antigravity-anti@example.com.json",
          {"type": "antigravity", "email": "anti@example.com", "project_id": "proj-a",
           "access_token": "tok-anti"})
    write(directory / "kimi-kim@example.com.json",
          {"type": "kimi", "email": "kim@example.com", "access_token": "tok-kimi"})
    (directory / "notes.txt").write_text("not an auth file")
    (directory / "broken.json").write_text("{not json")
    return directory


def fingerprint(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


def test_auth_dir_reads_files_read_only_and_calls_vendors_directly(
        db: Database, tmp_path: Path, vendor: FakeVendor, clock: LoopClock) -> None:
    directory = auth_dir(tmp_path)
    before = fingerprint(directory)
    service = QuotaService(db, settings(cliproxy_auth_dir=str(directory)), clock=clock,
                           vendor_urls=VendorUrls.at(vendor.url))
    with logged_events("quota", lambda r: (event_name(r), event_fields(r))) as events:
        result = service.refresh()
    service.close()
    assert result["source"] == "auth_dir"
    assert {a["account"]: a["status"] for a in result["accounts"]} == {
        "carol@example.com": "active", "alice@example.com": "active",
        "gem@example.com": "active", "anti@example.com": "active",
        "kim@example.com": "active"}
    assert result["inserted"] == 10
    assert ("quota.auth_file_invalid", {"file": "broken.json"}) in events
    assert fingerprint(directory) == before  # not one byte, not one mtime changed
    assert sorted(vendor.paths()) == sorted([
        "/backend-api/wham/usage", "/api/oauth/usage", "/v1internal:retrieveUserQuota",
        "/v1internal:retrieveUserQuotaSummary", "/coding/v1/usages"])
    assert not any(p.endswith(TOKEN_PATHS) for p in vendor.paths())
    codex = next(h for _m, p, h, _b in vendor.requests if p.endswith("/wham/usage"))
    assert codex["Authorization"] == "Bearer tok-codex"
    assert codex["Chatgpt-Account-Id"] == "acct-7f3e"
    # auth_index computed as CLIProxyAPI does, so local usage joins its attribution.
    codex_result = by_account(result)["carol@example.com"]
    assert codex_result["auth_index"] is not None and len(codex_result["auth_index"]) == 16


def test_auth_dir_rereads_tokens_skips_401_expired_and_disabled(
        db: Database, tmp_path: Path, vendor: FakeVendor, clock: LoopClock) -> None:
    directory = tmp_path / "auth"
    directory.mkdir()
    claude = write(directory / "claude-a@x.json",
                   {"type": "claude", "email": "a@x", "access_token": "stale"})
    write(directory / "claude-b@x.json", {"type": "claude", "email": "b@x",
                                          "access_token": "tok-claude",
                                          "expired": "2026-08-20T09:00:00Z"})
    write(directory / "claude-c@x.json", {"type": "claude", "email": "c@x",
                                          "access_token": "tok-claude", "disabled": True})
    write(directory / "xai-d@x.json", {"type": "xai", "email": "d@x", "api_key": "k"})
    service = QuotaService(db, settings(cliproxy_auth_dir=str(directory)), clock=clock,
                           vendor_urls=VendorUrls.at(vendor.url))
    first = by_account(service.refresh())
    assert first["a@x"]["status"] == "unauthorized"
    assert "skipped until CLIProxyAPI refreshes the token" in first["a@x"]["error"]
    assert first["b@x"]["status"] == "token_expired"
    assert first["c@x"]["status"] == "disabled"
    assert first["d@x"]["status"] == "unsupported"
    assert len(vendor.requests) == 1  # only a@x was asked, once
    # CLIProxyAPI refreshed the token and rewrote the file: the next probe reads it.
    write(claude, {"type": "claude", "email": "a@x", "access_token": "tok-claude"})
    second = by_account(service.refresh())
    assert second["a@x"]["status"] == "active"
    assert [h["Authorization"] for _m, _p, h, _b in vendor.requests] == [
        "Bearer stale", "Bearer tok-claude"]
    assert not any(p.endswith(TOKEN_PATHS) for p in vendor.paths())
    service.close()


def test_falls_back_to_auth_dir_only_when_management_is_unavailable(
        db: Database, tmp_path: Path, cpa: FakeCliProxy, http: UpstreamClient,
        vendor: FakeVendor, clock: LoopClock) -> None:
    directory = auth_dir(tmp_path)
    cpa.add_account("carol@example.com", "codex", access_token="tok-codex")
    service = QuotaService(db, settings(cliproxy_auth_dir=str(directory)),
                           management=management(cpa, http, clock), clock=clock,
                           vendor_urls=VendorUrls.at(vendor.url))
    assert service.refresh()["source"] == "management"
    assert vendor.requests == []
    cpa.management_down = True
    clock.now += 600  # past the client's backoff
    result = service.refresh()
    assert result["source"] == "auth_dir"
    assert result["warnings"] == [{"reason": "unreachable", "fallback": "auth_dir",
                                   "message": result["warnings"][0]["message"]}]
    assert len(result["accounts"]) == 5
    assert len(vendor.requests) == 5
    service.close()


def test_next_url_after_a_404_and_unreachable_vendor(
        db: Database, tmp_path: Path, vendor: FakeVendor, clock: LoopClock) -> None:
    directory = tmp_path / "auth"
    directory.mkdir()
    write(directory / "antigravity-a@x.json", {"type": "antigravity", "email": "a@x",
                                               "access_token": "tok-anti"})
    write(directory / "claude-b@x.json", {"type": "claude", "email": "b@x",
                                          "access_token": "tok-claude"})
    closed = UpstreamClient(maxsize=1)
    urls = VendorUrls.at(vendor.url)
    dead = "http://127.0.0.1:9/api/oauth/usage"  # port 9 (discard): refused on loopback
    urls = VendorUrls(codex=urls.codex, gemini_cli=urls.gemini_cli, kimi=urls.kimi,
                      claude=(dead,),
                      antigravity=(vendor.url + "/gone", *urls.antigravity))
    service = QuotaService(db, settings(cliproxy_auth_dir=str(directory)), clock=clock,
                           vendor_urls=urls, client=closed)
    accounts = by_account(service.refresh())
    assert accounts["a@x"]["status"] == "active"
    assert vendor.paths() == ["/gone", "/v1internal:retrieveUserQuotaSummary"]
    assert accounts["b@x"]["status"] == "error"
    assert "127.0.0.1:9" in accounts["b@x"]["error"]
    closed.close()


def test_same_email_twice_and_local_usage_by_auth_index(
        db: Database, cpa: FakeCliProxy, http: UpstreamClient, clock: LoopClock) -> None:
    plus = cpa.add_account("carol@example.com", "codex", access_token="t1",
                           name="codex-carol@example.com-plus.json")
    cpa.add_account("carol@example.com", "codex", access_token="t2",
                    name="codex-carol@example.com-team.json")
    cpa.add_account("carol@example.com", "claude", access_token="t3")
    with db.write() as conn:
        for auth_index, age in ((plus.auth_index, 60), (plus.auth_index, 6 * 3600),
                                ("other", 60)):
            conn.execute(
                "INSERT INTO request_logs (provider, model, path, started_at, total_tokens, "
                "cost_usd, cliproxy_account, cliproxy_auth_index, lifecycle_status) "
                "VALUES ('openai', 'gpt-5', '/v1/responses', ?, 100, 0.5, "
                "'carol@example.com', ?, 'completed')",
                (iso_utc(NOW - age), auth_index))
    service = QuotaService(db, settings(), management=management(cpa, http, clock),
                           clock=clock)
    accounts = by_account(service.refresh())
    assert sorted(accounts) == ["carol@example.com",
                                "carol@example.com (codex-carol@example.com-plus.json)",
                                "carol@example.com (codex-carol@example.com-team.json)"]
    usage = accounts["carol@example.com (codex-carol@example.com-plus.json)"]["local_usage"]
    assert (usage["five_hour"]["requests"], usage["seven_day"]["requests"]) == (1, 2)
    assert usage["seven_day"]["total_tokens"] == 200
    assert usage["seven_day"]["cost_usd"] == pytest.approx(1.0)
    assert accounts["carol@example.com"]["local_usage"]["seven_day"]["requests"] == 0


def test_registered_loop_runs_at_start_then_every_interval(
        db: Database, cpa: FakeCliProxy, http: UpstreamClient, clock: LoopClock) -> None:
    cpa.add_account("alice@example.com", "claude", access_token="tok")
    supervisor = Supervisor(clock=clock, wait=clock.wait, rng=random.Random(3))
    service = QuotaService(db, settings(), management=management(cpa, http, clock),
                           clock=clock)
    service.register(supervisor)
    supervisor.start()
    try:
        assert clock.paused.wait(10)
        assert supervisor.names() == [LOOP_NAME]
        assert len(rows(db)) == 2
        (delay,) = clock.delays
        assert 270 <= delay <= 330  # the interval, ± 10 % jitter
    finally:
        assert supervisor.stop(timeout_s=10)
    # Stopped: a refresh ends before its first account.
    assert service.refresh()["accounts"] == []
