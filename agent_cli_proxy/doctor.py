"""``doctor``: every check of an installation, as one report for people or for bug reports.

This module owns the report's shape (``--json`` schema version 1, below), the order of the
checks and the local ones: configuration, file permissions, database, custom providers,
pricing cache. The checks that talk to other processes are in
:mod:`agent_cli_proxy.doctor_network`.

Nothing here changes anything: the database is opened read-only
(:mod:`agent_cli_proxy.storage.inspect`), no directory or file is created, no migration
runs. Secrets never appear: settings are shown through ``config.describe()`` and no
message repeats a secret's value.

JSON (schema ``"version": 1``; new keys may be added, none removed or renamed)::

    {"version": 1, "agent_cli_proxy": "0.1.0", "python": "3.11.2",
     "dependencies": {"werkzeug": "3.1.9", "urllib3": "2.8.0", "waitress": "3.0.2",
                      "click": "8.1.8"},
     "checks": [{"name": "config", "status": "pass" | "warn" | "fail",
                 "message": "one line for people", "details": {...}}, ...],
     "summary": {"pass": 6, "warn": 2, "fail": 0}}
"""

from __future__ import annotations

import grp
import json
import os
import platform
import pwd
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

from agent_cli_proxy import __version__, config
from agent_cli_proxy.clock import SYSTEM_CLOCK, Clock
from agent_cli_proxy.config import ConfigError, ConfigIssue, Settings
from agent_cli_proxy.envfile import UnreadableFile, read_env_file

Status = Literal["pass", "warn", "fail"]
SCHEMA_VERSION = 1
DEPENDENCIES = ("werkzeug", "urllib3", "waitress", "click")
CHECK_NAMES = ("config", "permissions", "database", "providers", "pricing_cache", "upstream",
               "cliproxy_management", "service")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message,
                "details": self.details}


@dataclass(frozen=True, slots=True)
class Context:
    """What every check may look at."""

    settings: Settings
    issues: tuple[ConfigIssue, ...]  # configuration problems (settings fall back to defaults)
    clock: Clock
    timeout_s: float  # each network check's limit


def run(env_file: str | None = None, *, environ: Mapping[str, str] | None = None,
        clock: Clock = SYSTEM_CLOCK, timeout_s: float = 2.0) -> dict[str, Any]:
    """Run every check; the report as JSON-ready data (the schema above)."""
    # Imported here: it builds on this module's Check and Context.
    import agent_cli_proxy.doctor_network as doctor_network

    settings, issues = config.inspect_settings(environ, env_file)
    ctx = Context(settings, tuple(issues), clock, timeout_s)
    checks: list[Callable[[Context], Check]] = [
        check_config, check_permissions, check_database, check_providers,
        check_pricing_cache, doctor_network.check_upstream,
        doctor_network.check_cliproxy_management, doctor_network.check_service]
    results = [c(ctx) for c in checks]
    summary = {status: sum(1 for r in results if r.status == status)
               for status in ("pass", "warn", "fail")}
    return {"version": SCHEMA_VERSION, "agent_cli_proxy": __version__,
            "python": platform.python_version(), "dependencies": dependency_versions(),
            "checks": [r.as_dict() for r in results], "summary": summary}


def dependency_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in DEPENDENCIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def failed(report: Mapping[str, Any]) -> bool:
    return bool(report["summary"]["fail"])


def render_text(report: Mapping[str, Any]) -> str:
    """The report for people: one line per check, then its particulars."""
    deps = ", ".join(f"{k} {v or 'missing'}" for k, v in report["dependencies"].items())
    lines = [f"agent-cli-proxy {report['agent_cli_proxy']} (Python {report['python']}; "
             f"{deps})"]
    for check in report["checks"]:
        lines.append(f"{check['status'].upper():4} {check['name']}: {check['message']}")
        lines += [f"     - {item}" for item in _text_items(check)]
    summary = report["summary"]
    lines.append(f"summary: {summary['pass']} pass, {summary['warn']} warn, "
                 f"{summary['fail']} fail")
    return "\n".join(lines)


