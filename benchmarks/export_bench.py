"""The ``export`` regime of ``python -m benchmarks.run``: the bulk export operator against a naive
client and the ``pyarrow.json`` floor, on the same file (issue 16).

``python -m benchmarks.run --regimes export`` runs, for each size of ``--export-records``, an
export sandbox (:mod:`benchmarks.export_server`) holding one snapshot file of that many
activities over ``--export-days`` days, and three contenders on it, each in its own process
(:mod:`benchmarks.contenders`):

1. ``provider``: ``PeopleAIExportActivitiesToParquetOperator.execute``, snapshot, not deferrable,
   ``poll_interval`` 0.01 s: its own job, polls, the download, conversion, per-day partitions;
2. ``naive``: the job by hand with ``requests``, the body in memory, ``json.loads`` per line,
   ``pandas.json_normalize``, ``to_parquet``; it runs only up to ``--export-naive-max`` records
   (its memory grows with the file: tens of GB at a million records);
3. ``floor``: the job by hand, the body streamed to disk, ``pyarrow.json.read_json`` of the
   gunzipped stream with an inferred schema, one zstd Parquet file.

Then the provider alone on a ``--export-flat-days`` run with the same records per day (the
memory check across run lengths). Every contender downloads the same file through the same
flow (token, job, first poll completes it, data request, redirect to the file host), so the
serving is the same for all; its rate is measured first, bytes only, and reported.

Peak RSS, wall, CPU and process time are measured as in the other regimes (``os.wait4`` on each
child; the child's own clock after its imports). With ``--export-check-max`` or fewer records,
the provider's partitions are compared with the sandbox's ground truth after its clock stopped
(every row of every day, nested values and order included).

Writes ``export-latest.md`` and ``export-latest.json`` next to the other results.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.contenders.export_common import ExportSpec, lake_digests
from benchmarks.export_server import CLIENT_ID, CLIENT_SECRET, DEFAULT_CACHE
from benchmarks.rounds import median_run
from benchmarks.servers import ServerProcess

REPO = Path(__file__).resolve().parent.parent
CONTENDERS = ("provider", "naive", "floor")
MODULES = {
    "provider": "benchmarks.contenders.export_provider",
    "naive": "benchmarks.contenders.export_naive",
    "floor": "benchmarks.contenders.export_floor",
}
TARGETS = {"vs_floor_wall": 1.5, "vs_naive": 5.0, "memory_flat": 1.2, "memory_vs_naive": 0.25, "days_flat": 1.25}
START = "2026-11-01"
PRIME = (2000, 2)

RunChild = Callable[[str, Any, dict[str, str], float], tuple[dict[str, Any] | None, float, Any, int, str]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The regime's options on ``python -m benchmarks.run``."""
    parser.add_argument(
        "--export-records",
        type=_ints,
        default=[100_000, 1_000_000],
        help="export regime: records in the export file, comma separated (default 100000,1000000)",
    )
    parser.add_argument("--export-days", type=int, default=10, help="export regime: days of the snapshot (default 10)")
    parser.add_argument(
        "--export-flat-days",
        type=int,
        default=2,
        help="export regime: days of the provider's memory-check run at the same records per day (default 2)",
    )
    parser.add_argument(
        "--export-naive-max",
        type=int,
        default=200_000,
        help="export regime: the largest file the naive contender runs on (default 200000)",
    )
    parser.add_argument(
        "--export-cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="export regime: where the built export files are kept between runs",
    )
    parser.add_argument(
        "--export-check-max",
        type=int,
        default=200_000,
        help="export regime: the largest file whose partitions are checked against the ground truth",
    )


def _ints(text: str) -> list[int]:
    return [int(float(part)) for part in text.replace("_", "").split(",") if part.strip()]


