"""M_ARENA_MAX: glibc takes the setting (in a child process: it changes the allocator)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_glibc_takes_the_arena_limit() -> None:
    out = subprocess.run(
        [sys.executable, "-c",
         "from agent_cli_proxy.malloc_arenas import limit_arenas; print(limit_arenas())"],
        capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "True"
