"""The mistake issue 3 guards against: a plain ``"@daily"`` schedule, whose Airflow 3 runs have
zero-width data intervals (``CronTriggerTimetable``). ``tests/test_operators_dag.py`` runs it
with ``dag.test()`` and expects the extract to fail before any API call or write.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow_provider_activities.operators.peopleai import PeopleAIParticipantsToParquetOperator
from tests.airflow_compat import DAG

DAG_ID = "peopleai_extract_zero_width"

with DAG(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={"retries": 0},
    tags=["peopleai", "test"],
) as dag:
    PeopleAIParticipantsToParquetOperator(
        task_id="extract_participants",
        output_path="{{ var.value.peopleai_output_path }}",
    )
