"""The Claude Code bypass transform: make a Messages API call look like Claude Code's own.

This module owns the whole transform and nothing else (no sockets, no SQL): which requests
it must never touch (:func:`is_claude_code`), the rewritten request headers and body
(:func:`rewrite_request`), and the response filter that gives the client back its own tool
names (:func:`response_rewriter`). A custom provider opts in with
``"transform": "claude-code"``; its settings are CLAUDE_CODE_VERSION, CCH_SALT,
CCH_POSITIONS and TOOL_PREFIX (:class:`ClaudeCodeOptions`).

Use from the request path::

    if not is_claude_code(client_headers):
        names = tool_name_map(body, options)        # from the ORIGINAL body
        headers, body = rewrite_request(headers, body, options)
        ...
        transform = response_rewriter(content_type, streaming, options, tool_names=names)

Tool names go upstream as ``TOOL_PREFIX + Capitalised(name)``. The response filter only
restores names found in ``tool_names`` (prefixed → original, exactly as the client sent
them), and only in ``tool_use`` blocks: without a map (or with an empty one: the request
had no tools) :func:`response_rewriter` returns None and the response passes untouched.

Differences from the original (spec §8.3, §12 item 10), on purpose: the client's
``anthropic-beta`` values are kept (merged after the required ones); restored tool names
are the client's own, not first-letter-lower-cased guesses; only ``tool_use`` names are
rewritten, with the configured prefix; Anthropic-defined tools (a ``type`` other than
``custom``, e.g. ``web_search_20250305``) keep their fixed names; a forced
``tool_choice`` names the prefixed tool.
"""

from __future__ import annotations

import hashlib
import json
import platform
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # types only: providers import no I/O package at run time
    from agent_cli_proxy.config import Settings
    from agent_cli_proxy.upstream.relay import Transform

REQUIRED_BETAS = ("claude-code-20250219", "oauth-2025-04-20", "interleaved-thinking-2025-05-14")
IDENTITY = "You are a Claude agent, built on Anthropic's Claude Agent SDK."
BILLING_PREFIX = "x-anthropic-billing-header: "
# Claude Code runs on Node; there is no Node here, so claim a current release.
NODE_VERSION = "v24.3.0"
# Paragraphs of OpenCode's system prompt that name it (they would contradict the identity).
_OPENCODE_MARKERS = ("You are OpenCode", "github.com/anomalyco/opencode", "opencode.ai/docs")
# Longest SSE line the response filter holds back; longer ones pass unchanged (a
# content_block_start for a tool_use is a few hundred bytes).
MAX_LINE_BYTES = 1024 * 1024

_SESSION_ID = str(uuid.uuid4())  # one per process, as Claude Code has one per run


@dataclass(frozen=True, slots=True)
class ClaudeCodeOptions:
    version: str
    cch_salt: str
    cch_positions: tuple[int, ...]
    tool_prefix: str
    session_id: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ClaudeCodeOptions:
        return cls(
            version=settings.claude_code_version,
            cch_salt=settings.cch_salt,
            cch_positions=settings.cch_positions,
            tool_prefix=settings.tool_prefix,
            session_id=_SESSION_ID,
        )


class HeaderItems(Protocol):
    """A plain mapping (any case) or werkzeug ``Headers``: both have ``items()``."""

    def items(self) -> Iterable[tuple[str, str]]: ...


def is_claude_code(headers: HeaderItems) -> bool:
    """True when Claude Code itself sent the request: it is then never altered.

    Every captured Claude Code (TUI, ``-p``, Agent SDK) sends ``User-Agent: claude-cli/...``
    (older releases: ``claude-code/``); ``x-app: cli`` with its session header also counts,
    in case something on the way replaced the user agent. The ``claude-code-20250219`` beta
    alone does not: other tools send it to pass for Claude Code.
    """
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        lowered.setdefault(name.lower(), value)
    agent = lowered.get("user-agent", "").strip().lower()
    if agent.startswith(("claude-cli/", "claude-code/")):
        return True
    app = lowered.get("x-app", "").strip().lower()
    return app == "cli" and "x-claude-code-session-id" in lowered


# -- request ----------------------------------------------------------------------------------


def _stainless_arch() -> str:
    return "arm64" if platform.machine().lower() in ("arm64", "aarch64") else "x64"


def _stainless_os() -> str:
    # The spellings of the Stainless SDK Claude Code is built on.
    return {"Darwin": "MacOS", "Windows": "Windows"}.get(platform.system(), "Linux")


def _betas(headers: Iterable[tuple[str, str]]) -> str:
    """The required betas, then the client's own (in its order), each once."""
    merged = list(REQUIRED_BETAS)
    for name, value in headers:
        if name.lower() == "anthropic-beta":
            merged += [b for b in (t.strip() for t in value.split(",")) if b and b not in merged]
    return ",".join(merged)


