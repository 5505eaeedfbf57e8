"""Settings: every environment variable the proxy reads, declared once in ``FIELDS``.

This module owns the names, defaults, meanings and validation of the configuration, where
it comes from (defaults < env file < process environment; secrets may also come from
``NAME_FILE`` or systemd credentials), and the default locations of the state files. It turns
all of that into one frozen :class:`Settings` value or one :class:`ConfigError` that names
every bad variable. Nothing else in the package reads ``os.environ`` for configuration.

The ``FIELDS`` table is the single source: ``Settings`` has one attribute per row (the
variable's name in lower case), ``describe()`` walks it for ``doctor`` and ``/admin/config``,
and ``man/agent-cli-proxy.env.5`` documents every row (a test keeps them in step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from agent_cli_proxy.config_values import (
    ONE_LINE_MESSAGE,
    Parser,
    ValueProblems,
    boolean,
    cch_positions,
    choice,
    cpu_affinity,
    display_url,
    exactly_one,
    http_url,
    integer,
    is_header_safe,
    is_loopback,
    milliseconds,
    name_mapping,
    pricing_aliases,
    pricing_overrides,
    stripped,
    text,
)
from agent_cli_proxy.envfile import UnreadableFile, read_env_file, read_text
from agent_cli_proxy.providers.custom_config import ProviderSet, check_document, resolve_tokens

APP = "agent-cli-proxy"
# Read at call time, so tests can point them elsewhere.
SYSTEM_ENV_FILE = "/etc/agent-cli-proxy/agent-cli-proxy.env"
SYSTEM_STATE_DIR = "/var/lib/agent-cli-proxy"  # systemd StateDirectory=agent-cli-proxy
SYSTEM_CACHE_DIR = "/var/cache/agent-cli-proxy"  # systemd CacheDirectory=agent-cli-proxy
DEFAULT_UPSTREAM_URL = "http://localhost:8317"
_PLACEHOLDERS = frozenset(
    {"admin", "changeme", "change-me", "default", "example", "password", "proxy", "secret", "token"}
)


class ConfigIssue(NamedTuple):
    """One problem: the variable (or ``file:line``, or ``NAME[i]``) and what is wrong."""

    name: str
    message: str


class ConfigError(Exception):
    """The configuration is unusable; ``issues`` lists every problem found, in order."""

    code = "CONFIG_INVALID"

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        text = "; ".join(f"{issue.name} {issue.message}" for issue in self.issues)
        super().__init__(f"Configuration validation failed: {text}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.issues,))


# --- The table ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Computed:
    """A default that depends on other settings; ``doc`` says how, for humans."""

    doc: str
    compute: Callable[[_Context], Any]


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # the environment variable
    default: Any  # value when unset, or a Computed
    parse: Parser  # raw -> value | None (unset); raises ValueError with the message
    help: str  # why this setting exists and why the default is what it is
    section: str
    secret: bool = False  # masked by describe(); also read from NAME_FILE and credentials

    @property
    def attr(self) -> str:
        return self.name.lower()

    @property
    def default_doc(self) -> str:
        if isinstance(self.default, Computed):
            return self.default.doc
        if isinstance(self.default, str):
            return self.default
        return json.dumps(_plain(self.default), separators=(",", ":"))


class _Context:
    """What computed defaults and cross-field rules may look at while settings are built."""

    def __init__(self, process_env: Mapping[str, str], file_values: Mapping[str, str],
                 env_file: str | None, home: str | None) -> None:
        self.process_env = process_env
        self.file_values = file_values
        self.env_file = env_file
        self.home = home
        # The system service is the case where the /etc env file is the one in use.
        self.system = env_file is not None and os.path.abspath(env_file) == SYSTEM_ENV_FILE
        self.values: dict[str, Any] = {}
        self.issues: list[ConfigIssue] = []
        self.warnings: list[str] = []
        self.secrets_from_env_file: list[str] = []

    def lookup(self, name: str) -> str | None:
        """The raw value by layer: process environment first, then the env file."""
        if name in self.process_env:
            return self.process_env[name]
        return self.file_values.get(name)


def _upstream_url_default(ctx: _Context) -> str:
    if (ctx.lookup("CLI_PROXY_API_URL") or "").strip():
        return DEFAULT_UPSTREAM_URL  # present but invalid: the parser has reported it
    if ctx.lookup("PROXY_LOCAL_OK") == "1":
        ctx.warnings.append(
            f"CLI_PROXY_API_URL defaulted to {DEFAULT_UPSTREAM_URL} because PROXY_LOCAL_OK=1")
    else:
        ctx.issues.append(ConfigIssue(
            "CLI_PROXY_API_URL", "is required unless PROXY_LOCAL_OK=1 permits the local default"))
    return DEFAULT_UPSTREAM_URL


def _xdg_dir(ctx: _Context, variable: str, fallback: str) -> str | None:
    # The XDG spec says relative values are invalid and must be ignored.
    value = (ctx.lookup(variable) or "").strip()
    if value and os.path.isabs(value):
        return value
    return os.path.join(ctx.home, fallback) if ctx.home else None


def _state_path(filename: str, *, cache: bool = False) -> Computed:
    """A file under the data directory; for the system service under its StateDirectory=,
    or its CacheDirectory= when *cache* (what can be fetched again, which a backup skips)."""
    def system_dir() -> str:
        return SYSTEM_CACHE_DIR if cache else SYSTEM_STATE_DIR

    def compute(ctx: _Context) -> str:
        data_dir = ctx.values["agent_cli_proxy_data_dir"]
        if not data_dir and ctx.system:
            data_dir = system_dir()
        if not data_dir:
            xdg = _xdg_dir(ctx, "XDG_DATA_HOME", os.path.join(".local", "share"))
            # No home at all: the original's relative fallback (and a warning, see below).
            data_dir = os.path.join(xdg, APP) if xdg else "data"
        return os.path.join(data_dir, filename)

    return Computed(
        f"$AGENT_CLI_PROXY_DATA_DIR/{filename}, else {system_dir()}/{filename} for the "
        f"system service, else $XDG_DATA_HOME/{APP}/{filename}, "
        f"else ~/.local/share/{APP}/{filename}", compute)


_REQUIRE_KEY_DEFAULT = Computed(
    "true unless PROXY_HOST is loopback and TRUST_PROXY_HEADERS is false",
    # Behind a trusted reverse proxy the clients come from elsewhere, even on loopback.
    lambda ctx: not is_loopback(ctx.values["proxy_host"]) or ctx.values["trust_proxy_headers"])

UPSTREAM = "Upstream"
SERVER = "Server"
ACCESS = "Access control"
PROVIDERS = "Custom providers"
CLAUDE = "Claude Code compatibility"
STORAGE = "Storage"
PRICING = "Pricing and cost"
ACCOUNTS = "CLIProxyAPI accounts and quotas"
PLANS = "Plans"
DASHBOARD = "Dashboard"
LOGGING = "Logging"

# Order matters twice: it is the order issues are reported in (the upstream URL first, as in the
# original), and a Computed default may only read rows above it.
FIELDS: tuple[Field, ...] = (
    Field("CLI_PROXY_API_URL", Computed("required", _upstream_url_default), http_url,
          "Base URL every proxied request is forwarded to (CLIProxyAPI or compatible); required "
          "so a proxy never silently talks to the wrong upstream.", UPSTREAM),
    Field("PROXY_LOCAL_OK", False, exactly_one,
          "Exactly 1 lets CLI_PROXY_API_URL default to http://localhost:8317.", UPSTREAM),
    Field("CLI_PROXY_API_KEY", "proxy", text,
          "Bearer token the proxy sends upstream in place of the client's; 'proxy' is "
          "CLIProxyAPI's sample key.", UPSTREAM, secret=True),
    Field("UPSTREAM_CONNECT_TIMEOUT_MS", 10_000, milliseconds,
          "TCP connect timeout only (the original used it as time to response headers, which "
          "aborted slow non-streaming calls).", UPSTREAM),
    Field("UPSTREAM_TIMEOUT_MS", 300_000, milliseconds,
          "A non-streaming call must be complete this long after it was sent; a started "
          "stream must never be silent this long. LLM calls can think for minutes.",
          UPSTREAM),
    Field("UPSTREAM_STREAM_FIRST_BYTE_TIMEOUT_MS", 900_000, milliseconds,
          "Longest wait for the headers and first chunk of a streaming request; upstreams queue "
          "streams (Claude) for a long time before the first event.", UPSTREAM),
    Field("UPSTREAM_MAX_RETRIES", 2, integer(0, 100),
          "Retries of a failed upstream call: any call that never reached the upstream, an "
          "idempotent one also on 502/503/504 (0 disables).", UPSTREAM),
    Field("RATE_LIMIT_MAX_RETRIES", 3, integer(1, 20),
          "Retries of an idempotent call answered 429, after its Retry-After (at most 5 s; "
          "longer waits and LLM calls go back to the client).", UPSTREAM),
    Field("UPSTREAM_CIRCUIT_BREAKER_OPEN_AFTER_FAILURES", 5, integer(1, 1000),
          "Consecutive upstream failures that open a breaker and fail fast.", UPSTREAM),
    Field("UPSTREAM_CIRCUIT_BREAKER_HALF_OPEN_AFTER_MS", 30_000, milliseconds,
          "Time an open breaker waits before letting a probe request through.", UPSTREAM),
    Field("UPSTREAM_CIRCUIT_BREAKER_EVICT_AFTER_MS", 300_000, milliseconds,
          "Idle time after which a closed breaker is forgotten (bounds memory).", UPSTREAM),

    Field("PROXY_HOST", "127.0.0.1", stripped,
          "Address to listen on; loopback so nothing is exposed by accident.", SERVER),
    Field("PROXY_PORT", 3100, integer(1, 65535),
          "TCP port to listen on; the original's port, so clients need no change.", SERVER),
    Field("PROXY_THREADS", 256, integer(1, 10_000),
          "Worker threads, at most; started as requests need them. An open stream holds one "
          "for its whole life, so this bounds concurrent streams (waitress's default of 4 is "
          "not enough).",
          SERVER),
    Field("PROXY_WORKERS", 1, integer(1, 64),
          "Server processes sharing the port and the database. The first serves the admin "
          "API, metrics and background work; the others only LLM calls. One is plenty for a "
          "few coding agents; one per CPU for hundreds of calls a second.", SERVER),
    Field("PROXY_CPU_AFFINITY", "auto", cpu_affinity,
          "Keep each server process on one CPU: auto (the one it starts on, the next ones for "
          "more workers, when it may use several), off, or a CPU number. Its threads share one "
          "interpreter lock, and handing that lock between CPUs cost about a third of the CPU "
          "time per call.", SERVER),
    Field("SHUTDOWN_DRAIN_MS", 10_000, milliseconds,
          "On SIGTERM/SIGINT, how long open requests and streams may finish before they are "
          "cut and recorded aborted (10 s, as the original).", SERVER),
    Field("MAX_RESPONSE_BODY_BYTES", 52_428_800, integer(1, 10_000_000_000),
          "Largest non-streaming upstream answer relayed (50 MiB, as the original); event "
          "streams are not limited.", SERVER),
    Field("MAX_REQUEST_BODY_BYTES", 25_000_000, integer(1, 1_000_000_000),
          "Largest request body accepted (413 above); 25 MB fits long contexts with images.",
          SERVER),
    Field("TRUST_PROXY_HEADERS", False, boolean,
          "Believe X-Forwarded-* headers; only behind a trusted reverse proxy.", SERVER),
    Field("DISABLE_SHUTDOWN_HANDLERS", False, boolean,
          "Do not install signal handlers (for embedding and tests).", SERVER),

    Field("PROXY_REQUIRE_API_KEY", _REQUIRE_KEY_DEFAULT, boolean,
          "Require a managed proxy key on proxied requests; cannot be false off loopback.", ACCESS),
    Field("ADMIN_API_KEY", "", text,
          "Extra token required by /admin/* and /metrics (which are loopback-only anyway).",
          ACCESS, secret=True),
    Field("CLIENT_NAME_MAPPING", MappingProxyType({}), name_mapping,
          "key=name,key=name: display names for client API keys.", ACCESS),

    Field("PROVIDERS_JSON", "", text,
          "Inline custom-provider document; wins over PROVIDERS_CONFIG_PATH.", PROVIDERS),
    Field("PROVIDERS_CONFIG_PATH", "", text,
          "JSON file with custom providers; read and checked at startup.", PROVIDERS),

    Field("CLAUDE_CODE_VERSION", "2.1.87", text,
          "Claude Code version claimed by the /v1/messages transform.", CLAUDE),
    Field("CCH_SALT", "59cf53e54c78", text, "Salt of the billing-header hash.", CLAUDE),
    Field("CCH_POSITIONS", (4, 7, 20), cch_positions,
          "JSON array of character positions used by the billing-header hash.", CLAUDE),
    Field("TOOL_PREFIX", "mcp_", text,
          "Prefix added to tool names on /v1/messages and removed from responses.", CLAUDE),

    Field("AGENT_CLI_PROXY_DATA_DIR", "", text,
          "Directory for the default DB_PATH and PRICING_CACHE_PATH.", STORAGE),
    Field("DB_PATH", _state_path("proxy.db"), text,
          "SQLite database; under the XDG data dir so it survives upgrades.", STORAGE),
    Field("STALE_PENDING_MAX_AGE_MS", 300_000, milliseconds,
          "At startup, pending rows are marked aborted (a crash left them): all of them when "
          "this proxy is alone on the database, else those older than this.",
          STORAGE),

    Field("PRICING_URL", "https://models.dev/api.json", http_url,
          "Where prices are fetched (models.dev's JSON shape); point it at a mirror on hosts "
          "without internet access.", PRICING),
    Field("PRICING_CACHE_PATH", _state_path("pricing-cache.json", cache=True), text,
          "Cached models.dev prices, so costs work offline after one fetch.", PRICING),
    Field("PRICING_CACHE_TTL_MS", 3_600_000, milliseconds,
          "Age after which the cached prices are refetched on use.", PRICING),
    Field("PRICING_REFRESH_INTERVAL_MS", 21_600_000, milliseconds,
          "Interval of the background price refresh (6 h).", PRICING),
    Field("READY_PRICING_MAX_AGE_MS", 86_400_000, milliseconds,
          "/ready reports prices older than this as degraded (24 h).", PRICING),
    Field("PRICING_OVERRIDES_JSON", MappingProxyType({}), pricing_overrides,
          "JSON {model: {input, output, cache_read?, cache_write?, reasoning?}} in USD per "
          "million tokens, used instead of models.dev for those models.", PRICING),
    Field("PRICING_ALIASES_JSON", MappingProxyType({}), pricing_aliases,
          "JSON {model prefix: pricing model}: price models models.dev does not list.", PRICING),
    Field("COST_BACKFILL_INTERVAL_MS", 1_800_000, milliseconds,
          "Interval of the job that prices rows whose price was missing.", PRICING),
    Field("COST_BACKFILL_LOOKBACK_MS", 604_800_000, milliseconds,
          "How far back the cost backfill looks (7 days).", PRICING),
    Field("COST_BACKFILL_CHUNK_SIZE", 500, integer(1, 100_000),
          "Rows per backfill transaction; small keeps write locks short.", PRICING),

    Field("CLIPROXY_MGMT_KEY", "", text,
          "CLIProxyAPI management key; enables per-account correlation.", ACCOUNTS, secret=True),
    Field("CLIPROXY_CORRELATION_INTERVAL_MS", 15_000, milliseconds,
          "Interval of the account correlation job.", ACCOUNTS),
    Field("CLIPROXY_CORRELATION_LOOKBACK_MS", 300_000, milliseconds,
          "Age of the newest rows and usage details the correlator considers.", ACCOUNTS),
    Field("CLIPROXY_AUTH_DIR", "", text,
          "CLIProxyAPI auth-file directory; enables subscription quota probes.", ACCOUNTS),
    Field("QUOTA_REFRESH_INTERVAL_MS", 300_000, milliseconds,
          "Interval of the quota probes.", ACCOUNTS),
    Field("QUOTA_REFRESH_TIMEOUT_MS", 15_000, milliseconds,
          "Timeout of each quota probe HTTP call.", ACCOUNTS),
    Field("CLIPROXY_BINARY_PATH", "", text,
          "cli-proxy-api executable, for OAuth login jobs.", ACCOUNTS),
    Field("CLIPROXY_CONFIG_PATH", "", text,
          "CLIProxyAPI config.yaml, for OAuth login jobs.", ACCOUNTS),
    Field("OAUTH_JOB_TIMEOUT_MS", 300_000, milliseconds,
          "Longest run of one OAuth login job.", ACCOUNTS),

    Field("PLANS_JSON", "", text, "Inline subscription-plan document; wins over PLANS_PATH.",
          PLANS),
    Field("PLANS_PATH", "", text, "JSON file with subscription plans.", PLANS),

    Field("DASHBOARD_PASSWORD_HASH", "", text,
          "Password hash enabling the local admin session login.", DASHBOARD, secret=True),
    Field("DASHBOARD_SESSION_SECRET", "", text,
          "Key signing admin session cookies; random per start when empty.", DASHBOARD,
          secret=True),
    Field("DASHBOARD_SESSION_TTL_MS", 604_800_000, milliseconds,
          "Lifetime of an admin session (7 days).", DASHBOARD),
    Field("LOGIN_RATE_LIMIT_WINDOW_MS", 60_000, milliseconds,
          "Window of the login attempt limit.", DASHBOARD),
    Field("LOGIN_RATE_LIMIT_MAX_ATTEMPTS", 5, integer(1, 100),
          "Failed logins allowed per client per window.", DASHBOARD),

    Field("LOG_LEVEL", "info", choice("debug", "info", "warn", "error",
                                      aliases={"warning": "warn"}),
          "Least severe level written.", LOGGING),
    Field("LOG_FORMAT", "json", choice("json", "pretty"),
          "json: one object per line for journals; pretty: for people.", LOGGING),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Validated configuration; one attribute per ``FIELDS`` row, in the same order.

    Secrets are left out of ``repr()`` so a logged or printed Settings cannot leak them.
    """

    cli_proxy_api_url: str
    proxy_local_ok: bool
    cli_proxy_api_key: str = dataclasses.field(repr=False)
    upstream_connect_timeout_ms: int
    upstream_timeout_ms: int
    upstream_stream_first_byte_timeout_ms: int
    upstream_max_retries: int
    rate_limit_max_retries: int
    upstream_circuit_breaker_open_after_failures: int
    upstream_circuit_breaker_half_open_after_ms: int
    upstream_circuit_breaker_evict_after_ms: int
    proxy_host: str
    proxy_port: int
    proxy_threads: int
    proxy_workers: int
    proxy_cpu_affinity: str | int
    shutdown_drain_ms: int
    max_response_body_bytes: int
    max_request_body_bytes: int
    trust_proxy_headers: bool
    disable_shutdown_handlers: bool
    proxy_require_api_key: bool
    admin_api_key: str = dataclasses.field(repr=False)
    client_name_mapping: Mapping[str, str]
    providers_json: str
    providers_config_path: str
    claude_code_version: str
    cch_salt: str
    cch_positions: tuple[int, ...]
    tool_prefix: str
    agent_cli_proxy_data_dir: str
    db_path: str
    stale_pending_max_age_ms: int
    pricing_url: str
    pricing_cache_path: str
    pricing_cache_ttl_ms: int
    pricing_refresh_interval_ms: int
    ready_pricing_max_age_ms: int
    pricing_overrides_json: Mapping[str, Mapping[str, float]]
    pricing_aliases_json: Mapping[str, str]
    cost_backfill_interval_ms: int
    cost_backfill_lookback_ms: int
    cost_backfill_chunk_size: int
    cliproxy_mgmt_key: str = dataclasses.field(repr=False)
    cliproxy_correlation_interval_ms: int
    cliproxy_correlation_lookback_ms: int
    cliproxy_auth_dir: str
    quota_refresh_interval_ms: int
    quota_refresh_timeout_ms: int
    cliproxy_binary_path: str
    cliproxy_config_path: str
    oauth_job_timeout_ms: int
    plans_json: str
    plans_path: str
    dashboard_password_hash: str = dataclasses.field(repr=False)
    dashboard_session_secret: str = dataclasses.field(repr=False)
    dashboard_session_ttl_ms: int
    login_rate_limit_window_ms: int
    login_rate_limit_max_attempts: int
    log_level: str
    log_format: str
    # Not variables: what loading noticed, and which env file was read (for doctor).
    warnings: tuple[str, ...] = ()
    env_file: str | None = None

    @property
    def is_loopback_host(self) -> bool:
        return is_loopback(self.proxy_host)


