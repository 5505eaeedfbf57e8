"""Structured logging: one JSON object per line, named events, secrets redacted.

Every log call names an *event* (``lifecycle.finalized``, ``upstream.error`` …) and passes
fields as keywords; the line is ``{"ts", "level", "event", "component", …fields}``.
``LOG_FORMAT=pretty`` prints ``<ts> <LEVEL> <event> k=v …`` for humans instead.
Warnings and errors go to stderr, the rest to stdout, so a service manager's journal and a
shell redirect both see what they expect.

Built on the standard ``logging`` module so that libraries' own records (waitress) come
out in the same format.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

_ROOT = "agent_cli_proxy"
# "token$" and not "token": ``prompt_tokens`` and friends are data, ``access_token`` is not.
_SECRET_KEY = re.compile(
    r"authorization|api[-_]?key|token$|password|secret|cookie|credential", re.IGNORECASE
)
_REDACTED = "[REDACTED]"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}


def redact(value: Any, _depth: int = 0) -> Any:
    """Return *value* with every field whose key looks secret replaced, recursively."""
    if _depth > 8:
        return "[…]"
    if isinstance(value, Mapping):
        return {
            str(k): _REDACTED if _SECRET_KEY.search(str(k)) else redact(v, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "message": str(value)}
    return value


_worker: list[int] = []  # this process's worker index, with PROXY_WORKERS > 1


def set_worker(index: int) -> None:
    """Name this server worker in every line it logs (``"worker": index``): with several
    workers their lines interleave in one journal."""
    _worker[:] = [index]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.getMessage(),
            "component": record.name.removeprefix(_ROOT + ".") or _ROOT,
        }
        if _worker:
            line["worker"] = _worker[0]
        fields = getattr(record, "fields", None)
        if fields:
            line.update(redact(fields))
        elif not hasattr(record, "event"):
            line["event"] = "log"
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _PrettyFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None) or record.getMessage()
        parts = [_iso(record.created), record.levelname, event]
        if _worker:
            parts.append(f"worker={_worker[0]}")
        for key, value in redact(getattr(record, "fields", None) or {}).items():
            text = value if isinstance(value, str) and " " not in value else json.dumps(
                value, default=str, ensure_ascii=False)
            parts.append(f"{key}={text}")
        out = " ".join(str(p) for p in parts)
        if record.exc_info:
            out += "\n" + self.formatException(record.exc_info)
        return out


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def configure(level: str = "info", fmt: str = "json",
              stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
    """Install the handlers once per process; calling again replaces them."""
    formatter: logging.Formatter = _PrettyFormatter() if fmt == "pretty" else _JsonFormatter()
    out = logging.StreamHandler(stdout or sys.stdout)
    out.addFilter(_Below(logging.WARNING))
    err = logging.StreamHandler(stderr or sys.stderr)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(formatter)
    numeric = LEVELS.get(level.lower(), logging.INFO)
    for name in (_ROOT, "waitress"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [out, err]
        logger.setLevel(numeric if name == _ROOT else max(numeric, logging.INFO))
        logger.propagate = False


class EventLogger:
    """A logger for one component; each call is one named event with fields."""

    __slots__ = ("_logger",)

    def __init__(self, component: str) -> None:
        self._logger = logging.getLogger(f"{_ROOT}.{component}")

    def _log(self, level: int, event: str, fields: dict[str, Any], exc: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, extra={"event": event, "fields": fields},
                             exc_info=exc)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error event with the current exception's traceback attached."""
        self._log(logging.ERROR, event, fields, exc=True)


def get_logger(component: str) -> EventLogger:
    return EventLogger(component)
