"""One rate budget per API key for every process and host, kept in Redis.

The per-process limiter (:class:`~airflow_provider_activities.api.policy.RateLimiter`) holds
``burst = max(1, int(rate))`` slots: a request takes one before it is sent and gives it back once
answered, and the slot rests a window (``burst / rate`` seconds plus a margin) before its next use,
so no one-second window at the server holds more than ``burst`` arrivals, whatever the latency.
This module keeps the same slots in Redis, so that every process on one (base URL, API key), sync
hooks in workers and async hooks in the triggerer alike, draws on one budget, and adds a cap on
the requests in flight (``max_concurrency``) across all of them.

How it is kept
    One small Lua script (:data:`SCRIPT`) does every change atomically, on two sorted sets per
    budget: the idle slots (scored by when each may be used again) and the busy ones, one per
    lease (scored by the lease's deadline). All times are the Redis server's (``TIME``), so hosts
    whose clocks disagree still agree on the budget; a client only ever sleeps a duration the
    script computed. Key names carry a SHA-256 of the base URL and API key, never the key itself
    (:func:`budget_keys`); the values are random lease ids and times.

Leases
    A busy slot carries a deadline, ``lease_seconds`` after its send. A process that dies (or
    hangs) while holding slots does not leak them: once past the deadline the slot counts as
    answered at the deadline and rests a window, like any other. The default lease,
    :func:`lease_for_timeout`, is three request timeouts: a request sent has connected, been
    answered (first byte) and, unless its body is large, been read within that. The rate rule
    only needs the request to have *arrived* before the deadline (the slot then rests a window
    after it); a body still streaming past the deadline may let one more request in flight than
    ``max_concurrency`` for the rest of its transfer.

When Redis cannot be reached
    Connection refused, a timeout, an authentication error or any other Redis error never fails
    the task: the first one logs one warning per budget and process, and the process then uses
    its own per-process limiter (:func:`~airflow_provider_activities.api.policy.shared_rate_limiter`,
    429s are retried as always). Every :data:`REDIS_RETRY_SECONDS` one request tries Redis again;
    when that works the budget is shared again (logged at INFO). Slots held in Redis by a
    process that lost it expire with their leases.

Why ``redis`` with a script, not ``limits``
    ``limits`` (with its Redis storage) counts *hits* in fixed or moving windows, stamped with
    the client's clock when the hit is taken: it has no release when the answer arrives, so with
    varying latency more than ``rate`` requests can reach the server in one second, it has no cap
    on requests in flight, no expiring leases, and it answers "allowed or not" rather than how
    long to wait. The slot rule needs all four, so it is one Lua script over ``redis``, the
    official client, which gives the same script to the sync and the asyncio client.

Requirements
    Redis 5 or later (``ZPOPMIN``, and scripts replicated by their effects, which ``TIME`` needs),
    one server or a primary (not Redis Cluster: the client is ``redis.Redis``). Every process on
    one API key should read the same ``requests_per_second``, ``max_concurrency`` and lease; when
    they differ, the latest call's numbers apply.

Layout: :class:`BudgetRule` builds the script's keys and arguments and reads its answers;
:class:`SharedBudget` adds the fallback, as flows that yield a :class:`ScriptCall` and receive
the reply (the same pattern as :mod:`airflow_provider_activities.api.flow`); the thin drivers
:class:`RedisRateBudget` (``redis.Redis``) and :class:`AsyncRedisRateBudget`
(``redis.asyncio.Redis``) only run the script.
:class:`~airflow_provider_activities.api.policy.LocalBudget` gives the per-process limiter the
same lease interface (it lives with the limiter, so the hooks use it without ``redis`` installed).

How the hooks use it: with the ``rate_limit_redis_conn_id`` connection extra set, the sync hook
paces with a :class:`RedisRateBudget` and the async hook with an :class:`AsyncRedisRateBudget`,
both on the process's :func:`shared_budget` (built by
:func:`airflow_provider_activities.hooks._common.redis_budget`); without it, with a
:class:`~airflow_provider_activities.api.policy.LocalBudget`. The lease a request's ``Pace`` takes
is given back once its ``Send`` is answered.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from airflow_provider_activities.api.policy import LOCAL_LEASE, LocalBudget, shared_rate_limiter

log = logging.getLogger(__name__)

REDIS_CONN_TYPE = "redis"
"""The Airflow connection type the budget's Redis is read from."""