# --- Loading --------------------------------------------------------------------------------


def load_settings(environ: Mapping[str, str] | None = None,
                  env_file: str | None = None) -> Settings:
    """Read the env file and *environ* (default ``os.environ``), validate, return Settings.

    Paths (env file, state files) are computed from *environ* only, so a test that passes
    its own mapping never touches the real home directory. Raises ConfigError.
    """
    return _build(_prepare(environ, env_file, strict=True))


def inspect_settings(environ: Mapping[str, str] | None = None,
                     env_file: str | None = None) -> tuple[Settings, list[ConfigIssue]]:
    """Like :func:`load_settings`, but every problem is returned instead of raised: an
    invalid value is replaced by its default, and a missing or unreadable env file by none.
    For ``doctor`` and ``paths``, which report problems and go on to look at the rest."""
    ctx = _prepare(environ, env_file, strict=False)
    return _build(ctx, strict=False), list(ctx.issues)


def _prepare(environ: Mapping[str, str] | None, env_file: str | None, *,
             strict: bool) -> _Context:
    """The context settings are built in: the environment and the env file's values.
    *strict*: a missing or unreadable env file raises ConfigError at once (nothing else
    is worth reporting before it is fixed); otherwise it is one more issue."""
    process_env: Mapping[str, str] = os.environ if environ is None else environ
    home = _home(process_env, environ is None)
    ctx = _Context(process_env, {}, None, home)
    try:
        path = _locate_env_file(ctx, env_file)
    except ConfigError as exc:
        if strict:
            raise
        ctx.issues.extend(exc.issues)
        return ctx
    if path is not None:
        try:
            file_values, problems = read_env_file(path)
        except UnreadableFile as exc:
            issue = ConfigIssue(path, f"could not be read: {exc}")
            if strict:
                raise ConfigError([issue]) from None
            ctx = _Context(process_env, {}, path, home)
            ctx.issues.append(issue)
            return ctx
        ctx = _Context(process_env, file_values, path, home)
        ctx.issues.extend(ConfigIssue(f"{path}:{p.line}", p.message) for p in problems)
    return ctx


