"""The shape every per-family usage reader returns, and safe access to decoded JSON.

Readers walk JSON the upstream sent, which may be any shape at all; ``as_object`` lets
them look inside without a type check at every step.
"""

from __future__ import annotations

Reading = tuple[dict[str, object], object]
"""(wire counters by canonical name, model): the shape every family module returns."""


def as_object(value: object) -> dict[str, object]:
    """*value* if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}
