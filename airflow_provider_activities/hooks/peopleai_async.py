"""PeopleAIAsyncHook: the People.ai API over ``aiohttp``, for triggers running in the triggerer.

It drives the same call flows as the sync :class:`~airflow_provider_activities.hooks.peopleai.PeopleAIHook`
(:mod:`airflow_provider_activities.api.flow`): URLs, parameters, envelopes, timestamps, token
refresh, retry and error rules are shared; only the transport (``aiohttp``) and the waiting
(``asyncio.sleep``, an ``asyncio.Lock`` and ``asyncio.Semaphore``) differ. With the connection
extra ``rate_limit_redis_conn_id`` it takes its slots from the budget shared through Redis with
every other process on the API key, workers included (an ``AsyncRedisRateBudget`` per hook).

Use one hook per trigger run, as an async context manager so that its HTTP session is closed::

    async with PeopleAIAsyncHook("peopleai_default") as hook:
        answer = await hook.count_ingested(since)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from airflow_provider_activities import CONN_TYPE, DEFAULT_CONN_ID
from airflow_provider_activities.api.config import ClientConfig, EnvironmentProxies
from airflow_provider_activities.api.flow import Flow, NeedToken, Pace, Response, Send, Sleep, call_flow, obtain_token
from airflow_provider_activities.api.pagination import page_flow, page_sizes, read_passes
from airflow_provider_activities.api.policy import (
    LocalBudget,
    RetryPolicy,
    SharedRateLimiter,
    TokenCache,
    shared_rate_limiter,
    shared_token_cache,
)
from airflow_provider_activities.api.protocol import ApiRequest, parse_page
from airflow_provider_activities.api.queries import DistinctRecords, IngestCount, ingested_query, latest_ingested_ms
from airflow_provider_activities.api.validation import ms_to_datetime
from airflow_provider_activities.compat import BaseHook, get_async_connection, mask_secret
from airflow_provider_activities.hooks._common import client_config, redis_budget

if TYPE_CHECKING:
    from airflow_provider_activities.hooks._shared_budget import AsyncRedisRateBudget, SharedBudget

T = TypeVar("T")

#: What the transport may raise for one request; handed to the call flow as the outcome, which
#: retries it like a 5xx. ``aiohttp.ClientError`` covers refused and dropped connections and a
#: body cut short (``ClientPayloadError``); ``asyncio.TimeoutError`` a connect or read timeout.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError, OSError)

SLOT_POLL_SECONDS = 0.01
"""How often a request waiting for a rate-limit slot that another hook holds looks again."""


async def _read_capped(answer: aiohttp.ClientResponse, cap: int) -> bytes:
    """The body, read in chunks; reading stops once it passes ``cap`` bytes (the call flow then
    refuses the answer), so an oversized body never fills the triggerer's memory.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in answer.content.iter_chunked(1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            break
    return b"".join(chunks)


