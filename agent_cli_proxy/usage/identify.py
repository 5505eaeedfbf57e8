"""Which tool, which instance, which session sent a request — from its headers alone.

This module owns the answer to "who sent this LLM call": the tool (Claude Code, Codex,
OpenCode, …), its version, the session, the agent/instance name, the ``client_id`` that
groups one instance's rows, and the name of the rule that decided, stored with every row
so a misattribution can be debugged and re-labelled later.

Identification is a ranked list of rules kept as data (:data:`RULES`), evaluated in order,
first match wins:

1. headers only one tool sends (its session/turn headers, e.g. ``x-claude-code-session-id``);
2. User-Agent patterns of the tools themselves;
3. the Codex-protocol ``originator`` header for the tools known to set it;
4. OpenRouter-style attribution (``X-Title`` / ``HTTP-Referer``) sent by Cline, Roo, Kilo,
   Aider and OpenCode;
5. any other ``originator`` value, taken as the tool name (sanitised);
6. generic SDK fingerprints (OpenAI/Anthropic SDK UAs, ``x-stainless-*``, google-genai);
7. otherwise ``unknown``.

Where the TypeScript original was wrong we differ on purpose: ``X-Agent-Name`` names an
agent/instance, never the tool; ``x-initiator`` (GitHub Copilot's header) identifies nothing;
``x-activity-request-id`` (a per-request id from Gemini CLI's activity logger) is neither a
Hermes signal nor a session id; raw API-key characters never reach ``client_id``.

Pure: no I/O. Header names are looked up in lower case, so pass a case-insensitive mapping
(werkzeug ``Headers``/``EnvironHeaders``) or a dict with lower-cased keys. Note that waitress
drops request headers whose names contain ``_`` (older Codex's ``session_id``), so under
waitress only the hyphenated spellings ever arrive.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "INPUT_HEADERS",
    "RULES",
    "TOOLS",
    "HeaderLookup",
    "Identity",
    "Rule",
    "ToolInfo",
    "When",
    "identify",
]

UNKNOWN = "unknown"

# Header values are matched only up to this many characters: enough for any real
# User-Agent, and it keeps a hostile multi-kilobyte header from costing regex time.
_MATCH_LIMIT = 1024
# Longest agent name / display name / version kept; session ids may be a little longer.
_PART_LIMIT = 64
_SESSION_LIMIT = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class HeaderLookup(Protocol):
    """Case-insensitive header access, as werkzeug ``Headers``/``EnvironHeaders`` offer.

    ``key`` is positional-only so that werkzeug's overloaded ``get`` and a plain
    ``Mapping[str, str]`` both satisfy the protocol under ``mypy --strict``.
    """

    def get(self, key: str, /) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sent one request."""

    tool: str
    tool_version: str | None
    client_id: str
    """One instance of the tool: ``tool`` or ``tool-<name|agent|session tail|key hash>``."""
    session_id: str | None
    agent: str | None
    """``X-Agent-Name`` (or OpenClaw's agent id): an agent/instance name, not a tool."""
    rule: str
    """Name of the :data:`RULES` entry that matched, or ``unknown``."""


@dataclass(frozen=True, slots=True)
class When:
    """One condition: ``pattern`` is searched in the value of ``header``."""

    header: str
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class Rule:
    """A named rule: when every condition holds, the request is from ``tool``.

    ``tool=None`` takes the tool name from the ``tool`` group of the last condition's
    match (lower-cased), for headers whose value *is* a tool slug (``originator``).
    """

    name: str
    tool: str | None
    when: tuple[When, ...]


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """Where a tool keeps its version and its session id."""

    versions: tuple[When, ...] = ()
    """Tried in order; the first match's ``v`` group is the version."""
    sessions: tuple[str, ...] = ()
    """Headers tried in order; the first non-empty one is the session id."""


_ANY = re.compile(r"\S")  # header present and not blank
_V = r"(?P<v>\d[\w.+-]*)"  # a version starts with a digit: "pi-extension" is not one


def _w(header: str, pattern: str | re.Pattern[str]) -> When:
    compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
    return When(header, compiled)


def _has(name: str, tool: str, header: str) -> Rule:
    return Rule(name, tool, (_w(header, _ANY),))