def _text_items(check: Mapping[str, Any]) -> list[str]:
    details = check["details"]
    items: list[str] = []
    items += [f"{i['name']}: {i['message']}" for i in details.get("issues", [])]
    items += list(details.get("warnings", []))
    items += [f"{f['path']}: {p}" for f in details.get("files", []) for p in f["problems"]]
    items += list(details.get("integrity", []) if details.get("integrity") != ["ok"] else [])
    return items


# --- Local checks ---------------------------------------------------------------------------


def check_config(ctx: Context) -> Check:
    settings = ctx.settings
    details: dict[str, Any] = {
        "envFile": settings.env_file,
        "issues": [{"name": i.name, "message": i.message} for i in ctx.issues],
        "warnings": list(settings.warnings),
        # Every effective value, secrets as "[set]": what a bug report needs.
        "settings": config.describe(settings)}
    source = f"env file {settings.env_file}" if settings.env_file else "no env file"
    if ctx.issues:
        return Check("config", "fail", f"{len(ctx.issues)} problem(s) ({source}); the "
                     "proxy will not start (exit status 78)", details)
    if settings.warnings:
        return Check("config", "warn", f"valid with {len(settings.warnings)} warning(s) "
                     f"({source})", details)
    return Check("config", "pass", f"valid ({source})", details)


def _file_facts(path: str) -> dict[str, Any] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"path": path, "error": exc.strerror or str(exc), "problems": [
            f"cannot be examined: {exc.strerror or exc}"]}
    return {"path": path, "mode": f"{stat.S_IMODE(st.st_mode):04o}",
            "owner": _name(pwd.getpwuid, st.st_uid), "group": _name(grp.getgrgid, st.st_gid),
            "uid": st.st_uid, "gid": st.st_gid, "problems": []}


def _name(lookup: Callable[[int], Any], number: int) -> str:
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


def check_permissions(ctx: Context) -> Check:
    """The env file (secrets) and the database: who may read and write them."""
    files: list[dict[str, Any]] = []
    env_file = ctx.settings.env_file
    if env_file is not None:
        facts = _file_facts(env_file)
        if facts is not None and "error" not in facts:
            mode = int(facts["mode"], 8)
            secrets = _secrets_in(env_file)
            if mode & stat.S_IWOTH:
                facts["problems"].append("writable by every user: anyone can redirect the "
                                         "proxy; chmod o-w")
            if mode & stat.S_IROTH and secrets:
                facts["problems"].append(f"readable by every user but holds "
                                         f"{', '.join(secrets)}; chmod 0600 (or 0640)")
        if facts is not None:
            files.append({"kind": "env_file", **facts})
    db_path = ctx.settings.db_path
    if db_path != ":memory:":
        for path in (db_path, db_path + "-wal"):
            facts = _file_facts(path)
            if facts is None:
                continue
            if "error" not in facts:
                _database_problems(ctx, path, facts)
            files.append({"kind": "database", **facts})
    problems = [p for f in files for p in f["problems"]]
    details = {"files": files}
    if problems:
        return Check("permissions", "warn", f"{len(problems)} problem(s)", details)
    if not files:
        return Check("permissions", "pass", "no env file or database to examine", details)
    return Check("permissions", "pass", ", ".join(f"{f['path']} {f['mode']} {f['owner']}:"
                                                   f"{f['group']}" for f in files), details)


def _secrets_in(env_file: str) -> list[str]:
    try:
        values = read_env_file(env_file)[0]
    except UnreadableFile:
        return []
    return [f.name for f in config.FIELDS if f.secret and values.get(f.name)]


def _database_problems(ctx: Context, path: str, facts: dict[str, Any]) -> None:
    mode = int(facts["mode"], 8)
    if mode & stat.S_IROTH:
        facts["problems"].append("readable by every user (it records who used which "
                                 "model, and key names); chmod 0600")
    if not os.access(path, os.R_OK | os.W_OK):
        facts["problems"].append("this user cannot write it; a proxy run as this user "
                                 "could not record calls")
    if _is_system(ctx.settings):
        try:
            service_uid = pwd.getpwnam(config.APP).pw_uid
        except KeyError:
            return
        if facts["uid"] != service_uid:
            facts["problems"].append(f"owned by {facts['owner']}, but the system service "
                                     f"runs as {config.APP}; chown {config.APP}: {path}")


