"""Bulk export of one UTC day, snapshot and delta, both deferrable, for the DAG-level test of
the export operator (``tests/test_operators_export_dag.py``).

Each run exports the day ``[D-1, D)`` of its logical date ``D`` (``CronDataIntervalTimetable``);
the API from ``AIRFLOW_CONN_PEOPLEAI_DEFAULT``, where to write from the Variable
``peopleai_output_path``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_activities.operators.peopleai import PeopleAIExportActivitiesToParquetOperator
from tests.airflow_compat import DAG

with DAG(
    dag_id="peopleai_export_test",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={"retries": 0},
    tags=["peopleai", "test"],
) as dag:
    for export_type in ("snapshot", "delta"):
        PeopleAIExportActivitiesToParquetOperator(
            task_id=f"export_{export_type}",
            output_path="{{ var.value.peopleai_output_path }}",
            export_type=export_type,
            deferrable=True,
            poll_interval=0.2,
        )
