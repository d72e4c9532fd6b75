"""Configuration: one YAML file (two accepted shapes), ``${VAR}`` expansion, CLI overrides.

Public surface:

* :func:`load_settings` / :func:`parse_settings` -> a frozen :class:`Settings`, or a
  :class:`~gateway.errors.ConfigError` naming the file, line and key path;
* :func:`dump_settings` / :func:`settings_to_config`: the effective settings as a config file
  that loads back to the same settings;
* :func:`summarize`: one line for logs and ``check-config``.

Module map: ``expand`` (env references), ``document`` (YAML with line numbers, the strict
section reader), ``validators`` (value checks), ``schema`` (top level, module entries, gateway
and link sections), ``state_schema`` (the state module and its adapters), ``loader``
(files, overrides, cross-section rules), ``dump``.
"""

from gateway.config.dump import dump_settings, settings_to_config, summarize
from gateway.config.loader import OVERRIDE_KEYS, apply_overrides, load_settings, parse_settings
from gateway.config.settings import Settings

__all__ = [
    "OVERRIDE_KEYS",
    "Settings",
    "apply_overrides",
    "dump_settings",
    "load_settings",
    "parse_settings",
    "settings_to_config",
    "summarize",
]