def _re(name: str, tool: str | None, header: str, pattern: str) -> Rule:
    return Rule(name, tool, (_w(header, pattern),))


_UA = "user-agent"
_TITLE = "x-title"
_REFERER = "http-referer"
_ORIGINATOR = "originator"

RULES: tuple[Rule, ...] = (
    # 1. Headers that exactly one tool sends. They beat the User-Agent because wrappers and
    #    gateways rewrite or spoof UAs (Roo/Kilo/Cline UAs are copied to unlock coding
    #    plans), while a tool's own session header survives and is rarely imitated.
    _has("claude-code-session", "claude-code", "x-claude-code-session-id"),
    _has("codex-turn-metadata", "codex", "x-codex-turn-metadata"),
    _has("codex-window-id", "codex", "x-codex-window-id"),
    _has("qwen-code-session", "qwen-code", "x-qwen-code-session-id"),
    # Kilo before OpenCode: the current Kilo extension is built on OpenCode.
    _has("kilo-code-version", "kilo-code", "x-kilocode-version"),
    _has("opencode-session", "opencode", "x-opencode-session"),
    _has("opencode-project", "opencode", "x-opencode-project"),
    _has("openclaw-session", "openclaw", "x-openclaw-session-id"),
    _has("openclaw-turn", "openclaw", "x-openclaw-turn-id"),
    _has("cline-version", "cline", "x-cline-version"),
    _has("goose-session", "goose", "goose-session-id"),
    # 2. The tools' own User-Agents. Anchored at the start: these are product tokens, and
    #    an unanchored "contains" (the original's `hermes`, `anthropic`) also matches
    #    unrelated clients (React Native's Hermes engine, any Anthropic-SDK-based app).
    _re("claude-code-ua", "claude-code", _UA, r"^claude-(?:cli|code)/"),
    # codex_cli_rs, codex-tui, codex_exec, codex_vscode, codex_sdk_ts, …: the UA's first
    # token is the originator, so every Codex front-end is one tool.
    _re("codex-ua", "codex", _UA, r"^codex(?:[_-][\w-]+)?/\d"),
    _re("gemini-cli-ua", "gemini-cli", _UA, r"^GeminiCLI(?:-[\w.-]+)?/\d"),
    _re("gemini-cli-vscode-ua", "gemini-cli", _UA, r"proxy_client=geminicli"),
    _re("qwen-code-ua", "qwen-code", _UA, r"^QwenCode/"),
    # Before opencode-ua for the same reason as kilo-code-version above.
    _re("kilo-code-ua", "kilo-code", _UA, r"^(?:Kilo-Code/|kilo/|opencode-kilo-provider/)"),
    _re("opencode-ua", "opencode", _UA, r"^opencode\d*/"),
    _re("openclaw-ua", "openclaw", _UA, r"(?i)(?:^|[\s(])openclaw[/-]"),
    _re("hermes-agent-ua", "hermes-agent", _UA, r"(?i)(?:^|[\s(])hermes[-_]?agent\b"),
    _re("roo-code-ua", "roo-code", _UA, r"^RooCode/"),
    _re("cline-ua", "cline", _UA, r"^Cline/"),
    _re("crush-ua", "crush", _UA, r"^Charm-Crush/"),
    _re("goose-ua", "goose", _UA, r"^goose/"),
    _re("aider-ua", "aider", _UA, r"(?i)^aider(?:-chat)?/"),
    # The Claude Code beta flag without Claude Code's UA or session header: something
    # built to look like Claude Code (to use its OAuth), ranked below every real UA.
    _re("claude-code-beta", "claude-code", "anthropic-beta", r"\bclaude-code-\d{8}\b"),
    # 3. `originator` values of known tools. Below the UA: the originator can be set by
    #    env var and plugins copy it (OpenCode's Codex plugin sends `originator: opencode`).
    _re("codex-originator", "codex", _ORIGINATOR, r"^codex"),
    _re("opencode-originator", "opencode", _ORIGINATOR, r"(?i)^opencode$"),
    _re("openclaw-originator", "openclaw", _ORIGINATOR, r"(?i)^openclaw$"),
    # 4. OpenRouter attribution. Roo and Kilo are Cline forks: exact titles keep them apart.
    _re("kilo-code-title", "kilo-code", _TITLE, r"(?i)^kilo ?code$"),
    _re("roo-code-title", "roo-code", _TITLE, r"(?i)^roo ?code$"),
    _re("cline-title", "cline", _TITLE, r"(?i)^cline$"),
    _re("aider-title", "aider", _TITLE, r"(?i)^aider$"),
    _re("opencode-title", "opencode", _TITLE, r"(?i)^opencode$"),
    _re("kilo-code-referer", "kilo-code", _REFERER, r"(?i)\bkilocode\.ai\b|\bkilo\.ai\b"),
    _re("roo-code-referer", "roo-code", _REFERER, r"(?i)RooVetGit/Roo-|\broocode\.com\b"),
    _re("cline-referer", "cline", _REFERER, r"(?i)\bcline\.bot\b"),
    _re("aider-referer", "aider", _REFERER, r"(?i)\baider\.chat\b"),
    _re("opencode-referer", "opencode", _REFERER, r"(?i)\bopencode\.ai\b"),
    # 5. Any other originator is a slug naming the front-end (the original used it
    #    verbatim); only a short, plain slug is believed.
    _re("originator-other", None, _ORIGINATOR, r"(?a)^(?P<tool>[A-Za-z0-9][\w.-]{0,31})$"),
    # 6. Generic SDKs: last, because every tool above is built on one of them.
    _re("anthropic-sdk-ua", "anthropic-sdk", _UA, r"^(?:Async)?Anthropic/"),
    _re("openai-sdk-ua", "openai-sdk", _UA, r"^(?:Async)?OpenAI/"),
    _re("google-genai-sdk-ua", "google-genai-sdk", _UA, r"^google-genai-sdk/"),
    _re(
        "google-genai-sdk-client",
        "google-genai-sdk",
        "x-goog-api-client",
        r"(?:^|\s)(?:google-genai-sdk|genai-js|genai-py)/",
    ),
    Rule(
        "anthropic-sdk-stainless",
        "anthropic-sdk",
        (_w("x-stainless-lang", _ANY), _w("anthropic-version", _ANY)),
    ),
    _has("openai-sdk-stainless", "openai-sdk", "x-stainless-lang"),
)


