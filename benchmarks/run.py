"""Extraction speed and memory of this provider against the alternatives, side by side (issue 7).

``python -m benchmarks.run`` (``make bench BENCH_ARGS=...``) measures, on the same sandbox
data in the same run, five contenders (see :mod:`benchmarks.contenders`):

1. ``provider``: ``PeopleAIActivitiesToParquetOperator.execute`` for one day into ``file://`` Parquet;
2. ``naive``: a ``requests`` offset/limit loop, all records in a list, ``pandas.json_normalize``, ``to_parquet``;
3. ``dlt``: dlt's REST API source (OAuth2 client credentials) to its filesystem destination, Parquet;
4. ``transport``: fetch and ``json.loads`` every page, nothing else;
5. ``transport-arrow``: fetch every page and parse it with ``pyarrow.json.read_json`` (schema
   inferred, not the provider's), nothing else.

The two transports are the transport limit: the faster of them in a regime and size (the
*transport floor*) is the floor for any client of this API on this machine, and the target
"provider wall <= 1.5x transport wall" is taken against it. Both stay in every table, so the
reader sees what each parser costs (``json.loads`` holds the GIL; Arrow's C++ parse does not).

in two regimes:

* ``cpu``: the sandbox with no rate limit and no latency; every contender pages by
  ``--page-size``; the provider's ``requests_per_second`` extra is set far above what it can
  reach, so it never paces; sizes ``--records``;
* ``api``: the sandbox enforcing ``--api-rate`` requests per sliding second (5) and
  ``--api-latency`` seconds per request (0.1), taking pages of up to ``--api-max-page`` records
  (100,000, as the API documents); size ``--api-records``. The provider runs with its
  connection's defaults (no extras: the page sizes it learns, 5 requests/s, 10 in flight); the
  transports ask the largest page; naive and dlt keep ``--page-size``, the fixed size such code
  has. The floor is the larger of the rate floor, ``ceil(records / largest page) / rate``
  seconds, and the CPU floor, the CPU-bound transport floor at the same size in the same run
  (with pages that large the parse, not the rate, can be the limit): the provider and
  ``transport-arrow`` also run CPU-bound at that size when ``--records`` does not have it.
  429s are counted by the sandbox, per contender;

and, with ``--regimes backfill``, the backfill scenario of :mod:`benchmarks.backfill` (30 daily
tasks on one key by 4 workers sharing a Redis budget, by a pool of 1, and by 4 workers without it).

How it measures:

* The sandbox runs in its own process (:mod:`benchmarks.sandbox_server`), one per regime and
  size, holding exactly ``N`` activities in one UTC day (the interval every contender extracts).
  A warm-up pass (bytes only, not a contender) fills its page cache first, so every contender
  is served the same pre-encoded pages; the warm-up's rate is reported as the sandbox's cold
  (generating) rate, and a second bytes-only pass as its warm serving rate.
* Each contender runs in its own fresh child process. Peak RSS comes from the kernel's
  per-child accounting (``os.wait4`` on that child: its ``ru_maxrss``, including anything it
  spawned and reaped), so one contender's memory never masks another's. ``wall s`` is the
  extraction alone, timed in the child after its imports (first request to last file
  written), ``CPU s`` its user + system CPU time (all threads; less sensitive than wall time
  to the machine's other load, which still inflates it through shared caches and cores);
  ``process s`` is the whole child process, timed from outside (interpreter start and imports included: airflow's are ~3 s).
* ``--repeat N`` runs N rounds of every contender in turn and keeps, per contender, the run of
  median wall time.
* Every contender's row count must equal ``N``; a mismatch is flagged in the table. A failed
  or mismatched transport is no floor: the other one is used, or none.
* Fair set-up for every contender: child processes get a bytecode cache
  (``PYTHONPYCACHEPREFIX``, outside the repo; this environment sets ``PYTHONDONTWRITEBYTECODE``,
  which would make every lazy import compile from source inside the timing), and each
  contender first runs once, unmeasured, on a tiny sandbox (``--no-prime`` skips it). pandas is
  hidden from the provider and dlt children: it is installed only for the naive contender (the
  ``bench`` extra), and pyarrow would otherwise import it (1.3-1.5 s) on its first ``pa.array``.

Writes ``benchmarks/results/latest.md`` (the table, ratios, machine and versions, targets met
or missed), ``latest.json`` and ``latest.png`` (records/s and peak RSS against size), and prints
the Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import export_bench
from benchmarks.contenders import CONTENDER_OPTIONS, CONTENDERS, MODULES, TRANSPORTS
from benchmarks.contenders.common import RESULT_PREFIX, Spec
from benchmarks.rounds import median_run
from benchmarks.servers import ServerProcess

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CLIENT_ID = "sandbox-client-id"
CLIENT_SECRET = "sandbox-client-secret"
PRIME_RECORDS = 2000
DEFAULT_CONCURRENCY = 10
"""Requests in flight for the provider and the transport limit: the provider's default
``max_concurrency`` (the API's allowance)."""

TARGETS = {
    "cpu_vs_naive": 3.0,
    "cpu_vs_dlt": 1.5,
    "cpu_vs_transport_wall": 1.5,
    "memory_flat": 1.2,
    "memory_vs_naive": 0.25,
    "api_vs_floor": 1.15,
    "api_memory_vs_cpu": 1.2,
}
CPU_FOR_API = ("provider", "transport-arrow")
"""Run CPU-bound at the API-bound size: the CPU floor (the transport floor there) and the memory
target (the CPU-bound provider's peak RSS) of the API-bound regime."""


@dataclass
class Result:
    """One contender run (the median of ``--repeat`` runs by wall time)."""

    contender: str
    regime: str
    records: int
    rows: int
    wall_s: float
    process_s: float
    cpu_s: float
    peak_rss_mb: float
    baseline_rss_mb: float
    requests: int = 0
    server_429s: int = 0
    client_429s: int | None = None
    exit_code: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.rows == self.records

    @property
    def records_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s > 0 else 0.0


# ----- the sandbox process --------------------------------------------------------------------------


class SandboxProcess(ServerProcess):
    """:mod:`benchmarks.sandbox_server` in its own process, with its control port."""

    def __init__(
        self, activities: int, day: date, env: dict[str, str], days: int = 1, max_page_size: int | None = None
    ) -> None:
        self.activities = activities
        self.day = day
        pages = [] if max_page_size is None else ["--max-page-size", str(max_page_size)]
        args = ["--activities", str(activities), "--days", str(days), "--start", day.isoformat(), *pages]
        super().__init__("benchmarks.sandbox_server", args, env, lambda lines: len(lines) >= 3, "sandbox process")
        self.base_url = self.lines["PEOPLEAI_SANDBOX_URL"]
        self.control_url = self.lines["BENCH_CONTROL_URL"]

    def control(self, path: str, post: bool = False) -> dict[str, Any]:
        request = urllib.request.Request(self.control_url + path, data=b"" if post else None, method="POST" if post else "GET")
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def limits(self, rate_limit: float | None, latency: float) -> None:
        self.control(f"/config?rate_limit={rate_limit if rate_limit else 'none'}&latency={latency}", post=True)


# ----- one contender run -----------------------------------------------------------------------------


def run_child(
    module: str, spec: Spec, env: dict[str, str], timeout: float
) -> tuple[dict[str, Any] | None, float, Any, int, str]:
    """Run ``python -m <module> <spec>`` in a fresh process; wait for it with ``os.wait4``.

    :return: its result payload (or ``None``), the process wall seconds, its resource usage
        (``ru_maxrss``: peak RSS in KiB of that child alone; ``ru_utime + ru_stime``: its CPU
        seconds), its exit code and the tail of its stderr.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", module, spec.to_json()],
            cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True,
        )
        timer = threading.Timer(timeout, lambda: os.killpg(process.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        process.returncode = code  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        payload = None
        for line in out.read().decode(errors="replace").splitlines():
            if line.startswith(RESULT_PREFIX):
                payload = json.loads(line[len(RESULT_PREFIX):])
        tail = err.read().decode(errors="replace")[-3000:]
    return payload, seconds, usage, code, tail


def measure(
    contender: str,
    regime: str,
    records: int,
    sandbox: SandboxProcess,
    spec: Spec,
    env: dict[str, str],
    timeout: float,
) -> Result:
    """One contender run against ``sandbox``, with the 429s the sandbox answered it."""
    sandbox.control("/reset", post=True)
    with tempfile.TemporaryDirectory(prefix=f"bench-{contender}-") as out_dir:
        options = {**CONTENDER_OPTIONS.get(contender, {}), **spec.options}
        spec = Spec(**{**asdict(spec), "out_dir": out_dir, "options": options})
        child_env = {**env, "AIRFLOW_HOME": os.path.join(out_dir, "airflow-home")}
        payload, seconds, usage, code, tail = run_child(MODULES[contender], spec, child_env, timeout)
    answer = sandbox.control("/stats")
    stats = answer["stats"]
    payload = payload or {}
    return Result(
        contender=contender,
        regime=regime,
        records=records,
        rows=int(payload.get("rows", -1)),
        wall_s=float(payload.get("extract_seconds", float("nan"))),
        process_s=seconds,
        cpu_s=float(payload.get("extract_cpu_seconds", float("nan"))),
        peak_rss_mb=usage.ru_maxrss / 1024,
        baseline_rss_mb=payload.get("baseline_rss_kb", 0) / 1024,
        requests=int(stats.get("requests", 0)),
        server_429s=int(stats.get("429", 0)),
        client_429s=payload.get("client_429s"),
        exit_code=code,
        error=None if code == 0 and payload else tail.strip().splitlines()[-1] if tail.strip() else f"exit {code}",
        extra={**{k: v for k, v in payload.items()
                  if k not in ("rows", "extract_seconds", "extract_cpu_seconds", "baseline_rss_kb", "client_429s")},
               "limits": answer["log"]["limits"]},
    )


# ----- the benchmark ---------------------------------------------------------------------------------


@dataclass
class SandboxRate:
    """The sandbox's own serving rates for one size (bytes read, not parsed, 10 connections)."""

    regime: str
    records: int
    cold_records_per_s: float
    warm_records_per_s: float
    warm_mb_per_s: float


def prime(args: argparse.Namespace, env: dict[str, str], day: date, log: Any) -> None:
    """Run every contender once on a tiny sandbox, unmeasured: fills the bytecode cache, smoke-tests."""
    sandbox = SandboxProcess(PRIME_RECORDS, day, env)
    try:
        spec = Spec(base_url=sandbox.base_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, day=day.isoformat(),
                    page_size=args.page_size, concurrency=args.concurrency, requests_per_second=None, out_dir="",
                    expected=PRIME_RECORDS)
        for contender in args.contenders:
            result = measure(contender, "prime", PRIME_RECORDS, sandbox, spec, env, args.timeout)
            if not result.ok:
                raise RuntimeError(f"{contender} failed on {PRIME_RECORDS} records: {result.error}")
        log(f"primed {', '.join(args.contenders)} on {PRIME_RECORDS:,} records (unmeasured)")
    finally:
        sandbox.stop()


def child_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of every child process (sandbox, contenders, backfill workers)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    # Bytecode caches, as any deployment has them: without them (PYTHONDONTWRITEBYTECODE=1) every
    # module a contender imports lazily during its run (boto3 through Airflow's filesystem
    # discovery, dlt's loaders...) is compiled from source inside its timing. Kept outside the repo.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(args.pycache)
    return env


def api_plans(args: argparse.Namespace) -> list[tuple[str, int, list[str]]]:
    """The API-bound run, preceded by the CPU-bound run at its size when ``--records`` lacks it.

    The API-bound floor needs the CPU-bound transport floor at the same size, and its memory
    target the CPU-bound provider: :data:`CPU_FOR_API` run there, whatever ``--contenders`` says.
    """
    plans: list[tuple[str, int, list[str]]] = []
    if not ("cpu" in args.regimes and args.api_records in args.records):
        plans.append(("cpu", args.api_records, list(CPU_FOR_API)))
    plans.append(("api", args.api_records, list(args.contenders)))
    return plans


def api_spec(base: Spec, contender: str, args: argparse.Namespace) -> Spec:
    """What ``contender`` runs with in the API-bound regime.

    The provider: its connection's defaults (no extras: page sizes learnt from the server, 5
    requests/s, 10 in flight). The transports: the largest page the sandbox takes (the page
    size the rate floor assumes). naive and dlt: ``--page-size``, a fixed size as such code has.
    """
    if contender == "provider":
        return replace(base, options={**base.options, "connection_defaults": True})
    if contender in TRANSPORTS:
        return replace(base, page_size=args.api_max_page)
    return base


def run_benchmark(args: argparse.Namespace, log: Any = print) -> tuple[list[Result], list[SandboxRate]]:
    env = child_env(args)
    day = date.fromisoformat(args.day)
    plans: list[tuple[str, int, list[str]]] = []
    if "cpu" in args.regimes:
        plans += [("cpu", n, list(args.contenders)) for n in args.records]
    if "api" in args.regimes:
        plans += api_plans(args)
    if args.prime and plans:
        prime(args, env, day, log)
    results: list[Result] = []
    rates: list[SandboxRate] = []
    for regime, records, contenders in plans:
        sandbox = SandboxProcess(records, day, env, max_page_size=args.api_max_page)
        try:
            base = Spec(
                base_url=sandbox.base_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, day=day.isoformat(),
                page_size=args.page_size, concurrency=args.concurrency, requests_per_second=None, out_dir="",
                expected=records,
            )
            bytes_only = Spec(**{**asdict(base), "options": {"parse": False}})
            cold = measure("transport", regime, records, sandbox, bytes_only, env, args.timeout)
            warm = measure("transport", regime, records, sandbox, bytes_only, env, args.timeout)
            if not (cold.ok and warm.ok):
                raise RuntimeError(f"the sandbox warm-up failed: {cold.error or warm.error}")
            rate = SandboxRate(regime, records, cold.records_per_s, warm.records_per_s,
                               warm.extra.get("bytes", 0) / 1e6 / warm.wall_s)
            rates.append(rate)
            log(f"[{regime} {records:,}] sandbox: cold {rate.cold_records_per_s:,.0f} records/s (generating), "
                f"warm {rate.warm_records_per_s:,.0f} records/s, {rate.warm_mb_per_s:,.0f} MB/s (cached pages, bytes only)")
            if regime == "api":
                sandbox.limits(args.api_rate, args.api_latency)
                base = Spec(**{**asdict(base), "requests_per_second": args.api_rate})
            # Rounds of every contender in turn (not every run of one contender, then the next), so a
            # change in the machine's load during the run falls on every contender alike.
            runs: dict[str, list[Result]] = {contender: [] for contender in contenders}
            for _ in range(args.repeat):
                for contender in contenders:
                    spec = api_spec(base, contender, args) if regime == "api" else base
                    result = measure(contender, regime, records, sandbox, spec, env, args.timeout)
                    runs[contender].append(result)
                    log(f"[{regime} {records:,}] {contender}: {result.rows:,} rows, {result.wall_s:.2f} s, "
                        f"{result.records_per_s:,.0f} records/s, CPU {result.cpu_s:.1f} s, "
                        f"peak RSS {result.peak_rss_mb:,.0f} MB, 429s {result.server_429s}"
                        + (f"  FAILED: {result.error}" if not result.ok else ""))
            results += [median_run(runs[contender]) for contender in contenders]
        finally:
            sandbox.stop()
    return results, rates


# ----- report ----------------------------------------------------------------------------------------


def _find(results: list[Result], contender: str, regime: str, records: int) -> Result | None:
    for result in results:
        if (result.contender, result.regime, result.records) == (contender, regime, records) and result.ok:
            return result
    return None


def transport_floor(results: list[Result], regime: str, records: int) -> Result | None:
    """The transport floor: the faster (by wall time) of the transports that extracted every row in this regime and size."""
    found = [r for r in (_find(results, contender, regime, records) for contender in TRANSPORTS) if r]
    return min(found, key=lambda r: r.wall_s) if found else None


def transport_floors(results: list[Result]) -> list[dict[str, Any]]:
    """Per regime and size: which transport was the floor, its wall time and records/s."""
    floors = []
    for regime, records in dict.fromkeys((r.regime, r.records) for r in results):
        floor = transport_floor(results, regime, records)
        if floor:
            floors.append({"regime": regime, "records": records, "contender": floor.contender,
                           "wall_s": floor.wall_s, "records_per_s": floor.records_per_s})
    return floors


@dataclass
class ApiFloor:
    """The API-bound floor at one size: the larger of the rate floor and the CPU floor.

    :param records: the size.
    :param pages: ``ceil(records / largest page)``: the fewest data requests the records need.
    :param rate_s: the rate floor, ``pages / rate`` seconds (the token request not counted).
    :param cpu_s: the CPU floor: the wall time of the CPU-bound transport floor at this size in
        this run (with pages that large the parse, not the rate, can be the limit), or ``None``
        when it was not measured.
    :param cpu_contender: which transport that was.
    """

    records: int
    pages: int
    rate_s: float
    cpu_s: float | None
    cpu_contender: str | None

    @property
    def seconds(self) -> float:
        """The floor: the larger of the two (the rate floor alone when the CPU floor is missing)."""
        return max(self.rate_s, self.cpu_s or 0.0)

    @property
    def bound(self) -> str:
        """Which limit sets the floor: ``rate`` or ``CPU``."""
        return "CPU" if self.cpu_s is not None and self.cpu_s > self.rate_s else "rate"


def api_floor(results: list[Result], args: argparse.Namespace) -> ApiFloor:
    """The API-bound floor at ``--api-records``, from the largest page, the rate and this run's CPU-bound transports."""
    pages = math.ceil(args.api_records / args.api_max_page)
    cpu = transport_floor(results, "cpu", args.api_records)
    return ApiFloor(args.api_records, pages, pages / args.api_rate, cpu.wall_s if cpu else None,
                    cpu.contender if cpu else None)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("airflow-provider-activities", "apache-airflow", "pyarrow", "pandas", "dlt", "requests"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory": memory, "platform": platform.platform()}


def _fmt_ratio(value: float | None, bold: bool = False) -> str:
    if value is None:
        return ""
    return f"**{value:.2f}x**" if bold else f"{value:.2f}x"


def evaluate(results: list[Result], args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """Each target of the issue: (target, measured, met / missed / not measured)."""
    checks: list[tuple[str, str, str]] = []
    cpu_sizes = sorted({r.records for r in results if r.regime == "cpu"})

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    for n in cpu_sizes:
        p, naive, dlt_ = (_find(results, c, "cpu", n) for c in ("provider", "naive", "dlt"))
        transports = [r for r in (_find(results, c, "cpu", n) for c in TRANSPORTS) if r]
        floor = transport_floor(results, "cpu", n)
        if p and naive:
            ratio = p.records_per_s / naive.records_per_s
            checks.append((f"CPU {n:,}: provider records/s >= {TARGETS['cpu_vs_naive']}x naive", f"{ratio:.2f}x",
                           verdict(ratio >= TARGETS["cpu_vs_naive"])))
        if p and dlt_:
            ratio = p.records_per_s / dlt_.records_per_s
            checks.append((f"CPU {n:,}: provider records/s >= {TARGETS['cpu_vs_dlt']}x dlt", f"{ratio:.2f}x",
                           verdict(ratio >= TARGETS["cpu_vs_dlt"])))
        if p and floor:
            ratio = p.wall_s / floor.wall_s
            which = "the faster transport" if len(transports) > 1 else "the only transport run"
            checks.append((f"CPU {n:,}: provider wall <= {TARGETS['cpu_vs_transport_wall']}x the transport floor's wall "
                           f"({which}: `{floor.contender}`)",
                           f"{p.wall_s:.2f} / {floor.wall_s:.2f} s = {ratio:.2f}x",
                           verdict(ratio <= TARGETS["cpu_vs_transport_wall"])))
        if naive and transports:
            # A client is not expected to outrun the floor: "3x naive" is within reach only if the floor is above 3x.
            checks.append((f"CPU {n:,}, for reference (no target): the transports' records/s against naive's "
                           f"({TARGETS['cpu_vs_naive']}x naive is out of reach when the floor is below "
                           f"{TARGETS['cpu_vs_naive']}x)",
                           ", ".join(f"`{t.contender}` {t.records_per_s / naive.records_per_s:.2f}x"
                                     + (" (floor)" if t is floor and len(transports) > 1 else "")
                                     for t in transports),
                           "reference"))
    big = [n for n in cpu_sizes if n >= 1_000_000]
    small = [n for n in cpu_sizes if n <= 100_000]
    if big and small:
        high, low = big[0], small[-1]
        p_high, p_low = _find(results, "provider", "cpu", high), _find(results, "provider", "cpu", low)
        if p_high and p_low:
            ratio = p_high.peak_rss_mb / p_low.peak_rss_mb
            checks.append((f"Memory: provider peak RSS at {high:,} <= {TARGETS['memory_flat']}x at {low:,}",
                           f"{p_high.peak_rss_mb:,.0f} / {p_low.peak_rss_mb:,.0f} MB = {ratio:.2f}x",
                           verdict(ratio <= TARGETS["memory_flat"])))
        naive_high = _find(results, "naive", "cpu", high)
        if p_high and naive_high:
            ratio = p_high.peak_rss_mb / naive_high.peak_rss_mb
            checks.append((f"Memory: provider peak RSS at {high:,} <= 1/4 of naive's",
                           f"{p_high.peak_rss_mb:,.0f} / {naive_high.peak_rss_mb:,.0f} MB = {ratio:.2f}",
                           verdict(ratio <= TARGETS["memory_vs_naive"])))
    checks += evaluate_api(results, args, verdict)
    return checks


def evaluate_api(results: list[Result], args: argparse.Namespace, verdict: Any) -> list[tuple[str, str, str]]:
    """The API-bound targets: wall against the floor, no 429s, memory against the CPU-bound run."""
    n = args.api_records
    api = _find(results, "provider", "api", n)
    if not api:
        return []
    floor = api_floor(results, args)
    name = (f"API-bound {n:,}, connection defaults: provider wall <= {TARGETS['api_vs_floor']}x the floor, the larger "
            f"of the rate floor ({floor.pages} page(s) of up to {args.api_max_page:,} / {args.api_rate:g} s) and the CPU "
            f"floor (the CPU-bound transport floor at {n:,})")
    if floor.cpu_s is None:
        checks = [(name, "the CPU-bound transport floor at this size failed or was not run", "not measured")]
    else:
        ratio = api.wall_s / floor.seconds
        checks = [(name, f"{api.wall_s:.2f} / max({floor.rate_s:.2f}, {floor.cpu_s:.2f}) s = {ratio:.2f}x "
                         f"({floor.bound}-bound floor)", verdict(ratio <= TARGETS["api_vs_floor"]))]
    checks.append((f"API-bound {n:,}: zero 429s received by the provider", str(api.server_429s),
                   verdict(api.server_429s == 0)))
    cpu = _find(results, "provider", "cpu", n)
    name = f"API-bound {n:,}: provider peak RSS <= {TARGETS['api_memory_vs_cpu']}x the CPU-bound provider's at {n:,}"
    if cpu is None:
        checks.append((name, "the CPU-bound provider at this size failed or was not run", "not measured"))
    else:
        ratio = api.peak_rss_mb / cpu.peak_rss_mb
        checks.append((name, f"{api.peak_rss_mb:,.0f} / {cpu.peak_rss_mb:,.0f} MB = {ratio:.2f}x",
                       verdict(ratio <= TARGETS["api_memory_vs_cpu"])))
    return checks


def render_header(args: argparse.Namespace, command: str) -> list[str]:
    """The report's title, command, machine, versions and load."""
    info = machine()
    vers = versions()
    return [
        "# Benchmark: extraction speed and memory against the alternatives",
        "",
        f"Produced by `{command}` on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory']} RAM, {info['platform']}.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + ".  ",
        "Load average (1 min) when the run started and ended: "
        + " and ".join(f"{value:.2f}" for value in getattr(args, "load", [])) + " (the benchmark keeps 1 to 2 CPUs "
        "busy itself; more is other work on the machine competing for its CPUs).",
    ]


def render(results: list[Result], rates: list[SandboxRate], args: argparse.Namespace, command: str) -> str:
    lines = render_header(args, command)
    lines += [
        "",
        f"CPU-bound: page size {args.page_size} for every contender; provider and both transports with {args.concurrency} "
        "requests in flight (the provider's default `max_concurrency`); naive and dlt page sequentially (their own way). "
        "API-bound: the provider with its connection's defaults (no extras: page sizes learnt from the server's "
        "answers, 5 requests/s, 10 in flight); the transports with the largest page the sandbox takes "
        f"({args.api_max_page:,}, the page size the rate floor assumes) and {args.concurrency} in flight; naive and "
        f"dlt with page size {args.page_size}, the fixed size such code is written with. "
        "Each contender in its own fresh process; `wall s` is the extraction in that process after its imports, "
        "`CPU s` the CPU time of that extraction (user + system, every thread of the process: less sensitive "
        "than the wall time to what else the machine runs, not immune to it), "
        "`process s` the whole process seen from outside (imports included); peak RSS is the child's `ru_maxrss` "
        "from `os.wait4`, including its imports (`import MB`: RSS when the extraction started). "
        "429s are counted by the sandbox. Ratios are taken within the same regime and size: "
        "`x naive`, `x dlt` compare records/s (higher is better); `/ transport (json)`, `/ transport (arrow)` and "
        "`/ API floor` compare wall time (lower is better) with `transport`, `transport-arrow` and, API-bound, "
        "the API-bound floor (below the table). The ratio in **bold** is the one to the transport floor: the faster "
        "of the two transports in that regime and size, which the transport target uses.",
        f"Each row is the run of median wall time out of {args.repeat}.",
        "",
        "How each contender is set up: the provider runs `PeopleAIActivitiesToParquetOperator.execute({'run_id': 'bench'})` "
        "for the day into `file://` (CPU-bound: connection extras `page_size`, `max_concurrency`, and "
        "`requests_per_second` 10000; API-bound: no extras at all); naive is a sequential `requests` loop "
        "(bearer token fetched first, 1 s sleep on a 429), `pandas.json_normalize`, `to_parquet`; dlt is "
        "`rest_api_source` with dlt's own `OAuth2ClientCredentials` auth, an `OffsetPaginator` on `meta.total`, "
        "and `pipeline.run(..., loader_file_format=\"parquet\")` into the filesystem destination (its default "
        "normaliser, which unnests the two list columns into child tables; rows counted in the root table); "
        "the two transports (the transport limit) fetch page 0, then every other page through a `requests` pool "
        "of the same size as the provider's, parse each page and drop it, nothing converted or written "
        "(API-bound: one request every 1.02/rate s): `transport` with `json.loads` (rows: `len(page['data'])`; "
        "it holds the GIL), `transport-arrow` with `pyarrow.json.read_json` on the whole body as one block "
        "(`use_threads=False`, schema inferred from the page, not the provider's schema or code; rows: the "
        "`data` column's list lengths; the C++ parse releases the GIL, so the pool's threads parse in parallel). "
        "The faster of the two is the transport floor for any client of this API on this machine. "
        "The provider, dlt and `transport-arrow` run without pandas (not a dependency of any of them; pyarrow "
        "would import it lazily). "
        "The sandbox encodes every record once and keeps it (a page of any size is a join of cached records), "
        "and is warmed before the contenders run.",
        "",
        "| contender | regime | records | rows | wall s | records/s | CPU s | peak RSS MB | import MB | process s "
        "| 429s | x naive | x dlt | / transport (json) | / transport (arrow) | / API floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        naive = _find(results, "naive", r.regime, r.records)
        dlt_ = _find(results, "dlt", r.regime, r.records)
        transports = [_find(results, contender, r.regime, r.records) for contender in TRANSPORTS]
        lowest = transport_floor(results, r.regime, r.records)
        ok = r.ok
        floor = api_floor(results, args).seconds if r.regime == "api" else None
        lines.append(
            "| " + " | ".join([
                r.contender,
                r.regime + (f" ({args.api_rate:g}/s, {args.api_latency * 1000:.0f} ms)" if r.regime == "api" else ""),
                f"{r.records:,}",
                f"{r.rows:,}" + ("" if ok else " **MISMATCH**" if r.exit_code == 0 else f" **FAILED** ({r.error})"),
                f"{r.wall_s:.2f}",
                f"{r.records_per_s:,.0f}",
                f"{r.cpu_s:.2f}",
                f"{r.peak_rss_mb:,.0f}",
                f"{r.baseline_rss_mb:,.0f}",
                f"{r.process_s:.1f}",
                str(r.server_429s),
                _fmt_ratio(r.records_per_s / naive.records_per_s if ok and naive else None),
                _fmt_ratio(r.records_per_s / dlt_.records_per_s if ok and dlt_ else None),
                *(_fmt_ratio(r.wall_s / t.wall_s if ok and t else None, bold=t is not None and t is lowest)
                  for t in transports),
                _fmt_ratio(r.wall_s / floor if ok and floor else None),
            ]) + " |"
        )
    if rates:
        lines += [
            "",
            "Sandbox serving rate (its own process; bytes read and dropped, 10 connections). "
            "Cold is the warm-up pass that generates and encodes every page; warm is the same pages from its cache, "
            "which is what every contender was served:",
            "",
            "| regime | records | cold records/s | warm records/s | warm MB/s |",
            "|---|---:|---:|---:|---:|",
        ]
        for rate in rates:
            lines.append(f"| {rate.regime} | {rate.records:,} | {rate.cold_records_per_s:,.0f} | "
                         f"{rate.warm_records_per_s:,.0f} | {rate.warm_mb_per_s:,.0f} |")
    checks = evaluate(results, args)
    if checks:
        lines += ["", "Targets (issue 7):", "", "| target | measured | verdict |", "|---|---|---|"]
        lines += [f"| {name} | {measured} | {verdict} |" for name, measured, verdict in checks]
    if "api" in args.regimes:
        lines += render_api(results, args)
    return "\n".join(lines) + "\n"


def render_api(results: list[Result], args: argparse.Namespace) -> list[str]:
    """The API-bound floor, and the pages each contender asked for."""
    floor = api_floor(results, args)
    cpu = (f"{floor.cpu_s:.2f} s, the wall time of `{floor.cpu_contender}` CPU-bound at {floor.records:,} records in "
           "this run" if floor.cpu_s is not None else "not measured")
    lines = ["", f"API-bound floor at {floor.records:,} records: the larger of the rate floor, {floor.pages} page(s) of "
                 f"up to {args.api_max_page:,} (the largest page the sandbox takes, as the API documents) / "
                 f"{args.api_rate:g} requests/s = {floor.rate_s:.2f} s (the token request not counted), and the CPU "
                 f"floor, {cpu}: **{floor.seconds:.2f} s** ({floor.bound}-bound)."]
    if not ("cpu" in args.regimes and args.api_records in args.records):
        lines[-1] += (f" The CPU-bound run at {floor.records:,} ({', '.join(CPU_FOR_API)} only) was run for this floor "
                      "and the memory target.")
    asked = [(r.contender, r.extra.get("limits") or {}) for r in results if r.regime == "api"]
    if asked:
        lines += ["", "Pages asked in the API-bound regime (`limit` of each data request answered 200, as the sandbox "
                      "logged them): " + "; ".join(
                          f"{contender} " + ", ".join(f"{int(limit):,} x{count}" for limit, count in limits.items() if limit)
                          for contender, limits in asked) + "."]
    return lines


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cpu = [r for r in results if r.regime == "cpu" and r.ok]
    figure, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for contender in dict.fromkeys(r.contender for r in cpu):
        mine = sorted((r for r in cpu if r.contender == contender), key=lambda r: r.records)
        if not mine:
            continue
        sizes = [r.records for r in mine]
        style = {"marker": "o", "label": contender, "linestyle": "--" if contender in TRANSPORTS else "-"}
        speed.plot(sizes, [r.records_per_s for r in mine], **style)
        memory.plot(sizes, [r.peak_rss_mb for r in mine], **style)
    for axis, title, unit in ((speed, "records/s (CPU-bound)", "records/s"), (memory, "peak RSS (CPU-bound)", "MB")):
        axis.set_xscale("log")
        axis.set_xlabel("records in the interval")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    memory.set_yscale("log")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ----- command line ----------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(float(part)) for part in text.replace("_", "").split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=_ints, default=[100_000, 1_000_000],
                        help="CPU-bound sizes, comma separated (default 100000,1000000; add 2000000 when time allows)")
    parser.add_argument("--regimes", type=lambda t: t.split(","), default=["cpu", "api"],
                        help="cpu,api,export,backfill (default cpu,api; see benchmarks.export_bench, benchmarks.backfill)")
    parser.add_argument("--contenders", type=lambda t: t.split(","), default=list(CONTENDERS),
                        help=f"subset of {','.join(CONTENDERS)} (default all; the transport floor is the "
                             "faster of the transports run)")
    parser.add_argument("--api-records", type=int, default=300_000,
                        help="API-bound size (default 300000: 300 pages, a 60 s floor)")
    parser.add_argument("--api-rate", type=float, default=5.0, help="sandbox rate limit in the API-bound regime")
    parser.add_argument("--api-latency", type=float, default=0.1, help="sandbox latency per request in the API-bound regime")
    parser.add_argument("--api-max-page", type=int, default=100_000,
                        help="the largest page (limit) the sandbox takes; above it 400 "
                             "(default 100000, the API's documented maximum)")
    parser.add_argument("--backfill-days", type=int, default=30, help="backfill: daily intervals (default 30)")
    parser.add_argument("--backfill-records", type=int, default=10_000,
                        help="backfill: activities per day on average (default 10000; weekdays hold more)")
    parser.add_argument("--backfill-workers", type=int, default=4, help="backfill: parallel workers (default 4)")
    parser.add_argument("--backfill-modes", type=lambda t: t.split(","), default=["shared", "serial", "unshared"],
                        help="backfill: subset of shared,serial,unshared (default all three)")
    parser.add_argument("--backfill-start", default="2026-11-02", help="backfill: the first day")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender and size; the median is kept")
    parser.add_argument("--day", default="2026-11-02", help="the UTC day holding every record")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a contender process is killed")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.md/.json/.png go")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--no-prime", dest="prime", action="store_false",
                        help="skip the unmeasured run of each contender on a tiny sandbox (fills the bytecode cache)")
    parser.add_argument("--pycache", type=Path, default=Path(tempfile.gettempdir()) / "peopleai-bench-pycache",
                        help="PYTHONPYCACHEPREFIX for the child processes")
    export_bench.add_arguments(parser)
    args = parser.parse_args(argv)
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    unknown = set(args.regimes) - {"cpu", "api", "export", "backfill"}
    if unknown:
        parser.error(f"unknown regimes: {', '.join(sorted(unknown))}")
    unknown = set(args.backfill_modes) - {"shared", "serial", "unshared"}
    if unknown:
        parser.error(f"unknown backfill modes: {', '.join(sorted(unknown))}")
    return args


def run_backfill(args: argparse.Namespace) -> dict[str, Any] | None:
    """The backfill scenario (:mod:`benchmarks.backfill`) when ``--regimes`` has ``backfill``."""
    if "backfill" not in args.regimes:
        return None
    from benchmarks import backfill  # it imports this module: imported when used

    return backfill.run_backfill(args, child_env(args))


def main(argv: Sequence[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if "export" in args.regimes:
        load = [os.getloadavg()[0]]
        exported, files = export_bench.run_export(args, child_env(args), run_child)
        load.append(os.getloadavg()[0])
        context = {"machine": machine(), "load": load, "versions": versions()}
        print()
        print(export_bench.write(exported, files, args, command.strip(), context))
        if not set(args.regimes) - {"export"}:
            if not all(r.ok for r in exported):
                raise SystemExit(1)
            return []
    args.load = [os.getloadavg()[0]]
    results, rates = run_benchmark(args)
    scenario = run_backfill(args)
    args.load.append(os.getloadavg()[0])
    report = render(results, rates, args, command.strip()) if results else "\n".join(render_header(args, command)) + "\n"
    saved: dict[str, Any] = {
        "command": command.strip(),
        "machine": machine(),
        "load_average_start_end": args.load,
        "versions": versions(),
        "results": [{**asdict(r), "records_per_s": r.records_per_s, "ok": r.ok} for r in results],
        "sandbox_rates": [asdict(rate) for rate in rates],
        "targets": evaluate(results, args),
        "transport_floors": transport_floors(results),
    }
    if "api" in args.regimes:
        floor = api_floor(results, args)
        saved["api_floor"] = {**asdict(floor), "seconds": floor.seconds, "bound": floor.bound,
                              "max_page": args.api_max_page, "rate": args.api_rate}
    if scenario is not None:
        from benchmarks import backfill

        report += "\n".join(backfill.render(scenario, command.strip())) + "\n"
        saved["backfill"] = backfill.to_json(scenario)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(report)
    (args.out / "latest.json").write_text(json.dumps(saved, indent=2))
    if not args.no_plot and any(r.regime == "cpu" for r in results):
        plot(results, args.out / "latest.png")
    print()
    print(report)
    return results


if __name__ == "__main__":
    outcome = main()
    sys.exit(0 if all(r.ok for r in outcome) else 1)
