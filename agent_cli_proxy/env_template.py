"""The example env file: every variable of ``config.FIELDS``, commented out, with its default.

``contrib/agent-cli-proxy.env.example`` is this module's output (a test keeps them equal),
and ``service install --system`` writes the same text as a new
``/etc/agent-cli-proxy/agent-cli-proxy.env``, so the file an administrator edits lists every
setting there is. Each variable gets one comment line of help (the ``FIELDS`` text) and a
commented-out assignment: uncommented, it sets the default again.
"""

from __future__ import annotations

from agent_cli_proxy.config import FIELDS, Computed, Field
from agent_cli_proxy.envfile import quote_value

HEADER = """\
# agent-cli-proxy settings: every variable, commented out, with its default value.
# A user's proxy reads ~/.config/agent-cli-proxy/.env, the system service
# /etc/agent-cli-proxy/agent-cli-proxy.env (mode 0640, group agent-cli-proxy).
# Uncomment what you change; only CLI_PROXY_API_URL is required.
# Reference: agent-cli-proxy.env(5). Check the result with: agent-cli-proxy doctor
# Generated from agent_cli_proxy/config.py FIELDS (agent_cli_proxy/env_template.py).
"""


def example_value(field: Field) -> str:
    """The text that, assigned to *field*, means its default; empty when the default is
    "unset" (an empty value means the default too) or depends on other settings."""
    if isinstance(field.default, Computed):
        return ""
    text = field.default_doc
    try:
        parsed = field.parse(text)
    except ValueError:
        return ""  # e.g. an empty mapping has no written form of its own
    return text if parsed is not None else ""


def _field_lines(field: Field) -> list[str]:
    lines = [f"# {field.help}"]
    if isinstance(field.default, Computed):
        lines.append(f"# Default: {field.default.doc}.")
    if field.secret:
        lines.append(f"# Secret: may instead come from {field.name}_FILE (a file holding it) "
                     f"or the systemd credential {field.name}.")
    lines.append(f"#{field.name}={quote_value(example_value(field))}")
    return lines


def render_env_example() -> str:
    """The whole example file."""
    out = [HEADER.rstrip("\n")]
    section = None
    for field in FIELDS:
        if field.section != section:
            section = field.section
            out += ["", f"# === {section} ===", ""]
        else:
            out.append("")
        out += _field_lines(field)
    return "\n".join(out) + "\n"