def _ua(pattern: str) -> When:
    return _w(_UA, pattern)


_STAINLESS_VERSION = _w("x-stainless-package-version", rf"^{_V}")

TOOLS: Mapping[str, ToolInfo] = {
    "claude-code": ToolInfo(
        versions=(_ua(rf"^claude-(?:cli|code)/{_V}"),),
        sessions=("x-claude-code-session-id",),
    ),
    # The UA's first token is the (overridable) originator, so take its version whatever
    # the token says. `session_id`/`conversation_id` are older Codex; 0.169 sends
    # `session-id` and `thread-id`.
    "codex": ToolInfo(
        versions=(_ua(rf"^[^/\s]+/{_V}"),),
        sessions=("session-id", "session_id", "conversation_id", "thread-id"),
    ),
    "gemini-cli": ToolInfo(
        versions=(_ua(rf"^GeminiCLI(?:-[\w.-]+)?/{_V}"), _ua(rf"^CloudCodeVSCode/{_V}")),
    ),
    "qwen-code": ToolInfo(
        versions=(_ua(rf"^QwenCode/{_V}"),),
        sessions=("x-qwen-code-session-id",),
    ),
    # Current OpenCode sends `x-session-id`/`x-session-affinity` to ordinary providers,
    # `x-opencode-session` only to its own (OpenCode Zen) provider, and Codex-style
    # `session-id` from its ChatGPT/Codex plugin.
    "opencode": ToolInfo(
        versions=(_ua(rf"^opencode\d*/{_V}"),),
        sessions=("x-opencode-session", "x-session-id", "x-session-affinity", "session-id"),
    ),
    "openclaw": ToolInfo(
        versions=(_ua(rf"(?i)openclaw[/-]{_V}"),),
        sessions=("x-openclaw-session-id", "x-session-id"),
    ),
    "hermes-agent": ToolInfo(versions=(_ua(rf"(?i)hermes[-_]?agent/{_V}"),)),
    "kilo-code": ToolInfo(
        versions=(
            _w("x-kilocode-version", rf"^{_V}"),
            _ua(rf"^(?:Kilo-Code|opencode-kilo-provider)/{_V}"),
            _ua(rf"^kilo/[^/\s]+/{_V}"),
        ),
        sessions=("x-kilocode-taskid", "x-task-id", "x-session-id"),
    ),
    "roo-code": ToolInfo(versions=(_ua(rf"^RooCode/{_V}"),)),
    "cline": ToolInfo(
        versions=(_w("x-cline-version", rf"^{_V}"), _ua(rf"^Cline/{_V}")),
        sessions=("x-task-id",),
    ),
    "crush": ToolInfo(versions=(_ua(rf"^Charm-Crush/v?{_V}"),)),
    "goose": ToolInfo(versions=(_ua(rf"^goose/{_V}"),), sessions=("goose-session-id",)),
    "aider": ToolInfo(versions=(_ua(rf"(?i)^aider(?:-chat)?/{_V}"),)),
    "openai-sdk": ToolInfo(versions=(_ua(rf"^(?:Async)?OpenAI/\w+ {_V}"), _STAINLESS_VERSION)),
    "anthropic-sdk": ToolInfo(
        versions=(_ua(rf"^(?:Async)?Anthropic/\w+ {_V}"), _STAINLESS_VERSION)
    ),
    "google-genai-sdk": ToolInfo(
        versions=(
            _w("x-goog-api-client", rf"(?:^|\s)(?:google-genai-sdk|genai-js|genai-py)/{_V}"),
            _ua(rf"^google-genai-sdk/{_V}"),
        ),
    ),
}

