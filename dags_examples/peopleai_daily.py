"""Daily People.ai extract: wait for ingestion, then land activities and participants as Parquet.

**Unpausing it starts a backlog.** ``catchup=True`` with ``start_date`` 2026-11-01: the moment the
DAG is unpaused, the scheduler creates one run for every day from the start date to yesterday
(a month of days means a month of runs, ``max_active_runs`` at a time). That is what a data lake
wants, but change ``start_date`` to the first day you want first, or keep the DAG paused and run
chosen days with ``airflow backfill create --dag-id peopleai_daily --from-date ... --to-date ...``.

**The sensor waits for the next day's ingestion.** The run of the day ``[D-1, D)`` waits until
People.ai has ingested an activity at or after ``D``: a day whose ingestion has not moved past its
end waits, deferred in the triggerer, polling every ``PEOPLEAI_SENSOR_POKE_INTERVAL`` seconds,
for up to ``PEOPLEAI_SENSOR_TIMEOUT`` seconds, then fails (clear it later to try again). Against
the sandbox, whose data ends after a few days, every run past that end waits the full timeout
while it holds one of the ``max_active_runs`` slots: set both knobs short there (see below).

Knobs, read from the environment when the file is parsed (set them for every Airflow component:
the dag-processor that schedules from the parsed DAG and the workers that run it):

* ``PEOPLEAI_CATCHUP``: ``false`` makes unpausing schedule the latest day only; earlier days then
  run through ``airflow backfill create`` alone (default ``true``). A backfill's runs start only
  while the DAG is unpaused, so this is how to backfill chosen days without the backlog;
* ``PEOPLEAI_SENSOR_POKE_INTERVAL``: seconds between two polls of the sensor (default 600);
* ``PEOPLEAI_SENSOR_TIMEOUT``: seconds the sensor waits at most, from its first poke (default
  21600, 6 hours).

What we recommend in production:

* a data-interval timetable. Airflow 3's plain ``"@daily"`` gives zero-width data intervals
  (``data_interval_start == data_interval_end``); ``CronDataIntervalTimetable`` gives each run
  the UTC day ``[D-1, D)`` it extracts;
* ``catchup=True``: a backfill (``airflow backfill create --dag-id peopleai_daily ...``) runs one
  idempotent extract per day; rerunning a day replaces exactly that day's partitions;
* a deferrable sensor that frees the worker slot while it waits for ingestion to pass the end of
  the interval, with a timeout that gives a stalled day back its run slot;
* every API task in the ``peopleai_api`` pool. The API allows 5 requests/s and 10 in flight per
  key pair, and each task's hook paces itself to that, so a pool of 1 keeps a large backfill
  inside the limit (2 or more tasks share the key's budget and are slowed by 429s that the hook
  retries). Create it with ``airflow pools set peopleai_api 1 "People.ai API"``;
* retries with exponential backoff for what the hook's own retries did not absorb;
* no secrets in DAG code: the ``peopleai_default`` connection holds them. The output location and
  the connection ids come from Airflow Variables (``peopleai_output_path``, ``peopleai_conn_id``,
  ``peopleai_output_conn_id``), read at run time through templates.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_activities.operators.peopleai import (
    PeopleAIActivitiesToParquetOperator,
    PeopleAIParticipantsToParquetOperator,
)
from airflow_provider_activities.sensors.peopleai import PeopleAINewActivitiesSensor

OUTPUT_PATH = "{{ var.value.get('peopleai_output_path', 'file:///tmp/peopleai-lake') }}"
PEOPLEAI_CONN_ID = "{{ var.value.get('peopleai_conn_id', 'peopleai_default') }}"
OUTPUT_CONN_ID = "{{ var.value.get('peopleai_output_conn_id', '') }}"
CATCHUP = os.environ.get("PEOPLEAI_CATCHUP", "true").strip().lower() not in ("false", "0", "no", "off")
SENSOR_POKE_INTERVAL = float(os.environ.get("PEOPLEAI_SENSOR_POKE_INTERVAL", "600"))
SENSOR_TIMEOUT = float(os.environ.get("PEOPLEAI_SENSOR_TIMEOUT", str(6 * 3600)))

with DAG(
    dag_id="peopleai_daily",
    description="Daily People.ai activities and participants into Hive-partitioned Parquet",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=CATCHUP,
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
        poke_interval=SENSOR_POKE_INTERVAL,
        timeout=SENSOR_TIMEOUT,
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
