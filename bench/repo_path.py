"""Make the repository root importable: the benchmark measures this checkout's code.

Imported first by the bench modules that need ``agent_cli_proxy`` or ``tests.wire``; it puts
the repository root right after ``bench/`` on ``sys.path`` (ahead of any installed copy).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))
