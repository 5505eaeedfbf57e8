"""The custom providers in force, replaced whole when the configuration is reloaded.

Requests read :attr:`ProviderRegistry.current` once and route with that snapshot, so a
reload never mixes two configurations in one request. A reload that finds any problem
keeps the providers in force and reports every problem (SIGHUP, ``POST
/admin/providers/reload``, ``agent-cli-proxy providers reload``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent_cli_proxy.config import ConfigError
from agent_cli_proxy.log import get_logger
from agent_cli_proxy.providers.custom_config import ProviderSet

_log = get_logger("providers")


class ProviderRegistry:
    def __init__(self, initial: ProviderSet, load: Callable[[], ProviderSet]) -> None:
        """*load* reads the configuration afresh; it raises ConfigError when invalid."""
        self._current = initial
        self._load = load
        self._reloading = threading.Lock()
        # Called after each successful reload (the first of several workers tells the
        # others to reload too).
        self.after_reload: list[Callable[[], object]] = []

    @property
    def current(self) -> ProviderSet:
        # One attribute read: atomic, and the set itself is immutable.
        return self._current

    def reload(self) -> ProviderSet:
        """Load and swap in the new providers, or raise ConfigError keeping the old ones."""
        with self._reloading:  # two reloads at once would race to be the last one applied
            try:
                loaded = self._load()
            except ConfigError as exc:
                _log.warning("providers.reload_failed", kept=[p.id for p in
                                                              self._current.providers],
                             issues=[f"{i.name} {i.message}" for i in exc.issues])
                raise
            self._current = loaded
        for warning in loaded.warnings:
            _log.warning("config.warning", message=warning)
        _log.info("providers.reloaded", source=loaded.source, path=loaded.path,
                  providers=[p.id for p in loaded.providers])
        for listener in list(self.after_reload):
            listener()
        return loaded
