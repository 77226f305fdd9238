"""A polling (non-deferrable) delta export with a short ``execution_timeout`` and one immediate
retry, for ``tests/test_operators_export_dag.py``: a job still running at the timeout fails the
try; the retry finds the job again in the task state store instead of starting another.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_activities.operators.peopleai import PeopleAIExportActivitiesToParquetOperator
from tests.airflow_compat import DAG

with DAG(
    dag_id="peopleai_export_timeout_test",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(0)},
    tags=["peopleai", "test"],
) as dag:
    PeopleAIExportActivitiesToParquetOperator(
        task_id="export_delta",
        output_path="{{ var.value.peopleai_output_path }}",
        export_type="delta",
        deferrable=False,
        poll_interval=0.1,
        execution_timeout=timedelta(seconds=3),
    )
