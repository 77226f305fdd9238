"""The sandbox's command line: serve a sandbox, or drive one that is running.

``python -m airflow_provider_activities.testing.sandbox [options]`` (or ``... serve [options]``)
serves a :class:`~airflow_provider_activities.testing.sandbox.Sandbox` on ``127.0.0.1`` until
SIGINT or SIGTERM, after printing how to reach it. The subcommands talk to a running sandbox over
its private ``/_sandbox`` endpoints (see :mod:`._admin`), authenticated with its client id and
secret:

* ``add-activities``: insert activities (into the served data and the ground truth);
* ``expected``: print the ground truth of a window: activities or participants as JSON Lines, or
  their counts;
* ``expected-export``: print what a correct client keeps of an export job of some days;
* ``stats``: print the sandbox's request counters and its export file build rate (JSON).

Their ``--url``, ``--client-id`` and ``--client-secret`` default to ``PEOPLEAI_SANDBOX_URL``,
``PEOPLEAI_CLIENT_ID`` and ``PEOPLEAI_CLIENT_SECRET`` from the environment (the lines ``serve``
prints), then to the sandbox's default credentials.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

from airflow_provider_activities.testing._admin import (
    ADMIN_ACTIVITIES_PATH,
    ADMIN_EXPECTED_EXPORT_PATH,
    ADMIN_EXPECTED_PATH,
    ADMIN_STATS_PATH,
    MAX_INSERT,
    parse_day,
    parse_instant,
)
from airflow_provider_activities.testing._data import ACTIVITY_TYPES
from airflow_provider_activities.testing._endpoints import TIMESTAMP_FORMATS
from airflow_provider_activities.testing._export import EXPORT_ACTIVITY_TYPES, EXPORT_TYPES

UTC = timezone.utc
PROG = "python -m airflow_provider_activities.testing.sandbox"
DEFAULT_CLIENT_ID = "sandbox-client-id"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"
SUBCOMMANDS_HELP = f"""\
subcommands (against a running sandbox; --url defaults to $PEOPLEAI_SANDBOX_URL):
  {PROG} add-activities --url URL --count N [--day YYYY-MM-DD | --timestamp T] [--created-at T] [--type TYPE] [--json]
  {PROG} expected --url URL --start T --end T [--type TYPE] [--by timestamp|created_at] [--participants] [--count-only]
  {PROG} expected-export --url URL --start-date D --end-date D [--export-type snapshot|delta] [--type TYPE] [--count-only]
  {PROG} stats --url URL
