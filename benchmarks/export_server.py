"""The export benchmark's sandbox process: one export file, built once, served fast, with its ground truth.

Run by :mod:`benchmarks.export_bench` as its own process, so serving is never charged to a
contender. It holds:

* **the file**: the snapshot export of ``--activities`` activities over ``--days`` UTC days from
  ``--start``, exactly as the sandbox writes it (``Sandbox.export_file_records``, day by day, so
  memory holds one day of records; gzip level 6, no timestamp). It is built once and kept in
  ``--cache-dir`` under a name made of its parameters, so later runs of the benchmark skip the
  build (minutes for a million records);
* **a file host**: a loopback HTTP server that sends that file with ``sendfile``, at disk-cache
  speed, to every request;
* **the API**: a :class:`~airflow_provider_activities.testing.sandbox.Sandbox` whose own data lies
  years before the exported days, so its export jobs are empty and built at once, with the
  sandbox's public knobs set: jobs complete at their first status poll (``export.settings.polls = 0``)
  and the data endpoint redirects to the file host (``export.settings.redirect_url``). Every
  contender therefore runs the vendor's whole flow (token, job, polls, data request, redirect)
  and downloads the same file;
* **the ground truth** (``--check``): the digest of every day partition a correct run writes
  (``Sandbox.expected_export_records`` of each day, converted to the raw schema), in a JSON file.

Prints ``PEOPLEAI_SANDBOX_URL=``, ``EXPORT_FILE_URL=``, ``EXPORT_RECORDS=``, ``EXPORT_FILE_BYTES=``,
``EXPORT_BUILD_SECONDS=`` and ``EXPORT_EXPECTED=`` (the ground truth's path, or empty) lines, then
``READY``, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import sys
import tempfile
import threading
import time
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.contenders.export_common import partition_digest

UTC = timezone.utc
SEED = 7
CLIENT_ID = "sandbox-client-id"
CLIENT_SECRET = "sandbox-client-secret"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "peopleai-bench-export"


def build_file(path: Path, activities: int, start: date, days: int, seed: int) -> int:
    """Write the snapshot export file of the sandbox's data, day by day; return its record count."""
    from airflow_provider_activities.testing.sandbox import Sandbox

    sandbox = Sandbox(seed=seed, activities=activities, start=_midnight(start), days=days, rate_limit=None)
    partial = path.with_suffix(".partial")
    count = 0
    with open(partial, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out:
        for offset in range(days):
            day = start + timedelta(days=offset)
            records = sandbox.export_file_records(day, day, "snapshot")
            out.write("".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records).encode())
            count += len(records)
    partial.rename(path)
    return count


def expected_digests(activities: int, start: date, days: int, seed: int) -> dict[str, str]:
    """The digest of every day partition a correct snapshot run of the file writes."""
    from airflow_provider_activities.records.convert import RawRecordConverter
    from airflow_provider_activities.testing.sandbox import Sandbox

    sandbox = Sandbox(seed=seed, activities=activities, start=_midnight(start), days=days, rate_limit=None)
    converter = RawRecordConverter()
    digests = {}
    for offset in range(days):
        day = start + timedelta(days=offset)
        records = sandbox.expected_export_records(day, day, "snapshot")
        rows = converter.to_batch(records).to_pylist() if records else []
        digests[f"activity_date={day.isoformat()}"] = partition_digest(rows)
    return digests


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _file_host(path: Path) -> ThreadingHTTPServer:
    size = path.stat().st_size

    class FileHost(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with open(path, "rb") as file:
                self.connection.sendfile(file)

    server = ThreadingHTTPServer(("127.0.0.1", 0), FileHost)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export_server")
    parser.add_argument("--activities", type=int, required=True)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--start", default="2026-11-01")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--check", action="store_true", help="write the ground truth's partition digests")
    args = parser.parse_args(argv)

    from airflow_provider_activities.testing.sandbox import Sandbox

    start = date.fromisoformat(args.start)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"snapshot-seed{args.seed}-{args.activities}-{args.days}d-{start.isoformat()}"
    path = args.cache_dir / f"{stem}.jsonl.gz"
    counted = args.cache_dir / f"{stem}.records"
    began = time.perf_counter()
    if not path.exists() or not counted.exists():
        counted.write_text(str(build_file(path, args.activities, start, args.days, args.seed)))
    built = time.perf_counter() - began
    expected_path = ""
    if args.check:
        truth = args.cache_dir / f"{stem}.expected.json"
        if not truth.exists():
            truth.write_text(json.dumps(expected_digests(args.activities, start, args.days, args.seed)))
        expected_path = str(truth)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    host = _file_host(path)
    threading.Thread(target=host.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    file_url = f"http://127.0.0.1:{host.server_address[1]}/{path.name}"
    api_data_start = _midnight(start) - timedelta(days=3650)  # the API's own data: years before the file's days
    with Sandbox(
        seed=args.seed,
        activities=10,
        start=api_data_start,
        days=1,
        rate_limit=None,
        max_concurrency=None,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    ) as sandbox:
        sandbox.export.settings.polls = 0
        sandbox.export.settings.redirect_url = file_url
        print(f"PEOPLEAI_SANDBOX_URL={sandbox.base_url}")
        print(f"EXPORT_FILE_URL={file_url}")
        print(f"EXPORT_RECORDS={counted.read_text().strip()}")
        print(f"EXPORT_FILE_BYTES={path.stat().st_size}")
        print(f"EXPORT_BUILD_SECONDS={built:.1f}")
        print(f"EXPORT_EXPECTED={expected_path}")
        print("READY", flush=True)
        while not stop.wait(0.2):
            pass
    host.shutdown()
    host.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
