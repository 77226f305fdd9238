"""Contender 4, the transport limit: fetch every page and ``json.loads`` it; nothing else.

Same page size and the same number of requests in flight as the provider (its
``max_concurrency``, default 10, the API's allowance): one ``requests.Session`` with a pool of
that size, the first page alone (to learn ``meta.total``), then every other offset through a
thread pool of that size. The records are counted and dropped. This is the floor for any
Python client of this API on this machine.

With ``requests_per_second`` set (the API-bound regime) requests leave on a fixed schedule,
one every ``1.02 / rate`` seconds, and a 429 is retried after that spacing (and counted).

``options.parse = false`` skips ``json.loads`` (the bytes are read and dropped): the runner
uses that to report the sandbox's own serving rate.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from benchmarks.contenders.common import ACTIVITIES_PATH, Clock, Spec, emit, fetch_token


class _Schedule:
    """Send times one ``spacing`` apart (nothing when ``spacing`` is 0)."""

    def __init__(self, spacing: float) -> None:
        self.spacing = spacing
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.spacing:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.spacing
        if slot > now:
            time.sleep(slot - now)


def main() -> None:
    spec = Spec.from_argv()
    parse = spec.options.get("parse", True)
    clock = Clock()
    clock.start()
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=spec.concurrency, max_retries=0)
    session.mount("http://", adapter)
    schedule = _Schedule(1.02 / spec.requests_per_second if spec.requests_per_second else 0.0)
    schedule.wait()
    token = fetch_token(session, spec)
    headers = {"Authorization": f"Bearer {token}"}
    url = spec.base_url + ACTIVITIES_PATH
    throttled = 0
    throttled_lock = threading.Lock()

    def fetch(offset: int) -> tuple[int, int | None, int]:
        nonlocal throttled
        while True:
            schedule.wait()
            answer = session.get(
                url, params={**spec.filters, "offset": offset, "limit": spec.page_size}, headers=headers, timeout=60
            )
            if answer.status_code == 429:
                with throttled_lock:
                    throttled += 1
                continue
            answer.raise_for_status()
            body = answer.content
            if not parse:
                return 0, None, len(body)
            page = json.loads(body)
            return len(page["data"]), page["meta"]["total"], len(body)

    first, total, received = fetch(0)
    if not parse:  # no meta.total without parsing: the runner says how many records there are
        total = spec.expected
    offsets = range(spec.page_size, total or 0, spec.page_size)
    rows = first if parse else min(spec.page_size, total)
    with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
        for offset, (count, _, size) in zip(offsets, pool.map(fetch, offsets)):
            rows += count if parse else min(spec.page_size, total - offset)
            received += size
    clock.stop()
    emit(clock, rows, client_429s=throttled, bytes=received)


if __name__ == "__main__":
    main()