Run a subcommand with --help for its options."""


class CommandError(Exception):
    """A subcommand failed in a way the user can fix; its message says how."""


# ----- argument types (bad input is refused before any call) -----------------------------------


def _parse_start(text: str) -> datetime:
    value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    return parse


def _instant(text: str) -> str:
    try:
        parse_instant(text, "the value")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).replace("the value must", "must")) from None
    return text


def _day(text: str) -> str:
    try:
        parse_day(text, "the value")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).replace("the value must", "must")) from None
    return text


# ----- serve -------------------------------------------------------------------------------------


def serve(argv: list[str]) -> int:
    """Run a sandbox until SIGINT or SIGTERM; print how to reach it first.

    Prints four ``KEY=value`` lines to stdout, flushed: ``PEOPLEAI_SANDBOX_URL``,
    ``PEOPLEAI_CLIENT_ID``, ``PEOPLEAI_CLIENT_SECRET`` and ``AIRFLOW_CONN_PEOPLEAI_DEFAULT``
    (JSON). Exits 0 on a signal.

    :param argv: the options (``--port``, ``--seed`` ...; see ``--help``).
    :returns: the exit status.
    """
    from airflow_provider_activities.testing.sandbox import Sandbox

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a local imitation of the People.ai Activity API on 127.0.0.1.",
        epilog=SUBCOMMANDS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--activities", type=int, default=3000, help="number of generated activities")
    parser.add_argument(
        "--start", type=_parse_start, default=datetime(2026, 11, 1, tzinfo=UTC), help="first day (YYYY-MM-DD, UTC)"
    )
    parser.add_argument("--days", type=float, default=7, help="days the activities spread over")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="accepted API key")
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET, help="accepted API secret")
    parser.add_argument("--rate-limit", type=float, default=5.0, help="requests per sliding second (default 5)")
    parser.add_argument("--no-rate-limit", action="store_true", help="disable rate and concurrency limits")
    parser.add_argument("--max-concurrency", type=int, default=10, help="requests in flight at once (default 10)")
    parser.add_argument("--token-ttl", type=float, default=7200, help="token lifetime in seconds")
    parser.add_argument("--timestamp-format", choices=TIMESTAMP_FORMATS, default="epoch_ms", help="how times are served")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument(
        "--max-page-size",
        type=_at_least(1),
        default=100_000,
        help="largest accepted limit; above it answers 400 (default 100000, as the API)",
    )
    parser.add_argument(
        "--page-cap",
        type=_at_least(1),
        default=None,
        help="serve at most this many records a page, whatever limit asks (a server's own cap)",
    )
    parser.add_argument(
        "--export-polls",
        type=_at_least(0),
        default=None,
        help="status polls an export job answers before it completes (0: done at the first poll; default 2)",
    )
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
    if args.page_cap is not None:
        sandbox.faults.cap_page_size(args.page_cap)
    if args.export_polls is not None:
        sandbox.export.settings.polls = args.export_polls
    with sandbox:
        print(f"PEOPLEAI_SANDBOX_URL={sandbox.base_url}")
        print(f"PEOPLEAI_CLIENT_ID={sandbox.client_id}")
        print(f"PEOPLEAI_CLIENT_SECRET={sandbox.client_secret}")
        print(f"AIRFLOW_CONN_PEOPLEAI_DEFAULT={sandbox.connection_json()}", flush=True)
        print(
            f"Serving the People.ai sandbox API; stop with Ctrl-C or SIGTERM. Drive it with: {PROG} add-activities|expected|"
            "expected-export|stats --url " + sandbox.base_url + " ... (--help for each)",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    return 0


# ----- the client subcommands ------------------------------------------------------------------------


def _client_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{PROG} {name}", description=description)
    parser.add_argument(
        "--url",
        default=os.environ.get("PEOPLEAI_SANDBOX_URL"),
        help="the running sandbox's base URL, e.g. http://127.0.0.1:8765 (default: $PEOPLEAI_SANDBOX_URL)",
    )
    parser.add_argument(
        "--client-id",
        default=os.environ.get("PEOPLEAI_CLIENT_ID") or DEFAULT_CLIENT_ID,
        help="the sandbox's client id (default: $PEOPLEAI_CLIENT_ID, else the sandbox's default)",
    )
    parser.add_argument(
        "--client-secret",
        default=os.environ.get("PEOPLEAI_CLIENT_SECRET") or DEFAULT_CLIENT_SECRET,
        help="the sandbox's client secret (default: $PEOPLEAI_CLIENT_SECRET, else the sandbox's default)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the sandbox's answer (default 60)")
    return parser


def _base_url(parser: argparse.ArgumentParser, url: str | None) -> str:
    if not url:
        parser.error("--url is required (or set PEOPLEAI_SANDBOX_URL), e.g. --url http://127.0.0.1:8765")
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.netloc or split.path.strip("/") or split.query:
        parser.error(f"--url must be the sandbox's base URL such as http://127.0.0.1:8765, got {url!r}")
    return f"{split.scheme}://{split.netloc}"


def _call(args: argparse.Namespace, base_url: str, method: str, path: str, body: Any = None) -> bytes:
    """One admin request; the answer's body, or :class:`CommandError` with the sandbox's message."""
    credentials = base64.b64encode(f"{args.client_id}:{args.client_secret}".encode()).decode("ascii")
    headers = {"Authorization": f"Basic {credentials}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(base_url + path, data=data, headers=headers, method=method)
    # The sandbox is on loopback: never through a proxy named in the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=args.timeout) as answer:
            content: bytes = answer.read()
            return content
    except urllib.error.HTTPError as error:
        text = error.read().decode("utf-8", "replace")
        try:
            message = json.loads(text)["message"]
        except (ValueError, KeyError, TypeError):
            message = text.strip() or error.reason
        hint = " (check --client-id/--client-secret)" if error.code == 401 else ""
        if error.code == 404:
            hint = " (is this a sandbox? only the sandbox serves /_sandbox)"
        raise CommandError(f"the sandbox at {base_url} answered {error.code}: {message}{hint}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CommandError(f"cannot reach the sandbox at {base_url}: {reason} (is it running? check --url)") from None


def add_activities(argv: list[str]) -> int:
    """``add-activities``: insert activities into a running sandbox.

    Prints one summary line (how many, their time span, per type), or with ``--json`` the added
    activities as JSON Lines (times as epoch ms).

    :param argv: the options (see ``--help``).
    :returns: the exit status.
    """
    parser = _client_parser("add-activities", "Insert activities (with participants) into a running sandbox's data.")
    parser.add_argument("--count", type=_at_least(1), required=True, help=f"how many activities (at most {MAX_INSERT})")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--day", type=_day, help="spread their timestamps evenly over this UTC day (YYYY-MM-DD)")
    when.add_argument("--timestamp", type=_instant, help="give them all this timestamp (YYYY-MM-DD, ISO-8601 or epoch ms)")
    parser.add_argument("--created-at", type=_instant, help="their created_at (default: a few minutes after their timestamp)")
    parser.add_argument("--type", choices=ACTIVITY_TYPES, help="their activity type (default: a random mix)")
    parser.add_argument("--json", action="store_true", help="print the added activities as JSON Lines")
    args = parser.parse_args(argv)
    base_url = _base_url(parser, args.url)
    if args.count > MAX_INSERT:
        parser.error(f"argument --count: must be at most {MAX_INSERT}, got {args.count}")
    body: dict[str, Any] = {"count": args.count}
    given = {"day": args.day, "timestamp": args.timestamp, "created_at": args.created_at, "activity_type": args.type}
    body.update({name: value for name, value in given.items() if value is not None})
    added = json.loads(_call(args, base_url, "POST", ADMIN_ACTIVITIES_PATH, body))["added"]
    if args.json:
        for record in added:
            print(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        return 0
    times = sorted(record["timestamp"] for record in added)
    kinds = Counter(record["activity_type"] for record in added)
    print(
        f"added {len(added)} activities, timestamps {_iso(times[0])} .. {_iso(times[-1])} "
        f"({', '.join(f'{kind} {kinds[kind]}' for kind in sorted(kinds))})"
    )
    return 0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def expected(argv: list[str]) -> int:
    """``expected``: print the ground truth of a window ``[start, end)`` of a running sandbox.

    Prints the activities (or ``--participants``) as JSON Lines in served order, times as epoch
    ms, or with ``--count-only`` one JSON object ``{"activities": n, "participants": m}``.

    :param argv: the options (see ``--help``).
    :returns: the exit status.
    """
    parser = _client_parser("expected", "Print what a correct client extracts of a window [start, end) of a running sandbox.")
    parser.add_argument("--start", type=_instant, required=True, help="inclusive start (YYYY-MM-DD, ISO-8601 or epoch ms; UTC)")
    parser.add_argument("--end", type=_instant, required=True, help="exclusive end (YYYY-MM-DD, ISO-8601 or epoch ms; UTC)")
    parser.add_argument("--type", choices=ACTIVITY_TYPES, help="only this activity type")
    parser.add_argument(
        "--by", choices=("timestamp", "created_at"), default="timestamp", help="the bounded field (default timestamp)"
    )
    parser.add_argument("--participants", action="store_true", help="print the participants of those activities instead")
    parser.add_argument("--count-only", action="store_true", help='print {"activities": n, "participants": m} only')
    args = parser.parse_args(argv)
    base_url = _base_url(parser, args.url)
    records = "participants" if args.participants else "activities"
    query = {"start": args.start, "end": args.end, "by": args.by, "records": records}
    if args.type:
        query["type"] = args.type
    if args.count_only:
        query["count"] = "1"
    _write(_call(args, base_url, "GET", f"{ADMIN_EXPECTED_PATH}?{urlencode(query)}"))
    return 0


def expected_export(argv: list[str]) -> int:
    """``expected-export``: print what a correct client keeps of an export job of some days.

    Prints the records as JSON Lines (times as the export files write them), or with
    ``--count-only`` one JSON object ``{"records": n}``.

    :param argv: the options (see ``--help``).
    :returns: the exit status.
    """
    parser = _client_parser(
        "expected-export", "Print the records a correct client keeps of an export job of some days (both inclusive)."
    )
    parser.add_argument("--start-date", type=_day, required=True, help="the job's first day (YYYY-MM-DD)")
    parser.add_argument("--end-date", type=_day, required=True, help="the job's last day (YYYY-MM-DD, inclusive)")
    parser.add_argument("--export-type", choices=EXPORT_TYPES, default="snapshot", help="snapshot or delta (default snapshot)")
    parser.add_argument("--type", choices=EXPORT_ACTIVITY_TYPES, default="all", help="the job's activity_type (default all)")
    parser.add_argument("--count-only", action="store_true", help='print {"records": n} only')
    args = parser.parse_args(argv)
    base_url = _base_url(parser, args.url)
    query = {"start_date": args.start_date, "end_date": args.end_date, "export_type": args.export_type}
    query["activity_type"] = args.type
    if args.count_only:
        query["count"] = "1"
    _write(_call(args, base_url, "GET", f"{ADMIN_EXPECTED_EXPORT_PATH}?{urlencode(query)}"))
    return 0


def stats(argv: list[str]) -> int:
    """``stats``: print a running sandbox's counters as one JSON object: ``requests`` (as
    ``Sandbox.stats``) and ``export`` (as ``Sandbox.export.stats()``: files built, records and
    bytes written, the last build's rate).

    :param argv: the options (see ``--help``).
    :returns: the exit status.
    """
    parser = _client_parser("stats", "Print a running sandbox's request counters and export file build rate (JSON).")
    args = parser.parse_args(argv)
    _write(_call(args, _base_url(parser, args.url), "GET", ADMIN_STATS_PATH))
    return 0


def _write(body: bytes) -> None:
    """Write an answer to stdout as it came (JSON Lines, or one JSON object and a newline)."""
    out = sys.stdout.buffer
    out.write(body if body.endswith(b"\n") or not body else body + b"\n")
    out.flush()


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "serve": serve,
    "add-activities": add_activities,
    "expected": expected,
    "expected-export": expected_export,
    "stats": stats,
}


def main(argv: list[str] | None = None) -> int:
    """The command line's entry point: a subcommand's name first, or ``serve``'s options.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    :returns: the exit status (1 with a message on stderr when a subcommand failed).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    command = COMMANDS.get(args[0]) if args else None
    if command is None:
        return serve(args)
    try:
        return command(args[1:])
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
