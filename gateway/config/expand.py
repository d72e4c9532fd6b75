"""``${VAR}`` / ``${VAR:default}`` substitution, as the reference engine spells it.

The pattern is the reference's own (``\\$\\{([^}:]+)(?::([^}]*))?\\}``): the name is everything up
to the first ``:`` or ``}``, so a default may itself contain ``:`` (``${REDIS_URL:redis://h:6379}``).
Two deliberate differences from the reference, which substitutes the whole file text before
parsing:

* we substitute inside scalar *values* after parsing, so ``${...}`` in a comment or a key is
  left alone, and an environment value can never inject YAML structure (a ``"\\n  evil: 1"``
  value stays one string);
* a missing variable without a default is a :class:`~gateway.errors.ConfigError` naming the
  variable (the reference panics).

The reference's special default ``__III_ENGINE_VERSION__`` expands to the gateway version.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway import __version__
from gateway.errors import ConfigError

__all__ = ["ENV_PATTERN", "MissingVariable", "expand_env", "has_reference"]

ENV_PATTERN = re.compile(r"\$\{([^}:]+)(?::([^}]*))?\}")
_VERSION_DEFAULT = "__III_ENGINE_VERSION__"


class MissingVariable(ConfigError):
    """Raised by :func:`expand_env`; the config reader re-raises it with file, line and key."""

    def __init__(self, name: str) -> None:
        super().__init__(f"environment variable {name!r} is not set and has no default")
        self.name = name


def has_reference(text: str) -> bool:
    """Whether ``text`` contains at least one ``${...}`` reference (cheap pre-check)."""
    return "${" in text and ENV_PATTERN.search(text) is not None


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """Replace every reference in ``text`` in one left-to-right pass.

    Substituted values are not scanned again, so an environment value containing ``${X}`` is
    taken literally (no recursive expansion, no loops). An empty variable counts as set, as in
    the reference (``std::env::var`` succeeds for ``""``).
    """

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is not None:
            return value
        if default is None:
            raise MissingVariable(name)
        if default == _VERSION_DEFAULT:
            return __version__
        return default

    return ENV_PATTERN.sub(substitute, text)
