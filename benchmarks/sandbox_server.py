"""The benchmark's sandbox process: the provider's :class:`Sandbox`, plus a control port.

Run by :mod:`benchmarks.run` as its own process, so the server's CPU is never charged to a
contender. It differs from ``python -m airflow_provider_activities.testing.sandbox`` in two
ways only, both needed to measure clients rather than the sandbox, and both the same for
every contender:

* the page cache is large enough to hold every page of the run (``--cache-bytes``; the
  sandbox's own cap is 128 MiB, about 160k activities), so after one warm-up pass by the
  runner each page is served from the bytes already encoded; without it the sandbox would
  generate ~30k records/s and every contender would measure that;
* a control server on a second loopback port answers ``GET /stats`` (the sandbox's counters:
  requests, statuses, ``rate_limited`` ...), ``POST /reset`` (clears them) and
  ``POST /config?rate_limit=5&latency=0.1`` (``rate_limit=none`` turns limits off), so the runner
  can warm up without limits, then count the 429s each contender received, from the server.

Prints ``PEOPLEAI_SANDBOX_URL=``, ``BENCH_CONTROL_URL=`` and ``AIRFLOW_CONN_PEOPLEAI_DEFAULT=``
lines, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from airflow_provider_activities.testing import sandbox as sandbox_module
from airflow_provider_activities.testing.sandbox import Sandbox

UTC = timezone.utc


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
            self._answer({"stats": sandbox.stats, "rate_limit": sandbox.rate_limit, "latency": sandbox.latency})

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
    parser.add_argument("--cache-bytes", type=int, default=8 << 30)
    args = parser.parse_args(argv)

    sandbox_module._PAGE_CACHE_BYTES = args.cache_bytes  # read at call time by Sandbox._page_bytes
    start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Limits start off (for the warm-up); the runner sets them per regime over the control port.
    with Sandbox(seed=args.seed, activities=args.activities, start=start, days=args.days, rate_limit=None) as sandbox:
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