def _home(process_env: Mapping[str, str], real: bool) -> str | None:
    home = (process_env.get("HOME") or "").strip() or None
    if home is None and real:
        home = os.path.expanduser("~") if os.path.expanduser("~") != "~" else None
    return home


def user_env_file(environ: Mapping[str, str] | None = None) -> str | None:
    """The user's env file, ``$XDG_CONFIG_HOME/agent-cli-proxy/.env`` (else under
    ``~/.config``), whether or not it exists; None without a home directory."""
    process_env: Mapping[str, str] = os.environ if environ is None else environ
    return _user_env_file(_Context(process_env, {}, None, _home(process_env, environ is None)))


def _user_env_file(ctx: _Context) -> str | None:
    config_home = _xdg_dir(ctx, "XDG_CONFIG_HOME", ".config")
    return os.path.join(config_home, APP, ".env") if config_home else None


def env_file_candidates(environ: Mapping[str, str] | None = None) -> list[str]:
    """Where an env file is looked for when none is named (nor AGENT_CLI_PROXY_ENV), in
    order: the user's, then the system service's."""
    user = user_env_file(environ)
    return [*([user] if user else []), SYSTEM_ENV_FILE]


def _locate_env_file(ctx: _Context, explicit: str | None) -> str | None:
    """--env-file, else $AGENT_CLI_PROXY_ENV (both must exist), else the first that exists
    of the user's and the system's file."""
    if explicit is not None:
        if not os.path.exists(explicit):
            raise ConfigError([ConfigIssue("--env-file", f"{explicit} does not exist")])
        return explicit
    named = (ctx.process_env.get("AGENT_CLI_PROXY_ENV") or "").strip()
    if named:
        if not os.path.exists(named):
            raise ConfigError([ConfigIssue("AGENT_CLI_PROXY_ENV", f"{named} does not exist")])
        return named
    user = _user_env_file(ctx)
    for candidate in [*([user] if user else []), SYSTEM_ENV_FILE]:
        if os.path.exists(candidate):
            return candidate
    return None


