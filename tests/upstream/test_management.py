"""The CLIProxyAPI management client against a fake CPA on loopback: keys, backoff, bans,
disabled management, missing routes, an unreachable API, versions, the trace header."""

from __future__ import annotations

import calendar
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from agent_cli_proxy.upstream import management
from agent_cli_proxy.upstream.client import UpstreamClient
from agent_cli_proxy.upstream.cpa_headers import parse_trace_id, parse_version
from agent_cli_proxy.upstream.management import (
    ManagementClient,
    ManagementUnavailable,
    parse_ban_wait,
)
from tests.conftest import event_fields, event_name, logged_events
from tests.fake_cliproxy import DEFAULT_KEY, FakeCliProxy, auth_index_for
from tests.hand_clock import HandClock

NOW_S = float(calendar.timegm((2026, 8, 20, 12, 0, 0)))


@pytest.fixture
def clock() -> HandClock:
    return HandClock(NOW_S)


@pytest.fixture
def cpa(clock: HandClock) -> Iterator[FakeCliProxy]:
    fake = FakeCliProxy.like("v6", clock=clock.time)
    fake.add_account("alice@example.com", "claude")
    fake.add_account("carol@example.com", "codex", access_token="tok-carol")
    yield fake
    fake.close()


@pytest.fixture
def pool() -> Iterator[UpstreamClient]:
    client = UpstreamClient(maxsize=4)
    yield client
    client.close()


def client_for(cpa: FakeCliProxy, pool: UpstreamClient, clock: HandClock,
               key: str = DEFAULT_KEY) -> ManagementClient:
    return ManagementClient(pool, cpa.url, key, clock=clock)


def unavailable(call: Any) -> ManagementUnavailable:
    with pytest.raises(ManagementUnavailable) as info:
        call()
    return info.value


def test_auth_files_sends_both_key_headers_and_reads_the_version(
        cpa: FakeCliProxy, pool: UpstreamClient, clock: HandClock) -> None:
    client = client_for(cpa, pool, clock)
    assert client.status()["state"] == "unknown"
    files = client.auth_files()
    assert [f["email"] for f in files] == ["alice@example.com", "carol@example.com"]
    # The join key is CPA's §1.5 index of the file's path.
    assert files[0]["auth_index"] == auth_index_for(
        "claude", "/home/cpa/.cli-proxy-api/claude-alice@example.com.json")
    assert "access_token" not in files[1]  # credentials are never listed
    sent = cpa.management_requests("/auth-files")[-1]
    assert sent.header("Authorization") == f"Bearer {DEFAULT_KEY}"
    assert sent.header("X-Management-Key") == DEFAULT_KEY
    assert client.status() == {"state": "ok", "version": "v6.9.30", "last_error": None,
                               "retry_after_s": None}
    assert client.version == "v6.9.30"


def test_usage_document_and_usage_queue(cpa: FakeCliProxy, pool: UpstreamClient,
                                        clock: HandClock) -> None:
    alice = cpa.accounts[0]
    cpa.add_usage("claude-sonnet-4-5-20250929", alice, tokens={"input_tokens": 10,
                                                               "total_tokens": 10})
    client = client_for(cpa, pool, clock)
    doc = client.usage()
    models = doc["usage"]["apis"]["sk-other-client"]["models"]
    assert models["claude-sonnet-4-5-20250929"]["details"][0]["auth_index"] == \
        alice.auth_index
    # v6 has no usage queue: that one route is missing, management itself works.
    missing = unavailable(lambda: client.usage_queue(10))
    assert (missing.reason, missing.endpoint_only) == ("disabled", True)
    assert unavailable(lambda: client.usage_queue(10)).endpoint_only
    assert len(cpa.management_requests("/usage-queue")) == 1  # remembered, not asked again
    assert client.status()["state"] == "ok"
    assert client.usage()["usage"]["total_requests"] == 1

    cpa.usage_style = "v7"
    cpa.add_usage("gpt-5-codex", cpa.accounts[1])
    clock.advance(601)  # a missing route is looked at again after 10 minutes
    popped = client.usage_queue(10)
    assert [r["model"] for r in popped] == ["claude-sonnet-4-5-20250929", "gpt-5-codex"]
    assert popped[1]["auth_index"] == cpa.accounts[1].auth_index
    assert client.usage_queue(10) == []  # destructive pop
    assert cpa.management_requests("/usage-queue")[-1].query == "count=10"
    assert unavailable(client.usage).endpoint_only  # v7 removed /usage


