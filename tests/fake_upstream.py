"""A scriptable upstream on a real loopback socket, speaking the real wire formats.

By default it answers like CLIProxyAPI would for each route (chat completions, Responses,
Anthropic messages, Gemini, model lists), streaming when the request asks to. Tests can
queue a :class:`Script` to make the next response misbehave: a given status, pieces sent as
separate writes, a pause until the test releases it, a close-delimited body, or a
connection dropped mid-stream. Every request is recorded with its raw body, and every
response with the exact bytes sent, so tests can compare bytes end to end.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests import wire

MODELS_DEV_SNAPSHOT = Path(__file__).resolve().parents[2] / "shared/data/models-dev-api.json"


class _Server(ThreadingHTTPServer):
    # The load tests open hundreds of upstream connections at once: with the default
    # backlog of 5 the kernel's accept queue overflows and connections break.
    request_queue_size = 1024


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Script:
    status: int = 200
    content_type: str = "application/json"
    pieces: list[bytes] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    framing: str = "chunked"  # "chunked" | "length" | "close"
    pause_after: int | None = None  # wait for `release` after this many pieces
    drop_after: int | None = None  # close the socket abruptly after this many pieces
    release: threading.Event = field(default_factory=threading.Event)
    delay_headers: threading.Event | None = None  # wait for this before sending headers
    vanish_after: bool = False  # close the connection after answering, without saying so
    hang_up: bool = False  # read the request, then close without answering
    reset_after: threading.Event | None = None  # reset (RST) the connection after answering,
    # then set this event


class FakeUpstream:
    def __init__(self, port: int = 0) -> None:
        self.requests: list[Recorded] = []
        self.sent: list[bytearray] = []
        self.scripts: deque[Script] = deque()
        self.client_gone = threading.Event()  # the proxy closed a paused connection
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"upstream": self})
        self.server = _Server(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def script(self, script: Script) -> Script:
        self.scripts.append(script)
        return script

    def last(self) -> Recorded:
        return self.requests[-1]

    def close(self) -> None:
        for script in self.scripts:
            script.release.set()
        self.server.shutdown()
        self.server.server_close()


def default_response(rec: Recorded) -> Script:
    """Answer like CLIProxyAPI would, streaming when the request asks for it."""
    try:
        body = json.loads(rec.body) if rec.body else {}
    except ValueError:
        return Script(400, pieces=[b'{"error":{"message":"invalid JSON body",'
                                   b'"type":"invalid_request_error"}}'])
    stream = isinstance(body, dict) and body.get("stream") is True
    path = rec.path
    canned: wire.Canned
    if path == "/v1/chat/completions":
        options = body.get("stream_options") if isinstance(body, dict) else None
        include = isinstance(options, dict) and options.get("include_usage") is True
        canned = wire.chat_stream(bool(include)) if stream else wire.chat_json()
    elif path == "/v1/responses":
        canned = wire.responses_stream() if stream else wire.responses_json()
    elif path == "/v1/messages":
        canned = wire.messages_stream() if stream else wire.messages_json()
    elif path == "/v1/messages/count_tokens":
        return Script(pieces=[b'{"input_tokens":42}'], framing="length")
    elif ":streamGenerateContent" in path:
        canned = wire.gemini_stream()
    elif ":generateContent" in path:
        canned = wire.gemini_json()
    elif path == "/api.json" and MODELS_DEV_SNAPSHOT.exists():
        # models.dev, for PRICING_URL: tests never reach the real one.
        return Script(pieces=[MODELS_DEV_SNAPSHOT.read_bytes()], framing="length")
    elif path == "/healthz":  # CLIProxyAPI's liveness route (v6.9.10+)
        return Script(pieces=[b'{"status":"ok"}'], framing="length")
    elif path == "/v1/models":
        return Script(pieces=[b'{"object":"list","data":[{"id":"gpt-5","object":"model"}]}'],
                      framing="length")
    else:
        return Script(404, pieces=[b'{"error":"not found"}'], framing="length")
    return Script(content_type=canned.content_type, pieces=canned.pieces,
                  framing="chunked" if canned.content_type.startswith("text/event-stream")
                  else "length")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: FakeUpstream

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        rec = Recorded(self.command, path, query, list(self.headers.items()), body)
        up = self.upstream
        with up.lock:
            up.requests.append(rec)
            script = up.scripts.popleft() if up.scripts else default_response(rec)
        self._serve(script)

    def _serve(self, script: Script) -> None:
        """Answer as *script* says: after its gate, by hanging up, or with a response."""
        if script.delay_headers is not None and not self._hold(script.delay_headers):
            return
        if script.hang_up:
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self._respond(script)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def _respond(self, script: Script) -> None:
        # Recorded before each write, so whatever a client has received is already here.
        sent = bytearray()
        with self.upstream.lock:
            self.upstream.sent.append(sent)
        self.send_response(script.status)
        self.send_header("Content-Type", script.content_type)
        for name, value in script.headers:
            self.send_header(name, value)
        if script.framing == "length":
            self.send_header("Content-Length", str(sum(map(len, script.pieces))))
        elif script.framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()
        # An answer to HEAD has no body, whatever its headers say (RFC 9110 §9.3.2): bytes
        # sent after it would be read as the next answer on the connection.
        pieces = [] if self.command == "HEAD" else script.pieces
        try:
            for i, piece in enumerate(pieces):
                if script.pause_after is not None and i == script.pause_after:
                    self._pause(script)
                if script.drop_after is not None and i == script.drop_after:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                sent += piece
                self._write(piece, script.framing)
            if script.framing == "chunked" and self.command != "HEAD":
                self.wfile.write(b"0\r\n\r\n")
            if script.vanish_after:
                # A keep-alive connection the server drops while idle (its timeout passed).
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            if script.reset_after is not None:
                # Linger 0: close() sends RST, so the peer's next write fails at once.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                script.reset_after.set()
        except OSError:
            self.upstream.client_gone.set()
            self.close_connection = True

    def _write(self, piece: bytes, framing: str) -> None:
        if framing == "chunked":
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        else:
            self.wfile.write(piece)
        self.wfile.flush()

    def _hold(self, gate: threading.Event) -> bool:
        """Wait for *gate*; False (and ``client_gone`` set) if the proxy hangs up first."""
        while not gate.wait(0.02):
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable and not self.connection.recv(1, socket.MSG_PEEK):
                self.upstream.client_gone.set()
                self.close_connection = True
                return False
        return True

    def _pause(self, script: Script) -> None:
        """Wait for the test; notice meanwhile if the proxy hangs up on us."""
        if not self._hold(script.release):
            raise ConnectionResetError("proxy closed the upstream connection")
