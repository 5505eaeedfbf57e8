#!/usr/bin/env python3
"""Run the real AI coding CLIs through ``agent-cli-proxy serve`` to a loopback fake, offline.

A dev tool, not a test (the CLIs come from npm); stdlib only. Every run goes::

    CLI ──> tee ──> agent-cli-proxy serve ──> fake provider (bench/capture_cli_headers.py)

The tee is a byte-exact TCP relay: per exchange the tool checks what the fake received against
what the CLI sent (headers: the package's forwarding rules applied to the CLI's; body:
identical, or with the proxy's ``include_usage``), what the CLI got against what the fake sent
(status, bytes, header changes) and the ``request_logs`` row of each LLM call, then prints the
rows, a verdict per run and the proxy's warnings; all inside ``unshare -rn`` (loopback only).
claude-slow: SSE events 1 s apart must reach the CLI as written; claude-abort: the CLI is killed
by each ``--abort-signal`` after 3 events, the row must end aborted/499 and the upstream be
closed. ``--out`` keeps each run's CLI output and capture log, the proxy's DB and log. Exit
status 0 when every check passed. Usage::

    python3 -m venv /tmp/e2e-venv && /tmp/e2e-venv/bin/pip install .
    /tmp/e2e-venv/bin/python bench/real_clis_e2e.py --bin-dir /tmp/clis/node_modules/.bin \\
        --out /tmp/e2e [claude codex ...] [--chunked] [--direct] [--abort-signal KILL]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from agent_cli_proxy.providers.forwarding import HOP_BY_HOP, upstream_request_headers
from agent_cli_proxy.providers.openai_chat import UsageChunkFilter, inject_include_usage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import capture_cli_headers as cap

PROMPT, REPLY, API_KEY = "say hi", "e2e-pong-4711", "proxy"
ANTHROPIC_KEY, OPENAI_KEY = "sk-ant-e2e-client", "sk-e2e-client"
ABORT_AFTER_EVENTS, SLOW_DELAY_S, SETTLE_S, MAX_LAG_S = 3, 1.0, 3.0, 0.5
ROW_COLUMNS = ("tool", "client_id", "session_id", "identify_rule", "path", "requested_model",
               "model", "streamed", "status", "lifecycle_status", "prompt_tokens",
               "cache_read_tokens", "cache_creation_tokens", "completion_tokens",
               "reasoning_tokens", "total_tokens", "latency_ms", "error_code")
SHORT = dict(zip(ROW_COLUMNS[3:], ("rule", "path", "req_model", "model", "str", "st", "life", "prm",
                                   "c_rd", "c_wr", "cmp", "rsn", "tot", "ms", "err"), strict=True))
ROWS_SQL = f"SELECT id, {', '.join(ROW_COLUMNS)} FROM request_logs WHERE id > ? ORDER BY id"
ROW_CHECKED = ("tool", "session_id", "lifecycle_status", "status", "error_code",
               *ROW_COLUMNS[10:15])
CANNED_BUCKETS = (10, 0, 0, 2, 0)  # what the fake's usage objects come to
FAMILIES = (("/messages", "anthropic"), ("/responses", "responses"), ("/chat/completions", "chat"),
            (":generateContent", "gemini"), (":streamGenerateContent", "gemini"))
Check = tuple[bool | None, str]  # (ok, what); ok None: a note, not a failure


def family_of(method: str, path: str) -> str | None:
    return next((f for s, f in FAMILIES if method == "POST" and path.endswith(s)), None)


class Scenario(NamedTuple):
    tool: str  # what the proxy must record
    argv: tuple[str, ...]
    env: dict[str, str]
    files: dict[str, str]  # written under HOME; @BASE@ is the proxy (via the tee)
    session_header: str | None = None  # the header the row's session_id must equal


def _opencode(npm: str, provider: str, model: str, key: str) -> Scenario:
    config = {"autoupdate": False, "share": "disabled", "model": f"{provider}/{model}",
              "provider": {provider: {"npm": npm, "name": provider, "models": {model: {}},
                                      "options": {"baseURL": "@BASE@/v1", "apiKey": key}}}}
    return Scenario("opencode", ("opencode", "run", PROMPT),
                    {"ANTHROPIC_API_KEY": key} if "anthropic" in npm else {},
                    {".config/opencode/opencode.json": json.dumps(config)}, "x-session-id")


def _qwen(auth: str, env: dict[str, str]) -> Scenario:
    settings = {"security": {"auth": {"selectedType": auth}}, "$version": 4}
    return Scenario("qwen-code", ("qwen", "-p", PROMPT), env,
                    {".qwen/settings.json": json.dumps(settings)})


CODEX_TOML = ('model = "gpt-5-codex"\nmodel_provider = "e2e"\n[model_providers.e2e]\n'
              'name = "e2e"\nbase_url = "@BASE@/v1"\nenv_key = "OPENAI_API_KEY"\n'
              'wire_api = "responses"\n')
CLAUDE = Scenario("claude-code", ("claude", "-p", PROMPT), {"ANTHROPIC_BASE_URL": "@BASE@",
                  "ANTHROPIC_API_KEY": ANTHROPIC_KEY}, {}, "x-claude-code-session-id")
SCENARIOS = {
    "claude": CLAUDE,
    "codex": Scenario("codex", ("codex", "exec", "--skip-git-repo-check", PROMPT),
                      {"OPENAI_API_KEY": OPENAI_KEY}, {".codex/config.toml": CODEX_TOML},
                      "session-id"),
    "gemini": Scenario("gemini-cli", ("gemini", "-p", PROMPT), {
        "GOOGLE_GEMINI_BASE_URL": "@BASE@", "GEMINI_API_KEY": "e2e-gemini-client",
        "GEMINI_CLI_TRUST_WORKSPACE": "true"}, {".gemini/settings.json": json.dumps(
            {"security": {"auth": {"selectedType": "gemini-api-key"}}})}),
    "opencode-anthropic": _opencode("@ai-sdk/anthropic", "e2e-anthropic", "claude-sonnet-4-5",
                                    ANTHROPIC_KEY),
    "opencode-openai": _opencode("@ai-sdk/openai-compatible", "e2e-openai", "gpt-5", OPENAI_KEY),
    "qwen": _qwen("openai", {"OPENAI_BASE_URL": "@BASE@/v1", "OPENAI_API_KEY": OPENAI_KEY,
                             "OPENAI_MODEL": "qwen3-coder-plus"}),
    "qwen-anthropic": _qwen("anthropic", {"ANTHROPIC_BASE_URL": "@BASE@", "ANTHROPIC_API_KEY":
                                          ANTHROPIC_KEY, "ANTHROPIC_MODEL": "claude-sonnet-4-5"}),
    "claude-slow": CLAUDE,
    "claude-abort": CLAUDE,
}


@dataclass
class Conn:
    c2s: bytearray = field(default_factory=bytearray)
    s2c: bytearray = field(default_factory=bytearray)
    s2c_times: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes so far)


class Tee:
    """A byte-exact TCP relay (CLI ⇄ target) that keeps both directions of each connection."""

    def __init__(self, target_port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port, self.target_port = int(self.sock.getsockname()[1]), target_port
        self.conns: list[Conn] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # ends when the listening socket is closed
            while True:
                client, _ = self.sock.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                self.conns.append(conn := Conn())
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst, conn, src is upstream),
                                     daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, conn: Conn, back: bool) -> None:
        buf = conn.s2c if back else conn.c2s
        try:
            while data := src.recv(65536):
                buf.extend(data)
                if back:
                    conn.s2c_times.append((time.time(), len(buf)))
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            src.close()
            dst.close()


@dataclass
class Message:
    start: str  # request line, or "STATUS REASON"
    headers: list[tuple[str, str]]
    body: bytes
    body_at: int = 0  # where the body starts and the message ends in the raw bytes
    end_at: int = 0


class _Stream(io.BytesIO):
    """Bytes that http.client.HTTPResponse reads like a socket (and cannot close)."""

    def makefile(self, *_: Any) -> _Stream:
        return self

    def close(self) -> None:
        return


def parse_exchanges(conn: Conn) -> list[tuple[Message, Message | None]]:
    """The (request, response) pairs of one tee connection, in order."""
    c2s, s2c = _Stream(bytes(conn.c2s)), _Stream(bytes(conn.s2c))
    pairs: list[tuple[Message, Message | None]] = []
    while (line := c2s.readline()).endswith(b"\r\n"):
        headers = http.client.parse_headers(c2s)
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        body = cap.read_chunked(c2s) if chunked else c2s.read(int(headers["content-length"] or 0))
        req, resp = Message(line.decode("latin-1").strip(), headers.items(), body), None
        with contextlib.suppress(http.client.HTTPException):
            parser = http.client.HTTPResponse(s2c, method=req.start.split()[0])  # type: ignore
            parser.begin()
            resp = Message(f"{parser.status} {parser.reason}", parser.getheaders(), b"",
                           s2c.tell())
            try:
                resp.body = parser.read()
            except http.client.IncompleteRead as exc:  # compared as it is: it differs
                resp.body = exc.partial
            resp.end_at = s2c.tell()
        pairs.append((req, resp))
    return pairs


@dataclass
class Exchange:
    method: str
    path: str
    req: Message  # what the CLI sent
    resp: Message | None  # what the CLI got back
    conn: Conn
    up: dict[str, Any] | None  # the fake's capture entry (None: it never got the request)
    row: dict[str, Any] | None = None  # the request_logs row of an LLM call


def expected_body(method: str, path: str, body: bytes) -> bytes:
    injected = inject_include_usage(body) if family_of(method, path) == "chat" else None
    return injected or body


def pair(tee: Tee, entries: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[Exchange]:
    """The tee's requests, with the fake's records (same method, path, body) and the rows."""
    free, out = list(entries), []
    for conn in tee.conns:
        for req, resp in parse_exchanges(conn):
            method, path = req.start.split()[0], urlsplit(req.start.split()[1]).path
            want = expected_body(method, path, req.body)
            same = [e for e in free if e["method"] == method and e["path"] == path]
            up = next((e for e in same if e["raw"]["body"] == want), same[0] if same else None)
            free = [e for e in free if e is not up]
            out.append(Exchange(method, path, req, resp, conn, up))
    out.sort(key=lambda x: x.up["t"] if x.up else float("inf"))
    for x in out:
        if family_of(x.method, x.path):
            x.row = next((r for r in rows if r["path"] == x.path), None)
            rows = [r for r in rows if r is not x.row]
    return out


def _bag(headers: list[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """Headers as compared: Host and Content-Length are recomputed, and Accept-Encoding:
    identity (http.client's default) means the same as none."""
    return Counter((n.lower(), v) for n, v in headers if n.lower() not in
                   {"host", "content-length"} and (n.lower(), v) != ("accept-encoding", "identity"))


def _first_diff(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)))


