#!/usr/bin/env python3
"""Capture the HTTP requests real AI coding CLIs send, against a loopback fake provider.

A dev tool (not a test) that feeds ``tests/usage/fixtures/*.json``: the fixtures that keep
``agent_cli_proxy.usage.identify`` honest about what Claude Code, Codex, Gemini CLI,
OpenCode … really put on the wire.

The server listens on 127.0.0.1 port 0, logs method, path, query and every header (secrets
redacted *before* anything is written) plus a small body summary, and answers in the wire
format the path asks for, so the CLI gets far enough to send its real LLM request:

* Anthropic ``/v1/messages`` (SSE or JSON) and ``/v1/messages/count_tokens``
* OpenAI Responses ``/v1/responses`` (SSE, ends with ``response.completed``)
* OpenAI ``/v1/chat/completions`` (SSE with a usage chunk, or JSON)
* Gemini ``…:streamGenerateContent?alt=sse``, ``…:generateContent``, ``…:countTokens``
* ``…/models`` lists (one shape that satisfies OpenAI, Anthropic and Gemini readers)

Sub-commands::

    # run a CLI against the fake provider; @PORT@ and @BASE@ are replaced everywhere
    python bench/capture_cli_headers.py run --isolate --out /tmp/cap/claude.json \\
        --env ANTHROPIC_BASE_URL=@BASE@ --env ANTHROPIC_API_KEY=sk-ant-test -- claude -p "say hi"

    # turn the LLM requests of a capture into a test fixture
    python bench/capture_cli_headers.py fixture /tmp/cap/claude.json \\
        --out tests/usage/fixtures/claude-code.json --tool claude-code --tool-version 2.1.197 \\
        --package @anthropic-ai/claude-code --session-header x-claude-code-session-id

    # just serve (prints the port) for poking by hand
    python bench/capture_cli_headers.py serve --out /tmp/cap/manual.json

``--isolate`` re-executes the whole run inside a fresh network namespace
(``unshare -rn``) with only loopback up, so a CLI that ignores its base-URL setting for some
call (telemetry, update checks, auth) cannot reach a real provider: it fails instead.

``bench/real_clis_e2e.py`` reuses the server (``make_server``, ``Handler.sse_delay`` /
``chunked``, ``CaptureLog(keep_raw=True)``), the CLI environment and the isolation.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

# Header names whose values are credentials. The scheme word ("Bearer") is kept because
# *which kind* of auth a tool sends is part of what we want to learn.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "cookie",
        "chatgpt-account-id",
    }
)
SECRET_QUERY = frozenset({"key", "api_key", "access_token"})
REPLY_TEXT = "hi"
SSE = "text/event-stream"
IN_NETNS_FLAG = "--_in-netns"


def redact_header(name: str, value: str) -> str:
    if name.lower() not in SECRET_HEADERS:
        return value
    scheme, sep, _rest = value.partition(" ")
    if sep and scheme.lower() in {"bearer", "basic", "token"}:
        return f"{scheme} REDACTED"
    return "REDACTED"


def redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, "REDACTED" if k.lower() in SECRET_QUERY else v) for k, v in pairs])


def auth_kind(headers: list[tuple[str, str]]) -> str | None:
    """Name the kind of credential a request carried, without the credential."""
    for name, value in headers:
        low = name.lower()
        if low == "authorization":
            return "authorization: " + value.partition(" ")[0]
        if low in {"x-api-key", "x-goog-api-key", "api-key"}:
            return low
    return None


def body_summary(body: bytes) -> dict[str, Any]:
    """Non-secret facts about the request body that help explain the headers."""
    out: dict[str, Any] = {"bytes": len(body)}
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return out
    if not isinstance(doc, dict):
        return out
    out["keys"] = sorted(doc)
    for key in ("model", "stream", "prompt_cache_key", "user", "metadata", "store"):
        if key in doc:
            out[key] = doc[key]
    return out


# --------------------------------------------------------------------------- wire formats


def sse(events: list[tuple[str | None, Any]]) -> bytes:
    chunks = []
    for event, data in events:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        head = f"event: {event}\n" if event else ""
        chunks.append(f"{head}data: {text}\n\n")
    return "".join(chunks).encode()


def split_sse(payload: bytes) -> list[bytes]:
    """The events of an SSE body, each with its blank-line terminator."""
    parts = payload.split(b"\n\n")
    return [p + b"\n\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def anthropic_message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_capture01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": REPLY_TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def anthropic_stream(model: str) -> bytes:
    start = anthropic_message(model)
    start.update(content=[], stop_reason=None)
    start["usage"] = dict(start["usage"], output_tokens=1)
    return sse(
        [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            ("ping", {"type": "ping"}),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": REPLY_TEXT},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 2},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
    )


def responses_stream(model: str) -> bytes:
    now = int(time.time())
    part = {"type": "output_text", "text": REPLY_TEXT, "annotations": []}
    item_done = {
        "id": "msg_capture01",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }
    base = {"id": "resp_capture01", "object": "response", "created_at": now, "model": model}
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 12,
    }
    events: list[tuple[str | None, Any]] = [
        (
            "response.created",
            {"response": dict(base, status="in_progress", output=[])},
        ),
        (
            "response.in_progress",
            {"response": dict(base, status="in_progress", output=[])},
        ),
        (
            "response.output_item.added",
            {
                "output_index": 0,
                "item": dict(item_done, status="in_progress", content=[]),
            },
        ),
        (
            "response.content_part.added",
            {
                "item_id": "msg_capture01",
                "output_index": 0,
                "content_index": 0,
                "part": dict(part, text=""),
            },
        ),
        (
            "response.output_text.delta",
            {
                "item_id": "msg_capture01",
                "output_index": 0,
                "content_index": 0,
                "delta": REPLY_TEXT,
            },
        ),
        (
            "response.output_text.done",
            {
                "item_id": "msg_capture01",
                "output_index": 0,
                "content_index": 0,
                "text": REPLY_TEXT,
            },
        ),
        (
            "response.content_part.done",
            {"item_id": "msg_capture01", "output_index": 0, "content_index": 0, "part": part},
        ),
        ("response.output_item.done", {"output_index": 0, "item": item_done}),
        (
            "response.completed",
            {"response": dict(base, status="completed", output=[item_done], usage=usage)},
        ),
    ]
    numbered = []
    for seq, (name, data) in enumerate(events):
        numbered.append((name, {"type": name, "sequence_number": seq, **data}))
    return sse(numbered)


def chat_completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-capture01",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY_TEXT},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }


def chat_stream(model: str) -> bytes:
    base = {
        "id": "chatcmpl-capture01",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    return sse(
        [
            (
                None,
                dict(
                    base,
                    choices=[
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": REPLY_TEXT},
                            "finish_reason": None,
                        }
                    ],
                ),
            ),
            (None, dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])),
            (
                None,
                dict(
                    base,
                    choices=[],
                    usage={"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
                ),
            ),
            (None, "[DONE]"),
        ]
    )


def gemini_response(model: str) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": REPLY_TEXT}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 2,
            "totalTokenCount": 12,
        },
        "modelVersion": model,
        "responseId": "capture01",
    }


MODEL_IDS = (
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "gpt-5",
    "gpt-5-codex",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
)


def models_list() -> dict[str, Any]:
    # One document that OpenAI (data/object), Anthropic (data/has_more/type) and Gemini
    # (models/name) list readers all accept.
    entries = [
        {
            "id": mid,
            "object": "model",
            "type": "model",
            "created": 0,
            "created_at": "2025-01-01T00:00:00Z",
            "owned_by": "capture",
            "display_name": mid,
        }
        for mid in MODEL_IDS
    ]
    return {
        "object": "list",
        "data": entries,
        "has_more": False,
        "first_id": MODEL_IDS[0],
        "last_id": MODEL_IDS[-1],
        "models": [
            {
                "name": f"models/{mid}",
                "displayName": mid,
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
            }
            for mid in MODEL_IDS
            if mid.startswith("gemini")
        ],
    }


# --------------------------------------------------------------------------- server


class CaptureLog:
    """Thread-safe list of captured requests, rewritten to disk after each one.

    With ``keep_raw`` each entry also keeps, in memory only, under ``"raw"``: the unredacted
    headers and body, the reply (``ctype``, ``payload``, ``response_headers``), the
    ``writes`` made (time, bytes) and ``closed_early`` (set when the client hung up first).
    """

    def __init__(self, path: Path, meta: dict[str, Any], keep_raw: bool = False) -> None:
        self.path = path
        self.meta = meta
        self.keep_raw = keep_raw
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            entry["seq"] = len(self.requests)
            self.requests.append(entry)
            self._write_locked()

    def update_meta(self, **meta: Any) -> None:
        with self._lock:
            self.meta.update(meta)
            self._write_locked()

    def _write_locked(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        requests = [{k: v for k, v in r.items() if k != "raw"} for r in self.requests]
        tmp.write_text(json.dumps({**self.meta, "requests": requests}, indent=2) + "\n")
        tmp.replace(self.path)


def read_chunked(rfile: io.BufferedIOBase) -> bytes:
    """The body of a ``Transfer-Encoding: chunked`` message, trailers skipped."""
    parts: list[bytes] = []
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        parts.append(rfile.read(size))
        rfile.readline()


def client_gone(conn: socket.socket, timeout: float) -> bool:
    """Wait up to *timeout*; True as soon as the peer closed (or reset) the connection."""
    try:
        readable, _, _ = select.select([conn], [], [], timeout)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "capture/1"
    log: CaptureLog  # set on the subclass made by make_server()
    sse_delay = 0.0  # seconds between SSE events; the stream stops if the client hangs up
    chunked = False  # SSE answers with Transfer-Encoding: chunked, one event per chunk

    def log_message(self, format: str, *args: Any) -> None:  # quiet; the JSON is the log
        return

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            return read_chunked(self.rfile)
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        url = urlsplit(self.path)
        raw_headers = list(self.headers.items())
        doc: dict[str, Any] = {}
        try:
            parsed = json.loads(body) if body else {}
            doc = parsed if isinstance(parsed, dict) else {}
        except (ValueError, UnicodeDecodeError):
            doc = {}
        status, ctype, payload = route(self.command, url.path, url.query, doc, body)
        raw: dict[str, Any] = {"headers": raw_headers, "body": body, "ctype": ctype,
                               "payload": payload, "writes": [], "closed_early": None}
        entry = {
            "t": round(time.time(), 3),
            "method": self.command,
            "path": url.path,
            "query": redact_query(url.query),
            "headers": [[k, redact_header(k, v)] for k, v in raw_headers],
            "auth_kind": auth_kind(raw_headers),
            "body": body_summary(body),
            "response_status": status,
        }
        if self.log.keep_raw:
            entry["raw"] = raw
        self.log.add(entry)
        self._reply(status, ctype, payload, raw)

    def _reply(self, status: int, ctype: str, payload: bytes, raw: dict[str, Any]) -> None:
        stream = ctype == SSE and (self.sse_delay > 0 or self.chunked)
        chunked = stream and self.chunked
        framing = ("transfer-encoding", "chunked") if chunked else (
            "content-length", str(len(payload)))
        raw["response_headers"] = headers = [
            ("Server", self.version_string()), ("Date", self.date_time_string()),
            ("content-type", ctype), framing, ("request-id", "req_capture01")]
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        for i, piece in enumerate(split_sse(payload) if stream else [payload]):
            gone = i > 0 and self.sse_delay > 0 and client_gone(self.connection, self.sse_delay)
            if not gone:
                try:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    self.wfile.flush()
                except OSError:
                    gone = True
            if gone:
                sent = sum(len(p) for _, p in raw["writes"])
                raw["closed_early"] = {"t": time.time(), "events_written": i, "bytes": sent}
                self.close_connection = True
                return
            raw["writes"].append((time.time(), piece))
        if chunked:
            with contextlib.suppress(OSError):
                self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


def route(
    method: str, path: str, query: str, doc: dict[str, Any], body: bytes
) -> tuple[int, str, bytes]:
    """Pick the reply by path (the CLI's base URL decides the prefix, so match suffixes)."""
    model = str(doc.get("model") or "capture-model")
    stream = doc.get("stream") in (True, "true")
    as_json = "application/json"
    as_sse = "text/event-stream"

    def js(obj: Any, status: int = 200) -> tuple[int, str, bytes]:
        return status, as_json, json.dumps(obj).encode()

    if path.endswith("/messages/count_tokens"):
        return js({"input_tokens": 10})
    if path.endswith("/messages") and method == "POST":
        if stream:
            return 200, as_sse, anthropic_stream(model)
        return js(anthropic_message(model))
    if path.endswith("/responses") and method == "POST":
        # Codex always streams; a compressed body (zstd) cannot be read here anyway.
        if stream or not doc:
            return 200, as_sse, responses_stream(model)
        return js({"id": "resp_capture01", "object": "response", "status": "completed"})
    if path.endswith("/chat/completions") and method == "POST":
        if stream:
            return 200, as_sse, chat_stream(model)
        return js(chat_completion(model))
    if ":streamGenerateContent" in path:
        gmodel = path.rsplit("/", 1)[-1].split(":", 1)[0]
        return 200, as_sse, sse([(None, gemini_response(gmodel))])
    if ":generateContent" in path:
        return js(gemini_response(path.rsplit("/", 1)[-1].split(":", 1)[0]))
    if ":countTokens" in path:
        return js({"totalTokens": 10})
    if path.rstrip("/").endswith("/models") and method in ("GET", "HEAD"):
        if "client_version" in query:  # Codex's own model catalogue endpoint
            return js({"models": []})
        return js(models_list())
    if method in ("HEAD", "OPTIONS") or path in ("/", ""):
        return 200, as_json, b"{}"
    return js({"error": {"type": "not_found", "message": f"capture: no route {path}"}}, 404)


def make_server(log: CaptureLog) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"log": log})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    return server


