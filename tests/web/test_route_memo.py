"""The proxy endpoint's remembered matches give werkzeug's answer for every request."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import HTTPException
from werkzeug.test import EnvironBuilder

from agent_cli_proxy.web.app import URL_MAP, ProxyApp

SEGMENTS = st.sampled_from(["v1", "v1beta", "v1alpha", "api", "admin", "health", "ready",
                            "metrics", "backend-api", "codex", "messages", "models", "",
                            "v1internal:generateContent", "keys", "1", "%2F", "é"])
PATHS = st.lists(SEGMENTS, max_size=4).map(lambda parts: "/" + "/".join(parts))
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])


def werkzeug_answer(environ: dict[str, Any]) -> object:
    try:
        return URL_MAP.bind_to_environ(environ).match()
    except HTTPException as exc:
        return type(exc)


def memo_answer(app: ProxyApp, environ: dict[str, Any]) -> object:
    try:
        return app._match(environ)
    except HTTPException as exc:
        return type(exc)


@settings(max_examples=300)
@given(st.lists(st.tuples(METHODS, PATHS), min_size=1, max_size=12))
def test_same_answer_as_werkzeug_every_time(requests: list[tuple[str, str]]) -> None:
    app = ProxyApp(services=None)  # type: ignore[arg-type]  # _match needs none
    for method, path in requests * 2:  # the second round is answered from memory
        environ = EnvironBuilder(path=path, method=method).get_environ()
        assert memo_answer(app, environ) == werkzeug_answer(environ)