def test_wrong_key_backs_off_without_hammering(cpa: FakeCliProxy, pool: UpstreamClient,
                                               clock: HandClock) -> None:
    client = client_for(cpa, pool, clock, key="not-the-key")
    reasons: list[str] = []
    with logged_events("accounts", lambda r: (event_name(r), event_fields(r))) as events:
        # A loop asking every 15 seconds for half an hour.
        for _ in range(120):
            try:
                client.auth_files()
            except ManagementUnavailable as exc:
                reasons.append(exc.reason)
            clock.advance(15)
    assert reasons[0] == "unauthorized"
    assert set(reasons[1:]) <= {"backoff", "unauthorized"}
    # At 0, 1 and 6 minutes (the next at 31): three attempts in half an hour, far from
    # the fifth that would ban this IP.
    assert len(cpa.management_requests()) == reasons.count("unauthorized") == 3
    assert cpa.ban_counter() == 3 and not cpa.is_banned()
    status = client.status()
    assert status["state"] == "unauthorized"
    assert "invalid management key" in status["last_error"]
    assert status["retry_after_s"] > 0
    warnings = [f for name, f in events if name == "accounts.management_unavailable"]
    assert warnings and warnings[0]["state"] == "unauthorized"
    assert "not-the-key" not in json.dumps(events, default=str)


def test_a_right_key_after_failures_resets_the_backoff(cpa: FakeCliProxy,
                                                       pool: UpstreamClient,
                                                       clock: HandClock) -> None:
    client = client_for(cpa, pool, clock)
    cpa.key = "rotated"
    assert unavailable(client.auth_files).reason == "unauthorized"
    assert unavailable(client.auth_files).reason == "backoff"
    cpa.key = DEFAULT_KEY  # the operator fixed CPA's config
    clock.advance(61)
    assert len(client.auth_files()) == 2
    assert client.status()["state"] == "ok" and cpa.ban_counter() == 0


def test_banned_ip_waits_for_the_ban_to_end(cpa: FakeCliProxy, pool: UpstreamClient,
                                            clock: HandClock) -> None:
    cpa.banned_until["127.0.0.1"] = clock.time() + 30 * 60  # someone else got us banned
    client = client_for(cpa, pool, clock)
    banned = unavailable(client.auth_files)
    assert banned.reason == "banned"
    assert banned.retry_after_s is not None and 30 * 60 <= banned.retry_after_s <= 30 * 60 + 10
    status = client.status()
    assert status["state"] == "banned" and "Try again in 30m0s" in status["last_error"]
    clock.advance(29 * 60)
    assert unavailable(client.usage).reason == "backoff"
    assert len(cpa.management_requests()) == 1  # nothing sent while banned
    clock.advance(60 + 10)
    assert client.usage()["usage"]["total_requests"] == 0
    assert client.status()["state"] == "ok"


