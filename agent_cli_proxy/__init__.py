"""agent-cli-proxy: a self-hosted usage and cost proxy for AI coding tools."""

__version__ = "0.1.0"
