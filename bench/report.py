"""The results table (Markdown) and the machine description printed beside it."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import repo_path  # noqa: F401  (the checkout's agent_cli_proxy)

import agent_cli_proxy

Check = Callable[[float | None, float | None], bool | None]
"""Whether a row's (direct, proxy) medians meet its target; None when not measured."""


@dataclass(frozen=True)
class Row:
    """One line of the table. ``direct`` is None where only the proxy is measured."""

    measurement: str
    unit: str
    direct: float | None
    proxy: float | None
    compare: str = ""
    """``added`` (proxy - direct), ``ratio`` (proxy / direct) or empty."""
    target: str = ""
    met: bool | None = None
    note: str = ""


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("req/s", "rows/s"):
        return f"{value:,.0f} {unit}"
    if unit == "fds":
        return f"{value:.0f}"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.3f} ms" if abs(value) < 10 else f"{value:.1f} ms"
    return f"{value:g} {unit}"


def _compare(row: Row) -> str:
    if row.direct is None or row.proxy is None or not row.compare:
        return "—"
    if row.compare == "ratio":
        return f"x{row.proxy / row.direct:.2g}" if row.direct else "—"
    added = row.proxy - row.direct
    return ("+" if added >= 0 else "-") + fmt(abs(added), row.unit)


def _met(row: Row) -> str:
    if row.note and row.proxy is None:
        return "**no** (failed)"
    if row.met is None:
        return "—"
    return "yes" if row.met else "**no**"


def markdown_table(rows: list[Row]) -> str:
    lines = ["| measurement | direct | proxy | added / ratio | target | met? |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        proxy = fmt(row.proxy, row.unit) if row.proxy is not None or not row.note else "FAILED"
        lines.append(f"| {row.measurement} | {fmt(row.direct, row.unit)} | {proxy} | "
                     f"{_compare(row)} | {row.target or '—'} | {_met(row)} |")
    notes = [f"* {row.measurement}: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return str(exc)
    return (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr) else ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_info(nginx: str, wrk: str, extra: dict[str, str]) -> list[str]:
    """``key: value`` lines describing where and with what the figures were taken."""
    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPUs": f"{os.cpu_count()} x {_cpu_model()}",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "agent-cli-proxy": agent_cli_proxy.__version__,
        "packages": ", ".join(f"{p} {_version(p)}"
                              for p in ("waitress", "werkzeug", "urllib3", "click")),
        "nginx": _tool_version([nginx, "-v"]),
        "wrk": _tool_version([wrk, "--version"]).split(" Copyright")[0],
        **extra,
    }
    return [f"{key}: {value}" for key, value in info.items()]

