"""The CLIProxyAPI management API client (spec §1.1-1.8).

One :class:`ManagementClient` per process is shared by everything that asks CPA about its
accounts (attribution, quotas, readiness), because what it remembers protects the
proxy's own IP address: CPA bans an IP for 30 minutes after 5 failed key checks, so
after a 401/403 the client backs off exponentially (1, 5, 25 minutes, … at most 6 hours,
so a wrong key makes 4 attempts in the first 31 minutes; after a ban, until it ends) and
meanwhile raises ``ManagementUnavailable("backoff")`` without sending anything. Only one
request at a time may test a key after a backoff.

Other answers it remembers: a 404 from ``/auth-files`` (present in every version) means
management is disabled (no secret configured): checked again every 10 minutes. A 404 from
another route means that route is missing in this version (``/usage`` left in v6.10,
``/usage-queue`` came in v6.10.8): that route alone is skipped for 10 minutes. A
connection failure makes the next attempt wait 5 s, doubling up to 5 minutes.

``/api-call`` is the exception to that last rule: CPA answers it only once the vendor
it relays to has answered, so its caller gives it its own timeout (QUOTA_REFRESH_TIMEOUT_MS)
and running out of it means a slow vendor, not an unreachable CPA. It raises
``ManagementUnavailable("timeout")`` and leaves the client's state alone, so one slow
quota probe never pauses account attribution. Failing to connect to CPA still counts.

The key is sent as ``Authorization: Bearer`` and ``X-Management-Key`` and never logged;
nor is any answer body (``/usage`` is keyed by client API keys in plaintext).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Literal, NoReturn

from agent_cli_proxy.clock import Clock
from agent_cli_proxy.config_values import display_url
from agent_cli_proxy.log import get_logger
from agent_cli_proxy.upstream.client import Timeouts, UpstreamClient, UpstreamError, classify_error
from agent_cli_proxy.upstream.cpa_headers import VERSION_HEADER

_log = get_logger("accounts")

MANAGEMENT_PREFIX = "/v0/management"
Reason = Literal["not_configured", "disabled", "unauthorized", "banned", "unreachable",
                 "backoff", "bad_response", "timeout"]
State = Literal["unknown", "ok", "disabled", "unauthorized", "banned", "unreachable",
                "not_configured"]

AUTH_BACKOFF_S = 60.0  # after the first 401/403; times 5 after each further one …
AUTH_BACKOFF_MAX_S = 6 * 3600.0  # … up to this
BAN_S = 30 * 60.0  # CPA's ban, when its answer does not say how long is left
BAN_MARGIN_S = 5.0
DISABLED_RECHECK_S = 600.0
UNREACHABLE_BACKOFF_S = 5.0
UNREACHABLE_BACKOFF_MAX_S = 300.0
MAX_BODY_BYTES = 64 * 1024 * 1024  # a long-running v6 /usage document is large
_READ_CHUNK = 256 * 1024
_ERROR_CHARS = 200


class ManagementUnavailable(Exception):
    """The management API could not answer this call, and why (``reason``).

    ``endpoint_only`` is True when only this route is missing (a 404 on a route other
    than ``/auth-files``): the management API itself works.
    """

    def __init__(self, reason: Reason, message: str, *, retry_after_s: float | None = None,
                 endpoint_only: bool = False) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message
        self.retry_after_s = retry_after_s
        self.endpoint_only = endpoint_only


_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")


def parse_ban_wait(text: str) -> float | None:
    """Seconds from CPA's ``… Try again in 29m59.5s``, or None."""
    _, found, rest = text.partition("Try again in ")
    if not found:
        return None
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    duration = rest.strip().split()[0] if rest.strip() else ""
    parts = _GO_DURATION_PART.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration.rstrip("."):
        return None
    return sum(float(n) * units[u] for n, u in parts)


# -- the client --------------------------------------------------------------------------------


