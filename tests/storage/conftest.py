"""Fixtures for storage tests: a migrated database in a temporary directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_cli_proxy.storage import Database, PendingRow, open_database

# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "proxy.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = open_database(db_path)
    yield database
    database.close()


def _pending_row(**overrides: Any) -> PendingRow:
    values: dict[str, Any] = {
        "provider": "openai", "model": "gpt-4o", "requested_model": "gpt-4o",
        "tool": "opencode", "client_id": "opencode-sess-abc", "path": "/v1/chat/completions",
        "streamed": True, "started_at": "2026-11-21T18:59:31.701Z", "request_id": "req-1",
        "meta_json": '{"method":"POST"}', "user_agent": "opencode/1.2.3", "source_ip": None,
        "agent": None, "msg_id": None, "session_id": "sess-abcdef123",
        "identify_rule": "user-agent",
    }
    values.update(overrides)
    return PendingRow(**values)


@pytest.fixture
def make_pending() -> Callable[..., PendingRow]:
    """A PendingRow with realistic defaults; keyword arguments override fields."""
    return _pending_row
