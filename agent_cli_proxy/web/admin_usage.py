"""Admin views of recorded usage: per day, per range, per account, trend, stats, logs.

JSON field names are the TypeScript original's, so dashboards written for it keep
working. Days are UTC dates (``YYYY-MM-DD``), as the original bucketed them. Every
parameter is checked in ``web.params`` first; storage only ever sees typed values.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from werkzeug.wrappers import Request, Response

from agent_cli_proxy.config import describe
from agent_cli_proxy.storage import reports
from agent_cli_proxy.storage.requests import get_request, iso_utc
from agent_cli_proxy.web import params
from agent_cli_proxy.web.errors import json_error, json_response
from agent_cli_proxy.web.services import ProxyServices


def _today(services: ProxyServices) -> dt.date:
    return dt.datetime.fromtimestamp(services.clock.time(), dt.UTC).date()


def usage_today(services: ProxyServices, request: Request) -> Response:
    day = _today(services).isoformat()
    rows = reports.usage_for_day(services.db, day)
    return json_response({"date": day, **reports.usage_summary(rows), "breakdown": rows})


def usage_range(services: ProxyServices, request: Request) -> Response:
    start, end = params.day_range(request.args)
    return json_response(reports.usage_range(services.db, start.isoformat(), end.isoformat()))


def usage_models(services: ProxyServices, request: Request) -> Response:
    day = params.day(request.args, "day", _today(services))
    return json_response(reports.usage_for_day(services.db, day.isoformat()))


def usage_providers(services: ProxyServices, request: Request) -> Response:
    day = params.day(request.args, "day", _today(services))
    return json_response(reports.providers_for_day(services.db, day.isoformat()))


def usage_accounts(services: ProxyServices, request: Request) -> Response:
    day = params.day(request.args, "day", _today(services))
    return json_response(reports.account_usage_for_day(services.db, day.isoformat()))


def usage_accounts_range(services: ProxyServices, request: Request) -> Response:
    start, end = params.day_range(request.args)
    return json_response(reports.account_usage_range(services.db, start.isoformat(),
                                                     end.isoformat()))


def usage_accounts_summary(services: ProxyServices, request: Request) -> Response:
    today = _today(services)
    start, end = params.day_range(request.args, default_from=today - dt.timedelta(days=7),
                                  default_to=today)
    return json_response(reports.accounts_summary(services.db, start.isoformat(),
                                                  end.isoformat()))


def usage_trend(services: ProxyServices, request: Request) -> Response:
    hours = params.integer(request.args, "hours", 24, 1, params.MAX_TREND_HOURS)
    now = services.clock.time()
    # Whole hours: the first bucket starts on the hour, hours - 1 hours before this one.
    since = (int(now) // 3600 - (hours - 1)) * 3600
    buckets = reports.usage_trend(
        services.db, since_iso=iso_utc(since), provider=params.text(request.args, "provider"),
        model=params.text(request.args, "model"), tool=params.text(request.args, "tool"))
    for bucket in buckets:
        # The original's field names too, so dashboards written for it keep working.
        bucket["timestamp"] = bucket["hour"][:19] + "Z"
        bucket["tokens"] = bucket["total_tokens"]
    return json_response({"hours": hours, "since": iso_utc(since), "buckets": buckets})


def stats(services: ProxyServices, request: Request) -> Response:
    return json_response(reports.stats(services.db))


def logs(services: ProxyServices, request: Request) -> Response:
    args = request.args
    lifecycle, http_status = params.status(args)
    rows = reports.list_logs(
        services.db, limit=params.integer(args, "limit", 50, 1, params.MAX_LIMIT),
        offset=params.integer(args, "offset", 0, 0, params.MAX_OFFSET),
        tool=params.text(args, "tool"), client_id=params.text(args, "client_id"),
        model=params.text(args, "model"), lifecycle_status=lifecycle, http_status=http_status)
    return json_response(rows)


def log_by_id(services: ProxyServices, request: Request, row_id: int) -> Response:
    row = get_request(services.db, row_id)
    if row is None:
        return json_error(404, "not_found", f"no request log with id {row_id}")
    return json_response(reports.normalize_log_row(row))


def config(services: ProxyServices, request: Request) -> Response:
    """The effective configuration, every secret redacted."""
    settings = services.settings
    body: dict[str, Any] = {"config": describe(settings), "env_file": settings.env_file,
                            "warnings": list(settings.warnings)}
    return json_response(body)