class ManagementClient:
    """Calls ``/v0/management/*`` of one CPA through the project's :class:`UpstreamClient`."""

    def __init__(self, client: UpstreamClient, base_url: str, key: str, *, clock: Clock,
                 timeout_s: float = 15.0) -> None:
        self._client = client
        self._base = base_url.rstrip("/") + MANAGEMENT_PREFIX
        self._key = key
        self._clock = clock
        self._timeouts = _timeouts(timeout_s)
        self._lock = threading.Lock()
        self._state: State = "unknown" if key else "not_configured"
        self._version: str | None = None
        self._last_error: str | None = None
        self._auth_failures = 0
        self._unreachable_failures = 0
        self._blocked_until: float | None = None  # monotonic; no request before it
        self._probing = False  # a request is testing the key after a backoff
        self._missing: dict[str, float] = {}  # route -> monotonic time to try it again
        self._oversized: dict[str, float] = {}  # route -> when to fetch a too-large answer again

    # -- public calls ----------------------------------------------------------------------

    def auth_files(self) -> list[dict[str, Any]]:
        """``GET /auth-files``: every credential CPA knows (§1.4)."""
        doc = self._json("GET", "/auth-files")
        files = doc.get("files") if isinstance(doc, dict) else None
        if not isinstance(files, list):
            raise self._bad("/auth-files", "answer has no \"files\" list")
        return [f for f in files if isinstance(f, dict)]

    def usage(self) -> dict[str, Any]:
        """``GET /usage``: the v6-style statistics document (§1.3)."""
        doc = self._json("GET", "/usage")
        if not isinstance(doc, dict):
            raise self._bad("/usage", "answer is not a JSON object")
        return doc

    def usage_queue(self, count: int) -> list[dict[str, Any]]:
        """``GET /usage-queue?count=N``: pops up to *count* records (§1.7; destructive)."""
        doc = self._json("GET", "/usage-queue", query=f"count={max(1, int(count))}")
        if not isinstance(doc, list):
            raise self._bad("/usage-queue", "answer is not a JSON array")
        return [r for r in doc if isinstance(r, dict)]

    def api_call(self, auth_index: str, method: str, url: str, header: dict[str, str],
                 data: str | None = None, *, timeout_s: float | None = None
                 ) -> tuple[int, str]:
        """``POST /api-call``: CPA sends the request with the credential's token (§1.8).

        Returns the relayed upstream status and body text. CPA's own refusals (400 ``auth
        token not found``, 502 ``request failed``) raise ``bad_response``. *timeout_s*
        bounds the wait for CPA's answer (the client's own timeout by default); running
        out of it raises ``timeout`` and is not held against the management API.
        """
        body: dict[str, Any] = {"auth_index": auth_index, "method": method, "url": url,
                                "header": header}
        if data is not None:
            body["data"] = data
        timeouts = None if timeout_s is None else _timeouts(timeout_s)
        doc = self._json("POST", "/api-call", body=body, timeouts=timeouts, relayed=True)
        status = doc.get("status_code") if isinstance(doc, dict) else None
        text = doc.get("body", "") if isinstance(doc, dict) else None
        if not isinstance(status, int) or not isinstance(text, str):
            raise self._bad("/api-call", "answer lacks status_code/body")
        return status, text

    def status(self) -> dict[str, Any]:
        """For ``/ready`` and ``doctor``: the last known state, without any request."""
        with self._lock:
            retry = None
            now = self._clock.monotonic()
            if self._blocked_until is not None and self._blocked_until > now:
                retry = round(self._blocked_until - now, 1)
            return {"state": self._state, "version": self._version,
                    "last_error": self._last_error, "retry_after_s": retry}

    @property
    def version(self) -> str | None:
        """The last ``X-CPA-VERSION`` seen (None until the first answer)."""
        return self._version

    # -- one request -------------------------------------------------------------------------

    def _json(self, method: str, route: str, *, query: str = "",
              body: dict[str, Any] | None = None, timeouts: Timeouts | None = None,
              relayed: bool = False) -> Any:
        """One request and its verdict. *relayed*: CPA answers only after a third party
        did (``/api-call``), so a read timeout is that party's slowness, not CPA's."""
        probe = self._admit(route)
        url = self._base + route + (f"?{query}" if query else "")
        headers = [("Authorization", f"Bearer {self._key}"), ("X-Management-Key", self._key),
                   ("Accept", "application/json"), ("Accept-Encoding", "identity"),
                   ("User-Agent", "agent-cli-proxy")]
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers.append(("Content-Type", "application/json"))
        try:
            wait = timeouts or self._timeouts
            try:
                response = self._client.send(method, url, headers, payload, wait)
            except UpstreamError as exc:
                raise self._failed(route, exc, relayed, wait) from exc
            try:
                raw = _read_bounded(response)
            except _TooLarge as exc:
                raise self._too_large(route, str(exc)) from exc
            except UpstreamError as exc:
                raise self._failed(route, exc, relayed, wait) from exc
            version = response.headers.get(VERSION_HEADER)
            return self._judge(route, response.status, raw, version)
        finally:
            if probe:
                with self._lock:
                    self._probing = False

    def _admit(self, route: str) -> bool:
        """Raise instead of sending while a backoff or a remembered 404 holds; True when
        this request is the one that tests the key after a backoff."""
        if not self._key:
            raise ManagementUnavailable("not_configured", "CLIPROXY_MGMT_KEY is not set")
        now = self._clock.monotonic()
        with self._lock:
            if self._blocked_until is not None and now < self._blocked_until:
                wait = self._blocked_until - now
                reason: Reason = ("disabled" if self._state == "disabled" else
                                  "unreachable" if self._state == "unreachable" else
                                  "backoff")
                raise ManagementUnavailable(
                    reason, f"{self._last_error} (next attempt in {round(wait)} s)",
                    retry_after_s=wait)
            until = self._oversized.get(route)
            if until is not None and now < until:
                raise ManagementUnavailable(
                    "bad_response", f"{route} answered more than {MAX_BODY_BYTES} bytes "
                    f"(next attempt in {round(until - now)} s)",
                    retry_after_s=until - now, endpoint_only=True)
            until = self._missing.get(route)
            if until is not None and now < until:
                raise ManagementUnavailable(
                    "disabled", f"{route} is not served by this CLIProxyAPI (HTTP 404)",
                    retry_after_s=until - now, endpoint_only=True)
            if self._blocked_until is not None and self._state in ("unauthorized", "banned"):
                # The backoff is over: one request tests the key; concurrent callers wait
                # for its verdict instead of each adding a failure to CPA's count.
                if self._probing:
                    raise ManagementUnavailable("backoff", f"{self._last_error} (retrying)",
                                                retry_after_s=1.0)
                self._probing = True
                return True
            return False

    def _judge(self, route: str, status: int, raw: bytes, version: str | None) -> Any:
        now = self._clock.monotonic()
        text = _error_text(raw)
        with self._lock:
            if version:
                self._version = version
            if 200 <= status < 300:
                try:
                    doc = json.loads(raw)
                except ValueError:
                    doc = _NOT_JSON
                if doc is not _NOT_JSON:
                    self._set_ok()
                    self._missing.pop(route, None)
                    return doc
            if status in (401, 403):
                self._refused(route, status, text, now)
            if status == 404:
                if route != "/auth-files":
                    self._missing[route] = now + DISABLED_RECHECK_S
                    raise ManagementUnavailable(
                        "disabled", f"{route} is not served by this CLIProxyAPI (HTTP 404)",
                        retry_after_s=DISABLED_RECHECK_S, endpoint_only=True)
                self._disabled("management API is disabled (HTTP 404): CLIProxyAPI has no "
                               "remote-management secret-key", now)
        detail = f"HTTP {status}" + (f": {text}" if text else "")
        if 200 <= status < 300:
            detail = f"HTTP {status} with a body that is not JSON"
        raise self._bad(route, detail)

    # -- outcomes (called with the lock held, except _unreachable and _bad) ----------------

    def _set_ok(self) -> None:
        if self._state != "ok":
            _log.info("accounts.management_ok", url=display_url(self._base),
                      version=self._version, previous=self._state)
        self._state, self._last_error, self._blocked_until = "ok", None, None
        self._auth_failures = self._unreachable_failures = 0

    def _refused(self, route: str, status: int, text: str, now: float) -> NoReturn:
        if status == 403 and "remote management disabled" in text.lower():
            self._disabled("remote management is disabled in CLIProxyAPI (allow-remote is "
                           "false and this proxy is not on its host)", now)
        self._auth_failures += 1
        if status == 403 and "banned" in text.lower():
            state: State = "banned"
            wait = (parse_ban_wait(text) or BAN_S) + BAN_MARGIN_S
            message = f"CLIProxyAPI has banned this IP after failed key checks: {text}"
        else:
            state = "unauthorized"
            wait = min(AUTH_BACKOFF_S * 5.0 ** min(self._auth_failures - 1, 10),
                       AUTH_BACKOFF_MAX_S)
            message = (f"CLIProxyAPI rejects CLIPROXY_MGMT_KEY (HTTP {status}"
                       + (f": {text})" if text else ")"))
        self._enter(state, message, now + wait, route=route, status=status)
        raise ManagementUnavailable("banned" if state == "banned" else "unauthorized",
                                    message, retry_after_s=wait)

    def _disabled(self, message: str, now: float) -> NoReturn:
        self._enter("disabled", message, now + DISABLED_RECHECK_S, route="/auth-files",
                    status=404)
        raise ManagementUnavailable("disabled", message, retry_after_s=DISABLED_RECHECK_S)

    def _enter(self, state: State, message: str, until: float, *, route: str,
               status: int | None) -> None:
        if state != self._state or message != self._last_error:
            _log.warning("accounts.management_unavailable", state=state, route=route,
                         http_status=status, error=message, url=display_url(self._base),
                         retry_after_s=round(until - self._clock.monotonic(), 1))
        self._state, self._last_error, self._blocked_until = state, message, until

    def _failed(self, route: str, exc: UpstreamError, relayed: bool,
                wait: Timeouts) -> ManagementUnavailable:
        if relayed and exc.kind == "timeout" and not exc.connecting:
            # Connected, sent, and CPA is still waiting for the vendor: this call only.
            message = (f"CLIProxyAPI did not answer {route} within {wait.read:g} s "
                       "(the call it relays is slow)")
            _log.debug("accounts.management_timeout", route=route, error=message)
            return ManagementUnavailable("timeout", message)
        return self._unreachable(route, exc.message)

    def _unreachable(self, route: str, reason: str) -> ManagementUnavailable:
        now = self._clock.monotonic()
        with self._lock:
            self._unreachable_failures += 1
            wait = min(UNREACHABLE_BACKOFF_S * 2 ** (self._unreachable_failures - 1),
                       UNREACHABLE_BACKOFF_MAX_S)
            message = f"CLIProxyAPI management API unreachable: {reason}"
            self._enter("unreachable", message, now + wait, route=route, status=None)
        return ManagementUnavailable("unreachable", message, retry_after_s=wait)

    def _too_large(self, route: str, detail: str) -> ManagementUnavailable:
        """An answer over the size cap (a v6 /usage grows until CPA restarts): fetching it
        again every tick would pull it and throw it away each time, so the route rests
        like a missing one."""
        with self._lock:
            self._oversized[route] = self._clock.monotonic() + DISABLED_RECHECK_S
        error = self._bad(route, detail)
        error.retry_after_s = DISABLED_RECHECK_S
        error.endpoint_only = True
        return error

    def _bad(self, route: str, detail: str) -> ManagementUnavailable:
        message = f"unexpected answer from {route}: {detail}"
        with self._lock:
            self._last_error = message
        _log.warning("accounts.management_bad_response", route=route, error=message)
        return ManagementUnavailable("bad_response", message)