def row_diff(row: dict[str, Any], want: tuple[Any, ...]) -> list[str]:
    """Differences of *row* from *want* (values for ROW_CHECKED, in order, maybe fewer)."""
    return [f"{k} {row.get(k)!r} (want {w!r})"
            for k, w in zip(ROW_CHECKED, want, strict=False) if row.get(k) != w]


def stream_lags(conn: Conn, resp: Message, writes: list[tuple[float, bytes]]
                ) -> list[float | None]:
    """Per piece the fake wrote: when it reached the CLI minus when it was written."""
    raw, pos, lags = bytes(conn.s2c), resp.body_at, []
    for t_write, piece in writes:
        at = raw.find(piece, pos, resp.end_at)
        pos = at + len(piece) if at >= 0 else pos
        lags.append(None if at < 0 else next(
            (round(t - t_write, 3) for t, n in conn.s2c_times if n >= pos), None))
    return lags


def compare_exchange(x: Exchange, sc: Scenario) -> Check:
    """The CLI's request vs the upstream's, the upstream's response vs the CLI's, the row."""
    tag, fam = f"{x.method} {x.path}", family_of(x.method, x.path)
    if x.up is None:
        return (False if fam else None), f"{tag}: not forwarded (the CLI got " + (
            f"{x.resp.start})" if x.resp else "nothing)")
    raw, bad, said = x.up["raw"], [], []
    want_body = expected_body(x.method, x.path, x.req.body)
    injected = want_body != x.req.body
    want = [(n, v) for n, v in upstream_request_headers(x.req.headers, API_KEY)
            if not (injected and n.lower() == "accept-encoding")]  # the filter reads plain SSE
    exp, got = _bag(want), _bag(raw["headers"])
    bad += [f"upstream lacks {n}: {cap.redact_header(n, v)}" for n, v in exp - got]
    bad += [f"upstream got extra {n}: {cap.redact_header(n, v)}" for n, v in got - exp]
    changed = ", ".join(sorted({n for n, _ in _bag(x.req.headers) - exp})) or "-"
    said.append(f"headers per forwarding rules (changed: {changed})")
    if raw["body"] == want_body:
        said.append(f"body {'+include_usage' if injected else 'identical'} ({len(want_body)} B)")
    else:
        bad.append(f"body differs at byte {_first_diff(want_body, raw['body'])}")
    if x.resp is None:
        return False, f"{tag}: " + "; ".join([*bad, "the CLI got no response"])
    if (status := int(x.resp.start.split()[0])) != x.up["response_status"]:
        bad.append(f"response status {status} (upstream {x.up['response_status']})")
    want_resp = b"" if x.method == "HEAD" else raw["payload"]
    if injected and raw["ctype"] == cap.SSE:
        filt = UsageChunkFilter()
        want_resp = filt.feed(want_resp) + filt.finish()
    if x.resp.body == want_resp:
        said.append(f"response identical ({len(want_resp)} B, {status})")
    else:
        bad.append(f"response differs at byte {_first_diff(want_resp, x.resp.body)} "
                   f"({len(want_resp)} B sent, {len(x.resp.body)} B got)")
    sent, recv = ({n.lower(): v for n, v in hs if n.lower() not in HOP_BY_HOP}
                  for hs in (raw["response_headers"], x.resp.headers))
    said += [f"response header {k}: {sent.get(k)!r} -> {recv.get(k)!r}"
             for k in sorted(sent.keys() | recv.keys()) if sent.get(k) != recv.get(k)]
    if len(raw["writes"]) > 1:
        lags = stream_lags(x.conn, x.resp, raw["writes"])
        late = any(v is None or v > MAX_LAG_S for v in lags)
        (bad if late else said).append(f"{len(lags)} writes relayed, lags {lags} s")
    if fam is not None:
        session = next((v for n, v in x.req.headers if n.lower() == sc.session_header), None)
        diff = row_diff(x.row or {}, (sc.tool, session, "completed", 200, None, *CANNED_BUCKETS))
        (bad if diff else said).append(f"row {(x.row or {}).get('id')} " + (
            "; ".join(diff) or "as expected"))
    return not bad, f"{tag}: " + "; ".join(bad + said)


