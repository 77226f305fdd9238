"""A worker process for the shared-budget tests: ``python -m tests.budget_worker MODE SPEC``.

It imports only the budget module and ``redis`` (no pytest, no Airflow), so that several start
quickly. ``SPEC`` is a JSON object (see :func:`main`). Modes:

* ``hammer``: say ``ready``, wait for ``go`` on stdin (every worker starts together), then send
  ``threads * per_thread`` simulated requests from ``threads`` threads and print them as one JSON
  line;
* ``hold``: take every slot it can, print ``{"held": n, "taken_at": server time}`` and hang
  until killed.

A simulated request takes a slot, sleeps the wait the budget said, travels (a random sleep),
"arrives at the API" (a Redis ``TIME`` and an ``INCR`` of an in-flight counter, in one
transaction, so every arrival is stamped with the server's clock), is answered after another
random sleep (``DECR``), and gives its slot back.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from airflow_provider_activities.hooks._shared_budget import LOCAL_LEASE, RedisRateBudget, RedisSettings, shared_budget


@dataclass(frozen=True)
class Latency:
    """Random travel times of a simulated request, in seconds.

    :param up: the most a request takes to reach the API (uniform from 0): varying, it tests the
        rate where the API sees it, not where requests are sent.
    :param down: the range of the time from arrival to the answer (uniform).
    """

    up: float
    down: tuple[float, float]


def record(lease: str, in_flight: int, stamp: tuple[int, int]) -> dict[str, Any]:
    """What the API saw of one request: when it arrived, how many were in flight with it, and
    whether its slot came from Redis.
    """
    return {"arrival": stamp[0] + stamp[1] / 1_000_000, "in_flight": in_flight, "shared": lease != LOCAL_LEASE}


def simulated_request(
    driver: RedisRateBudget, api: redis.Redis, counter: str, latency: Latency, rng: random.Random
) -> dict[str, Any]:
    """One request through the budget."""
    wait, lease = driver.acquire()
    time.sleep(wait + rng.uniform(0, latency.up))
    arrival = api.pipeline()  # one transaction: counted in flight and stamped at the same instant
    arrival.incr(counter)
    arrival.time()
    in_flight, stamp = arrival.execute()
    time.sleep(rng.uniform(*latency.down))
    api.decr(counter)
    driver.release(lease)
    return record(lease, in_flight, stamp)


def main(mode: str, spec: dict[str, Any]) -> None:
    """Run one worker.

    ``spec``: ``host``, ``port`` (the Redis), ``base_url``, ``client_id``, ``rate``,
    ``max_concurrency``, ``lease`` (the budget); for ``hammer`` also ``threads``, ``per_thread``,
    ``up``, ``down`` (:class:`Latency`), ``counter`` (the in-flight key) and ``seed``.
    """
    settings = RedisSettings(conn_id="redis_budget", host=spec["host"], port=spec["port"])
    budget = shared_budget(settings, spec["base_url"], spec["client_id"], spec["rate"], spec["max_concurrency"], spec["lease"])
    driver = RedisRateBudget.connect(budget)
    api = redis.Redis(host=spec["host"], port=spec["port"])
    if mode == "hold":
        held = 0
        while driver.try_acquire() is not None:
            held += 1
        seconds, micros = api.time()
        print(json.dumps({"held": held, "taken_at": seconds + micros / 1_000_000}), flush=True)
        time.sleep(120)
        return
    latency = Latency(spec["up"], (spec["down"][0], spec["down"][1]))
    seen: list[dict[str, Any]] = []

    def run(rng: random.Random) -> None:
        for _ in range(spec["per_thread"]):
            seen.append(simulated_request(driver, api, spec["counter"], latency, rng))

    threads = [threading.Thread(target=run, args=(random.Random(spec["seed"] * 100 + n),)) for n in range(spec["threads"])]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return  # the test gave up before starting
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