def _raw_secret(ctx: _Context, name: str) -> str | None:
    """First non-empty of: NAME in the process environment, the file NAME_FILE names, systemd's
    $CREDENTIALS_DIRECTORY/NAME, NAME in the env file. An empty value never hides a secret
    supplied another way (container setups often pass NAME="" next to NAME_FILE)."""
    if ctx.process_env.get(name):
        return ctx.process_env[name]
    reference = (ctx.process_env.get(f"{name}_FILE") or ctx.file_values.get(f"{name}_FILE")
                 or "").strip()
    credentials = (ctx.process_env.get("CREDENTIALS_DIRECTORY") or "").strip()
    credential = os.path.join(credentials, name) if credentials else ""
    for path, issue_name in ((reference, f"{name}_FILE"), (credential, name)):
        if not path or (path == credential and not os.path.exists(path)):
            continue
        try:
            value = read_text(path).rstrip("\r\n")
        except UnreadableFile as exc:
            # An explicit source that fails is an error, not a reason to try the next one.
            ctx.issues.append(ConfigIssue(issue_name, f"could not read {path}: {exc}"))
            return None
        if value:
            return value
    if ctx.file_values.get(name):
        ctx.secrets_from_env_file.append(name)
        return ctx.file_values[name]
    return None


def _build(ctx: _Context, *, strict: bool = True) -> Settings:
    for field in FIELDS:
        raw = _raw_secret(ctx, field.name) if field.secret else ctx.lookup(field.name)
        value = None
        if raw is not None and field.secret and not is_header_safe(raw):
            # Secrets go into HTTP headers; a stray second line in a key file would make
            # every request fail, with the key quoted in the error. The value is never shown.
            ctx.issues.append(ConfigIssue(field.name, ONE_LINE_MESSAGE))
            raw = None
        if raw is not None:
            try:
                value = field.parse(raw)
            except ValueProblems as problems:
                ctx.issues.extend(ConfigIssue(field.name + suffix, message)
                                  for suffix, message in problems.parts)
            except ValueError as exc:
                ctx.issues.append(ConfigIssue(field.name, str(exc)))
        if value is None:
            # Unset, blank or invalid: the default keeps later rules working on sane values.
            default = field.default
            value = default.compute(ctx) if isinstance(default, Computed) else default
        ctx.values[field.attr] = value
    _check_cross_field(ctx)
    if ctx.issues and strict:
        raise ConfigError(ctx.issues)
    return Settings(**ctx.values, warnings=tuple(ctx.warnings), env_file=ctx.env_file)


