"""Test DAGs: the new-activities sensor, deferrable or poking, gates an activities extract."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_activities.operators.peopleai import PeopleAIActivitiesToParquetOperator
from airflow_provider_activities.sensors.peopleai import PeopleAINewActivitiesSensor
from tests.airflow_compat import DAG

for mode, deferrable in (("deferrable", True), ("poke", False)):
    with DAG(
        dag_id=f"peopleai_sensor_then_extract_{mode}",
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
        catchup=False,
    ):
        wait = PeopleAINewActivitiesSensor(
            task_id="wait_for_ingestion",
            deferrable=deferrable,
            min_count="{{ var.value.get('sensor_test_min_count', 1) }}",
            poke_interval=1,
            timeout=60,
        )
        extract = PeopleAIActivitiesToParquetOperator(
            task_id="extract_activities", output_path="{{ var.value.sensor_test_output }}"
        )
        wait >> extract