# --------------------------------------------------------------------------- commands


def substitute(text: str, port: int) -> str:
    return text.replace("@BASE@", f"http://127.0.0.1:{port}").replace("@PORT@", str(port))


def bring_up_loopback() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def maybe_isolate(argv: list[str], isolate: bool, script: str = __file__) -> None:
    """Re-exec *script* (default: this one) with *argv* plus IN_NETNS_FLAG in a private
    network namespace (loopback only); its ``main`` then calls bring_up_loopback()."""
    if not isolate or IN_NETNS_FLAG in argv:
        return
    if shutil.which("unshare") is None:
        sys.exit("isolation needs unshare(1)")
    args = ["unshare", "-rn", "--", sys.executable, os.path.abspath(script), *argv]
    args.append(IN_NETNS_FLAG)
    os.execvp("unshare", args)


def base_env(home: Path, path: str | None = None) -> dict[str, str]:
    """The small fixed environment a CLI runs with: its own HOME and XDG dirs, no colour."""
    return {
        "PATH": path or os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "CI": "1",
        "NO_COLOR": "1",
    }


def write_files(home: Path, files: Iterable[tuple[str, str]], port: int) -> None:
    """Write (relative path, text) pairs under *home*, @BASE@/@PORT@ substituted."""
    for rel, text in files:
        dest = home / substitute(rel, port)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(substitute(text, port))


