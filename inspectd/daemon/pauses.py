"""Why the daemon is holding back, since when, and when it tries again.

A full results disk, a full, locked or unreachable database: each pauses part of
the work with a doubling back-off, is logged once when it starts and once when it
ends, and is listed in `inspectd status` with its reason while it lasts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Pause:
    message: str
    since: float  # wall-clock time, for people
    retry_at: float  # monotonic time of the next attempt
    delay: float


class Pauses:
    def __init__(self, first_delay: float = 1.0, max_delay: float = 30.0):
        self.first_delay, self.max_delay = first_delay, max_delay
        self._active: dict[str, Pause] = {}

    def hold(self, key: str, message: str) -> None:
        """Pause `key` (again): the next attempt comes after a doubled delay."""
        now = time.monotonic()
        pause = self._active.get(key)
        if pause is None:
            pause = self._active[key] = Pause(message, time.time(), now, self.first_delay)
            log.error("PAUSED (%s): %s; retrying with back-off", key, message)
        else:
            if message != pause.message:
                log.error("still paused (%s): %s", key, message)
            pause.message, pause.delay = message, min(self.max_delay, pause.delay * 2)
        pause.retry_at = now + pause.delay

    def clear(self, key: str) -> bool:
        """End the pause of `key`; True when there was one."""
        pause = self._active.pop(key, None)
        if pause is not None:
            log.warning("resumed (%s) after %.0f s: %s", key, time.time() - pause.since, pause.message)
        return pause is not None

    def blocked(self, key: str) -> bool:
        """True while `key` is paused and its next attempt is not due yet."""
        pause = self._active.get(key)
        return pause is not None and time.monotonic() < pause.retry_at

    def next_retry(self) -> float | None:
        """Monotonic time of the earliest retry, or None when nothing is paused."""
        return min((p.retry_at for p in self._active.values()), default=None)

    def report(self) -> list[dict]:
        return [{"reason": key, "message": p.message, "since": p.since} for key, p in sorted(self._active.items())]

    def __bool__(self) -> bool:
        return bool(self._active)
