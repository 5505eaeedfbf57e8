"""The proxy endpoint: forward one request upstream and relay the answer back.

Flow (DESIGN.md "How one streamed request flows"): client key → bounded body read → is it
an LLM call? → which upstream (:mod:`agent_cli_proxy.web.routing`) → who is calling →
pending row (handed to the row writer) → upstream request → relay whose ``close()``
finalizes the row (also through the writer). Calls that are not LLM calls
(``GET /v1/models``, ``count_tokens`` …) take the same path without a row.
"""

from __future__ import annotations

import http
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wrappers import Request, Response

from agent_cli_proxy.config import Settings
from agent_cli_proxy.config_values import display_url
from agent_cli_proxy.log import get_logger
from agent_cli_proxy.providers.custom_routing import SelectionError
from agent_cli_proxy.providers.forwarding import client_response_headers
from agent_cli_proxy.providers.routes import LLMCall, classify_parsed, error_style
from agent_cli_proxy.upstream.breaker import Admission, Breaker
from agent_cli_proxy.upstream.capture import UsageCapture
from agent_cli_proxy.upstream.client import SendHandle, Timeouts, UpstreamError
from agent_cli_proxy.upstream.relay import Relay, RelayResult, Transform
from agent_cli_proxy.usage.identify import INPUT_HEADERS, identify
from agent_cli_proxy.web import api_keys
from agent_cli_proxy.web.addresses import client_address
from agent_cli_proxy.web.errors import client_error
from agent_cli_proxy.web.header_view import HeaderView, environ_key
from agent_cli_proxy.web.recorder import CallRecorder
from agent_cli_proxy.web.routing import UPSTREAM_ID, Route, build_route
from agent_cli_proxy.web.services import ProxyServices

_log = get_logger("proxy")
WSGIApp = Any  # the werkzeug Response or a RelayedResponse, both WSGI applications
# Where identification's headers are in the environ (what HeaderView reads).
_IDENTITY_KEYS = tuple(environ_key(name) for name in INPUT_HEADERS)
_ERROR_STATUS = {"timeout": 504, "connect": 502, "protocol": 502}
_ERROR_CODE = {"timeout": "upstream_timeout", "connect": "upstream_unavailable",
               "protocol": "bad_gateway"}


class RelayedResponse:
    """A WSGI application answering with an upstream status, headers and relay body.

    werkzeug's ``Response`` is not used here: it may rewrite headers, and it drops the body
    iterable for HEAD/204/304 without closing it, which would leak the upstream connection
    and never finalize the row.
    """

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]],
                 body: Relay) -> None:
        self.status_line = f"{status} {reason or _reason(status)}"
        self.headers = headers
        self.body = body

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            start_response(self.status_line, self.headers)
        except BaseException:
            # waitress never sees the body, so it would never close it: do it here, which
            # releases the upstream connection and finalizes the row.
            self.body.close()
            raise
        return self.body


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _target(request: Request) -> tuple[str, str]:
    """Raw path and query exactly as the client sent them (percent-encoding intact)."""
    raw = request.environ.get("REQUEST_URI")
    if isinstance(raw, str) and raw[:8].lower().startswith(("http://", "https://")):
        raw = _origin_form(raw)
    if isinstance(raw, str) and raw.startswith("/"):
        path, _, query = raw.partition("?")
        return path, query
    return request.environ.get("PATH_INFO", "/"), request.environ.get("QUERY_STRING", "")


def _origin_form(absolute: str) -> str:
    """``http://host:1/p?q`` -> ``/p?q`` (a request target in absolute form)."""
    rest = absolute.split("://", 1)[1]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
    tail = rest[cut:]
    return tail if tail.startswith("/") else "/" + tail


def _ambiguous(decoded_path: str) -> bool:
    """Dot segments or empty segments: the upstream (or urllib3 on the way) would resolve
    them to another path than the one classified here, so an LLM call could go unrecorded
    or reach a path the proxy does not serve (CLIProxyAPI's management API)."""
    segments = decoded_path.split("/")[1:]
    return any(seg in (".", "..") for seg in segments) or "" in segments[:-1]