KEY_PREFIX = "airflow-provider-activities:rate"
"""Start of every key the budget writes."""

REDIS_TIMEOUT_SECONDS = 2.0
"""Connect and read timeout of every Redis call: how long a Redis that does not answer can hold a request up."""

REDIS_RETRY_SECONDS = 30.0
"""After Redis failed, how long the process uses its own limiter before one request tries Redis again."""

POLL_SECONDS = 0.05
"""How often a request waiting for a slot asks again while the budget is full. A slot freed by an
answer rests a window before its next use, so polling at this pace delays no send that the rate
allows; only a wait on the in-flight cap alone can take up to this long more."""

LEASE_TIMEOUTS = 3
"""The default lease, in request timeouts (:func:`lease_for_timeout`)."""

DEFAULT_MARGIN = 0.01
"""Seconds added to each slot's window, as the per-process limiter does."""

#: What a Redis call may raise when Redis cannot be used; each means "fall back", never "fail".
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)

SCRIPT = """
-- One rate budget: slots that rest a window after each answer, and a cap on busy slots.
-- KEYS[1] idle: sorted set, a free slot -> when it may be used again (microseconds, server time)
-- KEYS[2] busy: sorted set, a lease -> its deadline (microseconds, server time)
-- ARGV: 'acquire' or 'release', lease id, burst, most busy at once, window us, lease us
-- acquire returns the microseconds to wait before sending, or -1 when the budget is full;
-- release returns 1, or 0 when the lease had expired (its slot was freed at its deadline).
local idle, busy = KEYS[1], KEYS[2]
local op, lease = ARGV[1], ARGV[2]
local burst, most_busy = tonumber(ARGV[3]), tonumber(ARGV[4])
local window, lease_us = tonumber(ARGV[5]), tonumber(ARGV[6])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

-- a slot answered at `at` may be used again a window later; none is kept beyond the burst
local function free(id, at)
  if redis.call('ZCARD', busy) + redis.call('ZCARD', idle) < burst then
    redis.call('ZADD', idle, at + window, id)
  end
end

-- a lease past its deadline: its holder died or hung; its slot counts as answered at the deadline
local expired = redis.call('ZRANGEBYSCORE', busy, '-inf', now, 'WITHSCORES')
for i = 1, #expired, 2 do
  redis.call('ZREM', busy, expired[i])
  free(expired[i], tonumber(expired[i + 1]))
end

local result = -1
if op == 'release' then
  result = redis.call('ZREM', busy, lease)
  if result == 1 then free(lease, now) end
else
  -- the burst of this call's rate: missing slots are usable at once, surplus idle ones go
  -- (those usable last first); busy ones beyond it are not given back when released
  local held = redis.call('ZCARD', busy)
  local total = held + redis.call('ZCARD', idle)
  for i = total + 1, burst do redis.call('ZADD', idle, 0, lease .. ':' .. i) end
  if total > burst then redis.call('ZPOPMAX', idle, total - burst) end
  if held < most_busy then
    local first = redis.call('ZPOPMIN', idle)
    if first[1] then
      local send_at = math.max(now, tonumber(first[2]))
      redis.call('ZADD', busy, send_at + lease_us, lease)
      result = send_at - now
    end
  end
end

-- once every lease is past its deadline and every slot rested, the state says nothing: let it go
local ttl = math.ceil((lease_us + 2 * window) / 1000) + 1000
redis.call('PEXPIRE', idle, ttl)
redis.call('PEXPIRE', busy, ttl)
return result
"""
"""The budget's Lua script: each call is atomic, and all times in it are Redis server time."""


