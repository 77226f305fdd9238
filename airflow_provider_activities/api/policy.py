"""Client policies with no I/O: token cache, retry and backoff, rate limit.

Each is a small state machine that the sync and async drivers share; only the waiting
(``time.sleep`` or ``asyncio.sleep``) differs between them. The rate limit is per process and
API key (:func:`shared_rate_limiter`), shared by every hook, sync or async.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_activities.api.config import ClientConfig

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_MAX = 300.0
"""The longest ``Retry-After`` honoured by default, in seconds."""


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
    ``[0.5, 1]``); a ``Retry-After`` header, in seconds or as an HTTP date, wins when present
    (up to ``retry_after_max`` seconds).

    :param max_retries: retries after the first attempt.
    :param base: the first delay in seconds.
    :param cap: the longest delay in seconds.
    :param retry_after_max: the longest ``Retry-After`` honoured, in seconds.
    """

    def __init__(
        self,
        max_retries: int,
        base: float,
        cap: float,
        rng: random.Random | None = None,
        retry_after_max: float = RETRY_AFTER_MAX,
    ) -> None:
        self.max_retries = max_retries
        self.base = base
        self.cap = cap
        self.retry_after_max = retry_after_max
        self._rng = rng or random.Random()

    @classmethod
    def from_config(cls, config: ClientConfig) -> RetryPolicy:
        """The policy of a connection's settings: ``max_retries``, ``backoff_base``,
        ``backoff_max`` and ``retry_after_max`` (shorter for a connection test, see
        :meth:`~airflow_provider_activities.api.config.ClientConfig.for_connection_test`).
        """
        return cls(config.max_retries, config.backoff_base, config.backoff_max, retry_after_max=config.retry_after_max)

    @staticmethod
    def retryable_status(status: int) -> bool:
        """429 and the transient 5xx are retried; other statuses are final."""
        return status in RETRY_STATUSES

    @staticmethod
    def retryable_error(error: BaseException) -> bool:
        """Whether a transport error (what the driver got instead of an answer) may pass on retry.

        A ``ValueError`` never does: the transports raise one for a request that cannot be sent
        as it is (``requests``' ``InvalidURL``, ``MissingSchema``, ``InvalidSchema`` and
        ``InvalidHeader``, ``urllib3``'s ``LocationParseError``, ``aiohttp``'s ``InvalidURL``), so
        it fails at once. Every other error is retried: a refused or dropped connection (a server
        restarting), a timeout, a host name that did not resolve (DNS may be down for a moment).
        """
        return not isinstance(error, ValueError)

    def delay(self, retry: int, headers: Mapping[str, str] | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        retry_after = _retry_after_seconds(headers)
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
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
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


class RateLimiter:
    """At most ``rate`` requests in any one-second window, however long each request takes.

    The client holds ``burst = max(1, int(rate))`` slots. A request takes a slot before it is sent
    (:meth:`acquire`) and gives it back once its answer has arrived (:meth:`release`); the slot is
    usable again a window (``burst / rate`` seconds plus ``margin``) after that. The server sees a
    request arrive between its send and its answer, so two requests of one slot arrive more than a
    window apart, and no one-second window holds more than ``burst`` arrivals, whatever pauses
    (garbage collection, retries, latency) happen between the client's clock and the wire. It also
    caps requests in flight at ``burst``.

    Not thread-safe by itself: :class:`SharedRateLimiter` adds the lock.

    :param rate: requests per second (may be fractional: 0.5 means one every two seconds).
    :param margin: seconds added to the window.
    """

    def __init__(self, rate: float, margin: float = 0.01) -> None:
        self.rate = rate
        self._margin = margin
        self._burst = max(1, int(rate))
        self._window = self._burst / rate + margin
        self._idle: list[float] = [0.0] * self._burst  # a heap: when each idle slot may be used again
        self._busy = 0

    def acquire(self, now: float) -> float | None:
        """Take a slot: the seconds to wait before sending, or ``None`` when every slot is in use
        (wait for a :meth:`release`, then ask again).
        """
        if not self._idle:
            return None
        self._busy += 1
        return max(0.0, heapq.heappop(self._idle) - now)

    def release(self, now: float) -> None:
        """Give back a slot whose request was answered (or failed) at ``now``."""
        self._busy = max(0, self._busy - 1)
        if self._busy + len(self._idle) < self._burst:  # a slot dropped by set_rate is not given back
            heapq.heappush(self._idle, now + self._window)

    def set_rate(self, rate: float) -> None:
        """Change the rate: slots are added (usable at once) or dropped (idle ones first, busy ones
        when they are released); slots already idle keep their times.
        """
        if rate == self.rate:
            return
        self.rate = rate
        self._burst = max(1, int(rate))
        self._window = self._burst / rate + self._margin
        missing = self._burst - self._busy - len(self._idle)
        if missing > 0:
            self._idle.extend([0.0] * missing)
        while missing < 0 and self._idle:
            self._idle.remove(max(self._idle))  # the slot usable last goes first
            missing += 1
        heapq.heapify(self._idle)


class SharedRateLimiter:
    """A :class:`RateLimiter` shared by every hook of one process on one API key, with its lock.

    The vendor limits requests per API key, so two hooks (threads of one task, or a task and a
    trigger in one process) must not each send at the full rate. Threads wait on
    :attr:`condition`; an event loop, which must not block on it, polls :meth:`try_acquire`.

    :param rate: requests per second.
    """

    def __init__(self, rate: float) -> None:
        self.limiter = RateLimiter(rate)
        self.condition = threading.Condition()

    @property
    def rate(self) -> float:
        """The requests per second it enforces."""
        return self.limiter.rate

    def try_acquire(self, now: float) -> float | None:
        """:meth:`RateLimiter.acquire` under the lock."""
        with self.condition:
            return self.limiter.acquire(now)

    def acquire(self, clock: Callable[[], float]) -> float:
        """Take a slot, blocking this thread while every slot is in use; the seconds to wait before sending."""
        with self.condition:
            while (wait := self.limiter.acquire(clock())) is None:
                self.condition.wait()
        return wait

    def release(self, now: float) -> None:
        """Give a slot back and wake a waiting thread."""
        with self.condition:
            self.limiter.release(now)
            self.condition.notify()


LOCAL_LEASE = "local"
"""The lease id of a slot taken from the per-process limiter (slots shared through Redis carry random ids)."""


class LocalBudget:
    """The per-process limiter behind the lease interface of the shared rate budget.

    The hooks take a slot with :meth:`acquire` (or :meth:`try_acquire`), keep the lease id while
    the request is sent, and give it back with :meth:`release`. Without a shared budget this is
    what they pace with; with one, it is what the budget falls back to while Redis cannot be
    reached (see :mod:`airflow_provider_activities.hooks._shared_budget`).

    :param limiter: the process's limiter for the API key (:func:`shared_rate_limiter`).
    """

    def __init__(self, limiter: SharedRateLimiter) -> None:
        self.limiter = limiter

    def try_acquire(self) -> tuple[float, str] | None:
        """A slot: ``(seconds to wait before sending, LOCAL_LEASE)``, or ``None`` when every slot is in use."""
        wait = self.limiter.try_acquire(time.monotonic())
        return None if wait is None else (wait, LOCAL_LEASE)

    def acquire(self) -> tuple[float, str]:
        """Take a slot, blocking this thread while every slot is in use: ``(seconds to wait before
        sending, LOCAL_LEASE)``.
        """
        return self.limiter.acquire(time.monotonic), LOCAL_LEASE

    def release(self, lease: str) -> None:
        """Give back a slot whose request was answered (or failed) now.

        :param lease: :data:`LOCAL_LEASE` (the per-process limiter's slots have no identity).
        """
        self.limiter.release(time.monotonic())


_SHARED_LIMITERS: dict[tuple[str, str], SharedRateLimiter] = {}
_SHARED_LIMITERS_LOCK = threading.Lock()


def shared_rate_limiter(base_url: str, client_id: str, rate: float) -> SharedRateLimiter:
    """The process's rate limiter for one API key at one API: every hook on it shares the rate.

    Keyed by ``(base_url, client_id)``. The limiter lives as long as the process, so a hook made
    right after another one (the next task in the same worker) sees its recent requests. When a
    hook asks for another ``rate`` than the limiter has, the limiter takes the new rate: the latest
    connection read wins (two connections on one API key should give the same rate).

    :param base_url: the API's base URL.
    :param client_id: the API key.
    :param rate: requests per second from the connection.
    """
    key = (base_url.rstrip("/"), client_id)
    with _SHARED_LIMITERS_LOCK:
        shared = _SHARED_LIMITERS.get(key)
        if shared is None:
            shared = _SHARED_LIMITERS[key] = SharedRateLimiter(rate)
    if shared.rate != rate:
        with shared.condition:
            shared.limiter.set_rate(rate)
            shared.condition.notify_all()
    return shared


_SHARED_TOKENS: dict[tuple[str, str, str], TokenCache] = {}
_SHARED_TOKENS_LOCK = threading.Lock()


def shared_token_cache(token_url: str, client_id: str, client_secret: str) -> TokenCache:
    """The process's token cache for one API key pair at one token endpoint.

    Every hook of a process on the same credentials (the sync hook in a worker, the async hook of
    each trigger in a triggerer) reuses one access token until it is due for refresh, instead of
    minting its own: fewer token requests, and fewer tokens registered with Airflow's secrets
    masker, which keeps every masked value for the life of the process. Keyed by the token URL,
    the ``client_id`` and a SHA-256 of the secret (a rotated secret gets a cache of its own; the
    secret itself is not kept here).

    :param token_url: the absolute URL of the token endpoint.
    :param client_id: the API key.
    :param client_secret: the API secret.
    """
    key = (token_url, client_id, hashlib.sha256(client_secret.encode()).hexdigest())
    with _SHARED_TOKENS_LOCK:
        cache = _SHARED_TOKENS.get(key)
        if cache is None:
            cache = _SHARED_TOKENS[key] = TokenCache()
        return cache


def forget_endpoint(base_url: str) -> None:
    """Drop the process's cached tokens, rate limiters and learnt page sizes for the API at ``base_url``.

    For a new server at an address another one used before (the sandbox on a reused loopback
    port): what was cached for the old one would only earn a 401 or a stale pacing state.
    """
    base = base_url.rstrip("/")
    with _SHARED_TOKENS_LOCK:
        for token_key in [key for key in _SHARED_TOKENS if key[0] == base or key[0].startswith(base + "/")]:
            del _SHARED_TOKENS[token_key]
    with _SHARED_LIMITERS_LOCK:
        for limiter_key in [key for key in _SHARED_LIMITERS if key[0] == base]:
            del _SHARED_LIMITERS[limiter_key]
    from airflow_provider_activities.api.pagination import forget_page_sizes  # (pagination imports this module)

    forget_page_sizes(base)
