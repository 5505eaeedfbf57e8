"""Subscription quota probes as data: which accounts there are and what to ask for each.

This module owns, per provider (``codex``, ``claude``, ``gemini-cli``, ``antigravity``,
``kimi``): the probe request (method, URL, headers with CLIProxyAPI's ``$TOKEN$``
placeholder, body), the vendor endpoints (overridable as a whole, :class:`VendorUrls`), and
how an account is read from a CLIProxyAPI auth-files entry or from an auth file on disk
(its token included, read only). What an answer means is ``providers.quota_answers``
(re-exported here). No sockets, files or SQL: ``workers.quotas`` does the I/O, through
CLIProxyAPI's ``api-call`` relay or, as a fallback, directly to the vendor.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from agent_cli_proxy.providers.quota_answers import Outcome, Window, epoch, parse_answer

__all__ = ["TOKEN", "Account", "Outcome", "ProbeRequest", "VendorUrls", "Window",
           "account_from_entry", "account_from_file", "parse_answer", "probe_definitions",
           "probe_requests", "token_expired", "token_of", "try_next_url"]

# CLIProxyAPI's api-call puts the account's token where this placeholder is.
TOKEN = "$TOKEN$"  # noqa: S105 (a placeholder, not a secret)
PROVIDERS = ("codex", "claude", "gemini-cli", "antigravity", "kimi")
# CLIProxyAPI's file ``type`` (or older provider key) -> the provider key of auth-files.
_ALIASES = {"gemini": "gemini-cli", "anthropic": "claude", "openai": "codex"}
_UA = "agent-cli-proxy"
_CODEX_UA = "codex_cli_rs/0.101.0 (Linux; x86_64) agent-cli-proxy"


@dataclass(frozen=True, slots=True)
class VendorUrls:
    """Each provider's quota endpoint(s), tried in order while one answers 404 or 5xx."""

    codex: tuple[str, ...] = ("https://chatgpt.com/backend-api/wham/usage",)
    claude: tuple[str, ...] = ("https://api.anthropic.com/api/oauth/usage",)
    gemini_cli: tuple[str, ...] = (
        "https://cloudcode-pa.googleapis.com/v1internal:retrieveUserQuota",)
    antigravity: tuple[str, ...] = (
        "https://daily-cloudcode-pa.googleapis.com/v1internal:retrieveUserQuotaSummary",
        "https://daily-cloudcode-pa.sandbox.googleapis.com/v1internal:retrieveUserQuotaSummary",
        "https://cloudcode-pa.googleapis.com/v1internal:retrieveUserQuotaSummary")
    kimi: tuple[str, ...] = ("https://api.kimi.com/coding/v1/usages",
                             "https://api.moonshot.ai/v1/usages")

    def for_provider(self, provider: str) -> tuple[str, ...]:
        urls: tuple[str, ...] = getattr(self, provider.replace("-", "_"), ())
        return urls

    @classmethod
    def at(cls, base: str) -> VendorUrls:
        """Every endpoint on one host, paths kept (a test server or a mirror)."""
        root = base.rstrip("/")
        moved: dict[str, tuple[str, ...]] = {}
        for name in cls.__dataclass_fields__:
            paths = dict.fromkeys(urlsplit(u).path for u in getattr(cls(), name))
            moved[name] = tuple(root + p for p in paths)
        return cls(**moved)


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: str | None = None

    def with_token(self, token: str) -> ProbeRequest:
        """The request with the token in place of ``$TOKEN$`` (direct calls only)."""
        headers = {k: v.replace(TOKEN, token) for k, v in self.headers.items()}
        return replace(self, headers=headers)


@dataclass(frozen=True, slots=True)
class Account:
    """One CLIProxyAPI credential, from auth-files or from its file on disk."""

    provider: str
    account: str  # e-mail or label: what the snapshots are keyed by
    name: str  # the auth file name (or CLIProxyAPI id)
    auth_index: str | None = None
    disabled: bool = False
    unavailable: bool = False
    project_id: str | None = None
    chatgpt_account_id: str | None = None
    plan: str | None = None
    api_key: bool = False  # an API-key credential: no subscription quota to read


# -- accounts -----------------------------------------------------------------------------

def canonical_provider(value: Any) -> str:
    text = str(value or "").strip().lower()
    return _ALIASES.get(text, text)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def account_from_entry(entry: Mapping[str, Any]) -> Account | None:
    """An account from one ``GET /v0/management/auth-files`` entry (§1.4)."""
    provider = canonical_provider(entry.get("provider") or entry.get("type"))
    name = _text(entry.get("name")) or _text(entry.get("id")) or ""
    if not provider or not name:
        return None
    claims = entry.get("id_token")
    claims = claims if isinstance(claims, Mapping) else {}
    label = (_text(entry.get("email")) or _text(entry.get("label"))
             or _text(entry.get("account")) or name)
    return Account(
        provider=provider, account=label, name=name, auth_index=_text(entry.get("auth_index")),
        disabled=entry.get("disabled") is True, unavailable=entry.get("unavailable") is True,
        project_id=_first_project(entry.get("project_id")),
        chatgpt_account_id=_text(claims.get("chatgpt_account_id")),
        plan=_text(claims.get("plan_type")), api_key=entry.get("account_type") == "api_key")


