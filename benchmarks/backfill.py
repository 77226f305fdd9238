"""The backfill scenario (``--regimes backfill``): many daily tasks on one API key, three ways.

``--backfill-days`` daily intervals (30) of about ``--backfill-records`` activities each, against
the benchmark's sandbox enforcing ``--api-rate`` requests per sliding second (5) with
``--api-latency`` seconds per request (0.1) and pages up to ``--api-max-page`` records (100,000),
extracted by worker processes (:mod:`benchmarks.backfill_worker`) that each run the activities
operator for one day after another, the days taken from one shared queue, with the connection's
defaults:

* ``shared``: ``--backfill-workers`` (4) workers sharing the key's rate budget through Redis
  (the ``rate_limit_redis_conn_id`` extra naming a ``redis`` connection); a ``redis-server`` is
  started on a free loopback port for the scenario, emptied before the run, and stopped after;
* ``serial``: the pool of 1: one worker doing every day in turn;
* ``unshared``: the same number of workers, each with its own per-process limiter.

When the package has no ``rate_limit_redis_conn_id`` extra, or ``redis-server`` is not
installed, the ``shared`` mode is reported as not measurable (and why), not run.

For each mode: the wall time (from the start signal every worker gets at once, after its
imports, to the last day written), the requests and 429s the sandbox answered, the most
requests that arrived in any one second, how long the API was busy (first to last arrival), and
per day whether the rows the operator reported and the rows in the day's Parquet files both
equal the sandbox's count. Two floors: the rate floor of the requests the mode made
(requests answered without 429, token requests included, / rate) and the page floor, the
fewest requests the days need at the largest page (the sum over days of
``ceil(records / largest page)``, / rate).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from airflow_provider_activities.testing.services import RedisServer, free_port, redis_missing, running_redis
from benchmarks.contenders.common import ACTIVITIES_PATH, RESULT_PREFIX, TOKEN_PATH

MODES = ("shared", "serial", "unshared")
"""The ways the backfill runs, in the order they run and are reported."""
SHARED_BUSY_TARGET = 1.25
"""With the shared budget, first to last arrival within this many times ``(requests - 1) / rate``."""

@dataclass
class BackfillRun:
    """One way of running the backfill, as measured (or why it could not be)."""

    mode: str
    label: str
    workers: int
    measured: bool = True
    note: str = ""
    wall_s: float = float("nan")
    requests: int = 0
    server_429s: int = 0
    accepted: int = 0
    max_arrivals_per_second: int = 0
    busy_s: float = float("nan")
    floor_requests_s: float = float("nan")
    floor_pages_s: float = float("nan")
    days: int = 0
    days_exact: int = 0
    rows: int = 0
    expected_rows: int = 0
    peak_rss_mb: float = 0.0
    limits: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """Every day ran, and each day's rows (reported and in Parquet) equal the sandbox's count."""
        return self.measured and self.days > 0 and self.days_exact == self.days


def label(mode: str, workers: int) -> str:
    """What a mode is, in words, for the report."""
    return {
        "shared": f"{workers} workers, one budget shared through Redis",
        "serial": "pool of 1: one worker, one day at a time",
        "unshared": f"{workers} workers, each its own per-process limiter",
    }[mode]


def shared_budget_supported() -> str | None:
    """``None`` when the package reads ``rate_limit_redis_conn_id``, else why the shared mode cannot run."""
    from airflow_provider_activities.api.config import EXTRA_FIELDS

    if "rate_limit_redis_conn_id" not in EXTRA_FIELDS:
        return ("not yet measurable: this version of the package has no `rate_limit_redis_conn_id` connection extra "
                "(its workers would run with per-process limiters, as in the last mode)")
    missing = redis_missing()
    return None if missing is None else f"not measurable here: {missing}"


# ----- Redis ------------------------------------------------------------------------------------------


def flush_redis(server: RedisServer) -> None:
    """Empty the scenario's Redis (no budget left over from an earlier run)."""
    client = server.client()
    try:
        client.flushall()
    finally:
        client.close()


# ----- the sandbox's side ----------------------------------------------------------------------------


