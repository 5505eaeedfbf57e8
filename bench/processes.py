"""Child processes of a benchmark run: started in their own process group, always stopped.

:class:`Procs` is the one place that spawns: every child gets a new session (so neither a
terminal's Ctrl-C nor our exit can leave a stray nginx behind unnoticed) and is registered;
``stop_all()`` in the runner's ``finally`` sends SIGTERM to each group, waits, then SIGKILL.
Also here: free loopback ports, waiting for an HTTP 200, and reading a process's memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import repo_path


class ChildFailed(RuntimeError):
    """A child process exited or never became ready; the message has its log's tail."""


def tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(line[:300] for line in text[-lines:])


class Procs:
    """Registry of the processes a run started."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, argv: list[str], *, log: Path, env: dict[str, str] | None = None,
              stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
        """Start *argv* in a new session, stderr (and stdout unless piped) to *log*."""
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else sink, stderr=sink,
                start_new_session=True, cwd=log.parent)
        self._procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
        """SIGTERM the process group of *proc*, wait, then SIGKILL it. Idempotent."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        # Members of the group may outlive its leader; the group id is the leader's pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        self._procs = [(n, p) for n, p in self._procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self._procs)):
            self.stop(proc)


def python_env() -> dict[str, str]:
    """The environment for Python children: the repository's code first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(repo_path.REPO), env.get("PYTHONPATH", "")) if p)
    return env


def proxy_command() -> list[str]:
    """``agent-cli-proxy`` beside this interpreter, else ``python -m agent_cli_proxy``."""
    script = Path(sys.executable).with_name("agent-cli-proxy")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "agent_cli_proxy"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str, timeout_s: float = 2.0) -> int | None:
    """The HTTP status of ``GET url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def wait_http_ok(url: str, proc: subprocess.Popen[bytes], *, timeout_s: float,
                 log: Path | None = None, poll_s: float = 0.005) -> float:
    """Poll *url* until it answers 200; return when (``perf_counter``) it did.

    Raises :class:`ChildFailed` if *proc* exits first or the time runs out.
    """
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise ChildFailed(f"{url}: process exited with {proc.returncode}\n{tail(log)}")
        if http_status(url, timeout_s=1.0) == 200:
            return time.perf_counter()
        time.sleep(poll_s)
    raise ChildFailed(f"{url}: no 200 within {timeout_s} s\n{tail(log)}")


def family(pid: int) -> list[int]:
    """*pid* and its child processes (the proxy's other workers, with PROXY_WORKERS)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [pid, *(int(c) for c in children.read().split())]
    except OSError:
        return [pid]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time *pid* and its children have used, from /proc/<pid>/stat."""
    total = 0
    for member in family(pid):
        with open(f"/proc/{member}/stat") as stat:
            # The command name (field 2) may hold spaces: split after its ")".
            fields = stat.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of the whole line
    return total / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    """How many file descriptors *pid* and its children have open."""
    return sum(len(os.listdir(f"/proc/{member}/fd")) for member in family(pid))


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) in KiB, from /proc/<pid>/status, summed over
    *pid* and its children (the peak is the sum of each one's peak)."""
    values: dict[str, int] = {"VmRSS": 0, "VmHWM": 0}
    for member in family(pid):
        with open(f"/proc/{member}/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in values:
                    values[name] += int(rest.split()[0])
    return values