def test_an_answer_over_the_size_cap_rests_its_route(
        cpa: FakeCliProxy, pool: UpstreamClient, clock: HandClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(management, "MAX_BODY_BYTES", 2_000)  # stands for 64 MiB
    for _ in range(20):
        cpa.add_usage("claude-sonnet-4-5-20250929", cpa.accounts[0])
    client = client_for(cpa, pool, clock)
    first = unavailable(client.usage)
    assert (first.reason, first.endpoint_only) == ("bad_response", True)
    for _ in range(20):  # ten minutes of a 30-second loop: not downloaded again
        clock.advance(29)
        assert unavailable(client.usage).reason == "bad_response"
    assert len(cpa.management_requests("/usage")) == 1
    assert len(client.auth_files()) == 2  # the rest of the API is still used
    clock.advance(30)
    unavailable(client.usage)
    assert len(cpa.management_requests("/usage")) == 2


def test_disabled_management_is_remembered_and_rechecked_rarely(
        cpa: FakeCliProxy, pool: UpstreamClient, clock: HandClock) -> None:
    cpa.management_enabled = False
    client = client_for(cpa, pool, clock)
    first = unavailable(client.auth_files)
    assert (first.reason, first.endpoint_only) == ("disabled", False)
    for _ in range(20):  # ten minutes of a 30-second loop
        clock.advance(29)
        assert unavailable(client.usage).reason == "disabled"
    assert len(cpa.management_requests()) == 1
    assert client.status()["state"] == "disabled"
    assert client.status()["version"] is None  # no management middleware, no version
    cpa.management_enabled = True
    clock.advance(30)
    assert len(client.auth_files()) == 2
    assert client.status()["state"] == "ok"


def test_management_down_is_unreachable_and_retried_with_a_growing_wait(
        cpa: FakeCliProxy, pool: UpstreamClient, clock: HandClock) -> None:
    cpa.management_down = True
    client = client_for(cpa, pool, clock)
    assert unavailable(client.auth_files).reason == "unreachable"
    assert client.status()["state"] == "unreachable"
    assert unavailable(client.auth_files).reason == "unreachable"  # waiting 5 s: not sent
    assert len(cpa.management_requests()) == 1
    clock.advance(5)
    assert unavailable(client.auth_files).reason == "unreachable"
    clock.advance(5)
    unavailable(client.auth_files)  # 10 s now: not yet
    assert len(cpa.management_requests()) == 2
    cpa.management_down = False
    clock.advance(5)
    assert len(client.auth_files()) == 2
    assert client.status()["state"] == "ok"


def test_nothing_listening_is_unreachable(pool: UpstreamClient, clock: HandClock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    client = ManagementClient(pool, f"http://127.0.0.1:{dead}", "k", clock=clock)
    error = unavailable(client.auth_files)
    assert error.reason == "unreachable" and "refused" in error.message.lower()
    assert client.status()["state"] == "unreachable"


def test_without_a_key_nothing_is_sent(cpa: FakeCliProxy, pool: UpstreamClient,
                                       clock: HandClock) -> None:
    client = client_for(cpa, pool, clock, key="")
    assert unavailable(client.auth_files).reason == "not_configured"
    assert client.status()["state"] == "not_configured"
    assert cpa.management_requests() == []


def test_api_call_sends_the_relay_request(cpa: FakeCliProxy, pool: UpstreamClient,
                                          clock: HandClock) -> None:
    carol = cpa.accounts[1]
    client = client_for(cpa, pool, clock)
    header = {"Authorization": "Bearer $TOKEN$", "Chatgpt-Account-Id": "acct-7f3e"}
    try:
        status, text = client.api_call(carol.auth_index, "GET",
                                       "https://chatgpt.com/backend-api/wham/usage", header)
    except ManagementUnavailable as exc:  # no canned quota bodies: CPA's 502
        assert exc.reason == "bad_response" and "request failed" in exc.message
    else:
        assert status == 200 and json.loads(text)
    assert cpa.api_calls[-1] == {"auth_index": carol.auth_index, "method": "GET",
                                 "url": "https://chatgpt.com/backend-api/wham/usage",
                                 "header": header}
    assert client.status()["state"] == "ok"  # one refused relay is not a broken API


def test_the_key_is_never_logged(cpa: FakeCliProxy, pool: UpstreamClient,
                                 clock: HandClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = client_for(cpa, pool, clock)
    client.auth_files()
    client.usage()
    cpa.key = "other"
    unavailable(client.auth_files)
    assert caplog.records  # something was logged …
    assert DEFAULT_KEY not in caplog.text  # … never the key


@pytest.mark.parametrize(("value", "expected"), [
    ("20260820110203-3fa2c91d0be47a15-5e0c9a11", ("3fa2c91d0be47a15", "5e0c9a11")),
    ("  20260820110203-3fa2c91d0be47a15-5e0c9a11 ", ("3fa2c91d0be47a15", "5e0c9a11")),
    ("20260820110203-id:odd-index-5e0c9a11", None),  # '-' inside the middle: not a shape
    ("20260820110203-id:odd.index-5e0c9a11", ("id:odd.index", "5e0c9a11")),
    ("2026082011020-3fa2c91d0be47a15-5e0c9a11", None),
    ("20260820110203--5e0c9a11", None),
    ("20260820110203-3fa2c91d0be47a15-", None),
    ("20260820110203-3fa2c91d0be47a15", None),
    ("garbage", None), ("", None), (None, None),
    ("20260820110203-" + "a" * 300 + "-5e0c9a11", None),
])
def test_trace_header_is_parsed_defensively(value: str | None,
                                            expected: tuple[str, str] | None) -> None:
    trace = parse_trace_id(value)
    assert (None if trace is None else (trace.auth_index, trace.request_id)) == expected


def test_versions_and_ban_waits() -> None:
    assert parse_version("v7.2.84") == (7, 2, 84)
    assert parse_version("6.9.30-rc1") == (6, 9, 30)
    assert parse_version("dev") is None and parse_version(None) is None
    assert parse_ban_wait("IP banned due to too many failed attempts. Try again in "
                          "29m59.5s") == pytest.approx(1799.5)
    assert parse_ban_wait("Try again in 1h0m0s") == 3600
    assert parse_ban_wait("Try again in soon") is None
    assert parse_ban_wait("nothing") is None