def rewrite_request(
    headers: list[tuple[str, str]], body: bytes, options: ClaudeCodeOptions
) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and body to send upstream instead of the client's.

    The headers Claude Code sends replace the client's (whatever their case); every other
    header keeps its place, except that a Content-Length follows the new body. A body that
    is not a JSON object in Messages API shape is forwarded unchanged.
    """
    new_body, _ = _rewrite_body(body, options)
    forced = {
        "user-agent": f"claude-cli/{options.version} (external, cli)",
        "x-app": "cli",
        "x-claude-code-session-id": options.session_id,
        "x-stainless-arch": _stainless_arch(),
        "x-stainless-os": _stainless_os(),
        "x-stainless-lang": "js",
        "x-stainless-runtime": "node",
        "x-stainless-runtime-version": NODE_VERSION,
        "anthropic-beta": _betas(headers),
        "anthropic-dangerous-direct-browser-access": "true",
    }
    out: list[tuple[str, str]] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "content-length":
            out.append((name, str(len(new_body))))
        elif lower not in forced:
            out.append((name, value))
    out += forced.items()
    return out, new_body


def tool_name_map(body: bytes, options: ClaudeCodeOptions) -> dict[str, str]:
    """Prefixed name → the client's name, for every tool name :func:`rewrite_request`
    changes in ``body`` (the client's original body). Pass it to :func:`response_rewriter`.
    """
    return _rewrite_body(body, options)[1]


def _sanitise(text: str) -> str:
    kept = [p for p in text.split("\n\n") if not any(m in p for m in _OPENCODE_MARKERS)]
    text = "\n\n".join(kept).replace("if OpenCode honestly", "if the assistant honestly", 1)
    return text.strip()


def _system_blocks(system: object) -> list[dict[str, Any]] | None:
    """Step 1: ``system`` as sanitised text blocks; None when it is not valid."""
    if system is None or system == "":
        return []
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    if not isinstance(system, list):
        return None
    blocks = []
    for block in system:
        if not (isinstance(block, dict) and block.get("type") == "text"):
            return None
        text = block.get("text")
        if not isinstance(text, str):
            return None
        text = _sanitise(text)
        if text:
            blocks.append({**block, "text": text})
    return blocks


def _js_utf8(text: str) -> bytes:
    """UTF-8 as JavaScript encodes it: a lone surrogate becomes U+FFFD."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode()


def billing_text(first_user_text: str, options: ClaudeCodeOptions) -> str:
    """Step 2: the billing block's text for the first user message's text."""
    # Positions count UTF-16 code units, as JavaScript string indexing does.
    units = first_user_text.encode("utf-16-le", "surrogatepass")
    picked = "".join(
        units[2 * p : 2 * p + 2].decode("utf-16-le", "replace") if 2 * p < len(units) else "0"
        for p in options.cch_positions
    )
    cch = hashlib.sha256(_js_utf8(first_user_text)).hexdigest()[:5]
    seed = options.cch_salt + picked + options.version
    suffix = hashlib.sha256(_js_utf8(seed)).hexdigest()[:3]
    return (
        f"{BILLING_PREFIX}cc_version={options.version}.{suffix}; "
        f"cc_entrypoint=sdk-cli; cch={cch};"
    )


def _first_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                text = block.get("text")
                return text if isinstance(text, str) else ""
    return ""


def _prefixed(name: str, prefix: str) -> str:
    return prefix + name[:1].upper() + name[1:]


def _rename_tools(obj: dict[str, Any], prefix: str) -> dict[str, str]:
    """Step 5, in place: prefix the client's tool names; return prefixed → original."""
    tools = obj.get("tools")
    tools = [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
    # Anthropic-defined tools (bash_20250124, web_search_...) only work under their own name.
    fixed = {t.get("name") for t in tools if t.get("type", "custom") != "custom"}
    names: dict[str, str] = {}

    def rename(holder: dict[str, Any]) -> None:
        name = holder.get("name")
        if isinstance(name, str) and name not in fixed:
            holder["name"] = _prefixed(name, prefix)
            names.setdefault(holder["name"], name)

    for tool in tools:
        rename(tool)
    messages = obj.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "tool_use":
                rename(block)
    choice = obj.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool":
        rename(choice)  # a forced tool must name the tool as it was sent
    return names


def _rewrite_body(body: bytes, options: ClaudeCodeOptions) -> tuple[bytes, dict[str, str]]:
    obj = _load(body)
    if not isinstance(obj, dict):
        return body, {}
    blocks = _system_blocks(obj.get("system"))
    messages = obj.get("messages", [])
    if blocks is None or not isinstance(messages, list):
        return body, {}  # not a Messages API body: the upstream says what is wrong with it
    first_user = next(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"),
        None,
    )
    # Steps 2-3: billing block (when there is a user message) and identity block first.
    if blocks and blocks[0].get("text") == IDENTITY:
        core = 1
    else:
        core_blocks = [{"type": "text", "text": IDENTITY}]
        if first_user is not None:
            text = _first_text(messages[first_user].get("content"))
            core_blocks.insert(0, {"type": "text", "text": billing_text(text, options)})
        blocks = core_blocks + blocks
        core = len(core_blocks)
    # Step 4: other system text moves into the first user message.
    if len(blocks) > core and first_user is not None:
        moved = "\n\n".join(b["text"] for b in blocks[core:])
        message = messages[first_user]
        content = message.get("content")
        if isinstance(content, str):
            content = f"{moved}\n\n{content}"
        elif isinstance(content, list):
            content = [{"type": "text", "text": moved}, *content]
        else:
            content = None
        if content is not None:
            messages = [*messages]
            messages[first_user] = {**message, "content": content}
            obj["messages"] = messages
            blocks = blocks[:core]
    obj["system"] = blocks
    names = _rename_tools(obj, options.tool_prefix)
    return _dump(obj), names


def _load(data: bytes) -> object:
    try:
        # Parse the text, not the bytes: json.loads(bytes) also accepts UTF-16/32.
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _dump(obj: object) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape: keep it escaped
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


# -- response ---------------------------------------------------------------------------------


def _restore(block: object, names: Mapping[str, str]) -> bool:
    """Give a ``tool_use`` block back its client-side name; True when it changed."""
    if isinstance(block, dict) and block.get("type") == "tool_use":
        name = block.get("name")
        if isinstance(name, str) and name in names:
            block["name"] = names[name]
            return True
    return False


class JsonToolNameRestorer:
    """Non-streaming body: buffered, ``content[]`` tool_use names restored at the end.

    The body is re-serialised compactly only when a name changed; otherwise (error
    bodies, no tool calls, anything unparseable) it leaves exactly as it came.
    """

    def __init__(self, names: Mapping[str, str]) -> None:
        self._names = names
        self._body = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        self._body += chunk
        return b""

    def finish(self) -> bytes:
        body = bytes(self._body)
        self._body.clear()
        obj = _load(body)
        content = obj.get("content") if isinstance(obj, dict) else None
        if not isinstance(content, list):
            return body
        changed = [_restore(block, self._names) for block in content]
        return _dump(obj) if any(changed) else body


class SseToolNameRestorer:
    """Event stream: tool names restored in ``content_block_start`` events of tool_use.

    Works per complete line on the raw bytes; every complete line is released by the
    ``feed`` that completed it, and only an incomplete line is held. Lines other than a
    matching ``data:`` line pass byte for byte; a matching one is re-serialised compactly.
    A line longer than ``max_line_bytes`` passes unchanged, whole or split (bounded memory;
    the outcome does not depend on where the chunks were cut).
    """

    def __init__(self, names: Mapping[str, str], max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._names = names
        self._max = max(1, max_line_bytes)
        self._partial = bytearray()
        self._passing = False  # the rest of an oversized line goes out as it comes

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        # bytes.splitlines(keepends=True) splits on exactly the SSE line breaks. A "\r\n"
        # cut between chunks ends the line at "\r"; the "\n" then passes as an empty line:
        # the bytes sent are the same.
        for piece in chunk.splitlines(keepends=True):
            if piece[-1:] not in (b"\n", b"\r"):  # the incomplete last line
                if self._passing:
                    out.append(piece)
                else:
                    self._partial += piece
                    if len(self._partial) > self._max:
                        out.append(bytes(self._partial))
                        self._partial.clear()
                        self._passing = True
                break
            if self._passing:
                self._passing = False
                out.append(piece)
                continue
            content = piece.rstrip(b"\r\n")
            ending = piece[len(content) :]
            if self._partial:
                content = bytes(self._partial) + content
                self._partial.clear()
            out.append(self._line(content) + ending)
        return b"".join(out)

    def finish(self) -> bytes:
        """End of stream: the held unterminated line, rewritten like any other."""
        held = bytes(self._partial)
        self._partial.clear()
        passing, self._passing = self._passing, False
        return b"" if passing or not held else self._line(held)

    def _line(self, content: bytes) -> bytes:
        if (
            len(content) > self._max
            or not content.startswith(b"data:")
            or b'"content_block_start"' not in content  # cheap tests first
            or b'"tool_use"' not in content
        ):
            return content
        obj = _load(content[5:])
        if not (
            isinstance(obj, dict)
            and obj.get("type") == "content_block_start"
            and _restore(obj.get("content_block"), self._names)
        ):
            return content
        head = b"data: " if content[5:6] == b" " else b"data:"
        return head + _dump(obj)


def response_rewriter(
    content_type: str | None,
    streaming: bool,
    options: ClaudeCodeOptions,
    tool_names: Mapping[str, str] | None = None,
) -> Transform | None:
    """The filter restoring the client's tool names in a response, or None to relay as is.

    ``tool_names`` is :func:`tool_name_map` of the request; without names there is nothing
    to restore. The content type picks the filter (``streaming`` only decides when there is
    none): SSE or JSON; anything else (or a compressed body, which never parses) is left
    alone. ``options`` is accepted for symmetry with :func:`rewrite_request`.
    """
    if not tool_names:
        return None
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "text/event-stream" or (not media and streaming):
        return SseToolNameRestorer(tool_names)
    if media == "application/json" or media.endswith("+json"):
        return JsonToolNameRestorer(tool_names)
    return None
