"""The quota refresh job: per-account subscription quota snapshots, every
QUOTA_REFRESH_INTERVAL_MS, kept as history.

Where the accounts and their answers come from:

* **CLIProxyAPI's management API** (CLIPROXY_MGMT_KEY): the accounts are
  ``GET /v0/management/auth-files``; each probe goes through ``POST /api-call``, which puts
  the account's token into the request itself. The proxy never holds a token.
* **The auth directory** (CLIPROXY_AUTH_DIR), only when the management API is not
  configured or not available: each ``*.json`` file is read (read only, again for every
  probe, because CLIProxyAPI rewrites them when it refreshes) and the vendor is called
  directly. A token is never refreshed here (refresh tokens rotate: a second refresher
  would log CLIProxyAPI out); an expired one is not sent, and a 401 is only reported.

A management API that is down or refuses the key is a warning (``quota.source_unavailable``)
and an entry in :meth:`QuotaService.status`, never a crash and never a retry storm: one
failed call ends the refresh's use of the API until the next interval. Each probe waits
at most QUOTA_REFRESH_TIMEOUT_MS, also through ``api-call``; a vendor slower than that is
an error of its account alone, and the management API (shared with account
attribution) is not marked unreachable for it. What a probe asks
and what an answer means is ``providers.quotas``; the rows are ``storage.quotas``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent_cli_proxy.clock import SYSTEM_CLOCK, Clock
from agent_cli_proxy.config import Settings
from agent_cli_proxy.config_values import display_url
from agent_cli_proxy.log import get_logger
from agent_cli_proxy.providers.quotas import (
    PROVIDERS,
    Account,
    Outcome,
    ProbeRequest,
    VendorUrls,
    account_from_entry,
    account_from_file,
    parse_answer,
    probe_definitions,
    probe_requests,
    token_expired,
    token_of,
    try_next_url,
)
from agent_cli_proxy.storage.database import Database
from agent_cli_proxy.storage.quotas import SnapshotRow, insert_snapshots, local_usage
from agent_cli_proxy.storage.requests import iso_utc
from agent_cli_proxy.upstream.client import (
    Timeouts,
    UpstreamClient,
    UpstreamError,
    classify_error,
)
from agent_cli_proxy.upstream.management import ManagementClient, ManagementUnavailable
from agent_cli_proxy.workers.supervisor import Supervisor

log = get_logger("quota")

LOOP_NAME = "quota-refresh"
MAX_BODY_BYTES = 1024 * 1024  # quota answers are a few kB; anything larger is not one
MAX_AUTH_FILE_BYTES = 1024 * 1024
_LOCAL_WINDOWS = (("five_hour", 5 * 3600), ("seven_day", 7 * 86_400))
# Outcomes that are no news: logged at no level (they repeat every interval).
_QUIET = frozenset({"active", "limit_reached", "disabled", "unsupported"})


class _ProbeFailed(Exception):
    """The vendor could not be asked (connection, timeout, oversized answer)."""


@dataclass(frozen=True, slots=True)
class _Target:
    account: Account
    path: Path | None = None  # the auth file, in auth-dir mode


class QuotaService:
    """Refreshes quota snapshots; :meth:`refresh` runs never overlap.

    *management* is the CLIProxyAPI management client (None when CLIPROXY_MGMT_KEY is not
    set); *auth_dir* defaults to CLIPROXY_AUTH_DIR. *vendor_urls* and *client* are only used
    for direct calls in the auth-dir fallback (tests point them at a local server).
    """

    def __init__(self, db: Database, settings: Settings, *,
                 management: ManagementClient | None = None,
                 client: UpstreamClient | None = None, clock: Clock = SYSTEM_CLOCK,
                 vendor_urls: VendorUrls | None = None, auth_dir: str | None = None,
                 stop: threading.Event | None = None) -> None:
        self._db = db
        self._settings = settings
        self._management = management
        self._own_client = client is None
        self._client = client
        self._clock = clock
        self._urls = vendor_urls or VendorUrls()
        raw_dir = settings.cliproxy_auth_dir if auth_dir is None else auth_dir
        self._auth_dir = Path(raw_dir).expanduser() if raw_dir.strip() else None
        self._stop = stop
        self._timeout_s = settings.quota_refresh_timeout_ms / 1000
        self._run_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._runs = 0
        self._last: dict[str, Any] | None = None
        self._warnings: list[dict[str, Any]] = []  # of the refresh in progress
        self._warned: set[str] = set()  # reasons the previous refresh warned about

    # -- public -------------------------------------------------------------------------

    def refresh(self) -> dict[str, Any]:
        """Probe every account now, store the snapshots, return the QuotaRefreshResult.

        A caller that had to wait for a refresh in progress gets that refresh's result:
        it is as fresh as a new one would be, and the vendors are not asked twice.
        """
        runs_before = self._runs
        with self._run_lock:
            if self._runs != runs_before and self._last is not None:
                return self._last
            result = self._refresh()
            with self._state_lock:
                self._runs += 1
                self._last = result
        return result

    def run_once(self) -> None:
        """The loop's job. A source that is down is a warning, not a failure: the
        supervisor's faster retry after failures would only knock on it more often."""
        self.refresh()

    def register(self, supervisor: Supervisor) -> None:
        """Add the ``quota-refresh`` loop: at once, then every QUOTA_REFRESH_INTERVAL_MS."""
        if self._stop is None:
            self._stop = supervisor.stop_event  # stop between accounts when the server stops
        supervisor.add(LOOP_NAME, self.run_once,
                       interval_s=self._settings.quota_refresh_interval_ms / 1000,
                       run_on_start=True)

    def status(self) -> dict[str, Any]:
        with self._state_lock:
            last, runs = self._last, self._runs
        return {
            "enabled": True,
            "management_api": self._management is not None,
            "auth_dir": None if self._auth_dir is None else str(self._auth_dir),
            "interval_ms": self._settings.quota_refresh_interval_ms,
            "timeout_ms": self._settings.quota_refresh_timeout_ms,
            "refreshes": runs,
            "last_refresh_at": None if last is None else last["timestamp"],
            "last_source": None if last is None else last["source"],
            "accounts": None if last is None else len(last["accounts"]),
            "warnings": [] if last is None else last["warnings"],
        }

    def last_result(self) -> dict[str, Any] | None:
        with self._state_lock:
            return self._last

    def probes(self) -> list[dict[str, Any]]:
        """The probe of each provider, and how it is sent."""
        via = "api-call" if self._management is not None else "direct"
        return [{**d, "via": via} for d in probe_definitions(self._urls)]

    def close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()

    # -- one refresh --------------------------------------------------------------------

    def _refresh(self) -> dict[str, Any]:
        now = self._clock.time()
        stamp = iso_utc(now)
        self._warned = {w["reason"] for w in self._warnings}
        self._warnings = []
        source, targets = self._targets()
        results: list[dict[str, Any]] = []
        rows: list[SnapshotRow] = []
        api_down: str | None = None
        for target in _unique_names(targets):
            if self._stop is not None and self._stop.is_set():
                break
            account = target.account
            if api_down is not None:  # already warned about: one line, not one per account
                outcome = Outcome("error", error=api_down)
            else:
                outcome, api_down = self._probe(source, target, now)
                if outcome.status not in _QUIET:
                    log.warning("quota.probe_failed", provider=account.provider,
                                account=account.account, status=outcome.status,
                                error=outcome.error)
            found = [SnapshotRow(stamp, account.provider, account.account, w.window,
                                 w.used_pct, w.resets_at, w.model, w.raw)
                     for w in outcome.windows]
            rows.extend(found)
            results.append(self._account_result(account, outcome, found, stamp, now))
        inserted = insert_snapshots(self._db, rows)
        log.info("quota.refreshed", source=source, accounts=len(results), inserted=inserted)
        return {"timestamp": stamp, "source": source, "accounts": results,
                "inserted": inserted, "warnings": list(self._warnings)}

    def _account_result(self, account: Account, outcome: Outcome, rows: list[SnapshotRow],
                        stamp: str, now: float) -> dict[str, Any]:
        usage = {name: local_usage(self._db, since=iso_utc(now - span),
                                   auth_index=account.auth_index, account=account.account)
                 for name, span in _LOCAL_WINDOWS}
        return {"provider": account.provider, "account": account.account,
                "auth_index": account.auth_index, "name": account.name,
                "status": outcome.status, "unavailable": account.unavailable,
                "disabled": account.disabled, "plan": outcome.plan or account.plan,
                "refreshed_at": stamp, "error": outcome.error,
                "windows": [r.as_dict() for r in rows], "local_usage": usage}

    def _warn(self, reason: str, message: str, fallback: bool) -> None:
        warning = {"reason": reason, "message": message,
                   "fallback": "auth_dir" if fallback else None}
        self._warnings.append(warning)
        # Once per kind of trouble, not once per interval for as long as it lasts.
        level = log.debug if reason in self._warned else log.warning
        level("quota.source_unavailable", **warning)

    def _targets(self) -> tuple[str | None, list[_Target]]:
        """The accounts to probe and where from: ``management``, ``auth_dir`` or None."""
        if self._management is not None:
            try:
                entries = self._management.auth_files()
            except ManagementUnavailable as exc:
                self._warn(exc.reason, exc.message, self._auth_dir is not None)
            else:
                accounts = [a for e in entries if isinstance(e, Mapping)
                            and (a := account_from_entry(e)) is not None and not a.api_key]
                return "management", [_Target(a) for a in accounts]
        if self._auth_dir is None:
            return None, []
        targets = self._auth_dir_targets(self._auth_dir)
        return ("auth_dir", targets) if targets is not None else (None, [])

    def _auth_dir_targets(self, directory: Path) -> list[_Target] | None:
        try:
            paths = sorted(p for p in directory.iterdir()
                           if p.suffix.lower() == ".json" and p.is_file())
        except OSError as exc:
            self._warn("auth_dir_unreadable", f"{directory}: {exc.strerror or exc}", False)
            return None
        targets = []
        for path in paths:
            data = _read_json(path)
            account = None if data is None else account_from_file(str(path), data)
            if account is None:
                log.warning("quota.auth_file_invalid", file=path.name)
                continue
            targets.append(_Target(account, path))
        return targets

    # -- probes -------------------------------------------------------------------------

    def _probe(self, source: str | None, target: _Target, now: float
               ) -> tuple[Outcome, str | None]:
        """One account's outcome, and why the management API must not be used again in
        this refresh (None while it answers)."""
        account = target.account
        if account.disabled:
            return Outcome("disabled", error="disabled in CLIProxyAPI: not probed"), None
        requests = probe_requests(account, self._urls)
        if not requests:
            return Outcome("unsupported",
                           error="quota endpoint is not known for this provider"), None
        if source == "management":
            return self._via_api_call(account, requests, now)
        assert target.path is not None
        return self._direct(target.path, account, requests, now), None

    def _via_api_call(self, account: Account, requests: list[ProbeRequest], now: float
                      ) -> tuple[Outcome, str | None]:
        assert self._management is not None
        if not account.auth_index:
            return Outcome("error", error="CLIProxyAPI lists no auth_index for this "
                                          "account, so api-call cannot use it"), None
        outcome = Outcome("error", error="no answer")
        for number, request in enumerate(requests, 1):
            try:
                status, body = self._management.api_call(
                    account.auth_index, request.method, request.url, dict(request.headers),
                    request.body, timeout_s=self._timeout_s)
            except ManagementUnavailable as exc:
                message = f"api-call failed: {exc.message}"
                if exc.reason in _ACCOUNT_REASONS:  # this account only
                    return Outcome("error", error=message), None
                self._warn(exc.reason, exc.message, False)
                return Outcome("error", error=message), message
            outcome = parse_answer(account.provider, status, body, now)
            if not (try_next_url(status) and number < len(requests)):
                break
        return outcome, None

    def _direct(self, path: Path, account: Account, requests: list[ProbeRequest],
                now: float) -> Outcome:
        data = _read_json(path)  # again now: CLIProxyAPI may have refreshed the token
        token = None if data is None else token_of(data)
        if data is None or token is None:
            return Outcome("error", error="missing access_token")
        if token_expired(data, now):
            return Outcome("token_expired", error="the token has expired; CLIProxyAPI "
                                                  "refreshes it, the proxy never does")
        outcome = Outcome("error", error="no answer")
        for number, request in enumerate(requests, 1):
            try:
                status, body = self._http(request.with_token(token))
            except _ProbeFailed as exc:
                outcome = Outcome("error", error=str(exc))
                continue
            outcome = parse_answer(account.provider, status, body, now)
            if status == 401:
                outcome = replace(outcome, error=f"{outcome.error} (skipped until "
                                                 "CLIProxyAPI refreshes the token)")
            if not (try_next_url(status) and number < len(requests)):
                break
        return outcome

    def _http(self, request: ProbeRequest) -> tuple[int, str]:
        if self._client is None:
            self._client = UpstreamClient(maxsize=2)
        shown = display_url(request.url)
        deadline = time.monotonic() + self._timeout_s
        timeouts = Timeouts(connect=self._timeout_s, read=self._timeout_s)
        body = None if request.body is None else request.body.encode()
        try:
            response = self._client.send(request.method, request.url,
                                         list(request.headers.items()), body, timeouts)
        except UpstreamError as exc:
            raise _ProbeFailed(f"{shown}: {exc.message}") from None
        complete = False
        try:
            pieces: list[bytes] = []
            size = 0
            while piece := response.read(64 * 1024):
                size += len(piece)
                if size > MAX_BODY_BYTES:
                    raise _ProbeFailed(f"{shown}: answer larger than {MAX_BODY_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise _ProbeFailed(f"{shown}: took longer than {self._timeout_s:g} s")
                pieces.append(piece)
            complete = True
        except _ProbeFailed:
            raise
        except Exception as exc:  # urllib3 read errors: workers do not import urllib3
            raise _ProbeFailed(f"{shown}: {classify_error(exc).message}") from None
        finally:
            if complete:
                response.release_conn()
            else:
                response.close()
        return response.status, b"".join(pieces).decode("utf-8", "replace")


# ManagementUnavailable reasons that concern the one account asked about, not the API:
# CPA's own refusals of one api-call (400 "auth token not found", 502 "request failed"),
# and a vendor slower than QUOTA_REFRESH_TIMEOUT_MS (CPA itself answers the others).
_ACCOUNT_REASONS = frozenset({"bad_response", "timeout"})


def _read_json(path: Path) -> Mapping[str, Any] | None:
    """An auth file's object, opened read only; None if unreadable or not an object."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_AUTH_FILE_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_AUTH_FILE_BYTES:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _unique_names(targets: list[_Target]) -> list[_Target]:
    """Accounts keyed by name: two credentials of one provider with one e-mail (a personal
    and a team Codex plan) get their file name added, so their snapshots stay apart."""
    counts = Counter((t.account.provider, t.account.account) for t in targets)
    out = []
    for target in targets:
        account = target.account
        if counts[(account.provider, account.account)] > 1:
            account = replace(account, account=f"{account.account} ({account.name})")
        out.append(replace(target, account=account))
    return sorted(out, key=lambda t: (_order(t.account.provider), t.account.account))


def _order(provider: str) -> int:
    return PROVIDERS.index(provider) if provider in PROVIDERS else len(PROVIDERS)
