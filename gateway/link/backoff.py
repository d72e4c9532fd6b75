"""Reconnect delays: exponential backoff with jitter (pure; the random source is injected).

After a failed connect attempt the Bridge waits ``next_delay()`` seconds: 1 s, 2 s, 4 s ... up
to 30 s, each multiplied by a random factor in ``[1 - jitter, 1 + jitter]`` (±30 %), so a
thousand edges cut off by the same outage do not reconnect in lockstep when it ends
(``reference/anchors.md`` 6.5, the iii SDK's policy). ``reset()`` after a successful handshake
starts the sequence over.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Delays for successive failed attempts; ``rng`` returns floats in ``[0, 1)``."""

    def __init__(
        self,
        *,
        initial: float = 1.0,
        maximum: float = 30.0,
        multiplier: float = 2.0,
        jitter: float = 0.3,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial <= 0 or maximum < initial or multiplier < 1 or not 0 <= jitter < 1:
            raise ValueError("need 0 < initial <= maximum, multiplier >= 1, 0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.jitter = jitter
        self._rng = rng
        self.attempts = 0

    def base_delay(self) -> float:
        """The delay before jitter for the next attempt (capped at ``maximum``)."""
        # Cap the exponent too: multiplier ** attempts must not overflow after days offline.
        delay = self.initial
        for _ in range(self.attempts):
            delay *= self.multiplier
            if delay >= self.maximum:
                return self.maximum
        return min(delay, self.maximum)

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; advances the sequence."""
        base = self.base_delay()
        self.attempts += 1
        factor = 1.0 + self.jitter * (2.0 * self._rng() - 1.0)
        return base * factor

    def reset(self) -> None:
        """Call after a success: the next failure waits ``initial`` again."""
        self.attempts = 0
