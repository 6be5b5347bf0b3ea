"""Per-user admission of uploads: at most N in flight at once and M started per minute.

The counts live in this process's memory. That is right for the embedded server (`ftgate serve`: one
process, one event loop). A deployment with several API processes or replicas behind a balancer gives each
process its own counts, so a user gets N (and M) per process; it needs shared counters instead, e.g. Redis
(an INCR/DECR of an in-flight key with a TTL, and a sorted set of start times per user) -- see
docs/security.md.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

RATE_WINDOW_SECONDS = 60.0
# Nobody can know when one of a user's running uploads ends: a refused caller is told to come back soon.
BUSY_RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class Refusal:
    """Why an upload was not admitted, and in how many whole seconds to try again."""

    reason: str
    retry_after: int


class UploadLimiter:
    def __init__(self, max_in_flight: int, max_per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.max_in_flight, self.max_per_minute, self._clock = max_in_flight, max_per_minute, clock
        self._lock = threading.Lock()  # the API's handlers run on one event loop, but tests and tools may not
        self._in_flight: dict[int, int] = defaultdict(int)
        self._started: dict[int, deque[float]] = defaultdict(deque)

    def try_acquire(self, user_id: int) -> Refusal | None:
        """Take one of ``user_id``'s upload slots (None), or say why not. Every successful call needs a
        ``release`` (in a finally)."""
        with self._lock:
            now = self._clock()
            started = self._started[user_id]
            while started and started[0] <= now - RATE_WINDOW_SECONDS:
                started.popleft()
            if self._in_flight[user_id] >= self.max_in_flight:
                return Refusal(f"you already have {self.max_in_flight} uploads in progress; "
                               "wait for one to finish", BUSY_RETRY_AFTER_SECONDS)
            if self.max_per_minute and len(started) >= self.max_per_minute:
                wait = started[0] + RATE_WINDOW_SECONDS - now
                return Refusal(f"at most {self.max_per_minute} uploads per minute", max(1, math.ceil(wait)))
            self._in_flight[user_id] += 1
            started.append(now)
            return None

    def release(self, user_id: int) -> None:
        with self._lock:
            self._in_flight[user_id] -= 1
            if self._in_flight[user_id] <= 0:
                del self._in_flight[user_id]
                if not self._started.get(user_id):
                    self._started.pop(user_id, None)

    def in_flight(self, user_id: int) -> int:
        with self._lock:
            return self._in_flight.get(user_id, 0)
