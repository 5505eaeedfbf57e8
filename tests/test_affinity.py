"""PROXY_CPU_AFFINITY: parsing, and what ``serve`` does with it (in child processes: pinning
the test process would slow every other test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent_cli_proxy.config import ConfigError, load_settings
from tests.cli.test_shutdown import serving
from tests.fake_upstream import FakeUpstream

linux_only = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"),
                                reason="CPU affinity is Linux-only")


def _settings(tmp_path: Path, value: str | None) -> object:
    env = {"DB_PATH": str(tmp_path / "p.db"), "CLI_PROXY_API_URL": "http://127.0.0.1:9"}
    if value is not None:
        env["PROXY_CPU_AFFINITY"] = value
    (tmp_path / "empty.env").touch()
    return load_settings(environ=env, env_file=str(tmp_path / "empty.env"))


@pytest.mark.parametrize(("raw", "value"), [
    (None, "auto"), ("auto", "auto"), (" OFF ", "off"), ("0", 0), ("3", 3)])
def test_values(tmp_path: Path, raw: str | None, value: object) -> None:
    assert _settings(tmp_path, raw).proxy_cpu_affinity == value  # type: ignore[attr-defined]


@pytest.mark.parametrize("raw", ["on", "-1", "1.5", "0,1", "999999"])
def test_bad_values_are_named(tmp_path: Path, raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, raw)
    assert [i.name for i in caught.value.issues] == ["PROXY_CPU_AFFINITY"]
    assert "auto, off, or a CPU number" in caught.value.issues[0].message


def _pin_in_child(setting: str, cpus: set[int] | None = None) -> dict[str, object]:
    """pin_process(*setting*) in a fresh interpreter (first confined to *cpus*) that has
    started a thread before: the answer and every thread's CPUs afterwards."""
    code = f"""
import json, os, threading
from agent_cli_proxy.affinity import pin_process
from agent_cli_proxy.config import ConfigError
cpus = {sorted(cpus) if cpus else None!r}
if cpus:
    os.sched_setaffinity(0, set(cpus))
started = threading.Event(); stop = threading.Event()
def idle():
    started.set(); stop.wait()
threading.Thread(target=idle).start(); started.wait()
try:
    cpu = pin_process({setting!r})
except ConfigError as exc:
    cpu = "error: " + exc.issues[0].message
threads = sorted(sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task"))
later = []
t = threading.Thread(target=lambda: later.append(sorted(os.sched_getaffinity(0))))
t.start(); t.join(); stop.set()
print(json.dumps({{"cpu": cpu, "threads": threads, "later": later[0]}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    return dict(json.loads(out.stdout))


@linux_only
def test_auto_pins_every_thread_to_one_allowed_cpu() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    result = _pin_in_child("auto")
    if len(allowed) < 2:
        assert result["cpu"] is None
        return
    cpu = result["cpu"]
    assert cpu in allowed
    # The thread that existed before, the main thread, and one started afterwards.
    assert result["threads"] == [[cpu], [cpu]]
    assert result["later"] == [cpu]


@linux_only
def test_auto_leaves_a_process_that_is_already_on_one_cpu() -> None:
    one = min(os.sched_getaffinity(0))
    assert _pin_in_child("auto", {one}) == {"cpu": None, "threads": [[one], [one]],
                                           "later": [one]}


@linux_only
def test_off_and_explicit_cpu() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    assert _pin_in_child("off")["later"] == allowed
    last = allowed[-1]
    assert _pin_in_child(last)["threads"] == [[last], [last]]  # type: ignore[arg-type]
    refused = _pin_in_child(max(allowed) + 1)["cpu"]  # type: ignore[arg-type]
    assert refused == (f"error: CPU {max(allowed) + 1} is not one this process may run on "
                       f"({', '.join(map(str, allowed))})")


@linux_only
def test_serve_runs_on_one_cpu_and_says_which(tmp_path: Path, upstream: FakeUpstream) -> None:
    allowed = os.sched_getaffinity(0)
    with serving(tmp_path, upstream) as (proc, _port):
        listening = proc.startup_events  # type: ignore[attr-defined]
        assert listening[-1] == "server.listening"
        pinned = os.sched_getaffinity(proc.pid)
        threads = {frozenset(os.sched_getaffinity(int(t)))
                   for t in os.listdir(f"/proc/{proc.pid}/task")}
    if len(allowed) >= 2:
        assert len(pinned) == 1 and pinned <= allowed
        assert threads == {frozenset(pinned)}
    else:
        assert pinned == allowed


@linux_only
def test_serve_refuses_a_cpu_it_may_not_use(tmp_path: Path) -> None:
    from tests.cli.test_serve import _env

    bad = str(max(os.sched_getaffinity(0)) + 1)
    result = subprocess.run([sys.executable, "-m", "agent_cli_proxy", "serve"],
                            env=_env(tmp_path, PROXY_CPU_AFFINITY=bad,
                                     CLI_PROXY_API_URL="http://127.0.0.1:9"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert f"PROXY_CPU_AFFINITY: CPU {bad} is not one this process may run on" in (
        result.stderr)
