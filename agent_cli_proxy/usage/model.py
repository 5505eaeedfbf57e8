"""The one meaning of token usage used everywhere: disjoint buckets.

Every wire format (OpenAI chat, OpenAI Responses, Anthropic messages, Gemini) is mapped
into these buckets by its extractor in ``providers/``, so that storage, reports and cost
never need to know which provider counted what. Cost is a plain weighted sum::

    cost = prompt * input + cache_read * cache_read_price
         + cache_creation * cache_write_price + completion * output

``reasoning_tokens`` and ``cache_creation_1h_tokens`` are breakdowns (parts of
``completion_tokens`` and ``cache_creation_tokens``), kept for reporting and for prices
that differ by part; they are never added on top.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one LLM call, in disjoint buckets."""

    prompt_tokens: int = 0
    """Input tokens neither read from nor written to the prompt cache."""
    cache_read_tokens: int = 0
    """Input tokens served from the prompt cache."""
    cache_creation_tokens: int = 0
    """Input tokens written to the prompt cache (all TTLs)."""
    completion_tokens: int = 0
    """All output tokens, reasoning included."""
    reasoning_tokens: int = 0
    """Part of ``completion_tokens`` spent on reasoning/thinking."""
    cache_creation_1h_tokens: int = 0
    """Part of ``cache_creation_tokens`` written with a one-hour TTL."""

    @property
    def total_tokens(self) -> int:
        """Sum of the four disjoint buckets."""
        return (
            self.prompt_tokens
            + self.cache_read_tokens
            + self.cache_creation_tokens
            + self.completion_tokens
        )

    @property
    def input_tokens(self) -> int:
        """All input, cached or not."""
        return self.prompt_tokens + self.cache_read_tokens + self.cache_creation_tokens

    def is_empty(self) -> bool:
        return self.total_tokens == 0 and self.reasoning_tokens == 0
