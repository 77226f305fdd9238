"""The sandbox's command line: ``python -m airflow_provider_activities.testing.sandbox [options]``.

Serves a :class:`~airflow_provider_activities.testing.sandbox.Sandbox` on ``127.0.0.1`` until
SIGINT or SIGTERM, after printing how to reach it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import datetime, timezone
from typing import Any

from airflow_provider_activities.testing._endpoints import TIMESTAMP_FORMATS

UTC = timezone.utc
PROG = "python -m airflow_provider_activities.testing.sandbox"


def _parse_start(text: str) -> datetime:
    value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def serve(argv: list[str]) -> int:
    """Run a sandbox until SIGINT or SIGTERM; print how to reach it first.

    Prints four ``KEY=value`` lines to stdout, flushed: ``PEOPLEAI_SANDBOX_URL``,
    ``PEOPLEAI_CLIENT_ID``, ``PEOPLEAI_CLIENT_SECRET`` and ``AIRFLOW_CONN_PEOPLEAI_DEFAULT``
    (JSON). Exits 0 on a signal.

    :param argv: the options (``--port``, ``--seed`` ...).
    """
    from airflow_provider_activities.testing.sandbox import Sandbox

    parser = argparse.ArgumentParser(prog=PROG, description="Serve a local imitation of the People.ai Activity API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--activities", type=int, default=3000, help="number of generated activities")
    parser.add_argument("--start", type=_parse_start, default=datetime(2026, 11, 1, tzinfo=UTC), help="first day (YYYY-MM-DD, UTC)")
    parser.add_argument("--days", type=float, default=7, help="days the activities spread over")
    parser.add_argument("--client-id", default="sandbox-client-id", help="accepted API key")
    parser.add_argument("--client-secret", default="sandbox-client-secret", help="accepted API secret")
    parser.add_argument("--rate-limit", type=float, default=5.0, help="requests per sliding second (default 5)")
    parser.add_argument("--no-rate-limit", action="store_true", help="disable rate and concurrency limits")
    parser.add_argument("--max-concurrency", type=int, default=10, help="requests in flight at once (default 10)")
    parser.add_argument("--token-ttl", type=float, default=7200, help="token lifetime in seconds")
    parser.add_argument("--timestamp-format", choices=TIMESTAMP_FORMATS, default="epoch_ms", help="how times are served")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--max-page-size", type=int, default=100_000, help="largest accepted limit")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sandbox = Sandbox(
        seed=args.seed,
        activities=args.activities,
        start=args.start,
        days=args.days,
        client_id=args.client_id,
        client_secret=args.client_secret,
        port=args.port,
        rate_limit=None if args.no_rate_limit else args.rate_limit,
        max_concurrency=args.max_concurrency,
        token_ttl=args.token_ttl,
        timestamp_format=args.timestamp_format,
        latency=args.latency,
        max_page_size=args.max_page_size,
    )
    with sandbox:
        print(f"PEOPLEAI_SANDBOX_URL={sandbox.base_url}")
        print(f"PEOPLEAI_CLIENT_ID={sandbox.client_id}")
        print(f"PEOPLEAI_CLIENT_SECRET={sandbox.client_secret}")
        print(f"AIRFLOW_CONN_PEOPLEAI_DEFAULT={sandbox.connection_json()}", flush=True)
        print("Serving the People.ai sandbox API; stop with Ctrl-C or SIGTERM.", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line's entry point.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    :returns: the exit status.
    """
    return serve(sys.argv[1:] if argv is None else argv)
