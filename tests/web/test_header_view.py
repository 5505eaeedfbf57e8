"""HeaderView answers exactly what werkzeug's request headers answer."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from werkzeug.datastructures import EnvironHeaders

from agent_cli_proxy.usage.identify import RULES, TOOLS, identify
from agent_cli_proxy.web.header_view import HeaderView

NAMES = st.sampled_from(["content-type", "Content-Length", "x-api-key", "X_API_KEY",
                         "session_id", "session-id", "user-agent", "authorization",
                         "x-claude-code-session-id", "originator", "host", "x-title", ""])
ENVIRON_KEYS = st.sampled_from(["CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_X_API_KEY",
                                "HTTP_SESSION_ID", "HTTP_USER_AGENT", "HTTP_AUTHORIZATION",
                                "HTTP_X_CLAUDE_CODE_SESSION_ID", "HTTP_ORIGINATOR",
                                "HTTP_HOST", "HTTP_X_TITLE", "HTTP_CONTENT_TYPE", "PATH_INFO"])
VALUES = st.sampled_from(["", "v", "claude-cli/2.1.87 (external, cli)", "codex_cli_rs/0.1",
                          "Bearer sk-x", "opencode", " spaced "])


@given(st.dictionaries(ENVIRON_KEYS, VALUES), st.lists(NAMES, max_size=8))
def test_same_answers_as_werkzeug(environ: dict[str, Any], names: list[str]) -> None:
    ours, theirs = HeaderView(environ), EnvironHeaders(environ)
    for name in names:
        assert ours.get(name) == theirs.get(name)


@given(st.dictionaries(ENVIRON_KEYS, VALUES))
def test_identify_sees_the_same_request(environ: dict[str, Any]) -> None:
    assert identify(HeaderView(environ), api_key="k") == identify(EnvironHeaders(environ),
                                                                   api_key="k")


def test_every_header_identification_reads_is_found() -> None:
    names = {c.header for r in RULES for c in r.when}
    names |= {c.header for t in TOOLS.values() for c in t.versions}
    names |= {s for t in TOOLS.values() for s in t.sessions}
    environ = {("HTTP_" + n.upper().replace("-", "_")): "x" for n in names}
    view = HeaderView(environ)
    assert all(view.get(n) == "x" for n in names)
