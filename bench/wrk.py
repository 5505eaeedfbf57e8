"""Load runs with wrk: a Lua script for a POST with a JSON body, and its ``--latency`` report.

The accounting check needs wrk's count to be exactly the calls the proxy answered, so no
request may be in flight when wrk stops. wrk 4.1 stops its threads from a 100 ms timer,
mid-request; so each thread gets one connection (``-t`` = ``-c``) and its Lua
``response()`` hook stops the thread itself after the first complete response past its own
deadline (LuaJIT's FFI reads CLOCK_MONOTONIC). wrk's ``-d`` is one second longer, as a
backstop, and req/s is computed over the Lua deadline, not wrk's ``-d``.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from processes import Procs

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_LATENCY = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def lua_string(data: bytes) -> str:
    """*data* as a Lua long-bracket string whose level no byte sequence in it closes."""
    level = 0
    while b"]" + b"=" * level + b"]" in data:
        level += 1
    eq = "=" * level
    # A newline right after the opening bracket would be dropped by Lua: bodies have none.
    return f"[{eq}[{data.decode()}]{eq}]"


_STOP_AT_DEADLINE = """
local ffi = require("ffi")
ffi.cdef[[
struct bench_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clock_id, struct bench_timespec *tp);
]]
local ts = ffi.new("struct bench_timespec")
local CLOCK_MONOTONIC = 1

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local deadline

function init(args)
  deadline = now() + tonumber(args[1])
end

-- Stop after a complete response, so no request is left in flight.
function response(status, headers, body)
  if now() >= deadline then
    wrk.thread:stop()
  end
end
"""


def lua_script(body: bytes, headers: dict[str, str]) -> str:
    """POST *body* with *headers*; each thread stops after its deadline (the first arg)."""
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(body)}"]
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    return "\n".join(lines) + "\n" + _STOP_AT_DEADLINE


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    output: str

    @property
    def clean(self) -> bool:
        """Every response was 2xx and no socket failed."""
        return self.non_2xx == 0 and self.socket_errors == 0


def parse_wrk(output: str, seconds: float | None = None) -> WrkResult:
    """The figures of a ``wrk --latency`` report; ValueError if it has none.

    With *seconds* (how long the threads ran), req/s is computed over it rather than
    taken from wrk, which divides by its whole ``-d``.
    """
    latencies = {q: float(v) * _UNITS_MS[u] for q, v, u in _LATENCY.findall(output)}
    requests = _REQUESTS.search(output)
    rps = _RPS.search(output)
    if requests is None or rps is None or "50" not in latencies or "99" not in latencies:
        raise ValueError(f"unexpected wrk output:\n{output}")
    errors = _SOCKET_ERRORS.search(output)
    non_2xx = _NON_2XX.search(output)
    count = int(requests.group(1))
    if seconds is None:
        seconds = float(requests.group(2)) * _UNITS_MS[requests.group(3)] / 1000
    return WrkResult(
        requests=count,
        seconds=seconds,
        rps=count / seconds if seconds else float(rps.group(1)),
        p50_ms=latencies["50"], p99_ms=latencies["99"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        output=output,
    )


def run_wrk(procs: Procs, wrk: str, url: str, script: Path, *, connections: int,
            duration_s: int, log: Path) -> WrkResult:
    """Run wrk against *url* (one thread per connection) and parse its report."""
    duration_s = max(1, duration_s)  # wrk takes whole seconds only
    argv = [wrk, "-t", str(connections), "-c", str(connections), "-d", f"{duration_s + 1}s",
            "--timeout", "10s", "--latency", "-s", str(script), url, "--", str(duration_s)]
    proc = procs.spawn("wrk", argv, log=log, stdout_pipe=True)
    try:
        out, _ = proc.communicate(timeout=duration_s + 60)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"wrk did not finish: {' '.join(argv)}") from exc
    finally:
        procs.stop(proc)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}:\n{text}")
    return parse_wrk(text, seconds=duration_s)