def account_from_file(path: str, data: Mapping[str, Any]) -> Account | None:
    """An account from an auth file's JSON (§2); None if it is not a credential."""
    provider = canonical_provider(data.get("type"))
    if not provider:
        return None
    name = os.path.basename(path)
    claims = jwt_claims(data.get("id_token")).get("https://api.openai.com/auth", {})
    claims = claims if isinstance(claims, Mapping) else {}
    return Account(
        provider=provider, account=_text(data.get("email")) or name, name=name,
        auth_index=file_auth_index(str(data.get("type") or provider), path),
        disabled=data.get("disabled") is True, project_id=_first_project(data.get("project_id")),
        chatgpt_account_id=_text(data.get("account_id")) or _text(claims.get(
            "chatgpt_account_id")), plan=_text(claims.get("chatgpt_plan_type")))


def file_auth_index(file_type: str, path: str) -> str:
    """CLIProxyAPI's auth_index of a file credential (§1.5), to join its usage rows."""
    seed = file_type.strip().lower() + ":" + os.path.normpath(os.path.abspath(path))
    return hashlib.sha256(seed.encode()).hexdigest()[:16]


def _first_project(value: Any) -> str | None:
    # Gemini files may carry several projects joined by commas; the first is the default.
    text = _text(value)
    return text.split(",")[0].strip() or None if text else None


def jwt_claims(token: Any) -> dict[str, Any]:
    """The payload of a JWT, unverified (only read for an account id); {} if not one."""
    if not isinstance(token, str) or token.count(".") != 2:
        return {}
    part = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, TypeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_of(data: Mapping[str, Any]) -> str | None:
    """The bearer token of an auth file, in CLIProxyAPI's lookup order (§1.8)."""
    nested = data.get("token")
    if isinstance(nested, Mapping):  # Gemini files: token{access_token, expiry, …}
        return _text(nested.get("access_token"))
    for key in ("access_token", "api_key", "token", "id_token", "cookie"):
        if (value := _text(data.get(key))) is not None:
            return value
    return None


def token_expired(data: Mapping[str, Any], now: float) -> bool:
    """True if the file says its token has expired: CLIProxyAPI has not refreshed it yet,
    so a probe would only earn a 401 (and we must never refresh it ourselves)."""
    nested = data.get("token")
    stamp = nested.get("expiry") if isinstance(nested, Mapping) else data.get("expired")
    when = epoch(stamp)
    return when is not None and when <= now


# -- probe requests -----------------------------------------------------------------------

def probe_requests(account: Account, urls: VendorUrls) -> list[ProbeRequest]:
    """The request(s) to try for *account*, in order; [] when its quota cannot be read."""
    if account.api_key:
        return []
    auth = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    provider = account.provider
    if provider == "codex":
        headers = {**auth, "User-Agent": _CODEX_UA}
        if account.chatgpt_account_id:
            headers["Chatgpt-Account-Id"] = account.chatgpt_account_id
        return [ProbeRequest("GET", u, headers) for u in urls.codex]
    if provider == "claude":
        headers = {**auth, "anthropic-version": "2023-06-01",
                   "anthropic-beta": "oauth-2025-04-20", "User-Agent": _UA}
        return [ProbeRequest("GET", u, headers) for u in urls.claude]
    if provider in ("gemini-cli", "antigravity"):
        headers = {**auth, "Content-Type": "application/json",
                   "User-Agent": _UA if provider == "gemini-cli" else "antigravity " + _UA}
        body = json.dumps({"project": account.project_id} if account.project_id else {})
        return [ProbeRequest("POST", u, headers, body) for u in urls.for_provider(provider)]
    if provider == "kimi":
        headers = {**auth, "User-Agent": "KimiCLI/1.35 " + _UA}
        return [ProbeRequest("GET", u, headers) for u in urls.kimi]
    return []


def try_next_url(status: int) -> bool:
    """Whether an answer means "this endpoint is not the one": try the next URL."""
    return status == 404 or status >= 500


def probe_definitions(urls: VendorUrls) -> list[dict[str, Any]]:
    """Every provider's probe, account-specific values shown as ``<placeholders>``."""
    sample = Account(provider="", account="<email>", name="<file>", project_id="<project_id>",
                     chatgpt_account_id="<chatgpt_account_id>")
    out = []
    for provider in PROVIDERS:
        requests = probe_requests(replace(sample, provider=provider), urls)
        first = requests[0]
        out.append({"provider": provider, "method": first.method, "url": first.url,
                    "fallback_urls": [r.url for r in requests[1:]],
                    "headers": dict(first.headers), "body": first.body,
                    "windows": _WINDOW_DOCS[provider]})
    return out


_WINDOW_DOCS = {
    "codex": "5h, week, monthly (by limit_window_seconds); code_review_*; <limit_name>_*",
    "claude": "5h, week, week_sonnet, week_opus, week_<bucket>; extra_monthly",
    "gemini-cli": "one per model bucket: <modelId> (or <modelId>:<tokenType>)",
    "antigravity": "one per bucket: <bucketId> (or <bucketId>:<window>)",
    "kimi": "week, 5h (or <n>m / <n>h windows from limits[])",
}