def _read_body(request: Request, limit: int) -> bytes | None:
    """The whole request body, or None when it is larger than *limit*.

    Under ``serve`` waitress has already refused such a body (server_errors); this keeps
    the limit when the app runs under another WSGI server."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = request.stream.read(limit + 1)
    return None if len(body) > limit else body


def handle(services: ProxyServices, request: Request) -> WSGIApp:
    settings = services.settings
    style = error_style(request.path)
    if _ambiguous(request.path):
        return client_error(style, 400, "ambiguous_path",
                            "request path must not contain '.', '..' or empty segments")
    # The key first: an unauthenticated client must not make the proxy read its body.
    record, refused = api_keys.authenticate_key(services, request)
    if refused is not None:
        return refused
    limit = settings.max_request_body_bytes
    body = _read_body(request, limit)
    if body is None:
        return client_error(style, 413, "request_too_large",
                            f"request body exceeds {limit} bytes", limit=limit)
    path, query = _target(request)
    # Classified on the decoded path: the one the upstream will route on.
    call, parsed = classify_parsed(request.method, request.path, body)
    if call is not None and call.ambiguous:
        # The proxy would record one model while the upstream serves another.
        return client_error(style, 400, "ambiguous_body",
                            'the body repeats a top-level "model" or "stream" key')
    refused = api_keys.check_provider(record, request.method, request.path,
                                      call.provider if call else None)
    if refused is not None:
        return refused
    try:
        route = build_route(services, request, call, body, path, query, parsed)
    except SelectionError as exc:
        _log.info("proxy.provider_refused", code=exc.code, provider=exc.provider_id[:80],
                  path=path)
        return client_error(style, 400, exc.code, exc.message, provider=exc.provider_id[:80])
    # A large body's parsed objects must not live as long as the call (a stream may last
    # minutes): routing was their last reader.
    del parsed
    key_id = record.id if record is not None else None
    recorder = (_start_recording(services, request, call, path, key_id, route.id)
                if call is not None else None)
    if recorder is not None and recorder.row_id is None and settings.proxy_require_api_key:
        # With client keys, usage per key is the point: never serve a call unrecorded.
        recorder.fail(503, "recording_failed", "the call could not be recorded")
        return client_error(style, 503, "recording_failed",
                            "the proxy could not record this call; try again")
    try:
        return _forward(services, request, call, recorder, route, style)
    except Exception as exc:
        # A defect must not leave the row pending or the upstream connection open; the
        # relay (if any) was closed by _forward.
        _log.exception("passthrough.internal_error", path=path)
        if recorder is not None:
            recorder.fail(500, "internal_error", f"proxy error: {exc!r}")
        return client_error(style, 500, "internal_error", "internal proxy error")


def _forward(services: ProxyServices, request: Request, call: LLMCall | None,
             recorder: CallRecorder | None, route: Route, style: str) -> WSGIApp:
    """Send upstream and build the relayed response (or a clean JSON error)."""
    settings = services.settings
    streaming = bool(call and call.stream)
    read_ms = (settings.upstream_stream_first_byte_timeout_ms if streaming
               else settings.upstream_timeout_ms)
    timeouts = Timeouts(connect=settings.upstream_connect_timeout_ms / 1000, read=read_ms / 1000)
    send_body = route.body if route.body or request.method not in ("GET", "HEAD") else None
    client_gone = request.environ.get("waitress.client_disconnected")
    client_gone = client_gone if callable(client_gone) else None

    breaker = services.breakers.get(route.id)
    admission = breaker.admit()
    if not admission.allowed:
        return _circuit_open(recorder, route.id, admission.retry_after_s, style)
    try:
        return _send_and_relay(services, request, call, recorder, route, send_body,
                               timeouts, streaming, client_gone, breaker, admission, style)
    finally:
        # Whatever happened without a verdict (a defect, an exception) frees the probe
        # slot; after a verdict this does nothing.
        breaker.released(admission)


def _named_limit(exc: UpstreamError, settings: Settings, streaming: bool) -> UpstreamError:
    """A timeout before the first byte, with the setting that fired in its message (the
    client sees it, and the row keeps it)."""
    if exc.kind != "timeout":
        return exc
    if exc.connecting:
        name, value = "UPSTREAM_CONNECT_TIMEOUT_MS", settings.upstream_connect_timeout_ms
    elif streaming:
        name = "UPSTREAM_STREAM_FIRST_BYTE_TIMEOUT_MS"
        value = settings.upstream_stream_first_byte_timeout_ms
    else:
        name, value = "UPSTREAM_TIMEOUT_MS", settings.upstream_timeout_ms
    return UpstreamError(exc.kind, f"{exc.message} ({name}={value})",
                         connecting=exc.connecting)


def _judge(breaker: Breaker, admission: Admission, exc: UpstreamError,
           streaming: bool) -> None:
    """Count an upstream error against the breaker only when it is the upstream's fault:
    a non-streaming call that timed out after it was sent may just be a long generation."""
    if exc.kind == "timeout" and not streaming and not exc.connecting:
        breaker.released(admission)
    else:
        breaker.failed(admission, exc.message)


def _send_and_relay(services: ProxyServices, request: Request, call: LLMCall | None,
                    recorder: CallRecorder | None, route: Route, send_body: bytes | None,
                    timeouts: Timeouts, streaming: bool,
                    client_gone: Callable[[], bool] | None, breaker: Breaker,
                    admission: Admission, style: str) -> WSGIApp:
    settings = services.settings
    pending = SendHandle()
    if client_gone is not None:
        services.watcher.watch(client_gone, pending)
    if recorder is not None:
        recorder.sending()
    sent_at = time.monotonic()
    try:
        upstream = services.client.send(request.method, route.url, route.headers, send_body,
                                        timeouts,
                                        pending, retries=settings.upstream_max_retries,
                                        rate_limit_retries=settings.rate_limit_max_retries)
    except UpstreamError as exc:
        if pending.abort_reason is not None:
            return _abandoned(recorder, pending.abort_reason, style)
        _judge(breaker, admission, exc, streaming)
        return _upstream_failed(_named_limit(exc, settings, streaming), recorder, call,
                                route.base_url, style)
    finally:
        services.watcher.unwatch(pending)
    if pending.abort_reason is not None:  # headers came back just as the abort did
        upstream.close()
        return _abandoned(recorder, pending.abort_reason, style)
    if recorder is not None:
        recorder.headers_received(upstream.status, upstream.headers)

    capture = UsageCapture(call.family if call else None,
                           content_type=upstream.headers.get("Content-Type"),
                           content_encoding=upstream.headers.get("Content-Encoding"))
    transform: Transform | None = None
    if route.respond is not None and capture.is_plain:
        # The filter decides by the answer's type (an error body may need none);
        # compressed bytes are never touched.
        transform = route.respond(upstream.headers.get("Content-Type"),
                                  capture.is_event_stream)
    limit = None if capture.is_event_stream else settings.max_response_body_bytes
    length = upstream.headers.get("Content-Length") or ""
    if limit is not None and length.isdigit() and int(length) > limit:
        # Announced too large: refuse cleanly before the client has anything.
        breaker.succeeded(admission)
        upstream.close()
        too_large = UpstreamError(
            "protocol", f"upstream answer of {length} bytes is larger than {limit} "
            "(MAX_RESPONSE_BODY_BYTES)", code="response_too_large")
        return _upstream_failed(too_large, recorder, call, route.base_url, style,
                                upstream.status)
    # A non-streaming call must be complete within UPSTREAM_TIMEOUT_MS, not merely never
    # silent that long; a stream only must not go silent (its read timeout).
    deadline = None if streaming else (
        sent_at + settings.upstream_timeout_ms / 1000,
        f"UPSTREAM_TIMEOUT_MS={settings.upstream_timeout_ms}")

    answered_ok = False  # the breaker judged the first byte a success

    def on_close(result: RelayResult) -> None:
        services.watcher.unwatch(relay)
        error = result.error
        if not answered_ok:
            pass  # judged already: a failure, or no answer to judge
        elif result.outcome == "completed":
            breaker.completed()
        elif error is not None and error.code is None:
            # The upstream broke the connection or went silent mid-answer (errors with a
            # code are the proxy's own limits or transform).
            breaker.broke_off(error.message)
        if recorder is not None:
            recorder.relayed(result, capture, upstream.status)

    relay = Relay(upstream, on_close, tap=capture if call else None, transform=transform,
                  client_gone=client_gone, limit_bytes=limit, deadline=deadline)
    try:
        if client_gone is not None:
            services.watcher.watch(client_gone, relay)
        try:
            relay.prime()
        except UpstreamError as exc:
            _judge(breaker, admission, exc, streaming)
            raise _named_limit(exc, settings, streaming) from exc
        ctype = (upstream.headers.get("Content-Type") or "").lower()
        if upstream.status >= 500 and "json" not in ctype:
            breaker.failed(admission, f"HTTP {upstream.status}")
        else:
            # Answered: 4xx (it works and refused) and JSON 5xx (an application error,
            # such as an unknown model, that one client can cause) say the upstream is up.
            breaker.succeeded(admission, answer_pending=True)
            answered_ok = True
        if recorder is not None and streaming:
            recorder.first_chunk()
        if streaming:
            # The long first-byte allowance covers queueing and thinking before a stream
            # starts; between chunks the ordinary read timeout applies.
            relay.set_read_timeout(settings.upstream_timeout_ms / 1000)
        response_headers = client_response_headers(upstream.headers.items(),
                                                   body_changed=transform is not None)
    except UpstreamError as exc:
        # Nothing reached the client yet: answer with a clean error, not a cut stream.
        response = _upstream_failed(exc, recorder, call, route.base_url, style,
                                    upstream.status)
        relay.close()
        return response
    except BaseException:
        relay.close()
        raise
    return RelayedResponse(upstream.status, upstream.reason or "", response_headers, relay)


def _start_recording(services: ProxyServices, request: Request, call: LLMCall,
                     path: str, key_id: int | None, upstream_id: str) -> CallRecorder:
    """Identify the caller and start its row (see recorder: the pending row is written
    beside the call, not before it)."""
    headers = HeaderView(request.environ)  # identification asks for dozens of headers
    # Only CLIProxyAPI's trace header names one of its accounts; a custom provider's
    # answer is never attributed to one.
    recorder = CallRecorder(services.db, services.clock, lambda: services.pricing.table,
                            services.metrics, call, path,
                            accounts=services.accounts if upstream_id == UPSTREAM_ID else None,
                            # With client keys a call is never served unrecorded: its
                            # pending row is committed before the upstream is asked.
                            rows=(None if services.settings.proxy_require_api_key
                                  else services.rows))
    keys = api_keys.presented_keys(request)
    identity = identify(headers, api_key=keys[0] if keys else None,
                        client_name_mapping=services.settings.client_name_mapping,
                        seen=tuple(map(request.environ.get, _IDENTITY_KEYS)))
    msg_id = next((value for h in ("x-msg-id", "x-message-id", "x-request-id")
                   if (value := headers.get(h))), None)
    recorder.start(identity, method=request.method, user_agent=headers.get("User-Agent"),
                   source_ip=client_address(request, services.settings.trust_proxy_headers) or None,
                   msg_id=msg_id, originator=headers.get("originator"), api_key_id=key_id,
                   actual_provider=upstream_id)
    return recorder


def _error_response(exc: UpstreamError, style: str) -> Response:
    return client_error(style, _ERROR_STATUS[exc.kind], exc.code or _ERROR_CODE[exc.kind],
                        exc.message)


def _upstream_failed(exc: UpstreamError, recorder: CallRecorder | None,
                     call: LLMCall | None, upstream_url: str, style: str,
                     upstream_status: int | None = None) -> Response:
    # The URL is shown without credentials; worked out here, on failures only.
    _log.warning("passthrough.upstream_error", kind=exc.kind, error=exc.message,
                 upstream=display_url(upstream_url),
                 model=call.requested_model if call else None,
                 request_id=recorder.request_id if recorder else None)
    if recorder is not None:
        recorder.fail(_ERROR_STATUS[exc.kind], exc.code or _ERROR_CODE[exc.kind],
                      exc.message, upstream_status=upstream_status)
    return _error_response(exc, style)


def _circuit_open(recorder: CallRecorder | None, upstream_id: str, retry_after_s: int,
                  style: str) -> Response:
    """The upstream keeps failing: refuse at once instead of piling more on it."""
    message = f"upstream {upstream_id} is failing; retry in {retry_after_s} s"
    if recorder is not None:
        recorder.fail(503, "circuit_open", message)
    response = client_error(style, 503, "circuit_open", message, retry_after=retry_after_s)
    response.headers["Retry-After"] = str(retry_after_s)
    return response


def _abandoned(recorder: CallRecorder | None, reason: str, style: str) -> Response:
    """The client left (or the proxy is stopping) before the upstream answered."""
    if recorder is not None:
        recorder.abandoned(reason)
    return client_error(style, 499, "aborted", reason)
