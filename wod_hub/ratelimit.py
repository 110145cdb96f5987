"""In-process sliding-window rate limits (per IP, per e-mail).

The hub is a single process, so memory is the right place: no database write
per request, and a restart forgetting recent hits errs on the side of the user.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """Allow at most ``limit`` hits per ``window`` seconds for each key.

    ``hit(key)`` records a hit and returns ``None`` when allowed, or the number
    of seconds to wait before the next hit would be allowed.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        if limit < 0 or window <= 0:
            raise ValueError("RateLimiter needs limit >= 0 and window > 0")
        self.limit = limit
        self.window = window
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}

    def _prune(self, key: str, now: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def check(self, key: str) -> int | None:
        """Seconds to wait if the next hit would be refused, without recording it."""
        if self.limit == 0:
            return None  # 0 disables the limit
        now = self.clock()
        hits = self._prune(key, now)
        if len(hits) >= self.limit:
            return max(1, math.ceil(hits[0] + self.window - now))
        return None

    def hit(self, key: str) -> int | None:
        retry_after = self.check(key)
        if retry_after is None and self.limit:
            self._hits[key].append(self.clock())
        self._gc()
        return retry_after

    def _gc(self) -> None:
        # keep memory bounded under a flood of distinct keys
        if len(self._hits) > 10_000:
            now = self.clock()
            for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window]:
                del self._hits[key]
