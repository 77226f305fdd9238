"""The hooks on one rate budget shared through Redis, against the sandbox.

A real ``redis-server`` on loopback, real worker processes (:mod:`tests.extract_worker`) running
the real :class:`PeopleAIHook`, and one sandbox that answers 429 above 5 requests per sliding
second (token requests included) and above 10 in flight. What the sandbox logged is what the API
would have seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis package is missing: pip install 'airflow-provider-activities[redis]'")

from airflow_provider_activities.hooks import _shared_budget
from airflow_provider_activities.hooks._shared_budget import (
    BudgetRule,
    RedisRateBudget,
    RedisSettings,
    budget_keys,
    shared_budget,
)
from airflow_provider_activities.hooks.peopleai import PeopleAIHook
from airflow_provider_activities.hooks.peopleai_async import PeopleAIAsyncHook
from airflow_provider_activities.testing.sandbox import Sandbox
from tests.extract_worker import Worker, records_digest
from tests.redis_fixtures import RedisServer, free_port, redis_server_fixture  # noqa: F401

UTC = timezone.utc
MONDAY = datetime(2026, 11, 2, tzinfo=UTC)  # weekdays hold about as many activities each
RATE = 5  # the sandbox's limit, and the connection's requests_per_second (its default)
TOKEN_PATH = "/auth/v1/tokens"
REDIS_CONN_ID = "redis_budget"
BUDGET_LOG = _shared_budget.__name__


def redis_connection(port: int, password: str | None = None, db: int = 0, conn_type: str = "redis") -> str:
    """``AIRFLOW_CONN_REDIS_BUDGET``: a Redis on loopback, as the Redis provider's connection reads."""
    return json.dumps({"conn_type": conn_type, "host": "127.0.0.1", "port": port, "password": password, "extra": {"db": db}})


def connect(monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, redis: str, **extra: Any) -> None:
    """Point ``peopleai_default`` at ``sandbox``, sharing its budget through the Redis connection ``redis``."""
    monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json(rate_limit_redis_conn_id=REDIS_CONN_ID, **extra))
    monkeypatch.setenv(f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}", redis)


def days(count: int) -> list[tuple[datetime, datetime]]:
    return [(MONDAY + timedelta(days=n), MONDAY + timedelta(days=n + 1)) for n in range(count)]


def most_in_one_second(times: list[float]) -> int:
    """The most arrivals in any one-second window (the sandbox's sliding window)."""
    ordered = sorted(times)
    return max(sum(1 for later in ordered[i:] if later < first + 1.0) for i, first in enumerate(ordered))


def check_exact(sandbox: Sandbox, interval: tuple[datetime, datetime], result: dict[str, Any]) -> None:
    expected = sandbox.expected_activities(*interval)
    assert result["uids"] == [record["uid"] for record in expected]
    assert result["digest"] == records_digest(expected)


# -- worker processes -------------------------------------------------------------------------------


@contextlib.contextmanager
def workers(
    sandbox: Sandbox, redis: str, intervals: list[tuple[datetime, datetime]], **extra: Any
) -> Iterator[list[Worker]]:
    """Start one worker process per interval, on ``peopleai_default`` with ``extra`` and the Redis
    connection ``redis``, and wait until each has read its connection; stop them however the
    block ends.
    """
    environment = {
        "AIRFLOW_CONN_PEOPLEAI_DEFAULT": sandbox.connection_json(rate_limit_redis_conn_id=REDIS_CONN_ID, **extra),
        f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}": redis,
    }
    started: list[Worker] = []
    try:
        for interval in intervals:
            started.append(Worker(interval, environment))
        for worker in started:
            assert worker.receive() == "ready"
        yield started
    finally:
        for worker in started:
            worker.stop()


# -- the done-when: four processes, one key -------------------------------------------------------


