"""The rate budget shared through Redis: a real ``redis-server``, real OS processes.

Worker processes (:mod:`tests.budget_worker`) and coroutines send simulated requests through one
budget; each records when it arrived "at the API", in the Redis server's time, and how many were
in flight with it. Arrivals and in-flight counts are what the API would see.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis package is missing: pip install 'airflow-provider-activities[redis]'")

import redis
import redis.asyncio

from airflow_provider_activities.api.policy import shared_rate_limiter
from airflow_provider_activities.hooks import _shared_budget
from airflow_provider_activities.hooks._shared_budget import (
    LOCAL_LEASE,
    AsyncRedisRateBudget,
    BudgetRule,
    LocalBudget,
    RedisRateBudget,
    RedisSettings,
    SharedBudget,
    budget_keys,
    redis_settings,
    shared_budget,
)
from tests.budget_worker import Latency, record
from tests.redis_fixtures import RedisServer, free_port, redis_server_fixture, running_redis  # noqa: F401

BUDGET_LOG = _shared_budget.__name__


def _settings(host: str, port: int, password: str | None = None) -> RedisSettings:
    return RedisSettings(conn_id="redis_budget", host=host, port=port, password=password)


def _unique_key() -> tuple[str, str]:
    """A (base URL, API key) of its own for each test: the budgets never meet."""
    return f"http://api-{uuid.uuid4().hex[:8]}.invalid", f"key-{uuid.uuid4().hex}"


def _is_shared(budget: SharedBudget) -> bool:
    return budget.shared


def _api_time(api: redis.Redis) -> float:
    seconds, micros = api.time()
    return seconds + micros / 1_000_000


RATE_LATENCY = Latency(up=0.05, down=(0.0, 0.05))
CAP_LATENCY = Latency(up=0.01, down=(0.1, 0.3))  # requests stay long at the API: the in-flight cap binds
REPO = Path(__file__).resolve().parents[1]


def _start(
    mode: str, server: RedisServer, api_key: tuple[str, str], limits: tuple[float, int, float], **more: Any
) -> subprocess.Popen[str]:
    """Start a worker process (:mod:`tests.budget_worker`) on one budget."""
    rate, max_concurrency, lease = limits
    spec = {"host": server.host, "port": server.port, "base_url": api_key[0], "client_id": api_key[1], "rate": rate,
            "max_concurrency": max_concurrency, "lease": lease, **more}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "tests.budget_worker", mode, json.dumps(spec)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)


def _line(worker: subprocess.Popen[str]) -> str:
    line = worker.stdout.readline() if worker.stdout else ""
    assert line, f"worker {worker.pid} ended early (exit code {worker.wait()})"
    return line


@contextlib.contextmanager
def _hammering(server: RedisServer, api_key: tuple[str, str], limits: tuple[float, int, float], processes: int,
               threads: int, per_thread: int, latency: Latency, counter: str) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Start ``processes`` hammering workers and wait until all are ready; the block's value starts
    them together and returns what they saw. Workers are stopped however the block ends.
    """
    workers = [_start("hammer", server, api_key, limits, threads=threads, per_thread=per_thread, up=latency.up,
                      down=latency.down, counter=counter, seed=n) for n in range(processes)]

    def go() -> list[dict[str, Any]]:
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        return [record for worker in workers for record in json.loads(_line(worker))]

    try:
        for worker in workers:
            assert _line(worker).strip() == "ready"
        yield go
    finally:
        for worker in workers:
            if worker.stdin is not None:
                worker.stdin.close()  # a worker still waiting to start ends
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    assert all(worker.returncode == 0 for worker in workers)


def _most_in_one_second(arrivals: list[float]) -> int:
    """The most arrivals in any closed one-second window."""
    times = sorted(arrivals)
    return max(sum(1 for later in times[i:] if later - first <= 1.0) for i, first in enumerate(times))


def test_four_processes_share_one_rate(redis_server: RedisServer) -> None:
    rate, requests = 5.0, 24
    with _hammering(redis_server, _unique_key(), (rate, 10, 10.0), processes=4, threads=2, per_thread=3,
                    latency=RATE_LATENCY, counter=f"in-flight-{uuid.uuid4().hex}") as go:
        seen = go()
    arrivals = sorted(record["arrival"] for record in seen)
    assert len(arrivals) == requests and all(record["shared"] for record in seen)
    assert _most_in_one_second(arrivals) == 5  # the budget is used up, never overrun
    assert max(record["in_flight"] for record in seen) <= 5
    assert arrivals[-1] - arrivals[0] <= 1.25 * (requests - 1) / rate  # the API kept busy