def cmd_serve(ns: argparse.Namespace) -> int:
    log = CaptureLog(Path(ns.out), {"mode": "serve"})
    server = make_server(log)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    if ns.in_netns:
        bring_up_loopback()
    out = Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = list(ns.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        sys.exit("run: give the command after --")
    log = CaptureLog(out, {"mode": "run", "isolated": ns.in_netns})
    server = make_server(log)
    port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    home = Path(ns.home) if ns.home else Path(tempfile.mkdtemp(prefix="capture-home-"))
    home.mkdir(parents=True, exist_ok=True)
    write_files(home, [(rel, text) for rel, _, text in (w.partition("=") for w in ns.write)], port)
    env = base_env(home)
    for spec in ns.env:
        key, _, value = spec.partition("=")
        env[key] = substitute(value, port)
    command = [substitute(part, port) for part in command]
    cwd = Path(ns.cwd) if ns.cwd else home / "project"
    cwd.mkdir(parents=True, exist_ok=True)

    started = time.time()
    if ns.pty:
        env["TERM"] = "xterm-256color"
        env.pop("CI", None)
        returncode, timed_out, stdout, stderr = run_in_pty(command, env, cwd, ns)
    else:
        returncode, timed_out, stdout, stderr = run_piped(command, env, cwd, ns.timeout)
    server.shutdown()
    server.server_close()
    log.update_meta(
        command=command,
        env_keys=sorted(k for k in env if k not in {"PATH", "HOME"}),
        home=str(home),
        exit_code=returncode,
        timed_out=timed_out,
        seconds=round(time.time() - started, 2),
        stdout_tail=stdout.decode(errors="replace")[-2000:],
        stderr_tail=stderr.decode(errors="replace")[-4000:],
    )
    print(
        f"{len(log.requests)} request(s) captured -> {out} "
        f"(exit {returncode}{', timed out' if timed_out else ''})"
    )
    return 0


def end_group(proc: subprocess.Popen[bytes]) -> None:
    """End the CLI's own process group (it was started in a new session), nothing else."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=5)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def run_piped(
    command: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> tuple[int | None, bool, bytes, bytes]:
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # so a timeout can end the CLI and its children, only them
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        return proc.returncode, False, stdout, stderr
    except subprocess.TimeoutExpired:
        end_group(proc)
        stdout, stderr = proc.communicate()
        return proc.returncode, True, stdout, stderr


def run_in_pty(
    command: list[str], env: dict[str, str], cwd: Path, ns: argparse.Namespace
) -> tuple[int | None, bool, bytes, bytes]:
    """Run an interactive TUI on a pseudo-terminal, type ``--type`` text, then end it.

    Interactive front-ends can identify differently from their one-shot modes (Codex's TUI
    vs ``codex exec``, Claude Code's ``cli`` vs ``sdk-cli`` entrypoint), so both are worth a
    capture. The run always ends by timeout; that is expected here.
    """
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    screen = bytearray()

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            screen.extend(data)
            # Answer "where is the cursor?" (DSR) so TUIs that ask do not stall.
            if b"\x1b[6n" in data:
                os.write(master, b"\x1b[1;1R")

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.time() + ns.timeout
    time.sleep(ns.type_delay)
    for keys in ns.type:
        for ch in keys.encode().decode("unicode_escape"):
            os.write(master, ch.encode())
            time.sleep(0.05)
        time.sleep(1.0)
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    timed_out = proc.poll() is None
    if timed_out:
        end_group(proc)
    proc.wait()
    os.close(master)
    reader.join(timeout=2)
    return proc.returncode, timed_out, bytes(screen[-4000:]), b""


def iter_llm_requests(requests: list[dict[str, Any]], paths: list[str]) -> Iterator[dict[str, Any]]:
    for req in requests:
        if any(req["path"].endswith(p) for p in paths) and req["method"] == "POST":
            yield req


def cmd_fixture(ns: argparse.Namespace) -> int:
    capture = json.loads(Path(ns.capture).read_text())
    picked = []
    seen: set[tuple[str, str | None, frozenset[str]]] = set()
    for req in iter_llm_requests(capture["requests"], ns.path):
        headers = {k.lower(): v for k, v in req["headers"]}
        session = next(
            (headers[h.lower()] for h in ns.session_header if headers.get(h.lower())), None
        )
        # Keep one request per (path, session, header-name set): retries add nothing.
        key = (req["path"], session, frozenset(headers))
        if key in seen:
            continue
        seen.add(key)
        picked.append(
            {
                "method": req["method"],
                "path": req["path"],
                "query": req["query"],
                "headers": req["headers"],
                "auth_kind": req["auth_kind"],
                "body": {k: v for k, v in req["body"].items() if k in ("model", "stream")},
                "expect": {
                    "tool": ns.tool,
                    "tool_version": ns.tool_version,
                    "session_id": session,
                },
            }
        )
        if len(picked) >= ns.limit:
            break
    if not picked:
        sys.exit(f"no POST request with a path ending in {ns.path} in {ns.capture}")
    fixture = {
        "source": "captured",
        "tool": ns.tool,
        "cli": {"package": ns.package, "version": ns.tool_version, "variant": ns.variant},
        "command": capture.get("command"),
        "env_keys": capture.get("env_keys"),
        "captured_with": "bench/capture_cli_headers.py (loopback fake provider)",
        "captured_on": time.strftime("%Y-%m-%d", time.gmtime(capture["requests"][0]["t"])),
        "note": ns.note,
        "requests": picked,
    }
    Path(ns.out).write_text(json.dumps(fixture, indent=2) + "\n")
    print(f"{len(picked)} request(s) -> {ns.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p_serve = sub.add_parser("serve", help="serve until interrupted")
    p_serve.add_argument("--out", required=True)

    p_run = sub.add_parser("run", help="serve while one CLI command runs")
    p_run.add_argument("--out", required=True, help="capture log (JSON)")
    p_run.add_argument("--timeout", type=float, default=120.0)
    p_run.add_argument("--home", help="HOME for the CLI (default: a new temp dir)")
    p_run.add_argument("--cwd", help="working directory (default: HOME/project)")
    p_run.add_argument("--env", action="append", default=[], help="KEY=VALUE (tokens ok)")
    p_run.add_argument(
        "--write", action="append", default=[], help="RELPATH=TEXT written under HOME first"
    )
    p_run.add_argument("--isolate", action="store_true", help="private netns, loopback only")
    p_run.add_argument("--pty", action="store_true", help="run on a pseudo-terminal (TUIs)")
    p_run.add_argument(
        "--type", action="append", default=[], help="with --pty: keys to type (\\r = Enter)"
    )
    p_run.add_argument("--type-delay", type=float, default=8.0, help="with --pty: wait first")
    p_run.add_argument(IN_NETNS_FLAG, dest="in_netns", action="store_true", help=argparse.SUPPRESS)
    p_run.add_argument("command", nargs=argparse.REMAINDER)

    p_fix = sub.add_parser("fixture", help="make a test fixture from a capture log")
    p_fix.add_argument("capture")
    p_fix.add_argument("--out", required=True)
    p_fix.add_argument("--tool", required=True)
    p_fix.add_argument("--tool-version")
    p_fix.add_argument("--package")
    p_fix.add_argument("--variant", help="e.g. 'exec' or 'anthropic provider'")
    p_fix.add_argument("--note")
    p_fix.add_argument(
        "--path", action="append", default=[], help="path suffix of LLM calls (repeatable)"
    )
    p_fix.add_argument("--session-header", action="append", default=[])
    p_fix.add_argument("--limit", type=int, default=3)

    if argv and argv[0] == "run":
        # The IN_NETNS flag is appended after the command by maybe_isolate(); pull it out
        # before argparse sees REMAINDER.
        in_netns = IN_NETNS_FLAG in argv
        argv = [a for a in argv if a != IN_NETNS_FLAG]
        ns = parser.parse_args(argv)
        ns.in_netns = in_netns
        if not in_netns:
            maybe_isolate(argv, ns.isolate)
        return cmd_run(ns)
    ns = parser.parse_args(argv)
    if ns.cmd == "serve":
        return cmd_serve(ns)
    if not ns.path:
        ns.path = [
            "/messages",
            "/responses",
            "/chat/completions",
            ":streamGenerateContent",
            ":generateContent",
        ]
    return cmd_fixture(ns)


if __name__ == "__main__":
    sys.exit(main())
