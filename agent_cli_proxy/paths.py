"""Where this configuration keeps things: the answer of ``paths`` (and part of ``doctor``).

Everything is computed the way ``serve`` computes it (the same env-file search, the same
defaults), from a configuration that may be invalid: paths are worth knowing most when
something is wrong. Nothing is created or read beyond the env file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from agent_cli_proxy import config
from agent_cli_proxy.config import ConfigIssue, Settings


@dataclass(frozen=True, slots=True)
class Paths:
    env_file: str | None  # the env file in use, if any
    env_file_search: tuple[str, ...]  # where one is looked for, in order
    user_env_file: str | None  # where ``init`` writes by default
    config_dir: str | None
    data_dir: str
    state_dir: str
    cache_dir: str
    db_path: str
    pricing_cache_path: str
    providers_config_path: str | None
    providers_source: str | None  # PROVIDERS_JSON, PROVIDERS_CONFIG_PATH or None
    user_unit: str | None
    system_unit: str

    def as_dict(self) -> dict[str, object]:
        return {"envFile": self.env_file, "envFileSearch": list(self.env_file_search),
                "envPath": self.user_env_file, "configDir": self.config_dir,
                "dataDir": self.data_dir, "stateDir": self.state_dir,
                "cacheDir": self.cache_dir, "dbPath": self.db_path,
                "pricingCachePath": self.pricing_cache_path,
                "providersPath": self.providers_config_path,
                "providersSource": self.providers_source,
                "userUnit": self.user_unit, "systemUnit": self.system_unit}


def resolve(env_file: str | None = None, environ: Mapping[str, str] | None = None
            ) -> tuple[Paths, list[ConfigIssue]]:
    """The paths, and the configuration's problems (reported, not fatal here)."""
    from agent_cli_proxy.service import unit_path

    process_env: Mapping[str, str] = os.environ if environ is None else environ
    settings, issues = config.inspect_settings(environ, env_file)
    named = (process_env.get("AGENT_CLI_PROXY_ENV") or "").strip()
    if env_file is not None:
        search: list[str] = [os.path.abspath(env_file)]
    elif named:
        search = [named]
    else:
        search = config.env_file_candidates(environ)
    user_env = config.user_env_file(environ)
    in_use = settings.env_file
    anchor = in_use or user_env
    config_dir = os.path.dirname(os.path.abspath(anchor)) if anchor else None
    source = ("PROVIDERS_JSON" if settings.providers_json else
              "PROVIDERS_CONFIG_PATH" if settings.providers_config_path else None)
    paths = Paths(
        env_file=in_use, env_file_search=tuple(search), user_env_file=user_env,
        config_dir=config_dir, data_dir=_data_dir(settings),
        state_dir=_dir_of(settings.db_path), cache_dir=_dir_of(settings.pricing_cache_path),
        db_path=settings.db_path, pricing_cache_path=settings.pricing_cache_path,
        providers_config_path=settings.providers_config_path or None,
        providers_source=source,
        user_unit=unit_path(False, dict(environ) if environ is not None else None),
        system_unit=unit_path(True) or "")
    return paths, issues


def _dir_of(path: str) -> str:
    return path if path == ":memory:" else os.path.dirname(os.path.abspath(path))


def _data_dir(settings: Settings) -> str:
    """AGENT_CLI_PROXY_DATA_DIR, else the database's directory (where the default rules
    put the state files: the XDG data directory, or /var/lib for the system service)."""
    return settings.agent_cli_proxy_data_dir or _dir_of(settings.db_path)


def text(paths: Paths) -> str:
    """The paths for people, one per line."""
    rows = [("env file", paths.env_file or "(none found)"),
            ("env file search", ", ".join(paths.env_file_search)),
            ("init writes", paths.user_env_file or "(no home directory)"),
            ("config dir", paths.config_dir or "-"), ("data dir", paths.data_dir),
            ("state dir", paths.state_dir), ("cache dir", paths.cache_dir),
            ("database", paths.db_path), ("pricing cache", paths.pricing_cache_path),
            ("providers", paths.providers_config_path
             or ("PROVIDERS_JSON (inline)" if paths.providers_source else "(none)")),
            ("user unit", paths.user_unit or "-"), ("system unit", paths.system_unit)]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name + ':':<{width + 1}} {value}" for name, value in rows)
