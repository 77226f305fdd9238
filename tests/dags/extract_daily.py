"""Daily extract of People.ai activities and participants, for the DAG-level tests of the operators.

``tests/test_operators_dag.py`` copies this file into the session's dags folder and runs it with
``dag.test()``. Each run extracts the UTC day ``[D-1, D)`` of its logical date ``D``
(``CronDataIntervalTimetable``). The API comes from the ``peopleai_default`` connection
(``AIRFLOW_CONN_PEOPLEAI_DEFAULT``); where to write from the Variables ``peopleai_output_path``
and ``peopleai_output_conn_id`` (``AIRFLOW_VAR_PEOPLEAI_OUTPUT_PATH`` ...), read at run time.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_activities.operators.peopleai import (
    PeopleAIActivitiesToParquetOperator,
    PeopleAIParticipantsToParquetOperator,
)
from tests.airflow_compat import DAG

DAG_ID = "peopleai_extract_daily"
OUTPUT_PATH = "{{ var.value.peopleai_output_path }}"
OUTPUT_CONN_ID = "{{ var.value.get('peopleai_output_conn_id', '') }}"

with DAG(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={"retries": 0},
    tags=["peopleai", "test"],
) as dag:
    PeopleAIActivitiesToParquetOperator(
        task_id="extract_activities",
        output_path=OUTPUT_PATH,
        output_conn_id=OUTPUT_CONN_ID,
    )
    PeopleAIParticipantsToParquetOperator(
        task_id="extract_participants",
        output_path=OUTPUT_PATH,
        output_conn_id=OUTPUT_CONN_ID,
    )