@dataclass
class ExportResult:
    """One export contender run (the median of ``--repeat`` runs by wall time)."""

    contender: str
    records: int
    days: int
    rows: int
    wall_s: float
    process_s: float
    cpu_s: float
    peak_rss_mb: float
    baseline_rss_mb: float
    exit_code: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Ran to the end, every record landed, and (when checked) the partitions are exact."""
        return self.exit_code == 0 and self.rows == self.records and self.extra.get("exact", True) is True

    @property
    def records_per_s(self) -> float:
        """Rows written per wall second."""
        return self.rows / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class Serving:
    """The export file of one run and how fast its host serves it (bytes only, one connection)."""

    records: int
    days: int
    file_bytes: int
    build_s: float
    download_s: float

    @property
    def mb_per_s(self) -> float:
        """Megabytes per second of the download."""
        return self.file_bytes / 1e6 / self.download_s if self.download_s > 0 else 0.0


class ExportServer(ServerProcess):
    """:mod:`benchmarks.export_server` in its own process."""

    def __init__(self, activities: int, days: int, check: bool, env: dict[str, str], cache: Path = DEFAULT_CACHE) -> None:
        args = ["--activities", str(activities), "--days", str(days), "--start", START, "--cache-dir", str(cache)]
        if check:
            args.append("--check")
        super().__init__("benchmarks.export_server", args, env, lambda lines: "READY" in lines, "export server")
        lines = self.lines
        self.base_url = lines["PEOPLEAI_SANDBOX_URL"]
        self.file_url = lines["EXPORT_FILE_URL"]
        self.records = int(lines["EXPORT_RECORDS"])
        self.file_bytes = int(lines["EXPORT_FILE_BYTES"])
        self.build_s = float(lines["EXPORT_BUILD_SECONDS"])
        self.expected: dict[str, str] = json.loads(Path(lines["EXPORT_EXPECTED"]).read_text()) if lines["EXPORT_EXPECTED"] else {}

    def download_seconds(self) -> float:
        """One download of the file, bytes read and dropped."""
        began = time.perf_counter()
        with urllib.request.urlopen(self.file_url, timeout=600) as answer:
            while answer.read(1 << 20):
                pass
        return time.perf_counter() - began


def measure(
    contender: str, server: ExportServer, days: int, env: dict[str, str], timeout: float, run_child: RunChild
) -> ExportResult:
    """One contender run against ``server``."""
    with tempfile.TemporaryDirectory(prefix=f"bench-export-{contender}-") as out_dir:
        spec = ExportSpec(
            base_url=server.base_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            start=START,
            days=days,
            out_dir=out_dir,
            expected=server.records,
        )
        child_env = {**env, "AIRFLOW_HOME": os.path.join(out_dir, "airflow-home")}
        payload, seconds, usage, code, tail = run_child(MODULES[contender], spec, child_env, timeout)
        if contender == "provider" and server.expected and payload:  # checked here: not in the child's memory
            found = lake_digests(os.path.join(out_dir, "lake", "raw_activities"))
            payload = {**payload, "exact": found == server.expected, "partitions_checked": len(server.expected)}
    payload = payload or {}
    return ExportResult(
        contender=contender,
        records=server.records,
        days=days,
        rows=int(payload.get("rows", -1)),
        wall_s=float(payload.get("extract_seconds", float("nan"))),
        process_s=seconds,
        cpu_s=float(payload.get("extract_cpu_seconds", float("nan"))),
        peak_rss_mb=usage.ru_maxrss / 1024,
        baseline_rss_mb=payload.get("baseline_rss_kb", 0) / 1024,
        exit_code=code,
        error=None if code == 0 and payload else tail.strip().splitlines()[-1] if tail.strip() else f"exit {code}",
        extra={
            k: v for k, v in payload.items() if k not in ("rows", "extract_seconds", "extract_cpu_seconds", "baseline_rss_kb")
        },
    )


def run_export(
    args: argparse.Namespace, env: dict[str, str], run_child: RunChild, log: Callable[[str], None] = print
) -> tuple[list[ExportResult], list[Serving]]:
    """Every size of ``--export-records``: the serving rate, each contender, the provider's short run."""
    if args.prime:
        server = ExportServer(PRIME[0], PRIME[1], check=True, env=env, cache=args.export_cache)
        try:
            for contender in CONTENDERS:
                result = measure(contender, server, PRIME[1], env, args.timeout, run_child)
                if not result.ok:
                    raise RuntimeError(f"export {contender} failed on {PRIME[0]:,} records: {result.error or result.extra}")
            log(f"[export] primed {', '.join(CONTENDERS)} on {server.records:,} records (unmeasured)")
        finally:
            server.stop()
    results: list[ExportResult] = []
    servings: list[Serving] = []
    plans: list[tuple[int, int, tuple[str, ...]]] = []
    for records in args.export_records:
        contenders = tuple(c for c in CONTENDERS if c != "naive" or records <= args.export_naive_max)
        plans.append((records, args.export_days, contenders))
        if args.export_flat_days and args.export_flat_days != args.export_days:
            plans.append((records * args.export_flat_days // args.export_days, args.export_flat_days, ("provider",)))
    for records, days, contenders in plans:
        log(f"[export {records:,} over {days} days] building or finding the file ...")
        server = ExportServer(records, days, check=records <= args.export_check_max, env=env, cache=args.export_cache)
        try:
            serving = Serving(server.records, days, server.file_bytes, server.build_s, server.download_seconds())
            servings.append(serving)
            log(
                f"[export {records:,} over {days} days] file: {server.records:,} records, {server.file_bytes / 1e6:,.0f} MB gzip "
                f"(built or found in {server.build_s:.0f} s), served at {serving.mb_per_s:,.0f} MB/s ({serving.download_s:.2f} s)"
            )
            runs: dict[str, list[ExportResult]] = {c: [] for c in contenders}
            for _ in range(args.repeat):
                for contender in contenders:
                    result = measure(contender, server, days, env, args.timeout, run_child)
                    runs[contender].append(result)
                    log(
                        f"[export {records:,} over {days} days] {contender}: {result.rows:,} rows, {result.wall_s:.2f} s, "
                        f"{result.records_per_s:,.0f} records/s, CPU {result.cpu_s:.1f} s, peak RSS {result.peak_rss_mb:,.0f} MB"
                        + (f", exact {result.extra['exact']}" if "exact" in result.extra else "")
                        + ("" if result.ok else f"  FAILED: {result.error or result.extra}")
                    )
            results += [median_run(runs[c]) for c in contenders]
        finally:
            server.stop()
    return results, servings


# ----- report ----------------------------------------------------------------------------------------


def _find(results: list[ExportResult], contender: str, records: int, days: int) -> ExportResult | None:
    for result in results:
        if (result.contender, result.records, result.days) == (contender, records, days) and result.ok:
            return result
    return None


def evaluate(results: list[ExportResult], args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """Each target of the issue: (target, measured, met / missed)."""
    checks: list[tuple[str, str, str]] = []

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    days = args.export_days
    sizes = sorted({r.records for r in results if r.days == days})
    naive_runs = sorted((r for r in results if r.contender == "naive" and r.ok), key=lambda r: r.records)
    for n in sizes:
        p, floor = _find(results, "provider", n, days), _find(results, "floor", n, days)
        if p and floor:
            ratio = p.wall_s / floor.wall_s
            checks.append(
                (
                    f"{n:,} records, {days} days: provider wall <= {TARGETS['vs_floor_wall']}x the floor's",
                    f"{p.wall_s:.2f} / {floor.wall_s:.2f} s = {ratio:.2f}x",
                    verdict(ratio <= TARGETS["vs_floor_wall"]),
                )
            )
        naive = _find(results, "naive", n, days) or (naive_runs[-1] if naive_runs and naive_runs[-1].records < n else None)
        if p and naive:
            ratio = p.records_per_s / naive.records_per_s
            where = "" if naive.records == n else f" (naive ran up to {naive.records:,} records; its records/s there)"
            checks.append(
                (
                    f"{n:,} records: provider records/s >= {TARGETS['vs_naive']}x naive's{where}",
                    f"{p.records_per_s:,.0f} / {naive.records_per_s:,.0f} = {ratio:.2f}x",
                    verdict(ratio >= TARGETS["vs_naive"]),
                )
            )
            ratio = p.peak_rss_mb / naive.peak_rss_mb
            where = (
                "" if naive.records == n else f" (naive's RSS at {naive.records:,} records, a lower bound of its RSS at {n:,})"
            )
            checks.append(
                (
                    f"{n:,} records: provider peak RSS <= 1/4 of naive's{where}",
                    f"{p.peak_rss_mb:,.0f} / {naive.peak_rss_mb:,.0f} MB = {ratio:.2f}",
                    verdict(ratio <= TARGETS["memory_vs_naive"]),
                )
            )
        if p and "exact" in p.extra:
            checks.append(
                (
                    f"{n:,} records, {days} days: the provider's partitions are exact (every row, nested values, order)",
                    f"{p.extra.get('partitions_checked')} partitions compared",
                    verdict(p.extra["exact"] is True),
                )
            )
        short = [
            r
            for r in results
            if r.contender == "provider"
            and r.days == args.export_flat_days
            and r.records == n * args.export_flat_days // days
            and r.ok
        ]
        if p and short:
            ratio = p.peak_rss_mb / short[0].peak_rss_mb
            checks.append(
                (
                    f"{n:,} records over {days} days: provider peak RSS <= {TARGETS['days_flat']}x a "
                    f"{args.export_flat_days}-day run's ({short[0].records:,} records, the same per day)",
                    f"{p.peak_rss_mb:,.0f} / {short[0].peak_rss_mb:,.0f} MB = {ratio:.2f}x",
                    verdict(ratio <= TARGETS["days_flat"]),
                )
            )
    if len(sizes) > 1:
        low, high = _find(results, "provider", sizes[0], days), _find(results, "provider", sizes[-1], days)
        if low and high:
            ratio = high.peak_rss_mb / low.peak_rss_mb
            checks.append(
                (
                    f"Memory: provider peak RSS at {sizes[-1]:,} <= {TARGETS['memory_flat']}x at {sizes[0]:,}",
                    f"{high.peak_rss_mb:,.0f} / {low.peak_rss_mb:,.0f} MB = {ratio:.2f}x",
                    verdict(ratio <= TARGETS["memory_flat"]),
                )
            )
    return checks


def render(
    results: list[ExportResult], servings: list[Serving], args: argparse.Namespace, command: str, context: dict[str, Any]
) -> str:
    """The Markdown report."""
    lines = [
        "# Export benchmark: bulk export operator vs naive vs the pyarrow.json floor",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {context['machine']['cpus']} CPUs ({context['machine']['cpu_model']}), {context['machine']['memory']}; "
        f"load average {context['load'][0]:.2f} at the start, {context['load'][-1]:.2f} at the end. "
        + ", ".join(f"{k} {v}" for k, v in context["versions"].items())
        + ".",
        f"Each row is the run of median wall time out of {args.repeat}.",
        "",
        "How each contender is set up: every one runs the vendor's flow against the export sandbox (token, a snapshot job "
        "of the days, status polls until `Completed` (the sandbox completes a job at its first poll), the data request, "
        "the redirect to the file host) and downloads the same gzip JSON Lines file. `provider` is "
        "`PeopleAIExportActivitiesToParquetOperator(export_type='snapshot', deferrable=False, poll_interval=0.01).execute(...)` "
        "into `file://` (its partitions by day, de-duplication across the run, manifests, publish); `naive` keeps the body "
        "in memory, `json.loads` each line, `pandas.json_normalize`, `to_parquet`; `floor` streams the body to disk, then "
        "`pyarrow.json.read_json` of the gunzipped stream (schema inferred, threads on) and `pyarrow.parquet.write_table` "
        "(zstd), one file. `wall s` is the contender's own clock from its first request to its last file written (imports "
        "excluded); peak RSS is the child process's, from `os.wait4`.",
        "",
        "| contender | records | days | rows | wall s | records/s | CPU s | peak RSS MB | import MB | process s "
        "| x naive | / floor | exact |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        naive = _find(results, "naive", r.records, r.days)
        floor = _find(results, "floor", r.records, r.days)
        lines.append(
            "| "
            + " | ".join(
                [
                    r.contender,
                    f"{r.records:,}",
                    str(r.days),
                    f"{r.rows:,}" + ("" if r.ok else " **FAILED**" if r.exit_code else " **MISMATCH**"),
                    f"{r.wall_s:.2f}",
                    f"{r.records_per_s:,.0f}",
                    f"{r.cpu_s:.2f}",
                    f"{r.peak_rss_mb:,.0f}",
                    f"{r.baseline_rss_mb:,.0f}",
                    f"{r.process_s:.1f}",
                    f"{r.records_per_s / naive.records_per_s:.2f}x" if r.ok and naive else "",
                    f"{r.wall_s / floor.wall_s:.2f}x" if r.ok and floor else "",
                    {True: "yes", False: "**no**"}.get(r.extra.get("exact"), ""),  # type: ignore[call-overload]
                ]
            )
            + " |"
        )
    lines += [
        "",
        "The export files (built once from the sandbox's records and kept in a cache directory; served by a loopback "
        "file host with `sendfile`, one download timed, bytes only):",
        "",
        "| records | days | gzip MB | download s | MB/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.records:,} | {s.days} | {s.file_bytes / 1e6:,.1f} | {s.download_s:.2f} | {s.mb_per_s:,.0f} |" for s in servings
    ]
    checks = evaluate(results, args)
    if checks:
        lines += ["", "Targets (issue 16):", "", "| target | measured | verdict |", "|---|---|---|"]
        lines += [f"| {name} | {measured} | {verdict} |" for name, measured, verdict in checks]
    return "\n".join(lines) + "\n"


def write(
    results: list[ExportResult], servings: list[Serving], args: argparse.Namespace, command: str, context: dict[str, Any]
) -> str:
    """Write ``export-latest.md`` and ``export-latest.json`` to ``args.out``; return the Markdown."""
    report = render(results, servings, args, command, context)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export-latest.md").write_text(report)
    (args.out / "export-latest.json").write_text(
        json.dumps(
            {
                "command": command,
                **context,
                "results": [{**asdict(r), "records_per_s": r.records_per_s, "ok": r.ok} for r in results],
                "files": [{**asdict(s), "mb_per_s": s.mb_per_s} for s in servings],
                "targets": evaluate(results, args),
            },
            indent=2,
        )
    )
    return report
