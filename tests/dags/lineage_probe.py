"""The provider's operators under ``dag.test()`` with OpenLineage's file transport, for the
end-to-end lineage test (``tests/test_lineage.py``).

The activities and participants operators extract 2026-11-02 from the sandbox the test starts
(``AIRFLOW_CONN_PEOPLEAI_DEFAULT``), and the export operator lays down a snapshot of the same day;
``output_path`` comes from ``AIRFLOW_VAR_LINEAGE_OUTPUT_PATH``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from airflow_provider_activities.operators.peopleai import (
    PeopleAIActivitiesToParquetOperator,
    PeopleAIExportActivitiesToParquetOperator,
    PeopleAIParticipantsToParquetOperator,
)
from tests.airflow_compat import DAG

START, END = "2026-11-02T00:00:00+00:00", "2026-11-03T00:00:00+00:00"
# Read when the DAG is parsed, not templated: a static path declares an Asset (Dataset) outlet, where
# a template would declare an alias, which Airflow 2.11's dag.test() cannot flush on a fresh database.
OUTPUT = os.environ.get("AIRFLOW_VAR_LINEAGE_OUTPUT_PATH", "file:///tmp/peopleai-lineage")

with DAG(
    dag_id="peopleai_lineage_probe",
    schedule=None,
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={"retries": 0},
    tags=["peopleai", "test"],
) as dag:
    PeopleAIActivitiesToParquetOperator(task_id="extract_activities", output_path=OUTPUT, start=START, end=END)
    PeopleAIParticipantsToParquetOperator(task_id="extract_participants", output_path=OUTPUT, start=START, end=END)
    PeopleAIExportActivitiesToParquetOperator(
        task_id="export_raw_activities",
        output_path=OUTPUT,
        export_type="snapshot",
        start=START,
        end=END,
        deferrable=False,
        poll_interval=0.05,
    )
