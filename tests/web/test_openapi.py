"""The admin OpenAPI document describes every admin route of the routing table."""

from __future__ import annotations

import re

from agent_cli_proxy.web.app import URL_MAP
from agent_cli_proxy.web.openapi import document
from tests.conftest import RunningProxy
from tests.web.test_admin import get


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_every_admin_route_is_described_with_its_methods() -> None:
    paths = document()["paths"]
    described = set()
    for rule in URL_MAP.iter_rules():
        if not (rule.endpoint.startswith("admin_") or rule.rule in ("/health", "/ready")):
            continue
        if rule.endpoint == "admin_unknown":
            continue  # the catch-all that answers 404
        path = _openapi_path(rule.rule)
        assert path in paths, f"{rule.rule} is not in the OpenAPI document"
        methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
        assert methods <= set(paths[path]), (rule.rule, methods)
        described.add(path)
    assert described == set(paths), "the document describes routes that do not exist"


def test_path_parameters_match_the_rules() -> None:
    for path, operations in document()["paths"].items():
        names = set(re.findall(r"{([a-z_]+)}", path))
        for operation in operations.values():
            in_path = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert in_path == names, path


def test_served_at_admin_openapi_json(proxy: RunningProxy) -> None:
    status, body = get(proxy.url, "/admin/openapi.json")
    assert status == 200
    assert body["openapi"].startswith("3.")
    assert "/admin/logs/{row_id}/cost-audit" in body["paths"]