class Harness:
    """The fake provider and the proxy, shared by all runs; a method per kind of run."""

    def __init__(self, ns: argparse.Namespace, out: Path, path_env: str) -> None:
        self.ns, self.out, self.path_env, self.db = ns, out, path_env, out / "proxy.db"
        self.fake = cap.make_server(cap.CaptureLog(out / "upstream.json", {}))
        self.handler: type[cap.Handler] = self.fake.RequestHandlerClass  # type: ignore[assignment]
        self.handler.chunked = ns.chunked
        threading.Thread(target=self.fake.serve_forever, daemon=True).start()
        with socket.create_server(("127.0.0.1", 0)) as s:
            self.proxy_port = int(s.getsockname()[1])
        (out / "empty.env").write_text("")  # so that no .env of the caller is read
        env = {**cap.base_env(out / "proxy-home"), "CLI_PROXY_API_KEY": API_KEY,
               "CLI_PROXY_API_URL": f"http://127.0.0.1:{self.fake.server_address[1]}",
               "PROXY_PORT": str(self.proxy_port), "DB_PATH": str(self.db), "LOG_LEVEL": "warn"}
        exe = Path(sys.executable).parent / "agent-cli-proxy"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "agent_cli_proxy"]
        with (out / "proxy.log").open("wb") as log:
            self.proxy = subprocess.Popen([*cmd, "serve", "--env-file", str(out / "empty.env")],
                                          env=env, cwd=out, stdout=log, stderr=log)
        for _ in range(200):
            with contextlib.suppress(OSError):
                probe = http.client.HTTPConnection("127.0.0.1", self.proxy_port, timeout=1)
                probe.request("GET", "/health")
                if probe.getresponse().status == 200:
                    return
            time.sleep(0.1)
        sys.exit(f"proxy not up (exit {self.proxy.poll()}); see {out}/proxy.log")

    def rows(self, after: int = 0, settle: float = 0.0) -> list[dict[str, Any]]:
        """request_logs rows with id > *after*, waiting up to *settle* s for none pending."""
        deadline = time.time() + settle
        while True:
            with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as db:
                db.row_factory = sqlite3.Row
                rows = [dict(r) for r in db.execute(ROWS_SQL, (after,))]
            if time.time() >= deadline or all(r["lifecycle_status"] != "pending" for r in rows):
                return rows
            time.sleep(0.05)

    def prepare(self, label: str, sc: Scenario, port: int, delay: float = 0.0
                ) -> tuple[Path, dict[str, str], cap.CaptureLog, int]:
        """Run dir, CLI env (its files written), a fresh capture log and the last row id."""
        print(f"[{label}] running {' '.join(sc.argv)} ...", flush=True)
        run_dir = self.out / label
        for d in (run_dir / "home" / "project", run_dir / "tmp"):  # Gemini CLI uses TMPDIR
            d.mkdir(parents=True, exist_ok=True)
        cap.write_files(run_dir / "home", sc.files.items(), port)
        env = {**cap.base_env(run_dir / "home", self.path_env), "TMPDIR": str(run_dir / "tmp"),
               **{k: cap.substitute(v, port) for k, v in sc.env.items()}}
        self.handler.log = cap.CaptureLog(run_dir / "upstream.json", {"run": label}, keep_raw=True)
        self.handler.sse_delay = delay
        return run_dir, env, self.handler.log, max((r["id"] for r in self.rows()), default=0)

    def run_cli(self, label: str, sc: Scenario, port: int, delay: float = 0.0
                ) -> tuple[list[Exchange], list[dict[str, Any]], Check]:
        """Run a CLI through a tee to *port* (the proxy or the fake)."""
        tee = Tee(port)
        run_dir, env, log, before = self.prepare(label, sc, tee.port, delay)
        code, timed_out, stdout, stderr = cap.run_piped(
            list(sc.argv), env, run_dir / "home" / "project", self.ns.timeout)
        rows = self.rows(before, SETTLE_S) if port == self.proxy_port else []
        time.sleep(0.2)  # let the tee record the last bytes
        tee.sock.close()
        (run_dir / "output.txt").write_bytes(stdout + stderr)
        xs, text = pair(tee, log.requests, rows), stdout.decode(errors="replace")
        calls = sum(1 for x in xs if family_of(x.method, x.path))
        ok = code == 0 and not timed_out and REPLY in text and len(rows) in (0, calls)
        return xs, rows, (ok, f"exit {code}{' (timed out)' * timed_out}, stdout {text[-40:]!r}, "
                              f"{len(rows)} row(s), {calls} LLM call(s)")

    def run_abort(self, label: str, sc: Scenario, sig: signal.Signals
                  ) -> tuple[list[dict[str, Any]], list[Check]]:
        """Kill the CLI (straight at the proxy) mid-stream and watch its row end."""
        run_dir, env, log, before = self.prepare(label, sc, self.proxy_port, SLOW_DELAY_S)
        with (run_dir / "output.txt").open("wb") as out:
            proc = subprocess.Popen(list(sc.argv), env=env, cwd=run_dir / "home" / "project",
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        stream: dict[str, Any] = {"writes": [], "payload": b"", "headers": []}
        deadline = time.time() + self.ns.timeout
        while len(stream["writes"]) < ABORT_AFTER_EVENTS and time.time() < deadline:
            time.sleep(0.02)
            stream = next((e["raw"] for e in log.requests if family_of(e["method"], e["path"])
                           and e["raw"]["ctype"] == cap.SSE), stream)
        t_kill = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        cap.end_group(proc)
        rows = self.rows(before, SETTLE_S + 5)
        time.sleep(0.5)
        written, events = len(stream["writes"]), len(cap.split_sse(stream["payload"]))
        closed = stream.get("closed_early")
        session = next((v for n, v in stream["headers"] if n.lower() == sc.session_header), None)
        diff = row_diff(rows[-1] if rows else {}, (sc.tool, session, "aborted", 499, "aborted"))
        return rows, [
            (ABORT_AFTER_EVENTS <= written < events, f"{sig.name} after {written} of {events} "
                                                     f"events; CLI exit {proc.returncode}"),
            (closed is not None, f"proxy closed the upstream {closed['t'] - t_kill:.2f} s after "
                                 "the kill" if closed else "the upstream stream was not cut"),
            (not diff, "row " + ("; ".join(diff) or "aborted 499, tool and session kept")),
        ]


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["run", *ROW_COLUMNS]
    data = [[SHORT.get(c, c) for c in cols]]
    data += [["" if r.get(c) is None else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(d[i]) for d in data) for i in range(len(cols))]
    data.insert(1, ["-" * w for w in widths])
    for d in data:
        print("  ".join(v.ljust(w) for v, w in zip(d, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("runs", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--bin-dir", action="append", default=[], help="CLIs' dir (repeatable)")
    parser.add_argument("--out", help="output directory (default: a new temp dir)")
    parser.add_argument("--timeout", type=float, default=180.0, help="per CLI run (s)")
    parser.add_argument("--chunked", action="store_true", help="the fake chunks SSE answers")
    parser.add_argument("--abort-signal", action="append", default=[], help="default: KILL")
    parser.add_argument("--direct", action="store_true", help="also run CLIs without the proxy")
    parser.add_argument(cap.IN_NETNS_FLAG, action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if unknown := sorted(set(ns.runs) - set(SCENARIOS)):
        parser.error(f"unknown run(s) {unknown}")
    cap.maybe_isolate(argv, True, script=__file__)  # returns only inside the namespace
    cap.bring_up_loopback()
    cap.REPLY_TEXT = REPLY  # the fake's answer text
    out = Path(ns.out or tempfile.mkdtemp(prefix="real-clis-e2e-"))
    out.mkdir(parents=True, exist_ok=True)
    path_env = os.pathsep.join([*(str(Path(d).resolve()) for d in ns.bin_dir),
                                os.environ.get("PATH", "/usr/bin:/bin")])
    h = Harness(ns, out, path_env)
    print(f"out {out}; proxy :{h.proxy_port}{'; chunked SSE' * ns.chunked}", flush=True)
    results: list[tuple[str, list[dict[str, Any]], list[Check]]] = []
    for name in ns.runs or SCENARIOS:
        sc = SCENARIOS[name]
        if shutil.which(sc.argv[0], path=path_env) is None:
            print(f"[{name}] skipped: {sc.argv[0]} not found", flush=True)
            continue
        if name == "claude-abort":
            for sig_name in ns.abort_signal or ["KILL"]:
                sig = signal.Signals["SIG" + sig_name.upper().removeprefix("SIG")]
                label = f"{name}-{sig.name.lower()}"
                results.append((label, *h.run_abort(label, sc, sig)))
            continue
        xs, rows, ran = h.run_cli(name, sc, h.proxy_port, SLOW_DELAY_S * (name == "claude-slow"))
        checks = [ran, *(compare_exchange(x, sc) for x in xs)]
        if ns.direct:
            direct, _, (ok, text) = h.run_cli(f"{name}-direct", sc, h.fake.server_address[1])
            mine, theirs = (sorted(f"{x.method} {x.path}" for x in v) for v in (xs, direct))
            checks.append(((ok and mine == theirs) or None, f"direct run: {text}; requests "
                           + ("as via the proxy" if mine == theirs else f"{theirs}")))
        results.append((name, rows, checks))

    h.proxy.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        h.proxy.wait(timeout=15)
    pending = [r["id"] for r in h.rows() if r["lifecycle_status"] == "pending"]
    print("\nrequest_logs rows:")
    print_table([{"run": name, **row} for name, rows, _ in results for row in rows])
    for name, _, checks in results:
        bad = sum(ok is False for ok, _ in checks)
        print(f"\n== {name}: {'PASS' if not bad else f'FAIL ({bad})'}")
        for ok, text in checks:
            print(f"  {({True: 'ok', False: 'FAIL', None: 'note'})[ok]:4} {text}")
    warnings = (out / "proxy.log").read_text(errors="replace").splitlines()  # LOG_LEVEL=warn
    print(f"\nproxy exit {h.proxy.returncode} after SIGTERM; rows pending: {pending}; "
          f"proxy log lines (warn and up): {len(warnings)}")
    for line in warnings:
        print("  " + line[:300])
    return 1 if pending or any(ok is False for _, _, cs in results for ok, _ in cs) else 0


if __name__ == "__main__":
    sys.exit(main())
