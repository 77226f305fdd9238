"""Contenders 4 and 5, the transport limit: fetch every page and parse it; no conversion, no writing.

Same page size and the same number of requests in flight as the provider (its
``max_concurrency``, default 10, the API's allowance): one ``requests.Session`` with a pool of
that size, the first page alone (to learn ``meta.total``), then every other offset through a
thread pool of that size. The records are counted and dropped. The faster of its two parsers
(below), in the same regime and size, is the floor for any Python client of this API on this
machine.

``options.parser`` picks how each page is parsed (the runner runs both, as two contenders):

* ``json`` (contender ``transport``): ``json.loads`` of the body; rows are ``len(page["data"])``.
  Holds the GIL, so the pool's threads parse one page at a time.
* ``arrow`` (contender ``transport-arrow``): ``pyarrow.json.read_json`` of the body as one block
  (``ReadOptions(use_threads=False, block_size=len(body) + 1)``), its schema *inferred* from the
  page (not the provider's schema, nor its code: the floor does not depend on the provider);
  rows are the summed list lengths of the ``data`` column, ``meta.total`` read from the ``meta``
  column. The C++ parse releases the GIL, so the pool's threads parse pages in parallel, at
  most one per CPU at a time (more parses than CPUs only thrash the caches; the provider does
  the same).

With ``requests_per_second`` set (the API-bound regime) requests leave on a fixed schedule,
one every ``1.02 / rate`` seconds, and a 429 is retried after that spacing (and counted).

``options.parse = false`` skips parsing (the bytes are read and dropped): the runner uses that
to report the sandbox's own serving rate.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from benchmarks.contenders.common import ACTIVITIES_PATH, Clock, Spec, emit, fetch_token, without_pandas

PARSERS = ("json", "arrow")
"""The values of ``options.parser``."""


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


def _json_parser() -> Callable[[bytes], tuple[int, Any]]:
    def parse(body: bytes) -> tuple[int, Any]:
        page = json.loads(body)
        return len(page["data"]), page["meta"]["total"]

    return parse


def _arrow_parser() -> Callable[[bytes], tuple[int, Any]]:
    without_pandas()  # pyarrow would import it when it can (not a cost of parsing)
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pa_json

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parsing = threading.BoundedSemaphore(max(1, cpus))

    def parse(body: bytes) -> tuple[int, Any]:
        with parsing:
            table = pa_json.read_json(
                pa.py_buffer(body), read_options=pa_json.ReadOptions(use_threads=False, block_size=len(body) + 1)
            )
        rows = pc.sum(pc.list_value_length(table.column("data"))).as_py() or 0
        meta = table.column("meta").combine_chunks()
        return rows, meta.field("total")[0].as_py()

    return parse


def main() -> None:
    spec = Spec.from_argv()
    parse = spec.options.get("parse", True)
    parser = spec.options.get("parser", "json")
    if parser not in PARSERS:
        raise SystemExit(f"options.parser must be one of {', '.join(PARSERS)}, not {parser!r}")
    parse_page = _arrow_parser() if parser == "arrow" else _json_parser()  # imports before the clock starts
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
            count, total = parse_page(body)
            return count, total, len(body)

    first, total, received = fetch(0)
    if not parse:  # no meta.total without parsing: the runner says how many records there are
        total = spec.expected
    offsets = range(spec.page_size, total or 0, spec.page_size)
    rows = first if parse else min(spec.page_size, total)
    with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
        for offset, (count, _, size) in zip(offsets, pool.map(fetch, offsets), strict=True):
            rows += count if parse else min(spec.page_size, total - offset)
            received += size
    clock.stop()
    emit(clock, rows, client_429s=throttled, bytes=received, parser=parser if parse else None)


if __name__ == "__main__":
    main()
