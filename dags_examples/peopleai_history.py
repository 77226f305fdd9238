"""People.ai history and daily changes with the bulk Raw Activity Data API, as nested Parquet.

Two DAGs, what we recommend in production:

``peopleai_history_snapshot`` lays down history once (or again, to rebuild it). Trigger it by
hand with the days to export, ``start`` inclusive and ``end`` exclusive. Against the sandbox
(whose data is the week from 2026-11-01 unless started with other ``--start``/``--days``),
export that week::

    airflow dags trigger peopleai_history_snapshot -c '{"start": "2026-11-01", "end": "2026-11-08"}'

In production, the history you want, e.g. a year: ``{"start": "2025-11-01", "end": "2026-11-01"}``.
The run's params default to that sandbox week. It writes
``{output}/raw_activities/activity_date=YYYY-MM-DD/`` for every day of the range, a zero-row file
for a day without activities (a year before the sandbox's data would be a year of empty days).
The operator splits a range longer than the API's 365 days per snapshot job into several jobs and
keeps at most 2 of them running. Rerunning it replaces exactly those days.

``peopleai_delta_daily`` catches every change after that: each run exports the activities the
vendor processed (ingested or reprocessed) on the UTC day ``[D-1, D)`` of its data interval into
``{output}/raw_activities_delta/ingest_date=YYYY-MM-DD/``. Late mailboxes, new users' history and
CRM matches made later all show up here, on the day they were processed. Readers get the current
state of an activity by taking, per ``uid``, the row with the latest ``ingest_timestamp`` across
the snapshot and the deltas.

Both DAGs:

* wait for the vendor's jobs in the triggerer (``deferrable=True``), so a job that runs for hours
  holds no worker slot; ``execution_timeout`` bounds each wait;
* run their API tasks in the ``peopleai_api`` pool, like ``peopleai_daily``
  (``airflow pools set peopleai_api 1 "People.ai API"``);
* retry with exponential backoff; a retry reuses the export jobs the failed try created (their
  ids are kept in the task's state store) rather than starting new ones;
* hold no secrets: the ``peopleai_default`` connection does. The output location and connection
  ids come from the Airflow Variables ``peopleai_output_path``, ``peopleai_conn_id`` and
  ``peopleai_output_conn_id``, read at run time.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

try:  # Airflow 3
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.models.param import Param
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_activities.operators.peopleai import PeopleAIExportActivitiesToParquetOperator

OUTPUT_PATH = "{{ var.value.get('peopleai_output_path', 'file:///tmp/peopleai-lake') }}"
PEOPLEAI_CONN_ID = "{{ var.value.get('peopleai_conn_id', 'peopleai_default') }}"
OUTPUT_CONN_ID = "{{ var.value.get('peopleai_output_conn_id', '') }}"
DEFAULT_ARGS = {
    "pool": "peopleai_api",
    "retries": 3,
    "retry_delay": timedelta(minutes=5),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(hours=1),
}

with DAG(
    dag_id="peopleai_history_snapshot",
    description="People.ai raw activity history (bulk snapshot export) into nested Parquet",
    schedule=None,
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params={
        "start": Param("2026-11-01", type="string", format="date", description="First day exported (UTC, inclusive)."),
        "end": Param("2026-11-08", type="string", format="date", description="Day after the last day exported (exclusive)."),
    },
    default_args=DEFAULT_ARGS,
    tags=["peopleai", "export"],
) as history:
    PeopleAIExportActivitiesToParquetOperator(
        task_id="export_snapshot",
        export_type="snapshot",
        output_path=OUTPUT_PATH,
        start="{{ params.start }}T00:00:00+00:00",
        end="{{ params.end }}T00:00:00+00:00",
        peopleai_conn_id=PEOPLEAI_CONN_ID,
        output_conn_id=OUTPUT_CONN_ID,
        deferrable=True,
        poll_interval=300,
        execution_timeout=timedelta(hours=24),
    )

with DAG(
    dag_id="peopleai_delta_daily",
    description="People.ai raw activities processed each day (bulk delta export) into nested Parquet",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=True,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    tags=["peopleai", "export"],
) as delta:
    PeopleAIExportActivitiesToParquetOperator(
        task_id="export_delta",
        export_type="delta",
        output_path=OUTPUT_PATH,
        peopleai_conn_id=PEOPLEAI_CONN_ID,
        output_conn_id=OUTPUT_CONN_ID,
        deferrable=True,
        poll_interval=120,
        execution_timeout=timedelta(hours=6),
    )
