"""The built-in price table: a few popular coding models, for when models.dev is unreachable.

Copied BY HAND from models.dev's ``api.json`` as it stood on 2026-06-30 (the newest
``last_updated`` in the snapshot used), in the same JSON shape so that
:meth:`PriceTable.from_models_dev` parses it. USD per 1M tokens. It goes stale: the live
models.dev table replaces it as soon as one fetch succeeds, and PRICING_OVERRIDES_JSON
corrects a single model without a release. A test checks these numbers against the
snapshot so a typo here fails CI.
"""

from __future__ import annotations

from typing import Any

BUILTIN_DATE = "2026-06-30"


def _cost(input_: float, output: float, **optional: Any) -> dict[str, Any]:
    """One model in models.dev's shape: ``{"cost": {"input", "output", …}}``."""
    return {"cost": {"input": input_, "output": output, **optional}}


BUILTIN_MODELS_DEV: dict[str, Any] = {
    "anthropic": {"id": "anthropic", "models": {
        "claude-opus-4-5": _cost(5.0, 25.0, cache_read=0.5, cache_write=6.25),
        "claude-opus-4-6": _cost(5.0, 25.0, cache_read=0.5, cache_write=6.25),
        "claude-opus-4-7": _cost(5.0, 25.0, cache_read=0.5, cache_write=6.25),
        "claude-sonnet-4-5": _cost(3.0, 15.0, cache_read=0.3, cache_write=3.75),
        "claude-sonnet-4-6": _cost(3.0, 15.0, cache_read=0.3, cache_write=3.75),
        "claude-sonnet-5": _cost(2.0, 10.0, cache_read=0.2, cache_write=2.5),
        "claude-haiku-4-5": _cost(1.0, 5.0, cache_read=0.1, cache_write=1.25),
    }},
    "openai": {"id": "openai", "models": {
        "gpt-5": _cost(1.25, 10.0, cache_read=0.125),
        "gpt-5-mini": _cost(0.25, 2.0, cache_read=0.025),
        "gpt-5-codex": _cost(1.25, 10.0, cache_read=0.125),
        "gpt-5.1-codex": _cost(1.25, 10.0, cache_read=0.125),
        "gpt-5.1-codex-max": _cost(1.25, 10.0, cache_read=0.125),
        "gpt-5.2-codex": _cost(1.75, 14.0, cache_read=0.175),
        "gpt-5.3-codex": _cost(1.75, 14.0, cache_read=0.175),
        "gpt-5.4": {"cost": {"input": 2.5, "output": 15.0, "cache_read": 0.25, "tiers": [
            {"tier": {"size": 272000}, "input": 5.0, "output": 22.5, "cache_read": 0.5}]}},
        "gpt-5.4-mini": _cost(0.75, 4.5, cache_read=0.075),
        "gpt-5.5": {"cost": {"input": 5.0, "output": 30.0, "cache_read": 0.5, "tiers": [
            {"tier": {"size": 272000}, "input": 10.0, "output": 45.0, "cache_read": 1.0}]}},
    }},
    "google": {"id": "google", "models": {
        "gemini-2.5-pro": {"cost": {"input": 1.25, "output": 10.0, "cache_read": 0.125, "tiers": [
            {"tier": {"size": 200000}, "input": 2.5, "output": 15.0, "cache_read": 0.25}]}},
        "gemini-2.5-flash": _cost(0.3, 2.5, cache_read=0.03),
        "gemini-3.1-pro-preview": {"cost": {
            "input": 2.0, "output": 12.0, "cache_read": 0.2, "tiers": [
                {"tier": {"size": 200000}, "input": 4.0, "output": 18.0, "cache_read": 0.4}]}},
        "gemini-3-flash-preview": _cost(0.5, 3.0, cache_read=0.05),
    }},
    "alibaba": {"id": "alibaba", "models": {
        "qwen3-coder-plus": _cost(1.0, 5.0),
        "qwen3-coder-flash": _cost(0.3, 1.5),
    }},
    # Z.AI lists cache writes as explicitly free.
    "zai": {"id": "zai", "models": {
        "glm-4.5": _cost(0.6, 2.2, cache_read=0.11, cache_write=0),
        "glm-4.6": _cost(0.6, 2.2, cache_read=0.11, cache_write=0),
        "glm-4.7": _cost(0.6, 2.2, cache_read=0.11, cache_write=0),
    }},
    "moonshotai": {"id": "moonshotai", "models": {
        "kimi-k2-0905-preview": _cost(0.6, 2.5, cache_read=0.15),
        "kimi-k2-thinking": _cost(0.6, 2.5, cache_read=0.15),
        "kimi-k2.6": _cost(0.95, 4.0, cache_read=0.16),
    }},
    # DeepSeek's API names: deepseek-chat (V3.x line) and deepseek-reasoner (R1 line).
    "deepseek": {"id": "deepseek", "models": {
        "deepseek-chat": _cost(0.14, 0.28, cache_read=0.0028),
        "deepseek-reasoner": _cost(0.14, 0.28, cache_read=0.0028),
    }},
}