def test_in_flight_cap_holds_across_processes(redis_server: RedisServer) -> None:
    with _hammering(redis_server, _unique_key(), (50.0, 3, 10.0), processes=3, threads=2, per_thread=4,
                    latency=CAP_LATENCY, counter=f"in-flight-{uuid.uuid4().hex}") as go:
        seen = go()
    assert len(seen) == 24
    assert max(record["in_flight"] for record in seen) == 3  # reached, and never passed


def test_slots_of_a_killed_worker_come_back_after_their_lease(redis_server: RedisServer) -> None:
    api_key, lease = _unique_key(), 1.0
    limits = (5.0, 10, lease)
    rule = BudgetRule(*api_key, rate=5.0, max_concurrency=10, lease_seconds=lease)
    victim = _start("hold", redis_server, api_key, limits)
    try:
        held = json.loads(_line(victim))
    finally:
        victim.kill()  # SIGKILL: no release, no clean-up
        victim.wait()
    assert held["held"] == 5 and victim.returncode == -signal.SIGKILL
    taken_at = held["taken_at"]
    budget = SharedBudget(_settings(redis_server.host, redis_server.port), rule, LocalBudget(shared_rate_limiter(*api_key, 5.0)))
    driver = RedisRateBudget.connect(budget)
    api = redis_server.client()
    assert driver.try_acquire() is None  # the dead worker's leases still hold every slot
    sends: list[float] = []
    deadline = time.monotonic() + 10
    while len(sends) < 5 and time.monotonic() < deadline:  # the survivors carry on once the leases expired
        taken = driver.try_acquire()
        if taken is None:
            time.sleep(0.02)
            continue
        sends.append(_api_time(api) + taken[0])
        assert taken[1] != LOCAL_LEASE
    assert len(sends) == 5
    assert taken_at + lease + rule.window - 0.05 <= min(sends)
    assert max(sends) <= taken_at + lease + rule.window + 0.5


def test_unreachable_redis_falls_back_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    api_key, port, password = _unique_key(), free_port(), "redis-pw-never-shown"
    settings = _settings("127.0.0.1", port, password)
    local = shared_rate_limiter(*api_key, 5.0)
    budget = SharedBudget(settings, BudgetRule(*api_key, 5.0, 10, 10.0), LocalBudget(local), retry_seconds=0.1)
    with caplog.at_level(logging.DEBUG, logger=BUDGET_LOG):
        drivers = [RedisRateBudget.connect(budget), RedisRateBudget.connect(budget)]
        taken = [driver.try_acquire() for driver in drivers for _ in range(3)]
        assert taken[:5] == [(0.0, LOCAL_LEASE)] * 5  # the per-process limiter's 5 slots
        assert taken[5] is None  # and it limits
        assert not _is_shared(budget)
        for _ in range(5):
            drivers[0].release(LOCAL_LEASE)
        wait, lease = budget.local.acquire()  # a released slot rests a window
        assert lease == LOCAL_LEASE and budget.rule.window - 0.05 < wait <= budget.rule.window
        budget.local.release(lease)
        time.sleep(0.15)
        assert drivers[1].try_acquire() is not None  # another try at Redis, failing again, quietly
        with running_redis(port, "--requirepass", password):  # Redis comes back: the budget is shared again
            time.sleep(0.15)
            taken_again = drivers[0].try_acquire()
            assert taken_again is not None and taken_again[1] != LOCAL_LEASE and _is_shared(budget)
            drivers[0].release(taken_again[1])
    records = [record for record in caplog.records if record.name == BUDGET_LOG]
    [warning] = [record for record in records if record.levelno >= logging.WARNING]
    assert f"127.0.0.1:{port}" in warning.getMessage() and "Connection refused" in warning.getMessage()
    assert password not in caplog.text
    assert records[-1].levelno == logging.INFO and "shared through Redis" in records[-1].getMessage()