def _check_cross_field(ctx: _Context) -> None:
    values = ctx.values
    if not is_loopback(values["proxy_host"]) and not values["proxy_require_api_key"]:
        ctx.issues.append(ConfigIssue(
            "PROXY_REQUIRE_API_KEY", "must be true when PROXY_HOST is not loopback"))
    elif values["trust_proxy_headers"] and not values["proxy_require_api_key"]:
        ctx.issues.append(ConfigIssue(
            "PROXY_REQUIRE_API_KEY", "must be true when TRUST_PROXY_HEADERS is true (clients "
            "then reach the proxy from elsewhere, through the reverse proxy)"))
    local_ok = ctx.lookup("PROXY_LOCAL_OK")
    if local_ok not in (None, "", "1"):
        ctx.warnings.append("PROXY_LOCAL_OK is ignored: only the value 1 enables it")
    _check_providers(ctx)
    weak = ["ADMIN_API_KEY", "CLIPROXY_MGMT_KEY", "DASHBOARD_SESSION_SECRET"]
    upstream_host = urlsplit(values["cli_proxy_api_url"]).hostname or ""
    if not is_loopback(values["proxy_host"]) or not is_loopback(upstream_host):
        weak.append("CLI_PROXY_API_KEY")  # "proxy" is fine between two loopback processes
    for name in weak:
        if str(values[name.lower()]).strip().lower() in _PLACEHOLDERS:
            ctx.warnings.append(f"{name} uses a placeholder value; replace it with a unique "
                                "random secret before exposure")
    for name in ("DB_PATH", "PRICING_CACHE_PATH"):
        path = values[name.lower()]
        if path != ":memory:" and not os.path.isabs(path):
            ctx.warnings.append(f"{name} should be an absolute path; {path} depends on the "
                                "working directory")
    if ctx.env_file and ctx.secrets_from_env_file:
        try:
            readable_by_all = bool(os.stat(ctx.env_file).st_mode & stat.S_IROTH)
        except OSError:
            readable_by_all = False
        if readable_by_all:
            ctx.warnings.append(
                f"{ctx.env_file} is readable by every user but holds "
                f"{', '.join(ctx.secrets_from_env_file)}; make it mode 0600 or 0640, or use "
                "NAME_FILE or systemd credentials")


