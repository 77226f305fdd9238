"""PeopleAIAsyncHook: the People.ai API over ``aiohttp``, for triggers running in the triggerer.

It drives the same call flows as the sync :class:`~airflow_provider_activities.hooks.peopleai.PeopleAIHook`
(:mod:`airflow_provider_activities.api.flow`): URLs, parameters, envelopes, timestamps, token
refresh, retry and error rules are shared; only the transport and the waiting differ.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, Callable, TypeVar

import aiohttp

from airflow_provider_activities import DEFAULT_CONN_ID
from airflow_provider_activities.api.config import ClientConfig, config_from_connection
from airflow_provider_activities.api.flow import Flow, NeedToken, Pace, Response, Send, Sleep, call_flow, token_flow
from airflow_provider_activities.api.pagination import PagePlan
from airflow_provider_activities.api.policy import RateLimiter, RetryPolicy, TokenCache
from airflow_provider_activities.api.protocol import ApiRequest, page_request, parse_page
from airflow_provider_activities.api.queries import ingested_query, latest_ingested_ms
from airflow_provider_activities.api.records import ms_to_datetime
from airflow_provider_activities.compat import BaseHook, mask_secret
from airflow_provider_activities.hooks.peopleai import IngestCount

T = TypeVar("T")


class PeopleAIAsyncHook(BaseHook):
    """Async People.ai client (one per trigger run); use ``async with`` or call :meth:`close`.

    :param peopleai_conn_id: the ``peopleai`` connection, read in the triggerer (never passed
        through the trigger's serialized arguments).
    """

    conn_name_attr = "peopleai_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "peopleai"
    hook_name = "People.ai (async)"

    def __init__(self, peopleai_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.peopleai_conn_id = peopleai_conn_id
        self._config: ClientConfig | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tokens = TokenCache()
        self._token_lock = asyncio.Lock()
        self._limiter: RateLimiter | None = None
        self._in_flight: asyncio.Semaphore | None = None
        self._slots = asyncio.Condition()
        self._policy: RetryPolicy | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(peopleai_conn_id={self.peopleai_conn_id!r})"

    async def __aenter__(self) -> PeopleAIAsyncHook:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get_config(self) -> ClientConfig:
        """The connection's validated settings (read once)."""
        if self._config is None:
            config = config_from_connection(self.peopleai_conn_id, await self.aget_connection(self.peopleai_conn_id))
            self._policy = RetryPolicy(config.max_retries, config.backoff_base, config.backoff_max)
            self._limiter = RateLimiter(config.requests_per_second)
            self._in_flight = asyncio.Semaphore(config.max_concurrency)
            self._config = config
        return self._config

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send(self, request: ApiRequest) -> Response | BaseException:
        config = await self.get_config()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=config.timeout),
                connector=aiohttp.TCPConnector(limit=config.max_concurrency, ssl=None if config.verify_ssl else False),
            )
        assert self._in_flight is not None
        async with self._in_flight:
            try:
                async with self._session.request(
                    request.method,
                    request.url(config),
                    params={k: str(v) for k, v in request.params.items()} or None,
                    data=dict(request.form) if request.form is not None else None,
                    json=request.json_body,
                    headers=request.headers(),
                ) as answer:
                    body = await answer.read()
                    return Response(answer.status, dict(answer.headers), body)
            except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                return err
            finally:
                await self._release()

    async def _pace(self) -> None:
        assert self._limiter is not None
        async with self._slots:
            while (wait := self._limiter.acquire(time.monotonic())) is None:
                await self._slots.wait()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _release(self) -> None:
        assert self._limiter is not None
        async with self._slots:
            self._limiter.release(time.monotonic())
            self._slots.notify()

    async def _token(self, need: NeedToken) -> str:
        config = await self.get_config()
        async with self._token_lock:
            if need.stale is not None:
                self._tokens.invalidate(need.stale)
            token = self._tokens.get(time.monotonic())
            if token is None:
                asked_at = time.monotonic()
                assert self._policy is not None
                minted = await self._drive(token_flow(config, self._policy))
                mask_secret(minted.access_token)
                self._tokens.store(minted.access_token, minted.expires_in, asked_at)
                token = minted.access_token
            return token

    async def _drive(self, flow: Flow[T]) -> T:
        """Run a call flow with this hook's transport."""
        try:
            action = next(flow)
            while True:
                if isinstance(action, Send):
                    outcome: Any = await self._send(action.request)
                elif isinstance(action, Pace):
                    await self._pace()
                    outcome = None
                elif isinstance(action, Sleep):
                    await asyncio.sleep(action.seconds)
                    outcome = None
                else:
                    outcome = await self._token(action)
                action = flow.send(outcome)
        except StopIteration as finished:
            return finished.value

    async def run(self, request: ApiRequest, parse: Callable[[bytes], T]) -> T:
        """Send one request with auth, rate limit and retries; return ``parse(body)``."""
        await self.get_config()
        assert self._policy is not None
        return await self._drive(call_flow(request, parse, self._policy))

    async def count_ingested(
        self, since: datetime, until: datetime | None = None, activity_type: str | None = None
    ) -> IngestCount:
        """Same answer as :meth:`PeopleAIHook.count_ingested`, read page after page."""
        query = ingested_query(since, until, activity_type)
        config = await self.get_config()
        plan = PagePlan(limit=config.page_size)
        latest: int | None = None
        while not plan.done:
            offset = plan.offset
            page = await self.run(page_request(query.path, query.filters, offset, config.page_size), parse_page)
            plan.receive(offset, len(page.records), page.total)
            latest = latest_ingested_ms(query.record_filter.apply(page.records), latest)
        return IngestCount(count=query.record_filter.stats.kept, latest_ingested_at=ms_to_datetime(latest))
