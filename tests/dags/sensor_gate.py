"""Test DAGs: the new-activities sensor gates a downstream task that receives its XCom.

One DAG per way of waiting (``deferrable``, ``poke``, ``reschedule``), the same otherwise, plus
``peopleai_sensor_gate_soft_timeout``: deferrable, ``soft_fail``, a two-second timeout.
``min_count`` comes from the Airflow Variable ``sensor_test_min_count`` (an
``AIRFLOW_VAR_SENSOR_TEST_MIN_COUNT`` environment variable in the tests), and the sensor waits,
as by default, for activities ingested since the run's ``data_interval_end``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_activities.sensors.peopleai import PeopleAINewActivitiesSensor
from tests.airflow_compat import DAG, task

MIN_COUNT = "{{ var.value.get('sensor_test_min_count', 1) }}"


@task
def use_new_activities(found: dict[str, Any]) -> dict[str, Any]:
    """The downstream task: it runs only once the sensor succeeded, and gets its XCom."""
    return {"sensor_said": found}


def gated_dag(dag_id: str, **sensor_kwargs: Any) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
        catchup=False,
    ) as dag:
        wait = PeopleAINewActivitiesSensor(task_id="wait_for_ingestion", min_count=MIN_COUNT, **sensor_kwargs)
        use_new_activities(wait.output)
    return dag


deferrable_dag = gated_dag("peopleai_sensor_gate_deferrable", deferrable=True, poke_interval=0.5, timeout=60)
poke_dag = gated_dag("peopleai_sensor_gate_poke", deferrable=False, mode="poke", poke_interval=0.5, timeout=60)
reschedule_dag = gated_dag(
    "peopleai_sensor_gate_reschedule", deferrable=False, mode="reschedule", poke_interval=1, timeout=60
)
soft_timeout_dag = gated_dag(
    "peopleai_sensor_gate_soft_timeout", deferrable=True, soft_fail=True, poke_interval=0.5, timeout=2
)
