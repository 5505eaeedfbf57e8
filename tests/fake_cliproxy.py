"""A fake CLIProxyAPI on a real loopback socket: data plane and management API (spec §1).

It is a :class:`tests.fake_upstream.FakeUpstream` (same request recording, same
:class:`Script` queue for misbehaving answers) that also behaves like CPA around accounts:

* Data plane: ``/v1/chat/completions``, ``/v1/messages`` and ``/v1/responses`` answer with
  the canned bodies of ``tests.wire`` (as ``default_response`` does). Each call "selects"
  an account, sets ``X-CPA-TRACE-ID: <YYYYMMDDhhmmss>-<auth_index>-<8 hex>`` (switch
  ``trace_header`` off for CPA < v7.2.84) and appends one usage event whose model,
  timestamp, latency, source, auth_index, tokens and ``failed`` agree with the answer
  (a failed call, which names no model, is counted under the model it asked for).
* Management, under ``/v0/management``: the key in ``Authorization: Bearer`` or
  ``X-Management-Key``; 401 ``missing management key`` / ``invalid management key``; 403 IP
  ban after 5 failures for 30 minutes; ``X-CPA-VERSION`` on its answers; ``GET
  /auth-files`` (auth_index from the §1.5 formula over a fake auth-dir), ``GET /usage``
  (v6 style), ``GET /usage-queue?count=N`` (v7 style, destructive pop), ``POST
  /api-call`` (answered by ``tests.fake_cliproxy_quota.answer_api_call`` when that module
  exists, else 502 ``request failed``).
* Knobs tests flip: ``management_enabled`` (False: every management route 404s, as CPA
  without a secret), ``management_down`` (management requests are hung up on),
  ``usage_style`` (``v6``: only /usage; ``v7``: only /usage-queue; ``both``),
  ``trace_header``, ``version``, ``pinned`` (the account every call selects),
  ``response_aliases`` (answer with an alias instead of the upstream model, as CPA's
  force-mapping does), ``clock`` (wall time for timestamps and the ban).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs

from agent_cli_proxy.usage.model import Usage
from tests import wire
from tests.fake_upstream import FakeUpstream, Recorded, Script, _Handler, default_response

MANAGEMENT_PREFIX = "/v0/management"
DEFAULT_KEY = "mgmt-secret-for-tests"
DEFAULT_VERSION = "v7.2.90"
# Version skew (spec §1.2): what each kind of CPA offers for attribution.
PRESETS: dict[str, dict[str, Any]] = {
    "v6": {"version": "v6.9.30", "usage_style": "v6", "trace_header": False},
    "v7-untraced": {"version": "v7.1.5", "usage_style": "v7", "trace_header": False},
    "v7": {"version": DEFAULT_VERSION, "usage_style": "v7", "trace_header": True},
}
AUTH_DIR = "/home/cpa/.cli-proxy-api"
MAX_FAILURES = 5  # CPA bans an IP after this many failed key checks …
BAN_S = 30 * 60  # … for this long
LLM_ROUTES = ("/v1/chat/completions", "/v1/messages", "/v1/responses")
# Which provider's accounts CPA would pick for each route's canned model.
_ROUTE_PROVIDER = {"/v1/messages": "claude", "/v1/chat/completions": "codex",
                   "/v1/responses": "codex"}
# The model and usage CPA accounts for each route's canned answer (CPA counts the usage
# the upstream reported to it, even when the client did not ask for it in a stream).
_ROUTE_USAGE = {"/v1/messages": (wire.CLAUDE_MODEL, wire.CLAUDE_BUCKETS),
                "/v1/chat/completions": (wire.CHAT_MODEL, wire.CHAT_BUCKETS),
                "/v1/responses": (wire.RESP_MODEL, wire.RESP_BUCKETS)}


def auth_index_for(kind: str, path: str) -> str:
    """§1.5: the first 8 bytes of sha256(lower(type) + ":" + clean absolute path), in hex."""
    seed = kind.lower() + ":" + os.path.normpath(os.path.abspath(path))
    return hashlib.sha256(seed.encode()).hexdigest()[:16]


def go_duration(seconds: float) -> str:
    """Go's ``Duration.String()`` of a whole number of seconds: ``29m59s``, ``1h0m0s``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def rfc3339_nano(epoch: float, offset_minutes: int) -> str:
    """Go's RFC3339Nano in a fixed local offset (trailing zeros of the fraction trimmed)."""
    local = epoch + offset_minutes * 60
    whole = int(local // 1)
    nanos = round((local - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


# Auth-file fields CPA never lists in /auth-files (credentials), and the scripting keys
# tests put into a file (``fake_quota`` …, read by tests.fake_cliproxy_quota).
_UNLISTED = frozenset({"access_token", "refresh_token", "token", "api_key", "cookie",
                       "metadata"})


@dataclass
class Account:
    """One credential CPA knows.

    ``file`` is the auth file as CPA holds it (credentials and test scripting included,
    plus ``auth_index``): what ``/api-call`` works from, the same dict on every call so a
    quota script can keep state in it. ``entry()`` is its ``/auth-files`` object (§1.4).
    """

    name: str
    provider: str
    email: str
    path: str
    auth_index: str
    file: dict[str, Any]
    label: str | None = None
    status: str = "active"
    status_message: str = ""
    disabled: bool = False
    unavailable: bool = False
    success: int = 0
    failed: int = 0

    def entry(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.name, "auth_index": self.auth_index, "name": self.name,
            "type": self.provider, "provider": self.provider,
            "label": self.label if self.label is not None else self.email,
            "email": self.email, "status": self.status,
            "status_message": self.status_message, "disabled": self.disabled,
            "unavailable": self.unavailable, "runtime_only": False, "source": "file",
            "path": self.path, "size": 1893, "modtime": "2026-08-01T10:00:00+02:00",
            "created_at": "2026-08-01T09:59:58Z", "updated_at": "2026-08-01T10:00:00Z",
            "last_refresh": "2026-08-01T09:59:58Z", "success": self.success,
            "failed": self.failed, "recent_requests": [], "account_type": "oauth",
            "account": self.email,
        }
        for key, value in self.file.items():
            if key in out or key in _UNLISTED or key.startswith("fake_"):
                continue
            if key == "id_token" and not isinstance(value, dict):
                continue  # a raw JWT on disk; CPA lists only its parsed claims
            out[key] = value
        return out


@dataclass
class UsageEvent:
    """One request as CPA accounts it; rendered as a v6 detail or a v7 queue record."""

    model: str
    alias: str
    endpoint: str
    at: float
    latency_ms: int
    account: Account | None
    tokens: dict[str, Any]
    breakdown: dict[str, Any] | None
    failed: bool
    status: int
    request_id: str
    api_key: str

    def detail(self, offset_minutes: int) -> dict[str, Any]:
        v6_tokens = {k: self.tokens[k] for k in ("input_tokens", "output_tokens",
                                                   "reasoning_tokens", "cached_tokens",
                                                   "total_tokens")}
        return {"timestamp": rfc3339_nano(self.at, offset_minutes),
                "latency_ms": self.latency_ms,
                "source": self.account.email if self.account else "",
                "auth_index": self.account.auth_index if self.account else "",
                "tokens": v6_tokens, "failed": self.failed}

    def record(self, offset_minutes: int) -> dict[str, Any]:
        out = self.detail(offset_minutes)
        out.update({
            "ttft_ms": min(self.latency_ms, 300), "client_ip": "127.0.0.1",
            "x_forwarded_for": "", "user_agent": "agent-cli-proxy", "tokens": self.tokens,
            "generate": not self.failed,
            "fail": {"status_code": self.status, "body": "" if not self.failed else "error"},
            "accounting_version": 2,
            "provider": self.account.provider if self.account else "",
            "executor_type": "FakeExecutor", "model": self.model, "alias": self.alias,
            "endpoint": self.endpoint, "auth_type": "oauth", "api_key": self.api_key,
            "request_id": self.request_id, "reasoning_effort": "", "service_tier": "auto",
        })
        if self.breakdown is not None:
            out["token_breakdown"] = self.breakdown
        return out


def cpa_tokens(route: str, usage: Usage | None) -> tuple[dict[str, Any],
                                                         dict[str, Any] | None]:
    """What CPA would count for a canned answer, in its own per-provider semantics (§1.7):
    Claude's input excludes the cache, OpenAI's includes it; plus the v2 breakdown."""
    tokens = dict.fromkeys(("input_tokens", "output_tokens", "reasoning_tokens",
                            "cached_tokens", "cache_read_tokens", "cache_creation_tokens",
                            "total_tokens"), 0)
    tokens["cache_read_tokens_present"] = False
    if usage is None or usage.is_empty():
        return tokens, None
    u = usage
    claude = route == "/v1/messages"
    tokens.update(
        input_tokens=u.prompt_tokens if claude else u.prompt_tokens + u.cache_read_tokens,
        output_tokens=u.completion_tokens, reasoning_tokens=u.reasoning_tokens,
        cached_tokens=u.cache_read_tokens, cache_read_tokens=u.cache_read_tokens,
        cache_read_tokens_present=True, cache_creation_tokens=u.cache_creation_tokens,
        total_tokens=u.total_tokens)
    breakdown = {
        "schema_version": 2, "quality": "complete", "total_tokens": u.total_tokens,
        "input": {"total_tokens": u.input_tokens, "uncached_tokens": u.prompt_tokens,
                  "cache_read_tokens": u.cache_read_tokens,
                  "cache_write_tokens": u.cache_creation_tokens},
        "output": {"total_tokens": u.completion_tokens,
                   "non_reasoning_tokens": u.completion_tokens - u.reasoning_tokens,
                   "reasoning_tokens": u.reasoning_tokens},
        "unclassified_tokens": 0,
    }
    return tokens, breakdown


class FakeCliProxy(FakeUpstream):
    """CPA's data plane and management API on ``127.0.0.1:<port>``."""

    def __init__(self, *, key: str = DEFAULT_KEY, version: str = DEFAULT_VERSION,
                 usage_style: str = "v7", trace_header: bool = True,
                 clock: Callable[[], float] = time.time, offset_minutes: int = 480,
                 auth_dir: str = AUTH_DIR, port: int = 0) -> None:
        super().__init__(port)
        # Nobody knows the port before the constructor returns, so no request has been
        # handled yet: swapping the handler class here is race-free.
        self.server.RequestHandlerClass = type("Handler", (_CpaHandler,), {"upstream": self})
        self.key = key
        self.version = version
        self.usage_style = usage_style
        self.trace_header = trace_header
        self.clock = clock
        self.offset_minutes = offset_minutes
        self.auth_dir = auth_dir
        self.management_enabled = True
        self.management_down = False
        self.latency_ms = 850
        self.pinned: str | None = None  # auth_index every data-plane call selects
        self.response_aliases: dict[str, str] = {}  # upstream model -> alias answered
        self.accounts: list[Account] = []
        self.events: list[UsageEvent] = []  # every request, for /usage (never popped)
        self.queue: deque[UsageEvent] = deque()  # the usage queue (popped by /usage-queue)
        self.failures: dict[str, int] = {}  # failed key checks per client IP
        self.banned_until: dict[str, float] = {}
        self.api_calls: list[dict[str, Any]] = []
        self._rr = 0
        self._request_seq = 0

    @classmethod
    def like(cls, preset: str, **options: Any) -> FakeCliProxy:
        """A CPA of one kind: ``v6`` (/usage, no trace header), ``v7-untraced`` (usage
        queue, no trace header) or ``v7`` (usage queue and trace header)."""
        return cls(**{**PRESETS[preset], **options})

    # -- scripting ------------------------------------------------------------------------

    def add_account(self, email: str, provider: str = "claude", *, name: str | None = None,
                    label: str | None = None, **extra: Any) -> Account:
        """Add an auth file ``<auth_dir>/<provider>-<email>.json`` with *extra* fields
        (``access_token``, ``id_token``, ``project_id``, ``fake_quota`` …); credentials
        stay out of its ``/auth-files`` entry."""
        file_name = name or f"{provider}-{email}.json"
        path = os.path.join(self.auth_dir, file_name)
        index = auth_index_for(provider, path)
        file = {"id": file_name, "name": file_name, "type": provider, "provider": provider,
                "email": email, "path": path, "auth_index": index, **extra}
        account = Account(name=file_name, provider=provider, email=email, path=path,
                          auth_index=index, file=file, label=label)
        with self.lock:
            self.accounts.append(account)
        return account

    def account(self, auth_index: str) -> Account:
        return next(a for a in self.accounts if a.auth_index == auth_index)

    def add_usage(self, model: str, account: Account | None, *, at: float | None = None,
                  tokens: dict[str, Any] | None = None, failed: bool = False,
                  alias: str | None = None, latency_ms: int | None = None,
                  endpoint: str = "POST /v1/chat/completions") -> UsageEvent:
        """Record a usage event that no data-plane call of the test made (another client)."""
        base, _ = cpa_tokens("", None)
        base.update(tokens or {})
        event = UsageEvent(model=model, alias=alias or model, endpoint=endpoint,
                           at=self.clock() if at is None else at,
                           latency_ms=self.latency_ms if latency_ms is None else latency_ms,
                           account=account, tokens=base, breakdown=None, failed=failed,
                           status=500 if failed else 200, request_id=self._next_request_id(),
                           api_key="sk-other-client")
        self._append(event)
        return event

    def ban_counter(self, ip: str = "127.0.0.1") -> int:
        """Failed key checks counted against *ip* (reset by a success or a ban's end)."""
        with self.lock:
            return self.failures.get(ip, 0)

    def is_banned(self, ip: str = "127.0.0.1") -> bool:
        with self.lock:
            return self.banned_until.get(ip, 0.0) > self.clock()

    def management_requests(self, path: str | None = None) -> list[Recorded]:
        """Requests made to the management API (``path`` relative to it, e.g. ``/usage``)."""
        with self.lock:
            recs = [r for r in self.requests if r.path.startswith(MANAGEMENT_PREFIX)]
        if path is not None:
            recs = [r for r in recs if r.path == MANAGEMENT_PREFIX + path]
        return recs

    def auth_files(self) -> list[dict[str, Any]]:
        with self.lock:
            entries = [a.entry() for a in self.accounts]
        return sorted(entries, key=lambda e: str(e["name"]).lower())

    # -- data plane -----------------------------------------------------------------------

    def _next_request_id(self) -> str:
        with self.lock:
            self._request_seq += 1
            seq = self._request_seq
        return hashlib.sha256(f"req-{seq}".encode()).hexdigest()[:8]

    def _append(self, event: UsageEvent) -> None:
        with self.lock:
            self.events.append(event)
            self.queue.append(event)
            if event.account is not None:
                if event.failed:
                    event.account.failed += 1
                else:
                    event.account.success += 1

    def _select(self, route: str) -> Account | None:
        with self.lock:
            usable = [a for a in self.accounts if not a.disabled]
            if self.pinned is not None:
                return next((a for a in self.accounts if a.auth_index == self.pinned), None)
            preferred = [a for a in usable if a.provider == _ROUTE_PROVIDER.get(route)]
            pool = preferred or usable
            if not pool:
                return None
            self._rr += 1
            return pool[(self._rr - 1) % len(pool)]

    def serve_llm(self, rec: Recorded, script: Script) -> Script:
        """Pick an account, stamp the trace header, alias the model, count the usage: an
        error status as a failed request without tokens."""
        account = self._select(rec.path)
        now = self.clock()
        request_id = self._next_request_id()
        pieces = script.pieces
        model, usage = _ROUTE_USAGE[rec.path]
        alias = self.response_aliases.get(model, model)
        failed = script.status >= 400
        requested = _requested_model(rec.body)
        if failed and requested:
            # No answer names a model: CPA counts the one it resolved the request to.
            alias = requested
            model = next((m for m, a in self.response_aliases.items() if a == requested),
                         requested)
        if alias != model:
            needle = f'"model":"{model}"'.encode()
            pieces = [p.replace(needle, f'"model":"{alias}"'.encode()) for p in pieces]
        headers = list(script.headers)
        if self.trace_header and account is not None:
            stamp = time.strftime("%Y%m%d%H%M%S",
                                  time.gmtime(int(now + self.offset_minutes * 60)))
            headers.append(("X-CPA-TRACE-ID", f"{stamp}-{account.auth_index}-{request_id}"))
        tokens, breakdown = cpa_tokens(rec.path, None if failed else usage)
        client_key = (rec.header("Authorization") or "").removeprefix("Bearer ").strip()
        self._append(UsageEvent(
            model=model, alias=alias, endpoint=f"POST {rec.path}", at=now,
            latency_ms=self.latency_ms, account=account, tokens=tokens, breakdown=breakdown,
            failed=failed, status=script.status, request_id=request_id,
            api_key=client_key or rec.header("X-Api-Key") or ""))
        return replace(script, pieces=pieces, headers=headers)

    # -- management -----------------------------------------------------------------------

    def _version_headers(self) -> list[tuple[str, str]]:
        return [("X-CPA-VERSION", self.version), ("X-CPA-COMMIT", "fa4e5c1"),
                ("X-CPA-BUILD-DATE", "2026-07-01T00:00:00Z")]

    def _check_key(self, rec: Recorded, ip: str) -> tuple[int, dict[str, Any]] | None:
        now = self.clock()
        with self.lock:
            until = self.banned_until.get(ip)
            if until is not None:
                if now < until:
                    return 403, {"error": "IP banned due to too many failed attempts. "
                                          f"Try again in {go_duration(until - now)}"}
                del self.banned_until[ip]
                self.failures.pop(ip, None)
            auth = rec.header("Authorization") or ""
            provided = auth[7:] if auth[:7].lower() == "bearer " else auth
            provided = provided.strip() or (rec.header("X-Management-Key") or "").strip()
            if provided == self.key:
                self.failures.pop(ip, None)
                return None
            count = self.failures[ip] = self.failures.get(ip, 0) + 1
            if count >= MAX_FAILURES:
                self.banned_until[ip] = now + BAN_S
            text = "missing management key" if not provided else "invalid management key"
            return 401, {"error": text}

    def management(self, rec: Recorded, ip: str) -> Script:
        if not self.management_enabled:
            return Script(404, content_type="text/plain", pieces=[b"404 page not found"],
                          framing="length")
        refused = self._check_key(rec, ip)
        status, payload = refused if refused is not None else self._route(rec)
        if status == 404 and payload is None:
            return Script(404, content_type="text/plain", pieces=[b"404 page not found"],
                          framing="length")
        return Script(status, pieces=[json.dumps(payload).encode()],
                      headers=self._version_headers(), framing="length")

    def _route(self, rec: Recorded) -> tuple[int, Any]:
        route = (rec.method, rec.path.removeprefix(MANAGEMENT_PREFIX))
        query = parse_qs(rec.query)
        if route == ("GET", "/auth-files"):
            files = self.auth_files()
            for param in ("name", "auth_index"):
                if param in query:
                    wanted = query[param][0]
                    files = [f for f in files if wanted in (f.get(param), f.get("id"))]
            return 200, {"files": files}
        if route == ("GET", "/usage") and self.usage_style in ("v6", "both"):
            return 200, self._usage_document()
        if route == ("GET", "/usage-queue") and self.usage_style in ("v7", "both"):
            try:
                count = int(query.get("count", ["1"])[0])
            except ValueError:
                return 400, {"error": "invalid count"}
            with self.lock:
                popped = [self.queue.popleft() for _ in range(min(max(count, 0),
                                                                 len(self.queue)))]
            return 200, [e.record(self.offset_minutes) for e in popped]
        if route == ("POST", "/api-call"):
            return self._api_call(rec)
        return 404, None

    def _usage_document(self) -> dict[str, Any]:
        with self.lock:
            events = list(self.events)
        apis: dict[str, Any] = {}
        by_day: dict[str, int] = {}
        by_hour: dict[str, int] = {}
        total_tokens = failures = 0
        for event in events:
            # Keyed by the client's own API key, in plaintext: a secret the proxy must
            # never log or store.
            api = apis.setdefault(event.api_key or event.endpoint,
                                  {"total_requests": 0, "total_tokens": 0, "models": {}})
            model = api["models"].setdefault(event.model, {"total_requests": 0,
                                                           "total_tokens": 0, "details": []})
            tokens = int(event.tokens["total_tokens"])
            for node in (api, model):
                node["total_requests"] += 1
                node["total_tokens"] += tokens
            model["details"].append(event.detail(self.offset_minutes))
            stamp = rfc3339_nano(event.at, self.offset_minutes)
            by_day[stamp[:10]] = by_day.get(stamp[:10], 0) + 1
            by_hour[stamp[11:13]] = by_hour.get(stamp[11:13], 0) + 1
            total_tokens += tokens
            failures += event.failed
        return {"failed_requests": failures, "usage": {
            "total_requests": len(events), "success_count": len(events) - failures,
            "failure_count": failures, "total_tokens": total_tokens, "apis": apis,
            "requests_by_day": by_day, "requests_by_hour": by_hour,
            "tokens_by_day": {}, "tokens_by_hour": {}}}

    def _api_call(self, rec: Recorded) -> tuple[int, Any]:
        try:
            body = json.loads(rec.body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return 400, {"error": "invalid body"}
        with self.lock:
            self.api_calls.append(body)
        try:
            quota = importlib.import_module("tests.fake_cliproxy_quota")
        except ModuleNotFoundError as exc:
            if exc.name != "tests.fake_cliproxy_quota":
                raise
            return 502, {"error": "request failed"}
        with self.lock:
            files = [a.file for a in sorted(self.accounts, key=lambda a: a.name.lower())]
        status, payload = quota.answer_api_call(body, files)
        return int(status), payload


def _requested_model(body: bytes) -> str | None:
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        return None
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, str) and model else None


class _CpaHandler(_Handler):
    upstream: FakeCliProxy

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        rec = Recorded(self.command, path, query, list(self.headers.items()), body)
        cpa = self.upstream
        with cpa.lock:
            cpa.requests.append(rec)
        if path.startswith(MANAGEMENT_PREFIX + "/") or path == MANAGEMENT_PREFIX:
            if cpa.management_down:
                # Unreachable as far as a client can tell: no answer, connection gone.
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self._respond(cpa.management(rec, self.client_address[0]))
            return
        with cpa.lock:
            scripted = cpa.scripts.popleft() if cpa.scripts else None
        script = scripted or default_response(rec)
        if path in LLM_ROUTES:
            # A scripted answer, too, is a request CPA served with an account it selected.
            script = cpa.serve_llm(rec, script)
        self._serve(script)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


@contextmanager
def running(preset: str = "v7", **options: Any) -> Iterator[FakeCliProxy]:
    """``with running("v6") as cpa:`` — a fake CPA of one kind, closed afterwards."""
    cpa = FakeCliProxy.like(preset, **options)
    try:
        yield cpa
    finally:
        cpa.close()


__all__ = ["AUTH_DIR", "DEFAULT_KEY", "DEFAULT_VERSION", "MANAGEMENT_PREFIX", "Account",
           "FakeCliProxy", "UsageEvent", "auth_index_for", "cpa_tokens", "go_duration",
           "rfc3339_nano", "running"]
