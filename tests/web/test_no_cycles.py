"""A finished call leaves no reference cycle behind: its objects are freed at once, not at
the cyclic garbage collector's next pass (which, under load, moved them to older
generations and made full collections long pauses)."""

from __future__ import annotations

import gc
import io
import json
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

from agent_cli_proxy.config import Settings
from agent_cli_proxy.storage import open_database
from agent_cli_proxy.upstream import relay
from agent_cli_proxy.web.app import ProxyApp
from agent_cli_proxy.wsgi import create_app


@pytest.fixture
def app(make_settings: Callable[..., Settings]) -> Iterator[ProxyApp]:
    settings = make_settings()
    db = open_database(settings.db_path)
    application = create_app(settings, db)
    yield application
    application.close()
    db.close()


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_s_objects_are_freed_without_the_collector(
        app: ProxyApp, no_collector: None, monkeypatch: pytest.MonkeyPatch,
        stream: bool) -> None:
    relays: list[weakref.ref[Any]] = []
    original_init = relay.Relay.__init__

    def tracking(self: relay.Relay, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        relays.append(weakref.ref(self))

    monkeypatch.setattr(relay.Relay, "__init__", tracking)
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 5, "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    environ = EnvironBuilder(path="/v1/messages", method="POST", data=body,
                             headers={"Content-Type": "application/json",
                                      "x-api-key": "sk-client"}).get_environ()
    environ["wsgi.input"] = io.BytesIO(body)
    statuses: list[str] = []
    result = app(environ, lambda status, headers, exc=None: statuses.append(status))
    received = b"".join(result)
    result.close()  # type: ignore[attr-defined]
    assert statuses == ["200 OK"] and received
    del result, environ
    (ref,) = relays
    assert ref() is None  # freed by reference counting alone