def _is_system(settings: Settings) -> bool:
    return (settings.env_file is not None
            and os.path.abspath(settings.env_file) == config.SYSTEM_ENV_FILE)


def check_database(ctx: Context) -> Check:
    from agent_cli_proxy.storage.inspect import inspect_database

    report = inspect_database(ctx.settings.db_path)
    details = report.as_dict()
    if not report.exists:
        return Check("database", "warn", f"no database at {report.path} yet: 'agent-cli-proxy "
                     "db init' or the first start creates it", details)
    if report.error is not None:
        return Check("database", "fail", f"{report.path} cannot be read: {report.error}",
                     details)
    if report.integrity != ("ok",):
        return Check("database", "fail", f"{report.path} failed PRAGMA integrity_check "
                     "(restore a backup, or .recover it with sqlite3)", details)
    version = f"schema {report.schema_version} of {details['latestSchemaVersion']}"
    if report.unknown:
        return Check("database", "warn", f"{version}; written by a newer agent-cli-proxy "
                     f"({', '.join(report.unknown)})", details)
    if report.pending:
        return Check("database", "warn", f"{version}; {len(report.pending)} migration(s) "
                     "pending: 'agent-cli-proxy db migrate' or the next start applies them",
                     details)
    return Check("database", "pass", f"{report.path}: {version}, integrity ok", details)


def check_providers(ctx: Context) -> Check:
    settings = ctx.settings
    source = ("PROVIDERS_JSON" if settings.providers_json else
              "PROVIDERS_CONFIG_PATH" if settings.providers_config_path else None)
    details: dict[str, Any] = {"source": source,
                               "path": settings.providers_config_path or None}
    if source is None:
        return Check("providers", "pass", "no custom providers configured", details)
    try:
        found = config.load_providers(settings)
    except ConfigError as exc:
        details["issues"] = [{"name": i.name, "message": i.message} for i in exc.issues]
        return Check("providers", "fail", f"{source} is invalid: {len(exc.issues)} "
                     "problem(s)", details)
    details.update(count=len(found.providers), ids=[p.id for p in found.providers],
                   warnings=list(found.warnings))
    status: Status = "warn" if found.warnings else "pass"
    return Check("providers", status, f"{len(found.providers)} custom provider(s) from "
                 f"{source}", details)


def check_pricing_cache(ctx: Context) -> Check:
    """Missing, unusable or old prices are a warning: costs then come from the built-in
    table or from older numbers, never from nothing."""
    from agent_cli_proxy.workers.pricing_cache import CacheInvalid, read_cache

    path = ctx.settings.pricing_cache_path
    limit_ms = ctx.settings.ready_pricing_max_age_ms
    details: dict[str, Any] = {"path": path, "exists": os.path.exists(path),
                               "maxAgeMs": limit_ms}
    fallback = "costs use the built-in price table until prices are fetched"
    try:
        data, fetched_at = read_cache(path)
    except FileNotFoundError:
        return Check("pricing_cache", "warn", f"no pricing cache at {path}; {fallback} "
                     "(the running proxy fetches them from PRICING_URL)", details)
    except CacheInvalid as exc:
        details["error"] = str(exc)
        return Check("pricing_cache", "warn", f"{path} is unusable ({exc}); {fallback}",
                     details)
    age_ms = max(0, round((ctx.clock.time() - fetched_at) * 1000))
    details.update(ageMs=age_ms, fetchedAt=fetched_at, providers=len(data))
    if age_ms > limit_ms:
        return Check("pricing_cache", "warn", f"prices are {_hours(age_ms)} old (more than "
                     "READY_PRICING_MAX_AGE_MS): the proxy has not refreshed them; is "
                     "PRICING_URL reachable?", details)
    return Check("pricing_cache", "pass", f"prices fetched {_hours(age_ms)} ago", details)


def _hours(ms: int) -> str:
    return f"{ms / 3_600_000:.1f} h"


def to_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False)
