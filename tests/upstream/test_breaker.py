"""The circuit breaker's state machine, with time moved by hand."""

from __future__ import annotations

import pytest

from agent_cli_proxy.upstream.breaker import Breakers


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breakers(clock: Clock) -> Breakers:
    return Breakers(open_after=3, half_open_after_s=30, evict_after_s=300, clock=clock)


def test_opens_after_consecutive_failures_and_refuses_with_retry_after(
        breakers: Breakers, clock: Clock) -> None:
    breaker = breakers.get("up")
    for _ in range(2):
        breaker.failed(breaker.admit(), "HTTP 502")
    breaker.succeeded(breaker.admit())  # a success in between resets the count
    for _ in range(3):
        breaker.failed(breaker.admit(), "HTTP 502")
    assert breaker.snapshot()["state"] == "open"
    refused = breaker.admit()
    assert (refused.allowed, refused.retry_after_s) == (False, 30)
    clock.now += 20.5
    assert breaker.admit().retry_after_s == 10


def test_half_open_lets_exactly_one_probe_through(breakers: Breakers, clock: Clock) -> None:
    breaker = breakers.get("up")
    for _ in range(3):
        breaker.failed(breaker.admit(), "timeout")
    clock.now += 30
    probe = breaker.admit()
    assert probe.allowed and probe.probe
    assert not breaker.admit().allowed  # a second caller waits while the probe runs
    breaker.succeeded(probe)
    assert breaker.snapshot()["state"] == "closed"
    assert breaker.admit().allowed


def test_a_failed_probe_reopens_for_a_full_wait(breakers: Breakers, clock: Clock) -> None:
    breaker = breakers.get("up")
    for _ in range(3):
        breaker.failed(breaker.admit(), "refused")
    clock.now += 30
    breaker.failed(breaker.admit(), "refused")
    assert breaker.snapshot()["state"] == "open"
    assert breaker.admit().retry_after_s == 30


def test_a_probe_without_verdict_frees_the_slot(breakers: Breakers, clock: Clock) -> None:
    breaker = breakers.get("up")
    for _ in range(3):
        breaker.failed(breaker.admit(), "refused")
    clock.now += 30
    breaker.released(breaker.admit())  # the client left before the upstream answered
    assert breaker.admit().probe


def test_reset_and_snapshot_fields(breakers: Breakers) -> None:
    breaker = breakers.get("up")
    for _ in range(3):
        breaker.failed(breaker.admit(), "refused")
    snap = breaker.snapshot()
    assert set(snap) == {"providerId", "state", "failures", "openedAt", "lastActivity"}
    assert (snap["providerId"], snap["state"], snap["failures"]) == ("up", "open", 3)
    breaker.reset()
    assert breaker.snapshot()["state"] == "closed" and breaker.admit().allowed


def test_idle_closed_breakers_are_evicted_open_ones_kept(breakers: Breakers,
                                                         clock: Clock) -> None:
    idle, failing = breakers.get("idle"), breakers.get("failing")
    idle.succeeded(idle.admit())
    for _ in range(3):
        failing.failed(failing.admit(), "refused")
    clock.now += 301
    breakers.get("new")  # creating a breaker sweeps idle ones
    assert breakers.find("idle") is None
    assert breakers.find("failing") is not None


def test_the_first_verdict_counts_and_a_late_release_cannot_free_another_probe(
        breakers: Breakers, clock: Clock) -> None:
    breaker = breakers.get("up")
    for _ in range(3):
        breaker.failed(breaker.admit(), "refused")
    clock.now += 30
    probe = breaker.admit()
    breaker.failed(probe, "refused")  # reopened
    clock.now += 30
    second = breaker.admit()
    assert second.probe
    breaker.released(probe)  # the first request's catch-all, after its verdict: ignored
    assert not breaker.admit().allowed  # the second probe still holds the slot


def test_answers_cut_off_after_they_started_count_as_failures(breakers: Breakers,
                                                               clock: Clock) -> None:
    breaker = breakers.get("up")
    breaker.failed(breaker.admit(), "HTTP 502")
    breaker.succeeded(breaker.admit(), answer_pending=True)
    breaker.completed()  # an answer that arrived whole clears the count
    assert breaker.snapshot()["failures"] == 0
    for _ in range(3):  # each stream started fine, then the upstream broke it off
        breaker.succeeded(breaker.admit(), answer_pending=True)
        breaker.broke_off("connection reset")
    assert (breaker.snapshot()["state"], breaker.snapshot()["failures"]) == ("open", 3)
    clock.now += 30
    probe = breaker.admit()
    breaker.broke_off("a stream admitted before it opened")  # judged already: ignored
    assert breaker.snapshot()["failures"] == 3
    breaker.succeeded(probe)
    assert breaker.snapshot()["state"] == "closed"