def test_four_processes_on_one_key_share_its_budget(redis_server: RedisServer) -> None:
    """Four workers, each extracting a different day with the default rate (5/s) and concurrency
    (10) and pages of 200: no 429, never more than 5 arrivals in a second, the API kept busy.
    """
    intervals = days(4)
    redis = redis_connection(redis_server.port, db=2)
    with Sandbox(seed=14, activities=10_000, start=MONDAY, days=4, rate_limit=RATE, max_concurrency=10) as sandbox:
        with workers(sandbox, redis, intervals, page_size=200) as started:
            for worker in started:
                worker.go()
            results = [worker.receive() for worker in started]
        assert all(worker.process.exitcode == 0 for worker in started)
        for interval, result in zip(intervals, results):
            check_exact(sandbox, interval, result)
            assert result["warnings"] == []  # every slot came from Redis
        requests = sandbox.requests
        assert sandbox.errors == []
    assert Counter(request.status for request in requests) == {200: len(requests)}  # not one 429
    times = [request.time for request in requests]
    assert most_in_one_second(times) <= RATE
    # Busy: every arrival (the 4 token requests too: the sandbox counts them) from the first to the
    # last, against the floor of that many arrivals at 5 a second.
    tokens = sum(1 for request in requests if request.path == TOKEN_PATH)
    span, floor = times[-1] - times[0], (len(times) - 1) / RATE
    print(
        f"\n4 processes: {len(times)} requests ({tokens} token), most in one second {most_in_one_second(times)}, "
        f"span {span:.2f} s, floor {floor:.2f} s, ratio {span / floor:.3f}"
    )
    assert tokens == 4 and len(times) >= 40
    assert span <= 1.25 * floor


# -- slots of a dead worker --------------------------------------------------------------------------


def test_slots_of_a_killed_worker_come_back_once_their_leases_expire(redis_server: RedisServer) -> None:
    """A worker SIGKILLed while extracting holds slots it will never give back; another worker
    on the key uses each of them no sooner than its lease (3 timeouts) has expired and the slot
    rested a window, and then extracts its day exactly.
    """
    timeout = 1.0
    victim_day, survivor_day = days(2)
    redis = redis_connection(redis_server.port)
    api = redis_server.client()
    with Sandbox(seed=15, activities=5_000, start=MONDAY, days=2, rate_limit=RATE, max_concurrency=10) as sandbox:
        idle_key, busy_key = budget_keys(sandbox.base_url, sandbox.client_id)
        window = BudgetRule(sandbox.base_url, sandbox.client_id, RATE, 10, 3 * timeout).window
        with workers(sandbox, redis, [victim_day, survivor_day], page_size=200, timeout=timeout) as (victim, survivor):
            victim.go()
            deadline = time.monotonic() + 30
            while len(sandbox.requests) < 6 and time.monotonic() < deadline:  # well into its day
                time.sleep(0.01)
            victim.process.kill()  # SIGKILL: nothing given back
            victim.process.join()
            busy = api.zrange(busy_key, 0, -1, withscores=True)
            idle = api.zrange(idle_key, 0, -1, withscores=True)
            seconds, micros = api.time()
            redis_minus_monotonic = seconds + micros / 1_000_000 - time.monotonic()
            went = time.monotonic()
            survivor.go()
            result = survivor.receive()
        assert victim.process.exitcode == -signal.SIGKILL and survivor.process.exitcode == 0
        check_exact(sandbox, survivor_day, result)
        assert result["warnings"] == []
        requests = sandbox.requests
    assert len(busy) >= 1 and len(busy) + len(idle) == RATE  # the victim held slots when it died
    # On the sandbox's clock: when each slot the victim held may be used again (a window after its
    # lease's deadline); the idle ones can be used (and reused, a window apart) all along.
    freed_at = sorted(score / 1_000_000 + window - redis_minus_monotonic for _, score in busy)
    day = survivor_day[0].date().isoformat()
    arrivals = [r.time for r in requests if r.time > went and (r.path == TOKEN_PATH or r.query.get("from") == day)]
    in_second = [sum(1 for other in arrivals if arrival - 1.0 < other <= arrival) for arrival in arrivals]
    for arrival, count in zip(arrivals, in_second):
        assert count <= len(idle) + sum(1 for moment in freed_at if moment <= arrival + 0.01)
    assert max(in_second) > len(idle)  # and once the leases expired, it used their slots
    print(
        f"\nkilled holding {len(busy)} leases (lease {3 * timeout:g} s), {len(idle)} slots idle; the survivor's "
        f"first request {arrivals[0] - went:.2f} s after it started, the first lease expired (and rested) after {freed_at[0] - went:.2f} s, done after {arrivals[-1] - went:.2f} s"
    )
    assert Counter(r.status for r in requests) == {200: len(requests)}
    assert most_in_one_second([r.time for r in requests]) <= RATE