# -- the Redis connection -------------------------------------------------------------------------

_SSL_EXTRAS = ("ssl", "ssl_cert_reqs", "ssl_ca_certs", "ssl_keyfile", "ssl_certfile", "ssl_check_hostname")
_SSL_FLAGS = ("ssl", "ssl_check_hostname")
_SSL_CERT_REQS = ("required", "optional", "none")


class RedisConnection(Protocol):
    """What is read of an Airflow connection (``airflow.sdk.Connection`` has these attributes)."""

    @property
    def conn_id(self) -> str:
        """The connection id."""

    @property
    def conn_type(self) -> str | None:
        """The connection type; ``redis`` is expected."""

    @property
    def host(self) -> str | None:
        """The Redis host."""

    @property
    def port(self) -> int | None:
        """The Redis port."""

    @property
    def login(self) -> str | None:
        """The ACL user name."""

    @property
    def password(self) -> str | None:
        """The Redis password."""

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """The extras, parsed."""


@dataclass(frozen=True)
class RedisSettings:
    """Where the budget's Redis is, as read from an Airflow connection of type ``redis``.

    :param conn_id: the Airflow connection id (named in messages; the password never is).
    :param host: the Redis host.
    :param port: the Redis port.
    :param username: the ACL user, or ``None`` for the default user.
    :param password: the password, or ``None``; never shown by ``repr``.
    :param db: the database number.
    :param ssl: the TLS options of the connection's extras (``ssl``, ``ssl_cert_reqs``,
        ``ssl_ca_certs``, ``ssl_keyfile``, ``ssl_certfile``, ``ssl_check_hostname``), as given to
        ``redis.Redis``.
    """

    conn_id: str
    host: str = "localhost"
    port: int = 6379
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    ssl: Mapping[str, Any] = field(default_factory=dict)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` and ``redis.asyncio.Redis`` (without ``retry``)."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "db": self.db,
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
            **self.ssl,
        }

    def where(self) -> str:
        """``connection 'x' (host:port/db)``, for messages."""
        return f"connection {self.conn_id!r} ({self.host}:{self.port}/{self.db})"


def redis_settings(connection: RedisConnection) -> RedisSettings:
    """Read an Airflow connection of type ``redis`` the way the Redis provider's ``RedisHook`` does.

    ``host``, ``port``, ``login`` (the ACL user) and ``password`` are the connection's fields; a
    password spelled ``none`` or ``false`` (any case) or empty means none. The extras give ``db``
    (default 0) and the TLS options ``ssl``, ``ssl_cert_reqs`` (``required``, ``optional`` or
    ``none``), ``ssl_ca_certs``, ``ssl_keyfile``, ``ssl_certfile`` and ``ssl_check_hostname``;
    other extras are ignored, as the provider does. The password is registered with Airflow's
    secrets masker, so it is hidden wherever Airflow logs it.

    :param connection: the connection named by the ``rate_limit_redis_conn_id`` extra (read by the
        hook, ``get_connection`` in a worker or ``aget_connection`` in the triggerer).
    :raises ValueError: for a connection of another type, or a bad ``db`` or TLS extra, naming
        the connection, the extra and what it takes.
    """
    name = connection.conn_id
    if connection.conn_type != REDIS_CONN_TYPE:
        raise ValueError(
            f"Connection {name!r}, named by the extra 'rate_limit_redis_conn_id', has type "
            f"{connection.conn_type!r}; make it a connection of type 'redis' (host, port, password, 'db' in its extras)."
        )
    password = connection.password
    if password is not None and password.lower() in ("", "none", "false"):
        password = None
    if password is not None:
        # Imported here: Airflow is only needed to read a connection, not to share a budget.
        from airflow_provider_activities.compat import mask_secret

        mask_secret(password)
    extras = connection.extra_dejson
    db = extras.get("db", 0)
    if isinstance(db, str) and db.strip().isdigit():
        db = int(db)
    if not isinstance(db, int) or isinstance(db, bool) or db < 0:
        raise ValueError(f"Connection {name!r}: the extra 'db' must be a database number (0 or more), not {db!r}.")
    ssl: dict[str, Any] = {}
    for extra in _SSL_EXTRAS:
        if extras.get(extra) is None:
            continue
        value = extras[extra]
        if extra in _SSL_FLAGS:
            value = _flag(name, extra, value)
        elif extra == "ssl_cert_reqs" and value not in _SSL_CERT_REQS:
            choices = ", ".join(_SSL_CERT_REQS)
            raise ValueError(f"Connection {name!r}: the extra 'ssl_cert_reqs' must be one of {choices}, not {value!r}.")
        ssl[extra] = value
    return RedisSettings(
        conn_id=name,
        host=connection.host or "localhost",
        port=connection.port or 6379,
        username=connection.login or None,
        password=password,
        db=db,
        ssl=ssl,
    )


def _flag(conn_id: str, extra: str, value: Any) -> bool:
    """A boolean extra, given as JSON ``true``/``false`` or as the strings ``true``/``false``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"Connection {conn_id!r}: the extra {extra!r} must be true or false, not {value!r}.")


# -- the rule: script arguments and answers -------------------------------------------------------


def budget_keys(base_url: str, client_id: str) -> tuple[str, str]:
    """The Redis keys (idle, busy) of the budget of one API key at one API.

    They carry the SHA-256 of the base URL and the API key, not the key, between braces (a Redis
    Cluster hash tag, so both keys live on one node and one script may touch them).

    :param base_url: the API's base URL (a trailing slash does not matter).
    :param client_id: the API key.
    """
    digest = hashlib.sha256(f"{base_url.rstrip('/')}\n{client_id}".encode()).hexdigest()
    return f"{KEY_PREFIX}:{{{digest}}}:idle", f"{KEY_PREFIX}:{{{digest}}}:busy"


def lease_for_timeout(timeout: float) -> float:
    """The default lease for requests of this timeout: :data:`LEASE_TIMEOUTS` timeouts (connect,
    first byte of the answer, and as long again for the body).

    :param timeout: the connection's ``timeout`` extra, in seconds.
    """
    return LEASE_TIMEOUTS * timeout


@dataclass(frozen=True)
class BudgetRule:
    """The budget's numbers, turned into the script's keys and arguments, and its answers read.

    :param base_url: the API's base URL.
    :param client_id: the API key (only its hash reaches Redis).
    :param rate: requests per second (may be fractional); ``max(1, int(rate))`` slots.
    :param max_concurrency: most requests in flight at once, across every process.
    :param lease_seconds: how long after its send a slot is held at most (see the module's notes).
    :param margin: seconds added to each slot's window.
    """

    base_url: str
    client_id: str = field(repr=False)
    rate: float
    max_concurrency: int
    lease_seconds: float
    margin: float = DEFAULT_MARGIN

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"requests_per_second must be above 0, not {self.rate!r}.")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be 1 or more, not {self.max_concurrency!r}.")
        if not self.lease_seconds > 0:
            raise ValueError(f"the rate budget's lease must be above 0 seconds, not {self.lease_seconds!r}.")

    @property
    def burst(self) -> int:
        """The number of slots."""
        return max(1, int(self.rate))

    @property
    def window(self) -> float:
        """Seconds a slot rests after its answer: ``burst / rate`` plus the margin."""
        return self.burst / self.rate + self.margin

    @property
    def keys(self) -> tuple[str, str]:
        """The budget's Redis keys (:func:`budget_keys`)."""
        return budget_keys(self.base_url, self.client_id)

    def acquire(self, lease: str) -> ScriptCall:
        """The script call that takes a slot under the new lease id ``lease``."""
        return self._call("acquire", lease)

    def release(self, lease: str) -> ScriptCall:
        """The script call that gives back the slot of ``lease``."""
        return self._call("release", lease)

    def _call(self, operation: str, lease: str) -> ScriptCall:
        args = (
            operation,
            lease,
            self.burst,
            self.max_concurrency,
            round(self.window * 1_000_000),
            round(self.lease_seconds * 1_000_000),
        )
        return ScriptCall(self.keys, args)

    @staticmethod
    def wait(reply: int) -> float | None:
        """Seconds to wait before sending, from an acquire's reply; ``None`` when the budget is full."""
        return None if reply < 0 else reply / 1_000_000


@dataclass(frozen=True)
class ScriptCall:
    """Ask the driver to run :data:`SCRIPT`; it answers with the reply, or the exception raised.

    :param keys: the budget's keys.
    :param args: the script's arguments.
    """

    keys: tuple[str, str]
    args: tuple[str | int, ...]


Reply = int | BaseException
Acquired = tuple[float, str] | None
BudgetFlow = Generator[ScriptCall, Reply, Any]


# -- the budget: rule, fallback, flows ------------------------------------------------------------


class SharedBudget:
    """One (Redis, base URL, API key) budget of a process, with its fallback; no I/O.

    :meth:`acquire_flow` and :meth:`release_flow` yield at most one :class:`ScriptCall` and take
    the reply (an ``int``, or the exception the Redis call raised); the drivers run them. Thread
    safe: the hooks' threads and an event loop may share one.

    :param settings: where Redis is (named in messages).
    :param rule: the budget's numbers.
    :param local: the process's own limiter for the API key, used while Redis cannot be.
    :param retry_seconds: how long after a Redis failure one request tries Redis again.
    """

    def __init__(
        self, settings: RedisSettings, rule: BudgetRule, local: LocalBudget, retry_seconds: float = REDIS_RETRY_SECONDS
    ) -> None:
        self.settings = settings
        self.rule = rule
        self.local = local
        self.retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._retry_at: float | None = None  # monotonic time of the next try while Redis is failing
        self._warned = False

    @property
    def shared(self) -> bool:
        """Whether requests currently take their slots in Redis (``False`` while falling back)."""
        return self._retry_at is None

    def acquire_flow(self) -> BudgetFlow:
        """Take a slot: returns ``(seconds to wait before sending, lease id)``, or ``None`` when the
        budget is full (every slot busy, or ``max_concurrency`` requests in flight).
        """
        rule = self.rule  # one rule for the whole call, should reconfigure swap it meanwhile
        if not self._use_redis():
            return self.local.try_acquire()
        lease = uuid.uuid4().hex
        reply = yield rule.acquire(lease)
        if isinstance(reply, BaseException):
            self._failed(reply)
            return self.local.try_acquire()
        self._reached()
        wait = rule.wait(reply)
        return None if wait is None else (wait, lease)

    def release_flow(self, lease: str) -> BudgetFlow:
        """Give back the slot of ``lease`` (its request was answered or failed). A Redis lease
        taken before Redis failed is left to expire.
        """
        if lease == LOCAL_LEASE:
            self.local.release(lease)
            return None
        if not self.shared:
            return None
        reply = yield self.rule.release(lease)
        if isinstance(reply, BaseException):
            self._failed(reply)
        return None

    def reconfigure(self, rule: BudgetRule, local: LocalBudget) -> None:
        """Take the numbers of the latest connection read (two connections on one key should
        agree), and the process's current limiter for the key.
        """
        self.rule = rule
        self.local = local

    def _use_redis(self) -> bool:
        """Whether this request goes to Redis: always while it works; after a failure, one request
        every ``retry_seconds`` (the others stay local meanwhile).
        """
        with self._lock:
            if self._retry_at is None:
                return True
            now = time.monotonic()
            if now < self._retry_at:
                return False
            self._retry_at = now + self.retry_seconds
            return True

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            first, was_shared = not self._warned, self._retry_at is None
            self._warned = True
            self._retry_at = time.monotonic() + self.retry_seconds
        if not (first or was_shared):
            log.debug("Redis of the rate budget is still unreachable: %s", self._describe(error))
            return
        log.log(
            logging.WARNING if first else logging.INFO,
            "The People.ai rate budget shared through Redis (%s) cannot be used (%s): this process "
            "now paces its requests with its own per-process limiter (429 answers are retried as "
            "always), and tries Redis again every %g s.",
            self.settings.where(),
            self._describe(error),
            self.retry_seconds,
        )

    def _reached(self) -> None:
        if self._retry_at is None:  # the usual case, without the lock
            return
        with self._lock:
            recovered, self._retry_at = self._retry_at is not None, None  # another thread may have seen it first
        if recovered:
            log.info("The People.ai rate budget is shared through Redis (%s) again.", self.settings.where())

    def _describe(self, error: BaseException) -> str:
        """The error's type and message, with the Redis password blanked should it appear."""
        text = f"{type(error).__name__}: {error}"
        if self.settings.password:
            text = text.replace(self.settings.password, "***")
        return text


_BUDGETS: dict[tuple[str, int, int, str | None, str, str], SharedBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def shared_budget(
    settings: RedisSettings,
    base_url: str,
    client_id: str,
    rate: float,
    max_concurrency: int,
    lease_seconds: float,
) -> SharedBudget:
    """The process's budget for one API key at one API through one Redis, shared by every hook on it.

    Kept for the life of the process, so the fallback's one warning is one per process, and the
    fallback limiter is the one :func:`~airflow_provider_activities.api.policy.shared_rate_limiter`
    gives every hook on the key. The latest connection read sets the numbers.

    :param settings: the Redis connection (:func:`redis_settings`).
    :param base_url: the API's base URL.
    :param client_id: the API key.
    :param rate: requests per second (``requests_per_second``).
    :param max_concurrency: most requests in flight across every process (``max_concurrency``).
    :param lease_seconds: longest hold of a slot (:func:`lease_for_timeout` of the ``timeout``).
    """
    rule = BudgetRule(base_url.rstrip("/"), client_id, rate, max_concurrency, lease_seconds)
    local = LocalBudget(shared_rate_limiter(base_url, client_id, rate))
    key = (settings.host, settings.port, settings.db, settings.username, rule.base_url, client_id)
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get(key)
        if budget is None:
            budget = _BUDGETS[key] = SharedBudget(settings, rule, local)
        else:
            budget.reconfigure(rule, local)
    return budget


# -- the drivers ----------------------------------------------------------------------------------


class RedisRateBudget:
    """A :class:`SharedBudget` driven with ``redis.Redis``, for the sync hook (thread safe).

    :param budget: the process's budget (:func:`shared_budget`).
    :param client: a client of the budget's Redis; :meth:`connect` makes one from the settings.
    """

    def __init__(self, budget: SharedBudget, client: redis.Redis) -> None:
        self.budget = budget
        self.client = client
        self._script = client.register_script(SCRIPT)

    @classmethod
    def connect(cls, budget: SharedBudget) -> RedisRateBudget:
        """A driver with its own client of ``budget.settings``. Redis-py retries a call once at
        once (a pooled connection the server closed) and never backs off: an unreachable Redis
        falls back within two timeouts.
        """
        return cls(budget, redis.Redis(**budget.settings.client_kwargs(), retry=Retry(NoBackoff(), 1)))

    def try_acquire(self) -> tuple[float, str] | None:
        """Take a slot without waiting: ``(seconds to wait before sending, lease id)``, or ``None``
        when the budget is full. Give the lease back with :meth:`release` once answered.
        """
        result: Acquired = self._run(self.budget.acquire_flow())
        return result

    def acquire(self) -> tuple[float, str]:
        """Take a slot, polling every :data:`POLL_SECONDS` while the budget is full:
        ``(seconds to wait before sending, lease id)``.
        """
        while (taken := self.try_acquire()) is None:
            time.sleep(POLL_SECONDS)
        return taken

    def release(self, lease: str) -> None:
        """Give back the slot of ``lease`` (its request was answered, or failed, just now)."""
        self._run(self.budget.release_flow(lease))

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def _run(self, flow: BudgetFlow) -> Any:
        try:
            call = next(flow)
            while True:
                try:
                    reply: Reply = int(self._script(keys=call.keys, args=call.args))
                except REDIS_ERRORS as error:
                    reply = error
                call = flow.send(reply)
        except StopIteration as finished:
            return finished.value


class AsyncRedisRateBudget:
    """A :class:`SharedBudget` driven with ``redis.asyncio.Redis``, for the async hook.

    A ``redis.asyncio`` client belongs to the event loop it first ran in: make one driver per
    hook (per trigger run) and :meth:`aclose` it with the hook.

    :param budget: the process's budget (:func:`shared_budget`), shared with sync hooks.
    :param client: a client of the budget's Redis; :meth:`connect` makes one from the settings.
    """

    def __init__(self, budget: SharedBudget, client: redis.asyncio.Redis) -> None:
        self.budget = budget
        self.client = client
        self._script = client.register_script(SCRIPT)
        self._background: set[asyncio.Future[Any]] = set()

    @classmethod
    def connect(cls, budget: SharedBudget) -> AsyncRedisRateBudget:
        """A driver with its own client of ``budget.settings`` (retries as :meth:`RedisRateBudget.connect`)."""
        return cls(budget, redis.asyncio.Redis(**budget.settings.client_kwargs(), retry=AsyncRetry(NoBackoff(), 1)))

    async def try_acquire(self) -> tuple[float, str] | None:
        """Take a slot without waiting: ``(seconds to wait before sending, lease id)``, or ``None``
        when the budget is full. Give the lease back with :meth:`release` once answered.
        """
        result: Acquired = await self._run(self.budget.acquire_flow())
        return result

    async def acquire(self) -> tuple[float, str]:
        """Take a slot, polling every :data:`POLL_SECONDS` while the budget is full:
        ``(seconds to wait before sending, lease id)``.
        """
        while (taken := await self.try_acquire()) is None:
            await asyncio.sleep(POLL_SECONDS)
        return taken

    async def release(self, lease: str) -> None:
        """Give back the slot of ``lease`` (its request was answered, or failed, just now)."""
        await self._run(self.budget.release_flow(lease))

    async def aclose(self) -> None:
        """Let calls left running by a cancellation finish (and give back what they took), then
        close the client's connections.
        """
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.client.aclose()

    async def _run(self, flow: BudgetFlow) -> Any:
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._call(call))
        except StopIteration as finished:
            return finished.value

    async def _call(self, call: ScriptCall) -> Reply:
        """Run the script once. A cancellation does not stop a call Redis may already have run:
        the call goes on in the background, and a slot it took is given back once it answers (not
        left until its lease expires).
        """
        running = asyncio.ensure_future(self._script(keys=call.keys, args=call.args))
        try:
            return int(await asyncio.shield(running))
        except REDIS_ERRORS as error:
            return error
        except asyncio.CancelledError:
            if call.args[0] == "acquire":
                running.add_done_callback(functools.partial(self._give_back, lease=str(call.args[1])))
            self._keep(running)
            raise

    def _give_back(self, call: asyncio.Future[Any], lease: str) -> None:
        """Release ``lease`` if the acquire ``call``, abandoned by its caller, granted it."""
        if call.cancelled() or call.exception() is not None or int(call.result()) < 0:
            return
        self._keep(asyncio.ensure_future(self.release(lease)))

    def _keep(self, running: asyncio.Future[Any]) -> None:
        """Hold a reference to a background call until it is done (:meth:`aclose` waits for it)."""
        self._background.add(running)
        running.add_done_callback(self._background.discard)