def _check_providers(ctx: _Context) -> None:
    """The custom-provider document: readable, valid JSON, and valid per spec §8.4."""
    inline = ctx.values["providers_json"]
    path = ctx.values["providers_config_path"]
    if inline and path:
        ctx.warnings.append("PROVIDERS_CONFIG_PATH is ignored because PROVIDERS_JSON is set")
    try:
        found = _provider_document(inline, path)
    except ConfigError as exc:
        ctx.issues.extend(exc.issues)
        return
    if found is not None:
        ctx.issues.extend(provider_document_issues(found[1]))


def _provider_document(inline: str, path: str) -> tuple[str, object] | None:
    """(variable, parsed document) of the custom providers, None when none is configured;
    ConfigError when the file cannot be read or the JSON is invalid."""
    if inline:
        name, source = "PROVIDERS_JSON", inline
    elif path:
        name = "PROVIDERS_CONFIG_PATH"
        try:
            source = read_text(path)
        except UnreadableFile as exc:
            raise ConfigError([ConfigIssue(name, f"could not be read: {exc}")]) from None
    else:
        return None
    try:
        return name, json.loads(source)
    except ValueError as exc:
        raise ConfigError([ConfigIssue(name, f"must be valid JSON: {exc}")]) from None


def provider_document_issues(document: object) -> list[ConfigIssue]:
    """Schema problems of a parsed provider document (spec §8.4), named like
    ``providers[0].id``; messages never repeat a value (it may be a secret)."""
    return [ConfigIssue(name, message) for name, message in check_document(document)[1]]


