"""The benchmark's sandbox process: the provider's :class:`Sandbox`, plus a control port.

Run by :mod:`benchmarks.run` as its own process, so the server's CPU is never charged to a
contender. It differs from ``python -m airflow_provider_activities.testing.sandbox`` in two
ways only, both needed to measure clients rather than the sandbox, and both the same for
every contender:

* every activity is encoded once and kept (:class:`BenchSandbox`: the JSON of each record, in
  blocks of :data:`BLOCK` records), and a page of any ``offset`` and ``limit`` is the join of
  the records it holds. After one warm-up pass by the runner (at any page size) every page is
  served from bytes already encoded, whatever page size a contender asks or learns; without
  it the sandbox would generate ~30k records/s and every contender would measure that. The
  bytes are those the sandbox itself serves (the same records, ``json.dumps`` the same way);
* a control server on a second loopback port answers ``GET /stats`` (the sandbox's counters:
  requests, statuses, ``rate_limited`` ..., and a summary of the request log: the ``limit`` of
  every data request, the most arrivals in any one second, the first and last arrival),
  ``GET /count?start=...&end=...`` (activities in ``[start, end)``, ISO instants),
  ``POST /reset`` (clears the counters and the log) and
  ``POST /config?rate_limit=5&latency=0.1`` (``rate_limit=none`` turns limits off), so the runner
  can warm up without limits, then count the 429s each contender received, from the server.

The largest page the sandbox takes is ``--max-page-size`` (default 100,000, the API's
documented maximum): a larger ``limit`` answers 400, as the API does.

Prints ``PEOPLEAI_SANDBOX_URL=``, ``BENCH_CONTROL_URL=`` and ``AIRFLOW_CONN_PEOPLEAI_DEFAULT=``
lines, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from airflow_provider_activities.testing._endpoints import ActivityPages
from airflow_provider_activities.testing.sandbox import Sandbox

UTC = timezone.utc
BLOCK = 1000
"""Records per block of the record cache (the unit the sandbox generates and encodes at once)."""
DATA_PATH_PREFIX = "/v0/public/"
"""The data endpoints' paths start so (the token endpoint's does not)."""


class BlockCachedPages(ActivityPages):
    """The data endpoints with every activity encoded once and kept, so pages of any size come
    from cache.

    Pages of activities are the sandbox's own bytes: each record formatted and ``json.dumps``-ed
    as :meth:`ActivityPages._page_bytes` does, joined with ``,`` between brackets (what
    ``json.dumps`` of the list gives with the same separators). Participant pages are left to
    the sandbox.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._blocks: dict[tuple[Any, ...], list[bytes]] = {}
        self._blocks_lock = threading.Lock()

    def _page_bytes(self, view: Any, query: Any, participants: bool, offset: int, count: int) -> bytes:
        if participants:
            return super()._page_bytes(view, query, participants, offset, count)
        end = min(offset + count, view.activity_total)
        parts: list[bytes] = []
        for block in range(offset // BLOCK, -(-end // BLOCK) if end > offset else offset // BLOCK):
            records = self._block(view, query, block)
            low = max(offset - block * BLOCK, 0)
            parts.extend(records[low:end - block * BLOCK])
        return b"[" + b",".join(parts) + b"]"

    def _block(self, view: Any, query: Any, block: int) -> list[bytes]:
        """The encoded records of one block of ``view`` (generated on first use)."""
        key = (query, view.version, self.timestamp_format, block)
        with self._blocks_lock:
            found = self._blocks.get(key)
        if found is not None:
            return found
        records = self._format_activities(view.activity_items(block * BLOCK, BLOCK))
        encoded = [json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") for record in records]
        with self._blocks_lock:
            return self._blocks.setdefault(key, encoded)


class BenchSandbox(Sandbox):
    """The sandbox serving activity pages from :class:`BlockCachedPages`."""

    _pages_type = BlockCachedPages


def log_summary(sandbox: Sandbox) -> dict[str, Any]:
    """What the request log says: the ``limit`` of each data request (as counts), the most
    arrivals (every request, token and 429s included) in any one second, and the first and last
    arrival's ``time.monotonic()``.
    """
    log = sandbox.requests
    times = [record.time for record in log]
    most, start = 0, 0
    for end, moment in enumerate(times):
        while times[start] <= moment - 1.0:
            start += 1
        most = max(most, end - start + 1)
    limits = Counter(record.query.get("limit", "") for record in log
                     if record.path.startswith(DATA_PATH_PREFIX) and record.status == 200)
    return {
        "limits": dict(sorted(limits.items(), key=lambda item: -item[1])),
        "max_arrivals_per_second": most,
        "first_arrival": times[0] if times else None,
        "last_arrival": times[-1] if times else None,
    }


def _control_server(sandbox: Sandbox) -> ThreadingHTTPServer:
    class Control(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            split = urlsplit(self.path)
            if split.path == "/count":
                query = {k: v[0] for k, v in parse_qs(split.query).items()}
                count = sandbox.activity_count(datetime.fromisoformat(query["start"]), datetime.fromisoformat(query["end"]))
                self._answer({"count": count})
                return
            self._answer({"stats": sandbox.stats, "log": log_summary(sandbox), "rate_limit": sandbox.rate_limit,
                          "latency": sandbox.latency, "max_page_size": sandbox.max_page_size})

        def do_POST(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if split.path == "/reset":
                sandbox.reset_log()
            elif split.path == "/config":
                query = {k: v[0] for k, v in parse_qs(split.query).items()}
                if "rate_limit" in query:
                    sandbox.rate_limit = None if query["rate_limit"] in ("", "none") else float(query["rate_limit"])
                if "latency" in query:
                    sandbox.latency = float(query["latency"])
            self._answer({"stats": sandbox.stats, "rate_limit": sandbox.rate_limit, "latency": sandbox.latency})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sandbox_server")
    parser.add_argument("--activities", type=int, required=True)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--start", default="2026-11-02")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-page-size", type=int, default=100_000,
                        help="the largest limit taken; above it 400 (default 100000, the API's documented maximum)")
    args = parser.parse_args(argv)

    start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Limits start off (for the warm-up); the runner sets them per regime over the control port.
    with BenchSandbox(seed=args.seed, activities=args.activities, start=start, days=args.days, rate_limit=None,
                      max_page_size=args.max_page_size) as sandbox:
        control = _control_server(sandbox)
        threading.Thread(target=control.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        print(f"PEOPLEAI_SANDBOX_URL={sandbox.base_url}")
        print(f"BENCH_CONTROL_URL=http://127.0.0.1:{control.server_address[1]}")
        print(f"AIRFLOW_CONN_PEOPLEAI_DEFAULT={sandbox.connection_json()}", flush=True)
        while not stop.wait(0.2):
            pass
        control.shutdown()
        control.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