# For tools without their own entry (unknown, unlisted originators): the session header
# names that are generic enough to mean the same thing whoever sends them.
_GENERIC = ToolInfo(sessions=("x-session-id", "session-id"))

# X-Agent-Name is the original's instance name; OpenClaw also sends its agent id.
_AGENT_HEADERS = ("x-agent-name", "x-openclaw-agent-id")


def _value(headers: HeaderLookup, name: str) -> str | None:
    value = headers.get(name)
    if not value:
        return None
    return value[:_MATCH_LIMIT]


def _clean(value: str | None, limit: int = _PART_LIMIT) -> str | None:
    """A header-supplied name, safe to store and show: no control chars, bounded, trimmed."""
    if not value:
        return None
    text = _CONTROL.sub(" ", value[: limit * 4]).strip()[:limit].strip()
    return text or None


def _match_rule(headers: HeaderLookup) -> tuple[Rule, str] | None:
    # The rules read ~30 distinct headers (the User-Agent 16 times): each is looked up once.
    seen: dict[str, str | None] = {}
    for rule in RULES:
        found: re.Match[str] | None = None
        for cond in rule.when:
            try:
                value = seen[cond.header]
            except KeyError:
                value = seen[cond.header] = _value(headers, cond.header)
            found = cond.pattern.search(value) if value is not None else None
            if found is None:
                break
        if found is None:
            continue
        tool = rule.tool if rule.tool is not None else found.group("tool").lower()
        return rule, tool
    return None


def _version(headers: HeaderLookup, info: ToolInfo) -> str | None:
    for cond in info.versions:
        value = _value(headers, cond.header)
        found = cond.pattern.search(value) if value is not None else None
        if found is not None:
            return found.group("v")[:_PART_LIMIT]
    return None


def _first(headers: HeaderLookup, names: tuple[str, ...], limit: int) -> str | None:
    for name in names:
        value = _clean(headers.get(name), limit)
        if value:
            return value
    return None


def _session_tail(session_id: str) -> str:
    # The *last* 8 characters, not the first: Codex ids are UUIDv7 and OpenCode ids are
    # `ses_` + a time prefix, so concurrent sessions share their first 8 characters
    # (captured: `ses_e0065a73…` and `ses_e00658c4…`) while the tails are random.
    return session_id[-8:]


def _client_id(
    tool: str,
    *,
    display_name: str | None,
    agent: str | None,
    session_id: str | None,
    api_key: str | None,
) -> str:
    suffix = display_name or agent or (_session_tail(session_id) if session_id else None)
    if suffix is None and api_key:
        # Nothing names the instance (Aider, plain SDK scripts): tell clients apart by key
        # without storing any of the key's characters.
        suffix = "key-" + hashlib.sha256(api_key.encode("utf-8", "replace")).hexdigest()[:8]
    return f"{tool}-{suffix}" if suffix else tool


