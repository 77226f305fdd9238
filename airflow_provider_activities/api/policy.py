"""Client policies with no I/O: token cache, retry and backoff, rate limit.

Each is a small state machine that the sync and async drivers share; only the waiting
(``time.sleep`` or ``asyncio.sleep``) and the locking differ between them.
"""

from __future__ import annotations

import heapq
import random
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Mapping

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_RETRY_AFTER_CAP = 300.0


class TokenCache:
    """Holds one access token and refreshes it before it expires.

    The refresh margin is a tenth of the token's life, at most 60 s, so a short-lived token
    (``expires_in`` of a few seconds) is still used for most of its life.
    """

    def __init__(self) -> None:
        self._token: str | None = None
        self._refresh_at = 0.0

    def get(self, now: float) -> str | None:
        """The cached token, or ``None`` when there is none or it is due for refresh."""
        if self._token is not None and now < self._refresh_at:
            return self._token
        return None

    def store(self, token: str, expires_in: float, now: float) -> None:
        """Cache ``token``, minted at ``now`` (monotonic seconds) and living ``expires_in`` s."""
        margin = min(60.0, max(expires_in, 0.0) * 0.1)
        self._token = token
        self._refresh_at = now + max(expires_in, 0.0) - margin

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (after a 401), unless another caller already replaced it."""
        if self._token == token:
            self._token = None


class RetryPolicy:
    """Which failures are retried, and how long to wait before each retry.

    Exponential backoff with full jitter (``base * 2**n``, capped, times a random factor in
    ``[0.5, 1]``); a ``Retry-After`` header, in seconds or as an HTTP date, wins when present.

    :param max_retries: retries after the first attempt.
    :param base: the first delay in seconds.
    :param cap: the longest delay in seconds.
    """

    def __init__(self, max_retries: int, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.max_retries = max_retries
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    @staticmethod
    def retryable_status(status: int) -> bool:
        """429 and the transient 5xx are retried; other statuses are final."""
        return status in RETRY_STATUSES

    def delay(self, retry: int, headers: Mapping[str, str] | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        retry_after = _retry_after_seconds(headers)
        if retry_after is not None:
            return retry_after
        ceiling = min(self.cap, self.base * (2 ** (retry - 1)))
        return ceiling * (0.5 + 0.5 * self._rng.random())


def _retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    value = None
    for key, candidate in headers.items():
        if key.lower() == "retry-after":
            value = candidate.strip()
            break
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP)


class RateLimiter:
    """At most ``rate`` requests in any one-second window, however long each request takes.

    The client holds ``burst = max(1, int(rate))`` slots. A request takes a slot before it is sent
    (:meth:`acquire`) and gives it back once its answer has arrived (:meth:`release`); the slot is
    usable again a window (``burst / rate`` seconds plus ``margin``) after that. The server sees a
    request arrive between its send and its answer, so two requests of one slot arrive more than a
    window apart, and no one-second window holds more than ``burst`` arrivals, whatever pauses
    (garbage collection, retries, latency) happen between the client's clock and the wire. It also
    caps requests in flight at ``burst``.

    :param rate: requests per second (may be fractional: 0.5 means one every two seconds).
    :param margin: seconds added to the window.
    """

    def __init__(self, rate: float, margin: float = 0.01) -> None:
        burst = max(1, int(rate))
        self._window = burst / rate + margin
        self._idle: list[float] = [0.0] * burst  # a heap: when each idle slot may be used again

    def acquire(self, now: float) -> float | None:
        """Take a slot: the seconds to wait before sending, or ``None`` when every slot is in use
        (wait for a :meth:`release`, then ask again)."""
        if not self._idle:
            return None
        return max(0.0, heapq.heappop(self._idle) - now)

    def release(self, now: float) -> None:
        """Give back a slot whose request was answered (or failed) at ``now``."""
        heapq.heappush(self._idle, now + self._window)
