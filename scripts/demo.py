"""`make demo`: run the example daily DAG against the sandbox and show what it wrote.

Steps: start the sandbox API on a free loopback port; point ``AIRFLOW_CONN_PEOPLEAI_DEFAULT`` at
it; use a throwaway ``AIRFLOW_HOME`` under ``.demo/``; migrate its sqlite metadata DB; run
``peopleai_daily`` with ``airflow dags test`` for three consecutive days into ``./demo-output``;
rerun the middle day; print each partition (rows, files, bytes) and whether the rerun wrote
byte-identical files. The sandbox stops on every exit path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from airflow_provider_activities.testing.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
DEMO_HOME = ROOT / ".demo" / "airflow"
OUTPUT = ROOT / "demo-output"
DAYS = ["2026-11-02", "2026-11-03", "2026-11-04"]  # runs; each extracts the day before
RERUN = DAYS[1]


def airflow(env: dict[str, str], *args: str) -> None:
    """Run one ``airflow`` CLI command, showing its output only when it fails."""
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stdout.write(result.stdout[-6000:])
        sys.stderr.write(result.stderr[-6000:])
        raise SystemExit(f"demo: `airflow {' '.join(args)}` failed (exit {result.returncode}).")
    print(f"  airflow {' '.join(args)}  ({time.monotonic() - started:.1f} s)")


def checksums(day: str) -> dict[str, str]:
    """sha256 of every Parquet file of the partitions of ``day``."""
    found = {}
    for path in sorted(OUTPUT.rglob(f"activity_date={day}/*.parquet")):
        found[str(path.relative_to(OUTPUT))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def table() -> list[tuple[str, int, int, int]]:
    """(partition, rows, files, bytes) of every published partition, from its manifest."""
    rows = []
    for manifest_path in sorted(OUTPUT.rglob("_manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        files = manifest.get("files", [])
        rows.append(
            (
                str(manifest_path.parent.relative_to(OUTPUT)),
                int(manifest.get("rows", 0)),
                len(files),
                sum(int(f.get("bytes", 0)) for f in files),
            )
        )
    return rows


def main() -> int:
    shutil.rmtree(ROOT / ".demo", ignore_errors=True)
    shutil.rmtree(OUTPUT, ignore_errors=True)
    DEMO_HOME.mkdir(parents=True)
    started = time.monotonic()
    with Sandbox(seed=7, activities=3000, start=datetime(2026, 11, 1, tzinfo=timezone.utc), days=7) as sandbox:
        print(f"Sandbox People.ai API at {sandbox.base_url}")
        env = dict(os.environ)
        env.update(
            {
                "AIRFLOW_HOME": str(DEMO_HOME),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags_examples"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                "AIRFLOW_CONN_PEOPLEAI_DEFAULT": sandbox.connection_json(),
                "AIRFLOW_VAR_PEOPLEAI_OUTPUT_PATH": OUTPUT.as_uri(),
            }
        )
        airflow(env, "db", "migrate")
        airflow(env, "pools", "set", "peopleai_api", "1", "People.ai API: 5 requests/s per key pair")
        for day in DAYS:
            airflow(env, "dags", "test", "peopleai_daily", day)
        middle = (date.fromisoformat(RERUN) - timedelta(days=1)).isoformat()  # the day that run extracts
        before = checksums(middle)
        airflow(env, "dags", "test", "peopleai_daily", RERUN)
        after = checksums(middle)

    print()
    print(f"Wrote {OUTPUT}:")
    print(f"{'partition':<62} {'rows':>6} {'files':>5} {'bytes':>8}")
    for partition, rows, files, size in table():
        print(f"{partition:<62} {rows:>6} {files:>5} {size:>8}")
    identical = bool(before) and before == after
    print()
    print(f"rerun of {middle}: {'identical' if identical else 'DIFFERENT'} ({len(after)} Parquet files compared)")
    print(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