class PeopleAIAsyncHook(BaseHook):
    """Async client of the People.ai (Backstory) Activity API, for triggers.

    It reads the same ``peopleai`` connection as :class:`~airflow_provider_activities.hooks.peopleai.PeopleAIHook`
    (with :func:`~airflow_provider_activities.compat.get_async_connection`, which works in the
    triggerer of every supported Airflow), registers the API secret and every access token with Airflow's secrets masker,
    and applies the same auth, rate limit (``requests_per_second``), concurrency cap
    (``max_concurrency``), retries and backoff, and the same budget shared through Redis when the
    connection sets ``rate_limit_redis_conn_id``.

    Use it as an async context manager, or call :meth:`close` when done.

    :param peopleai_conn_id: the ``peopleai`` connection, read in the triggerer (a trigger carries
        only this id, never a secret, in its serialized arguments).
    """

    conn_name_attr = "peopleai_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "People.ai (async)"

    def __init__(self, peopleai_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.peopleai_conn_id = peopleai_conn_id
        self._config: ClientConfig | None = None
        self._policy: RetryPolicy | None = None
        self._limiter: SharedRateLimiter | None = None
        self._local: LocalBudget | None = None
        self._shared: SharedBudget | None = None
        self._redis: AsyncRedisRateBudget | None = None
        self._poll_seconds = SLOT_POLL_SECONDS
        self._in_flight: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._proxies = EnvironmentProxies()
        self._tokens: TokenCache | None = None
        self._token_lock = asyncio.Lock()
        self._config_lock = asyncio.Lock()
        self._slots = asyncio.Condition()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(peopleai_conn_id={self.peopleai_conn_id!r})"

    async def __aenter__(self) -> PeopleAIAsyncHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- settings and transport -------------------------------------------------------------

    async def get_config(self) -> ClientConfig:
        """The connection's validated settings, read once per hook.

        :raises ValueError: for a connection without key or secret, or with a bad extra.
        :raises airflow.sdk.exceptions.AirflowNotFoundException: when the connection does not exist.
        """
        if self._config is not None:
            return self._config
        async with self._config_lock:  # concurrent first calls share one limiter and one semaphore
            if self._config is None:
                self._config = await self._read_config()
        return self._config

    async def _read_config(self) -> ClientConfig:
        connection = await get_async_connection(self, self.peopleai_conn_id)
        config = client_config(self.peopleai_conn_id, connection, self.log)
        self._policy = RetryPolicy.from_config(config)
        self._limiter = shared_rate_limiter(config.base_url, config.client_id, config.requests_per_second)
        self._local = LocalBudget(self._limiter)
        if config.rate_limit_redis_conn_id is not None:
            from airflow_provider_activities.hooks._shared_budget import POLL_SECONDS

            self._shared = redis_budget(config, await get_async_connection(self, config.rate_limit_redis_conn_id))
            self._poll_seconds = POLL_SECONDS  # each look is a Redis call
        self._in_flight = asyncio.Semaphore(config.max_concurrency)
        return config

    async def get_session(self) -> aiohttp.ClientSession:
        """The hook's ``aiohttp.ClientSession`` (one per hook, pooled for ``max_concurrency``).

        Its timeouts mirror the sync hook's: ``timeout`` seconds to connect and between two
        reads of the answer, no limit on the whole transfer.
        """
        config = await self.get_config()
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.timeout, sock_read=config.timeout),
                connector=aiohttp.TCPConnector(limit=config.max_concurrency, ssl=config.verify_ssl),
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session and the Redis client of a shared rate budget (the hook opens
        new ones if used again).
        """
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
        driver, self._redis = self._redis, None
        if driver is not None:
            await driver.aclose()

    async def _send(self, request: ApiRequest) -> Response | BaseException:
        """Send ``request`` once (``_drive`` gives the slot of the flow's ``Pace`` back however
        this ends: answer, transport error or cancellation).
        """
        config = await self.get_config()
        session = await self.get_session()
        assert self._in_flight is not None
        async with self._in_flight:
            try:
                url = request.url(config)
                async with session.request(
                    request.method,
                    url,
                    params={name: str(value) for name, value in request.params.items()} or None,
                    data=dict(request.form) if request.form is not None else None,
                    json=request.json_body,
                    headers=request.headers(),
                    proxy=self._proxies.proxy_url(url),
                ) as answer:
                    body = await _read_capped(answer, request.body_cap())
                    return Response(answer.status, dict(answer.headers), body)
            except TRANSPORT_ERRORS as err:
                return err

    async def _pace(self) -> str:
        """Take a slot, of the budget shared through Redis or of the process's limiter for this
        API key (shared with every hook on it, sync ones included), and wait until it may be used;
        returns its lease. The loop must not block on the limiter's lock while every slot is in
        use: it waits for a release of this hook, or polls for one of another hook or process.
        """
        while (taken := await self._try_slot()) is None:
            async with self._slots:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._slots.wait(), timeout=self._poll_seconds)
        wait, lease = taken
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except BaseException:  # cancelled while waiting: give the slot back
                await self._release(lease)
                raise
        return lease

    async def _try_slot(self) -> tuple[float, str] | None:
        """A slot without waiting, ``(seconds to wait before sending, lease)``, or ``None`` when
        every slot is in use.
        """
        if self._shared is not None:
            return await self._redis_budget().try_acquire()
        assert self._local is not None
        return self._local.try_acquire()

    async def _release(self, lease: str) -> None:
        """Give back the slot of ``lease`` (its request was answered, or failed, just now) and wake
        a request of this hook waiting for one.
        """
        if self._shared is not None:
            await self._redis_budget().release(lease)
        else:
            assert self._local is not None
            self._local.release(lease)
        async with self._slots:
            self._slots.notify()

    def _redis_budget(self) -> AsyncRedisRateBudget:
        """This hook's driver of the shared budget, made on first use: a ``redis.asyncio`` client
        belongs to the event loop it first ran in, and a hook to one trigger run.
        """
        if self._redis is None:
            from airflow_provider_activities.hooks._shared_budget import AsyncRedisRateBudget

            assert self._shared is not None
            self._redis = AsyncRedisRateBudget.connect(self._shared)
        return self._redis

    async def _token(self, need: NeedToken) -> str:
        config = await self.get_config()
        if self._tokens is None:  # the process's cache for these credentials, shared with every hook on them
            self._tokens = shared_token_cache(config.base_url + config.token_path, config.client_id, config.client_secret)
        assert self._policy is not None
        async with self._token_lock:
            return await self._drive(obtain_token(self._tokens, need, config, self._policy, time.monotonic, mask_secret))

    async def _drive(self, flow: Flow[T]) -> T:
        """Run a call flow with this hook's transport (the async twin of ``PeopleAIHook._drive``):
        the lease a ``Pace`` takes is given back once the ``Send`` that follows ends.
        """
        lease: str | None = None
        try:
            action = next(flow)
            while True:
                if isinstance(action, Send):
                    held, lease = lease, None
                    try:
                        outcome: Any = await self._send(action.request)
                    finally:
                        if held is not None:
                            await self._release(held)
                elif isinstance(action, Pace):
                    lease = await self._pace()
                    outcome = None
                elif isinstance(action, Sleep):
                    await asyncio.sleep(action.seconds)
                    outcome = None
                else:
                    outcome = await self._token(action)
                action = flow.send(outcome)
        except StopIteration as finished:
            return finished.value
        finally:
            if lease is not None:
                await self._release(lease)

    # -- calls --------------------------------------------------------------------------------

    async def run(self, request: ApiRequest, parse: Callable[[bytes], T]) -> T:
        """Send one request with auth, rate limit and retries; return ``parse(body)``.

        :param request: built with :mod:`airflow_provider_activities.api.protocol` (or any
            :class:`~airflow_provider_activities.api.protocol.ApiRequest`).
        :param parse: reads the body of a 2xx answer; raising
            :class:`~airflow_provider_activities.api.errors.InvalidResponseError` retries the request.
        :raises PeopleAIAuthError: when the credentials are rejected.
        :raises PeopleAIAPIError: on a non-retryable status, or when retries ran out.
        """
        await self.get_config()
        assert self._policy is not None
        return await self._drive(call_flow(request, parse, self._policy))

    async def count_ingested(
        self, since: datetime, until: datetime | None = None, activity_type: str | None = None
    ) -> IngestCount:
        """How many activities were ingested in ``[since, until)``, and the latest ingestion time.

        Same query, bounds and answer as :meth:`PeopleAIHook.count_ingested
        <airflow_provider_activities.hooks.peopleai.PeopleAIHook.count_ingested>`, reading the
        pages one after another (and again, up to the same number of passes, when ``meta.total``
        moved while paging).

        :param since: inclusive, timezone-aware.
        :param until: exclusive, timezone-aware, or ``None`` for no upper bound.
        :param activity_type: ``None`` for all types, or ``"email"``, ``"call"``, ``"meeting"``.
        :raises ValueError: for bad input, before any HTTP call.
        """
        query = ingested_query(since, until, activity_type)
        config = await self.get_config()
        distinct = DistinctRecords(query.bounds)
        latest: int | None = None
        pages = 0
        sizes = page_sizes(config.base_url, query.path, config.page_size)
        assert self._policy is not None
        for plan in read_passes(query.path, sizes.limit(), self.log):
            while not plan.done:
                offset = plan.offset
                flow = page_flow(
                    query.path, query.filters, offset, sizes, self._policy, parse_page, self.log, config.max_response_bytes
                )
                page = await self._drive(flow)
                plan.receive(offset, len(page.records), page.total, next_limit=sizes.limit())
                pages += 1
                latest = latest_ingested_ms(distinct.apply(page.records), latest)
        stats = distinct.stats
        self.log.debug(
            "People.ai %s: %d activities ingested since %s in %d pages (%d received, %d duplicates, %d outside).",
            query.path, stats.kept, since.isoformat(), pages, stats.seen, stats.duplicates, stats.outside,
        )
        return IngestCount(count=stats.kept, latest_ingested_at=ms_to_datetime(latest))