def load_providers(settings: Settings, environ: Mapping[str, str] | None = None
                   ) -> ProviderSet:
    """The custom providers *settings* name, read afresh (the file may have changed since
    the settings were loaded), with ``auth.env`` tokens looked up in *environ* (default
    ``os.environ``) and then in the env file *settings* came from. ConfigError lists every
    problem."""
    found = _provider_document(settings.providers_json, settings.providers_config_path)
    if found is None:
        return ProviderSet()
    name, document = found
    providers, problems = check_document(document)
    if problems:
        raise ConfigError(ConfigIssue(n, m) for n, m in problems)
    process_env: Mapping[str, str] = os.environ if environ is None else environ
    file_values: dict[str, str] = {}
    if settings.env_file is not None:
        # It was read fine when the settings were loaded; if it is gone now, only the
        # tokens it held go missing (and are reported as unset).
        with contextlib.suppress(UnreadableFile):
            file_values = read_env_file(settings.env_file)[0]

    def lookup(variable: str) -> str | None:
        return process_env.get(variable) or file_values.get(variable)

    providers, warnings = resolve_tokens(providers, lookup)
    return ProviderSet(providers, source=name,
                       path=settings.providers_config_path if name != "PROVIDERS_JSON" else None,
                       warnings=tuple(warnings))


