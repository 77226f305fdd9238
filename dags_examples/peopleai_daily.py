"""Daily People.ai extract: wait for ingestion, then land activities and participants as Parquet.

What we recommend in production:

* a data-interval timetable. Airflow 3's plain ``"@daily"`` gives zero-width data intervals
  (``data_interval_start == data_interval_end``); ``CronDataIntervalTimetable`` gives each run
  the UTC day ``[D-1, D)`` it extracts;
* ``catchup=True``: a backfill (``airflow backfill create --dag-id peopleai_daily ...``) runs one
  idempotent extract per day; rerunning a day replaces exactly that day's partitions;
* a deferrable sensor that frees the worker slot while it waits for ingestion to pass the end of
  the interval;
* every API task in the ``peopleai_api`` pool. The API allows 5 requests/s and 10 in flight per
  key pair, and each task's hook paces itself to that, so a pool of 1 keeps a large backfill
  inside the limit (2 or more tasks share the key's budget and are slowed by 429s that the hook
  retries). Create it with ``airflow pools set peopleai_api 1 "People.ai API"``;
* retries with exponential backoff for what the hook's own retries did not absorb;
* no secrets in DAG code: the ``peopleai_default`` connection holds them. The output location and
  the connection ids come from Airflow Variables, read at run time through templates.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_activities.operators.peopleai import (
    PeopleAIActivitiesToParquetOperator,
    PeopleAIParticipantsToParquetOperator,
)
from airflow_provider_activities.sensors.peopleai import PeopleAINewActivitiesSensor

OUTPUT_PATH = "{{ var.value.get('peopleai_output_path', 'file:///tmp/peopleai-lake') }}"
PEOPLEAI_CONN_ID = "{{ var.value.get('peopleai_conn_id', 'peopleai_default') }}"
OUTPUT_CONN_ID = "{{ var.value.get('peopleai_output_conn_id', '') }}"

with DAG(
    dag_id="peopleai_daily",
    description="Daily People.ai activities and participants into Hive-partitioned Parquet",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=True,
    max_active_runs=3,
    default_args={
        "pool": "peopleai_api",
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=20),
    },
    tags=["peopleai", "extract"],
) as dag:
    wait_for_ingestion = PeopleAINewActivitiesSensor(
        task_id="wait_for_ingestion",
        peopleai_conn_id=PEOPLEAI_CONN_ID,
        deferrable=True,
        poke_interval=600,
        timeout=timedelta(hours=12).total_seconds(),
    )
    activities = PeopleAIActivitiesToParquetOperator(
        task_id="extract_activities",
        output_path=OUTPUT_PATH,
        peopleai_conn_id=PEOPLEAI_CONN_ID,
        output_conn_id=OUTPUT_CONN_ID,
    )
    participants = PeopleAIParticipantsToParquetOperator(
        task_id="extract_participants",
        output_path=OUTPUT_PATH,
        peopleai_conn_id=PEOPLEAI_CONN_ID,
        output_conn_id=OUTPUT_CONN_ID,
    )
    wait_for_ingestion >> [activities, participants]