# -- in this process: fallback, the async hook, errors ------------------------------------------------


def test_unreachable_redis_the_extract_succeeds_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    password = "redis-pw-never-shown-14"
    port = free_port()  # nothing listens there
    interval = days(1)[0]
    with Sandbox(seed=16, activities=3_000, start=MONDAY, days=1, rate_limit=RATE) as sandbox:
        connect(monkeypatch, sandbox, redis_connection(port, password), page_size=200)
        hook = PeopleAIHook()
        with caplog.at_level(logging.DEBUG, logger=BUDGET_LOG):
            records = [record for page in hook.stream_activities(*interval) for record in page]
        hook.close()
        assert records == sandbox.expected_activities(*interval)
        requests = sandbox.requests
    assert len(requests) > 2 * RATE
    assert Counter(r.status for r in requests) == {200: len(requests)}
    assert most_in_one_second([r.time for r in requests]) <= RATE  # the per-process limiter paced it
    [warning] = [r for r in caplog.records if r.name == BUDGET_LOG and r.levelno >= logging.WARNING]
    message = warning.getMessage()
    assert REDIS_CONN_ID in message and f"127.0.0.1:{port}" in message and "per-process limiter" in message
    assert password not in caplog.text

    from tests.airflow_compat import redact

    assert redact(f"pw {password}") == "pw ***"  # masked when the connection was read


def test_the_async_hook_takes_its_slots_from_the_shared_budget(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every slot of the key is held elsewhere: the async hook (as in the triggerer) sends nothing
    until they are given back and have rested a window.
    """
    since = MONDAY - timedelta(days=1)
    with Sandbox(seed=17, activities=600, start=MONDAY, days=1, rate_limit=RATE) as sandbox:
        connect(monkeypatch, sandbox, redis_connection(redis_server.port), page_size=100)
        settings = RedisSettings(REDIS_CONN_ID, redis_server.host, redis_server.port)
        elsewhere = RedisRateBudget.connect(shared_budget(settings, sandbox.base_url, sandbox.client_id, RATE, 10, 60.0))
        held = [elsewhere.try_acquire() for _ in range(RATE)]
        assert elsewhere.try_acquire() is None

        async def count() -> tuple[float, int]:
            async with PeopleAIAsyncHook() as hook:
                counting = asyncio.ensure_future(hook.count_ingested(since))
                await asyncio.sleep(0.5)
                assert sandbox.requests == []  # waiting for a slot of the shared budget
                given_back = time.monotonic()
                for taken in held:
                    assert taken is not None
                    elsewhere.release(taken[1])
                return given_back, (await counting).count

        given_back, counted = asyncio.run(count())
        elsewhere.close()
        expected = sandbox.expected_activities(since, sandbox.data_end + timedelta(days=365), by="created_at")
        requests = sandbox.requests
    assert counted == len(expected) == 600
    assert requests[0].time >= given_back + 1.0  # the slots rested a window after they were given back
    assert Counter(r.status for r in requests) == {200: len(requests)}


def test_without_the_redis_package_the_extra_fails_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # `import redis` now fails, as without the package
    monkeypatch.delitem(sys.modules, _shared_budget.__name__)
    with Sandbox(seed=18, activities=100, start=MONDAY, days=1, rate_limit=RATE) as sandbox:
        connect(monkeypatch, sandbox, redis_connection(free_port()))
        hint = r"'rate_limit_redis_conn_id'.*pip install 'airflow-provider-activities\[redis\]'"
        with pytest.raises(ImportError, match=hint):
            list(PeopleAIHook().iter_activities(*days(1)[0]))
        with pytest.raises(ImportError, match=hint):
            asyncio.run(PeopleAIAsyncHook().get_config())
        assert sandbox.requests == []


def test_a_redis_connection_of_another_type_fails_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    with Sandbox(seed=19, activities=100, start=MONDAY, days=1, rate_limit=RATE) as sandbox:
        connect(monkeypatch, sandbox, redis_connection(free_port(), conn_type="http"))
        with pytest.raises(ValueError, match=r"'rate_limit_redis_conn_id'.*type 'redis'"):
            list(PeopleAIHook().iter_activities(*days(1)[0]))
        assert sandbox.requests == []