_NOT_JSON = object()


def _timeouts(timeout_s: float) -> Timeouts:
    # Connecting to CPA (loopback, usually) never needs the full read allowance.
    return Timeouts(connect=min(timeout_s, 5.0), read=timeout_s)


class _TooLarge(Exception):
    """The answer is larger than :data:`MAX_BODY_BYTES` (a bad answer, not a bad network)."""


def _read_bounded(response: Any) -> bytes:
    """The whole body, at most :data:`MAX_BODY_BYTES`; the connection is released or
    closed, whatever happens."""
    chunks: list[bytes] = []
    size = 0
    done = False
    try:
        while True:
            chunk = response.read(_READ_CHUNK, decode_content=True)
            if not chunk:
                done = True
                break
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _TooLarge(f"answer larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except _TooLarge:
        raise
    except Exception as exc:  # urllib3/socket errors while reading the body
        # The kind is kept: a read timeout is not a broken connection (see _failed).
        raise UpstreamError(classify_error(exc).kind, f"answer broke off: {exc}") from exc
    finally:
        if done:
            response.release_conn()
        else:
            response.close()
    return b"".join(chunks)


def _error_text(raw: bytes) -> str:
    """CPA's ``{"error": "…"}`` text, or the start of a non-JSON body, on one line."""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        text = doc["error"]
    elif isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        text = str(doc["error"].get("message", ""))
    elif doc is None:
        text = raw[:_ERROR_CHARS].decode("utf-8", "replace")
    else:
        text = ""
    return " ".join(text.split())[:_ERROR_CHARS]
