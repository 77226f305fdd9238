"""A polling delta export with one immediate retry, for ``tests/test_export_retry.py``: the first
try fails while its job runs (the API's status answers fail past the connection's retries); the
retry finds the job again (Airflow's task state store on 3.3+, the marker objects elsewhere).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_activities.operators.peopleai import PeopleAIExportActivitiesToParquetOperator
from tests.airflow_compat import DAG

with DAG(
    dag_id="peopleai_export_retry_test",
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
    )
