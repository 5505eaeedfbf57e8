"""Which upstream serves a request, and the request it gets (URL, headers, body, and the
filter its answer goes through).

The default upstream (CLI_PROXY_API_URL, id ``cliproxyapi``) gets the request with the
client's credentials swapped for CLI_PROXY_API_KEY; a custom provider gets it by the rules
of :mod:`agent_cli_proxy.providers.custom_forwarding`. Two documented changes of the body
apply on top: the OpenAI ``include_usage`` request on chat streams (its chunk is hidden
from the client again), and a provider's opt-in Claude Code transform.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from werkzeug.wrappers import Request

from agent_cli_proxy.config import Settings
from agent_cli_proxy.log import get_logger
from agent_cli_proxy.providers import custom_forwarding
from agent_cli_proxy.providers.custom_config import DEFAULT_ID, CustomProvider
from agent_cli_proxy.providers.custom_routing import select
from agent_cli_proxy.providers.forwarding import (
    Headers,
    replace_query_key,
    upstream_request_headers,
)
from agent_cli_proxy.providers.openai_chat import UsageChunkFilter, inject_include_usage
from agent_cli_proxy.providers.routes import Family, LLMCall, parse_json_object
from agent_cli_proxy.storage.api_keys import KEY_SCHEME
from agent_cli_proxy.upstream.relay import Transform
from agent_cli_proxy.web import api_keys
from agent_cli_proxy.web.services import ProxyServices

_log = get_logger("proxy")
UPSTREAM_ID = DEFAULT_ID  # the default upstream's breaker and recorded provider id


# (content type, is it an event stream) of the upstream answer -> the filter its body goes
# through on the way to the client, or None to relay it unchanged.
ResponseTransform = Callable[[str | None, bool], Transform | None]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes and in what form: the default upstream or a custom provider."""

    id: str
    """Breaker id, and the provider recorded in ``request_logs.actual_provider``."""
    base_url: str
    url: str
    headers: Headers
    body: bytes
    respond: ResponseTransform | None = None


def _usage_filter(content_type: str | None, event_stream: bool) -> Transform | None:
    # Only a stream has the usage chunk the proxy asked for on the client's behalf.
    return UsageChunkFilter() if event_stream else None


def build_route(services: ProxyServices, request: Request, call: LLMCall | None, body: bytes,
                path: str, query: str, parsed: dict[str, object] | None = None) -> Route:
    """Pick the upstream (providers.custom_routing) and build the request it gets.
    Raises ``SelectionError`` for a provider named explicitly that cannot serve it.
    *parsed*: the body as classification parsed it, if it did
    (:func:`~agent_cli_proxy.providers.routes.classify_parsed`)."""
    settings = services.settings
    provider_set = services.providers.current
    original = body
    model = call.requested_model if call is not None else None
    if call is None and provider_set.providers:
        model = _body_model(body)
    provider = select(provider_set, request.path, header_id=request.headers.get("x-provider"),
                      body=body, model=model).provider
    client_headers = [(n, v) for n, v in request.headers.items()
                      if n.lower() not in custom_forwarding.PROXY_ONLY_HEADERS]
    if provider is None:
        key = settings.cli_proxy_api_key
        query = replace_query_key(query, key)
        route_id, base_url = UPSTREAM_ID, settings.cli_proxy_api_url
        url = base_url + path + (f"?{query}" if query else "")
        headers = upstream_request_headers(client_headers, key)
    else:
        route_id, base_url = provider.id, provider.upstream_base_url
        url, headers, body = _to_provider(services, request, provider, body, path, query)
    respond: ResponseTransform | None = None
    if call is not None and call.family is Family.OPENAI_CHAT and call.stream:
        # The same bytes the classification parsed, unless a provider rule changed them.
        injected = inject_include_usage(body, parsed if body is original else None)
        if injected is not None:
            body, respond = injected, _usage_filter
    if (provider is not None and provider.transform == "claude-code"
            and request.method == "POST" and request.path == "/v1/messages"):
        headers, body, respond = _claude_code(settings, request, headers, body)
    if respond is not None:
        # The filters read the body: a compressed answer would have nothing to read.
        headers = [(n, v) for n, v in headers if n.lower() != "accept-encoding"]
    return Route(route_id, base_url, url, headers, body, respond)


def _to_provider(services: ProxyServices, request: Request, provider: CustomProvider,
                 body: bytes, path: str, query: str) -> tuple[str, Headers, bytes]:
    """URL, headers and body of a request to a custom provider."""
    settings = services.settings
    if provider.strip_provider_field:
        body = custom_forwarding.strip_provider_field(body)
    # A managed key is the proxy's business: it never goes to any upstream.
    proxy_keys = frozenset(k for k in api_keys.presented_keys(request)
                           if k.startswith(KEY_SCHEME))
    query = custom_forwarding.request_query(
        query, provider, default_url=settings.cli_proxy_api_url,
        default_key=settings.cli_proxy_api_key, proxy_keys=proxy_keys)
    headers = custom_forwarding.request_headers(
        [(n, v) for n, v in request.headers.items()], provider,
        default_url=settings.cli_proxy_api_url, default_key=settings.cli_proxy_api_key,
        proxy_keys=proxy_keys)
    return custom_forwarding.upstream_url(provider, path, query), headers, body


def _body_model(body: bytes) -> str | None:
    """The body's ``model``, for choosing a provider for a call that is not recorded."""
    obj = parse_json_object(body) if body.lstrip()[:1] == b"{" else None
    model = obj.get("model") if obj is not None else None
    return model if isinstance(model, str) and model else None


def _claude_code(settings: Settings, request: Request, headers: Headers, body: bytes
                 ) -> tuple[Headers, bytes, ResponseTransform | None]:
    """A provider's ``"transform": "claude-code"``: the call made to look like Claude
    Code's own, and the client's tool names given back in the answer. Never applied to a
    request Claude Code itself sent."""
    try:
        # Imported when first used: the transform is opt-in per provider.
        from agent_cli_proxy.providers import claude_code
    except ImportError:  # pragma: no cover - only while the module is being written
        _log.error("providers.transform_unavailable", transform="claude-code")
        return headers, body, None
    if claude_code.is_claude_code(request.headers):
        return headers, body, None
    options = claude_code.ClaudeCodeOptions.from_settings(settings)
    names = claude_code.tool_name_map(body, options)  # from the client's own body
    headers, body = claude_code.rewrite_request(headers, body, options)

    def respond(content_type: str | None, event_stream: bool) -> Transform | None:
        return claude_code.response_rewriter(content_type, event_stream, options,
                                             tool_names=names)

    return headers, body, respond