# Every header identification reads. The answer depends on nothing else but the key and
# the name mapping, so it can be remembered by their values (see identify's *seen*).
INPUT_HEADERS: tuple[str, ...] = tuple(dict.fromkeys([
    *(cond.header for rule in RULES for cond in rule.when),
    *(cond.header for info in (*TOOLS.values(), _GENERIC) for cond in info.versions),
    *(name for info in (*TOOLS.values(), _GENERIC) for name in info.sessions),
    *_AGENT_HEADERS,
]))


class _Remembered:
    """Identities by the values of :data:`INPUT_HEADERS` and the key, for one name
    mapping. A tool sends the same headers call after call (per-turn headers change them
    every few calls), and matching them against the rules costs tens of microseconds."""

    __slots__ = ("found", "mapping")
    LIMIT = 1024  # distinct header sets kept; then it starts over

    def __init__(self, mapping: Mapping[str, str] | None) -> None:
        self.mapping = mapping
        self.found: dict[tuple[object, ...], Identity] = {}


_remembered = _Remembered(None)


def identify(
    headers: HeaderLookup,
    *,
    api_key: str | None = None,
    client_name_mapping: Mapping[str, str] | None = None,
    seen: tuple[str | None, ...] | None = None,
) -> Identity:
    """Identify the tool, instance and session behind one request. Never raises.

    ``api_key`` is the credential the client presented (Bearer token or ``x-api-key``);
    ``client_name_mapping`` is ``CLIENT_NAME_MAPPING`` (api key → display name).
    ``client_id`` is ``tool`` plus ``-`` and the first of: the display name mapped from
    ``api_key``, the agent name, the last 8 characters of the session id, ``key-`` and 8
    hex digits of the key's SHA-256; or just ``tool`` when there is none.

    *seen*: the values of :data:`INPUT_HEADERS` in *headers*, in that order, when the
    caller has them cheaply (a WSGI environ); the answer is then remembered for the next
    request with the same values, key and mapping.
    """
    global _remembered
    if seen is None:
        return _identify(headers, api_key, client_name_mapping)
    memo = _remembered
    if memo.mapping is not client_name_mapping:
        # Other settings (tests, a reload): one swap, so no thread mixes two mappings.
        memo = _remembered = _Remembered(client_name_mapping)
    try:
        if (api_key is not None and len(api_key) > _MATCH_LIMIT) or max(
                map(len, filter(None, seen)), default=0) > _MATCH_LIMIT:
            # Not kept: a client sending ever-different long values would fill the memory
            # with them (real ones are far shorter).
            return _identify(headers, api_key, client_name_mapping)
        key = (*seen, api_key)
        return memo.found[key]
    except KeyError:
        pass
    except TypeError:  # a value that is not a header string (unhashable, or no length)
        return _identify(headers, api_key, client_name_mapping)
    identity = _identify(headers, api_key, client_name_mapping)
    if len(memo.found) >= _Remembered.LIMIT:
        memo.found.clear()
    memo.found[key] = identity
    return identity


def _identify(headers: HeaderLookup, api_key: str | None,
              client_name_mapping: Mapping[str, str] | None) -> Identity:
    matched = _match_rule(headers)
    if matched is None:
        rule_name, tool = UNKNOWN, UNKNOWN
    else:
        rule_name, tool = matched[0].name, matched[1]
    info = TOOLS.get(tool, _GENERIC)
    session_id = _first(headers, info.sessions, _SESSION_LIMIT)
    agent = _first(headers, _AGENT_HEADERS, _PART_LIMIT)
    display_name = None
    if api_key and client_name_mapping:
        display_name = _clean(client_name_mapping.get(api_key))
    return Identity(
        tool=tool,
        tool_version=_version(headers, info),
        client_id=_client_id(
            tool,
            display_name=display_name,
            agent=agent,
            session_id=session_id,
            api_key=api_key,
        ),
        session_id=session_id,
        agent=agent,
        rule=rule_name,
    )