def day_counts(sandbox: Any, days: list[date]) -> dict[str, int]:
    """The sandbox's activities in each UTC day."""
    counts = {}
    for day in days:
        start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        query = urllib.parse.urlencode({"start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat()})
        counts[day.isoformat()] = int(sandbox.control(f"/count?{query}")["count"])
    return counts


def warm(sandbox: Any, counts: dict[str, int], page: int, client_id: str, client_secret: str) -> None:
    """Ask every day's pages once, limits off, so that every record is encoded before any mode runs."""
    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
    ).encode()
    with urllib.request.urlopen(urllib.request.Request(sandbox.base_url + TOKEN_PATH, data=form), timeout=60) as answer:
        token = json.loads(answer.read())["access_token"]
    for day, count in counts.items():
        for offset in range(0, max(count, 1), page):
            query = urllib.parse.urlencode({"from": day, "to": day, "offset": offset, "limit": page})
            request = urllib.request.Request(f"{sandbox.base_url}{ACTIVITIES_PATH}?{query}",
                                             headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=300) as answer:
                answer.read()


# ----- one mode ------------------------------------------------------------------------------------


def parquet_rows(out_dir: str, day: str) -> int:
    """Rows in the published Parquet files of ``day`` (every activity type) under the dataset
    roots in ``out_dir`` (``<root>/activity_type=*/activity_date=<day>/``; staging is not looked at).
    """
    import pyarrow.parquet as pq

    files = glob.glob(os.path.join(out_dir, "*", "activity_type=*", f"activity_date={day}", "*.parquet"))
    return sum(pq.ParquetFile(path).metadata.num_rows for path in files)


def _kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL a worker's process group (it runs in its own session), unless it is gone already."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _kill_all(processes: list[subprocess.Popen[str]]) -> None:
    """Kill every worker still running (the scenario's timeout)."""
    for process in processes:
        _kill(process)


def run_workers(
    jobs: list[dict[str, Any]], env: dict[str, str], cwd: str, timeout: float
) -> tuple[list[dict[str, Any]], float, list[str]]:
    """Start one worker per job, wait until all are ready, start them at once, and collect them.

    :return: their result payloads, the largest peak RSS among them (MB), and the stderr tails of
        those that failed.
    """
    processes = []
    errors: list[str] = []
    payloads: list[dict[str, Any]] = []
    peak = 0.0
    with contextlib.ExitStack() as stack:
        for job in jobs:
            err = stack.enter_context(tempfile.TemporaryFile())
            process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.backfill_worker", json.dumps(job)],
                cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                start_new_session=True,
            )
            processes.append((process, err))
        timer = threading.Timer(timeout, lambda: _kill_all([p for p, _ in processes]))
        timer.start()
        try:
            ready = [(p.stdout.readline().strip() if p.stdout else "") == "READY" for p, _ in processes]
            for process, _ in processes:
                if not all(ready):  # one failed to start: none runs
                    _kill(process)
                elif process.stdin:
                    with contextlib.suppress(BrokenPipeError):
                        process.stdin.write("go\n")
                        process.stdin.close()
            for process, err in processes:
                out = process.stdout.read() if process.stdout else ""
                _, status, usage = os.wait4(process.pid, 0)
                process.returncode = os.waitstatus_to_exitcode(status)
                peak = max(peak, usage.ru_maxrss / 1024)
                found = [json.loads(line[len(RESULT_PREFIX):]) for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
                if process.returncode == 0 and found:
                    payloads.append(found[-1])
                else:
                    err.seek(0)
                    tail = err.read().decode(errors="replace").strip().splitlines()
                    errors.append(f"worker exit {process.returncode}: {tail[-1] if tail else 'no output'}")
        finally:
            timer.cancel()
            for process, _ in processes:
                if process.stdout:
                    process.stdout.close()
    return payloads, peak, errors


def run_mode(
    mode: str,
    workers: int,
    sandbox: Any,
    counts: dict[str, int],
    redis: RedisServer | None,
    args: argparse.Namespace,
    env: dict[str, str],
    cwd: str,
) -> BackfillRun:
    """One way of running the backfill, against ``sandbox`` (limits on, counters reset here)."""
    from benchmarks.run import CLIENT_ID, CLIENT_SECRET

    run = BackfillRun(mode, label(mode, workers), workers)
    time.sleep(1.1)  # the sandbox's sliding second empties: no mode inherits the previous one's arrivals
    sandbox.control("/reset", post=True)
    with tempfile.TemporaryDirectory(prefix=f"bench-backfill-{mode}-") as work:
        claims, out = os.path.join(work, "claims"), os.path.join(work, "lake")
        os.makedirs(claims)
        os.makedirs(out)
        jobs = [{"base_url": sandbox.base_url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                 "days": list(counts), "claims_dir": claims, "out_dir": out,
                 "redis": {"host": redis.host, "port": redis.port} if redis else None, "worker": number}
                for number in range(workers)]
        child_env = {**env, "AIRFLOW_HOME": os.path.join(work, "airflow-home")}
        payloads, run.peak_rss_mb, run.errors = run_workers(jobs, child_env, cwd, args.timeout)
        published = {day: parquet_rows(out, day) for day in counts}  # every worker is done: nothing moves
    stats = sandbox.control("/stats")
    counters, log = stats["stats"], stats["log"]
    run.requests = int(counters.get("requests", 0))
    run.server_429s = int(counters.get("429", 0))
    run.accepted = run.requests - run.server_429s
    run.max_arrivals_per_second = int(log["max_arrivals_per_second"])
    if log["first_arrival"] is not None:
        run.busy_s = log["last_arrival"] - log["first_arrival"]
    run.limits = log["limits"]
    run.floor_requests_s = run.accepted / args.api_rate
    run.floor_pages_s = sum(math.ceil(n / args.api_max_page) for n in counts.values()) / args.api_rate
    if payloads:
        run.wall_s = max(p["finished"] for p in payloads) - min(p["started"] for p in payloads)
    done = [entry for p in payloads for entry in p["days"]]
    run.days = len(counts)
    run.expected_rows = sum(counts.values())
    run.rows = sum(entry["rows"] or 0 for entry in done)
    run.days_exact = sum(1 for entry in done
                         if entry["rows"] == counts[entry["day"]] == published[entry["day"]] and not entry["error"])
    run.errors += [f"{entry['day']}: {entry['error']}" for entry in done if entry["error"]]
    missing = sorted(set(counts) - {entry["day"] for entry in done})
    if missing:
        run.errors.append(f"days never run: {', '.join(missing)}")
    return run


def run_backfill(args: argparse.Namespace, env: dict[str, str], log: Any = print) -> dict[str, Any]:
    """The scenario: the sandbox, the warm-up, then every mode of ``args.backfill_modes`` in turn.

    :return: what the report shows: the set-up (days, records, rate, latency, largest page, the
        per-day counts) and one :class:`BackfillRun` per mode (under ``runs``).
    """
    from benchmarks.run import CLIENT_ID, CLIENT_SECRET, REPO, SandboxProcess

    first = date.fromisoformat(args.backfill_start)
    days = [first + timedelta(days=i) for i in range(args.backfill_days)]
    total = args.backfill_days * args.backfill_records
    sandbox = SandboxProcess(total, first, env, days=args.backfill_days, max_page_size=args.api_max_page)
    runs: list[BackfillRun] = []
    try:
        counts = day_counts(sandbox, days)
        started = time.perf_counter()
        warm(sandbox, counts, args.api_max_page, CLIENT_ID, CLIENT_SECRET)
        log(f"[backfill] sandbox: {total:,} activities over {len(days)} days "
            f"({min(counts.values()):,} to {max(counts.values()):,} a day), encoded in {time.perf_counter() - started:.1f} s")
        sandbox.limits(args.api_rate, args.api_latency)
        unsupported = shared_budget_supported()
        with contextlib.ExitStack() as stack:
            redis = None
            if "shared" in args.backfill_modes and unsupported is None:
                redis = stack.enter_context(running_redis(free_port()))
            for mode in args.backfill_modes:
                workers = 1 if mode == "serial" else args.backfill_workers
                if mode == "shared" and (unsupported or redis is None):
                    runs.append(BackfillRun(mode, label(mode, workers), workers, measured=False, note=unsupported or ""))
                    log(f"[backfill] {mode}: {unsupported}")
                    continue
                if mode == "shared" and redis:
                    flush_redis(redis)
                run = run_mode(mode, workers, sandbox, counts, redis if mode == "shared" else None, args, env, str(REPO))
                runs.append(run)
                log(f"[backfill] {mode} ({workers} worker{'s' if workers > 1 else ''}): {run.wall_s:.2f} s "
                    f"(rate floor {run.floor_requests_s:.2f} s), {run.requests} requests, {run.server_429s} 429s, "
                    f"at most {run.max_arrivals_per_second} arrivals in 1 s, {run.days_exact}/{run.days} days exact"
                    + (f"; errors: {run.errors[:3]}" if run.errors else ""))
    finally:
        sandbox.stop()
    return {"days": len(days), "first_day": first.isoformat(), "records": sum(counts.values()),
            "records_per_day_asked": args.backfill_records, "rate": args.api_rate, "latency": args.api_latency,
            "max_page": args.api_max_page, "day_counts": counts, "runs": runs}


# ----- report ----------------------------------------------------------------------------------------


def evaluate(scenario: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The scenario's verdicts: every mode exact; with the shared budget, the issue's targets."""
    checks: list[tuple[str, str, str]] = []
    rate = scenario["rate"]

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    for run in scenario["runs"]:
        if not run.measured:
            checks.append((f"Backfill, {run.label}", run.note, "not measured"))
            continue
        checks.append((f"Backfill, {run.label}: every day exact (rows reported and in Parquet = the sandbox's)",
                       f"{run.days_exact}/{run.days} days", verdict(run.exact)))
        if run.mode == "shared":
            busy_floor = (run.accepted - 1) / rate
            checks.append((f"Backfill, {run.label}: zero 429s", str(run.server_429s), verdict(run.server_429s == 0)))
            checks.append((f"Backfill, {run.label}: at most {rate:g} arrivals in any one second",
                           str(run.max_arrivals_per_second), verdict(run.max_arrivals_per_second <= rate)))
            checks.append((f"Backfill, {run.label}: API busy (first to last arrival) <= {SHARED_BUSY_TARGET}x "
                           f"(requests - 1) / {rate:g} s",
                           f"{run.busy_s:.2f} / {busy_floor:.2f} s = {run.busy_s / busy_floor:.2f}x",
                           verdict(run.busy_s <= SHARED_BUSY_TARGET * busy_floor)))
    return checks


def render(scenario: dict[str, Any], command: str) -> list[str]:
    """The scenario's section of ``latest.md``."""
    counts = scenario["day_counts"]
    page_requests = sum(math.ceil(n / scenario["max_page"]) for n in counts.values())
    lines = [
        "",
        f"## Backfill: {scenario['days']} daily intervals from {scenario['first_day']}, one API key, "
        f"sandbox at {scenario['rate']:g} requests/s and {scenario['latency'] * 1000:.0f} ms",
        "",
        f"Produced by `{command}` (the `backfill` regime). {scenario['records']:,} activities, "
        f"{min(counts.values()):,} to {max(counts.values()):,} a day; pages up to "
        f"{scenario['max_page']:,} records. Each worker is its own process running "
        "`PeopleAIActivitiesToParquetOperator.execute` for one day after another (each day its own `run_id`, "
        "all into one `file://` dataset root), the days taken in order from a queue the workers share; the "
        "connection has no extras but, with the shared budget, `rate_limit_redis_conn_id` (a `redis-server` on "
        "loopback, started for the run). Workers import first and start together; `wall s` is from that start "
        "to the last day written. `rate floor`: the requests the mode made (tokens included, 429s not) / "
        f"{scenario['rate']:g} s; `page floor`: {page_requests} requests (each day's records / the largest page, "
        f"rounded up) / {scenario['rate']:g} s. `busy s`: first to last arrival at the sandbox; "
        "`most in 1 s`: the most arrivals (429s included) in any one second; `peak RSS`: the largest worker's.",
        "",
        "| how | workers | wall s | rate floor s | / rate floor | page floor s | / page floor | requests | 429s "
        "| most in 1 s | busy s | days exact | rows | peak RSS MB | limits asked |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in scenario["runs"]:
        if not run.measured:
            lines.append(f"| {run.label} | {run.workers} | {run.note} |" + " |" * 12)
            continue
        limits = ", ".join(f"{int(limit):,} x{count}" for limit, count in run.limits.items() if limit)
        lines.append("| " + " | ".join([
            run.label, str(run.workers), f"{run.wall_s:.2f}", f"{run.floor_requests_s:.2f}",
            f"{run.wall_s / run.floor_requests_s:.2f}x", f"{run.floor_pages_s:.2f}", f"{run.wall_s / run.floor_pages_s:.2f}x",
            str(run.requests), str(run.server_429s), str(run.max_arrivals_per_second), f"{run.busy_s:.2f}",
            f"{run.days_exact}/{run.days}" + ("" if run.exact else " **NOT EXACT**"),
            f"{run.rows:,}", f"{run.peak_rss_mb:,.0f}", limits,
        ]) + " |")
    errors = [f"{run.mode}: {error}" for run in scenario["runs"] for error in run.errors[:5]]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {error}" for error in errors]
    checks = evaluate(scenario)
    if checks:
        lines += ["", "| target | measured | verdict |", "|---|---|---|"]
        lines += [f"| {name} | {measured} | {verdict} |" for name, measured, verdict in checks]
    return lines


def to_json(scenario: dict[str, Any]) -> dict[str, Any]:
    """The scenario for ``latest.json``."""
    from dataclasses import asdict

    return {**scenario, "runs": [{**asdict(run), "exact": run.exact} for run in scenario["runs"]],
            "targets": evaluate(scenario)}
