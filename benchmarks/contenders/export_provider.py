"""Export contender 1, this provider: ``PeopleAIExportActivitiesToParquetOperator.execute`` for a snapshot.

The operator's own code path, end to end: connection lookup, hook, job submission, polling
(``deferrable=False``, ``poll_interval`` 0.01 s; the benchmark's sandbox completes a job at its
first poll), the download of the job's file (following the redirect), conversion, per-day
spool, de-duplication across the run, partitioned Parquet, publish with manifests. Only the
Airflow task runner around it is left out (``execute`` gets ``{"run_id": "bench"}``).

Its partitions stay in ``out_dir/lake`` for the runner to check against the ground truth (in
the runner's process, so that reading them back does not count in this one's memory).
"""

from __future__ import annotations

import os

from benchmarks.contenders.common import Clock, emit, provider_process
from benchmarks.contenders.export_common import ExportSpec

POLL_INTERVAL = 0.01


def main() -> None:
    spec = ExportSpec.from_argv()
    provider_process(spec.base_url, spec.client_id, spec.client_secret, {"requests_per_second": 10_000.0}, spec.out_dir)
    from airflow_provider_activities.operators.export import PeopleAIExportActivitiesToParquetOperator

    lake = os.path.join(spec.out_dir, "lake")
    clock = Clock()
    clock.start()
    operator = PeopleAIExportActivitiesToParquetOperator(
        task_id="bench",
        output_path=f"file://{lake}",
        export_type="snapshot",
        start=spec.interval[0],
        end=spec.interval[1],
        deferrable=False,
        poll_interval=POLL_INTERVAL,
    )
    summary = operator.execute({"run_id": "bench"})
    clock.stop()
    emit(clock, summary["rows"], partitions=len(summary["partitions"]), duplicates_dropped=summary["duplicates_dropped"])


if __name__ == "__main__":
    main()