def test_wrong_redis_password_falls_back_without_showing_it(caplog: pytest.LogCaptureFixture) -> None:
    port, api_key = free_port(), _unique_key()
    with running_redis(port, "--requirepass", "the-right-redis-pw"):
        good = RedisRateBudget.connect(shared_budget(_settings("127.0.0.1", port, "the-right-redis-pw"), *api_key, 5.0, 10, 10.0))
        taken = good.try_acquire()
        assert taken is not None and taken[1] != LOCAL_LEASE
        wrong, other_key = _settings("127.0.0.1", port, "a-wrong-redis-pw"), _unique_key()
        budget = SharedBudget(wrong, BudgetRule(*other_key, 5.0, 10, 10.0), LocalBudget(shared_rate_limiter(*other_key, 5.0)))
        with caplog.at_level(logging.DEBUG, logger=BUDGET_LOG):
            assert RedisRateBudget.connect(budget).try_acquire() == (0.0, LOCAL_LEASE)
    [warning] = [record for record in caplog.records if record.name == BUDGET_LOG and record.levelno >= logging.WARNING]
    assert "AuthenticationError" in warning.getMessage()
    assert "a-wrong-redis-pw" not in caplog.text and "the-right-redis-pw" not in caplog.text


async def _async_request(driver: AsyncRedisRateBudget, api: redis.asyncio.Redis, counter: str, latency: Latency,
                         rng: random.Random) -> dict[str, Any]:
    """:func:`tests.budget_worker.simulated_request` under asyncio."""
    wait, lease = await driver.acquire()
    await asyncio.sleep(wait + rng.uniform(0, latency.up))
    async with api.pipeline() as arrival:
        arrival.incr(counter)
        arrival.time()
        in_flight, stamp = await arrival.execute()
    await asyncio.sleep(rng.uniform(*latency.down))
    await api.decr(counter)
    await driver.release(lease)
    return record(lease, in_flight, stamp)


async def _async_requests(server: RedisServer, api_key: tuple[str, str], limits: tuple[float, int, float],
                          tasks: int, per_task: int, latency: Latency, counter: str) -> list[dict[str, Any]]:
    rate, max_concurrency, lease = limits
    budget = shared_budget(_settings(server.host, server.port), *api_key, rate, max_concurrency, lease)
    driver = AsyncRedisRateBudget.connect(budget)
    api = redis.asyncio.Redis(host=server.host, port=server.port)

    async def run(rng: random.Random) -> list[dict[str, Any]]:
        return [await _async_request(driver, api, counter, latency, rng) for _ in range(per_task)]

    try:
        done = await asyncio.gather(*(run(random.Random(n)) for n in range(tasks)))
    finally:
        await driver.aclose()
        await api.aclose()
    return [record for records in done for record in records]


def test_async_budget_shares_the_rate_with_a_sync_worker(redis_server: RedisServer) -> None:
    api_key, counter, limits = _unique_key(), f"in-flight-{uuid.uuid4().hex}", (5.0, 10, 10.0)
    with _hammering(redis_server, api_key, limits, processes=1, threads=2, per_thread=3, latency=RATE_LATENCY,
                    counter=counter) as go, concurrent.futures.ThreadPoolExecutor(1) as pool:
        sync_worker = pool.submit(go)
        seen = asyncio.run(
            _async_requests(redis_server, api_key, limits, tasks=4, per_task=3, latency=RATE_LATENCY, counter=counter)
        )
        seen += sync_worker.result()
    arrivals = sorted(record["arrival"] for record in seen)
    assert len(arrivals) == 18 and all(record["shared"] for record in seen)
    assert _most_in_one_second(arrivals) == 5
    assert arrivals[-1] - arrivals[0] <= 1.25 * 17 / 5.0


def test_async_in_flight_cap(redis_server: RedisServer) -> None:
    seen = asyncio.run(_async_requests(redis_server, _unique_key(), (50.0, 3, 10.0), tasks=6, per_task=2, latency=CAP_LATENCY,
                                       counter=f"in-flight-{uuid.uuid4().hex}"))
    assert len(seen) == 12 and max(record["in_flight"] for record in seen) == 3


BUSY_SCRIPT = """
local start = redis.call('TIME')
repeat local now = redis.call('TIME') until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > tonumber(ARGV[1])
"""
"""Keeps the Redis server busy for ARGV[1] microseconds: commands sent meanwhile wait."""