def default_providers_path(environ: Mapping[str, str] | None = None) -> str | None:
    """Where ``providers init`` puts a new providers file when PROVIDERS_CONFIG_PATH is
    unset: ``$XDG_CONFIG_HOME/agent-cli-proxy/providers.json``, else under ``~/.config``;
    None without a home directory. (Beside the user's env file.)"""
    env_file = user_env_file(environ)
    return os.path.join(os.path.dirname(env_file), "providers.json") if env_file else None


# --- Helpers for the rest of the program ----------------------------------------------------


def ensure_directories(settings: Settings) -> None:
    """Create the parent directories of DB_PATH and PRICING_CACHE_PATH (0700 for new ones)."""
    issues: list[ConfigIssue] = []
    for name in ("DB_PATH", "PRICING_CACHE_PATH"):
        path = getattr(settings, name.lower())
        if not path or path == ":memory:":
            continue
        directory = os.path.dirname(os.path.abspath(path))
        try:
            make_private_dirs(directory)
        except OSError as exc:
            issues.append(ConfigIssue(
                name, f"directory {directory} could not be created: {exc.strerror or exc}"))
            continue
        if not os.access(directory, os.W_OK | os.X_OK):
            issues.append(ConfigIssue(name, f"directory {directory} is not writable"))
    if issues:
        raise ConfigError(issues)


def make_private_dirs(directory: str) -> None:
    """Create *directory* and its missing parents, each new one 0700: they hold the
    database, its neighbours or secrets. (os.makedirs(mode=) only applies the mode to the
    last component.)"""
    missing: list[str] = []
    while not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path):
                raise


def settings_for_tests(**overrides: Any) -> Settings:
    """Valid settings without reading any file or the real environment, with *overrides*
    given by attribute name (values are used as given, e.g. ``proxy_port=0``). The database
    is ``:memory:``; the pricing cache path is per process under the temp directory and is
    not created here. Pass ``db_path``/``pricing_cache_path`` under ``tmp_path`` for disk."""
    ctx = _Context({"PROXY_LOCAL_OK": "1"}, {}, None, None)
    base = _build(ctx)
    defaults: dict[str, Any] = {
        "db_path": ":memory:",
        "pricing_cache_path": os.path.join(
            tempfile.gettempdir(), f"{APP}-test-{os.getpid()}", "pricing-cache.json"),
        "warnings": (),
    }
    if "proxy_host" in overrides and "proxy_require_api_key" not in overrides:
        defaults["proxy_require_api_key"] = not is_loopback(overrides["proxy_host"])
    return dataclasses.replace(base, **{**defaults, **overrides})


def describe(settings: Settings) -> dict[str, object]:
    """Every variable's effective value as JSON-ready data, secrets shown as "[set]" or ""."""
    out: dict[str, object] = {}
    for field in FIELDS:
        value = getattr(settings, field.attr)
        if field.secret:
            out[field.name] = "[set]" if value else ""
        elif field.name == "CLIENT_NAME_MAPPING":
            # The keys are client API keys: show only the names they map to.
            out[field.name] = sorted(set(value.values()))
        elif field.name == "PROVIDERS_JSON":
            # May hold provider credentials (auth.value); the providers view redacts those.
            out[field.name] = "[set]" if value else ""
        elif field.parse is http_url and value:
            out[field.name] = display_url(value)  # user:password@ stays out of view
        else:
            out[field.name] = _plain(value)
    return out


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
