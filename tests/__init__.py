"""Tests for agent-cli-proxy; helpers shared by several test modules live here."""