def test_cancelled_acquire_gives_its_lease_back(redis_server: RedisServer) -> None:
    budget = shared_budget(_settings(redis_server.host, redis_server.port), *_unique_key(), 5.0, 10, 10.0)
    client = redis_server.client()

    async def scenario() -> None:
        driver = AsyncRedisRateBudget.connect(budget)
        await driver.release((await driver.acquire())[1])  # connected
        busy = threading.Thread(target=client.eval, args=(BUSY_SCRIPT, 0, 300_000))
        busy.start()
        await asyncio.sleep(0.05)
        acquiring = asyncio.ensure_future(driver.try_acquire())
        await asyncio.sleep(0.1)  # sent; Redis runs it after the busy script
        acquiring.cancel()
        with pytest.raises(asyncio.CancelledError):
            await acquiring
        await asyncio.to_thread(busy.join)
        await driver.aclose()

    asyncio.run(scenario())
    assert client.zcard(budget.rule.keys[1]) == 0  # the lease the cancelled call took was given back
    assert client.zcard(budget.rule.keys[0]) == 5


def test_keys_and_values_hold_no_credentials(redis_server: RedisServer) -> None:
    base_url, client_id = "http://api.example.invalid", f"the-api-key-{uuid.uuid4().hex}"
    settings = _settings(redis_server.host, redis_server.port)
    driver = RedisRateBudget.connect(shared_budget(settings, base_url, client_id, 5.0, 10, 10.0))
    leases = [driver.acquire()[1] for _ in range(3)]
    driver.release(leases[0])
    client = redis_server.client()
    idle, busy = budget_keys(base_url, client_id)
    assert client.zcard(idle) == 3 and client.zcard(busy) == 2
    stored = b" ".join([idle.encode(), busy.encode()] + [member for key in (idle, busy) for member in client.zrange(key, 0, -1)])
    assert client_id.encode() not in stored and b"example" not in stored
    every_key = b" ".join(client.scan_iter())
    assert client_id.encode() not in every_key


def test_a_lower_rate_takes_effect_and_expired_leases_are_freed_once(redis_server: RedisServer) -> None:
    server = RedisSettings("redis_budget", redis_server.host, redis_server.port)
    api_key, lease_seconds = _unique_key(), 0.2
    idle, busy = budget_keys(*api_key)
    client = redis_server.client()
    five = RedisRateBudget.connect(shared_budget(server, *api_key, 5.0, 10, lease_seconds))
    held = [five.acquire()[1] for _ in range(2)]
    two = RedisRateBudget.connect(shared_budget(server, *api_key, 2.0, 10, lease_seconds))
    assert two.try_acquire() is None  # 2 slots now, both busy
    assert client.zcard(idle) + client.zcard(busy) == 2
    time.sleep(lease_seconds + 0.05)
    taken = two.try_acquire()  # the expired leases count as answered at their deadlines, and rest a window
    window = 2 / 2.0 + 0.01
    assert taken is not None and window - 0.1 < taken[0] < window
    for lease in held:
        two.release(lease)  # too late: not given back a second time
    two.release(taken[1])
    assert client.zcard(idle) == 2 and client.zcard(busy) == 0


def test_redis_connection_is_read_like_the_redis_provider() -> None:
    from airflow_provider_activities.compat import Connection
    from tests.airflow_compat import redact

    connection = Connection(
        conn_id="redis_budget", conn_type="redis", host="redis.internal", port=6380, login="worker",
        password="a-redis-secret-pw", extra='{"db": "3", "ssl": "true", "ssl_cert_reqs": "none", "other": 1}',
    )
    settings = redis_settings(connection)
    assert (settings.host, settings.port, settings.username, settings.db) == ("redis.internal", 6380, "worker", 3)
    assert settings.ssl == {"ssl": True, "ssl_cert_reqs": "none"}
    assert "a-redis-secret-pw" not in repr(settings)
    assert redact("pw a-redis-secret-pw") == "pw ***"
    assert redis_settings(Connection(conn_id="r", conn_type="redis", password="None")).password is None
    with pytest.raises(ValueError, match="type 'redis'"):
        redis_settings(Connection(conn_id="r", conn_type="http"))
    with pytest.raises(ValueError, match="'db' must be a database number"):
        redis_settings(Connection(conn_id="r", conn_type="redis", extra='{"db": "x"}'))
