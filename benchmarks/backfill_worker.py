"""One worker process of the backfill scenario (:mod:`benchmarks.backfill`): days taken off a shared queue.

Run as ``python -m benchmarks.backfill_worker '<json>'`` by the scenario, several at once. Like
a Celery or Kubernetes worker running a backfill's daily tasks, it runs
``PeopleAIActivitiesToParquetOperator.execute`` for one day after another, each day one task
(its own ``run_id``), all into the same ``file://`` dataset root, until no day is left. Days
are taken in order from a queue the workers share: a day belongs to the worker that first
creates its claim file (``O_CREAT | O_EXCL``), so every day runs once, whatever the number of
workers.

The connection has the defaults (no extras), plus ``rate_limit_redis_conn_id`` naming a ``redis``
connection when the job sets ``redis``: then every worker on the key shares one rate budget.

The worker imports everything first, prints ``READY`` and waits for a line on its standard
input, so that the scenario starts every worker at once and times the work, not the imports.
It ends with one ``BENCH_RESULT {json}`` line: when it started and finished (``time.time()``,
comparable between the workers), and per day the rows the operator reported, its seconds and any
error. The scenario counts the rows in the Parquet files once every worker is done.

The job (JSON): ``base_url``, ``client_id``, ``client_secret``, ``days`` (``YYYY-MM-DD``, the
queue in order), ``claims_dir`` (shared, empty at start), ``out_dir`` (the dataset root's
directory, shared), ``redis`` (``{"host": ..., "port": ...}`` or ``null``) and ``worker`` (a
number, for the report).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import date, timedelta
from typing import Any

from benchmarks.contenders.common import RESULT_PREFIX, without_pandas

REDIS_CONN_ID = "bench_backfill_redis"
"""The Airflow connection the ``rate_limit_redis_conn_id`` extra names (set in the environment)."""


def connections(job: dict[str, Any]) -> dict[str, str]:
    """The ``AIRFLOW_CONN_*`` variables of the job: the People.ai connection, and the Redis one."""
    extra: dict[str, Any] = {}
    found = {}
    if job.get("redis"):
        extra["rate_limit_redis_conn_id"] = REDIS_CONN_ID
        found[f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}"] = json.dumps(
            {"conn_type": "redis", "host": job["redis"]["host"], "port": job["redis"]["port"]}
        )
    found["AIRFLOW_CONN_PEOPLEAI_DEFAULT"] = json.dumps(
        {"conn_type": "peopleai", "host": job["base_url"], "login": job["client_id"], "password": job["client_secret"],
         "extra": extra}
    )
    return found


def claim(claims_dir: str, day: str) -> bool:
    """Whether this worker is the first to take ``day`` (it then runs it)."""
    try:
        os.close(os.open(os.path.join(claims_dir, day), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def main() -> None:
    job = json.loads(sys.argv[1])
    without_pandas()
    os.environ.update(connections(job))
    from airflow_provider_activities.compat import ObjectStoragePath, mask_secret
    from airflow_provider_activities.operators.peopleai import PeopleAIActivitiesToParquetOperator

    logging.getLogger("airflow").setLevel(logging.WARNING)
    # As the provider contender: what the task runner has set up before any operator runs.
    mask_secret("peopleai-bench-warm-up")
    ObjectStoragePath(f"file://{job['out_dir']}").fs  # noqa: B018 - loads the filesystem registry
    print("READY", flush=True)
    sys.stdin.readline()
    started = time.time()
    days: list[dict[str, Any]] = []
    for day in job["days"]:
        if not claim(job["claims_dir"], day):
            continue
        first = date.fromisoformat(day)
        began = time.time()
        entry: dict[str, Any] = {"day": day, "rows": None, "error": None}
        try:
            operator = PeopleAIActivitiesToParquetOperator(
                task_id="backfill",
                output_path=f"file://{job['out_dir']}",
                start=f"{day}T00:00:00+00:00",
                end=f"{(first + timedelta(days=1)).isoformat()}T00:00:00+00:00",
            )
            entry["rows"] = operator.execute({"run_id": f"backfill__{day}"})["rows"]
        except Exception as error:  # reported per day; the worker carries on, as a pool would
            entry["error"] = f"{type(error).__name__}: {error}"[:500]
        entry["seconds"] = time.time() - began
        days.append(entry)
    finished = time.time()
    print(RESULT_PREFIX + json.dumps({"worker": job["worker"], "started": started, "finished": finished, "days": days}),
          flush=True)


if __name__ == "__main__":
    main()
