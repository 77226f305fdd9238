"""The daily example DAG on a real Airflow 3 deployment, as a new user runs it.

``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` run as separate
processes with the ``LocalExecutor``, on a PostgreSQL the fixture starts on loopback (see
:mod:`tests.deploy_fixtures`); the sandbox API runs in this process on ``127.0.0.1``. The test:

* creates the People.ai connection through the REST API exactly as the UI's form does (the
  fields and their values from ``/ui/connections/hook_meta``), tests it through
  ``POST /api/v2/connections/test`` (as a new form, as the edit form, after saving an unchanged
  edit), and tests a closed port and a wrong secret, timing each answer;
* backfills ``peopleai_daily`` for two days with ``airflow backfill create``. The second day has
  no data when its run starts, so its sensor defers; the day's activities are added to the
  sandbox once the trigger runs in the triggerer, and the sensor resumes from there;
* checks every partition against the sandbox's ground truth;
* clears the second day with ``airflow tasks clear`` and checks that the rerun leaves the same
  bytes;
* checks that nothing listens beyond loopback, and stops every process it started.

The DAG's knobs (``PEOPLEAI_CATCHUP`` and the sensor's poke interval and timeout) are set in the
components' environment, as ``docs/deployment.md`` tells a user to do against the sandbox.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_activities.compat import AIRFLOW_V_3_0_PLUS, ObjectStoragePath
from airflow_provider_activities.testing.sandbox import Sandbox
from tests.deploy_fixtures import REPO, AirflowDeployment, airflow_deployment, assert_loopback_only  # noqa: F401
from tests.test_operators import (
    activity_partitions,
    activity_uids_by_partition,
    assert_complete_partitions,
    expected_activity_uids,
    expected_participant_keys,
    participant_keys_by_day,
    participant_partitions,
    read_dataset,
    without_run_details,
)
from tests.test_publish import contents

UTC = timezone.utc
DAY = timedelta(days=1)
START = datetime(2026, 11, 1, tzinfo=UTC)
FIRST_DAY, SECOND_DAY = START, START + DAY
"""The backfilled days (the runs' logical dates; each run extracts ``[day, day + 1)``)."""
DAG_ID = "peopleai_daily"
CONNECTION_ID = "peopleai_default"
CONNECTION_TEST_SECONDS = 10.0
CLOSED_PORT_SECONDS = 15.0

DEPLOYMENT_DAGS = [REPO / "dags_examples" / "peopleai_daily.py"]
DEPLOYMENT_ENVIRONMENT = {
    # A backfill's runs start only while the DAG is unpaused; without catch-up, unpausing adds the
    # latest day's run only (its sensor waits in the triggerer, harmlessly), not a month of runs.
    "PEOPLEAI_CATCHUP": "false",
    "PEOPLEAI_SENSOR_POKE_INTERVAL": "2",
    "PEOPLEAI_SENSOR_TIMEOUT": "600",
}

pytestmark = [
    pytest.mark.deployment,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not AIRFLOW_V_3_0_PLUS,
        reason="the deployment test runs Airflow 3's components (api-server, dag-processor, backfill create); "
        "Airflow 2.11 has none of them: run it with make test (the newest Airflow 3)",
    ),
    pytest.mark.skipif(
        datetime.now(UTC) < START + 3 * DAY,
        reason="the clock is before the example DAG's days (2026-11-01 and 02): Airflow refuses to backfill future dates",
    ),
]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """The API, holding the first day's activities only. Every record is added by the test (the
    sandbox's generated data is ingested up to two days late, which would let the second day's
    sensor pass at once): the first day's were ingested within half an hour, one after midnight,
    so the first day's sensor passes at its first poke; nothing was ingested after the second day.
    """
    with Sandbox(seed=18, activities=0, start=START, days=2, rate_limit=None) as sb:
        add_activities_of(sb, FIRST_DAY)
        yield sb


def add_activities_of(sandbox: Sandbox, day: datetime) -> None:
    """A day's data arrives: activities through the day, each ingested 1 to 31 minutes after its
    time, and one ingested after midnight (ingestion has moved past the day).
    """
    for minute in range(13, 24 * 60, 37):
        sandbox.add_activities(1, timestamp=day + timedelta(minutes=minute))
    sandbox.add_activities(1, timestamp=day + DAY - timedelta(minutes=5), created_at=day + DAY + timedelta(minutes=5))


# -- the connection, as the UI's form makes and tests it ---------------------------------------


def form_body(deployment: AirflowDeployment, connection_id: str, host: str, login: str, password: str) -> dict[str, Any]:
    """What the UI's "Add Connection" form posts for a ``peopleai`` connection whose standard fields
    are filled in and whose extra fields are left as the form shows them.

    The form takes the extra fields and their values from ``/ui/connections/hook_meta`` (where the
    API server replaces the value of a field the secrets masker considers sensitive by ``***``),
    serialises every field's value into ``extra`` as indented JSON, and leaves out the standard
    fields it hides (``port`` and ``schema`` here) or that are empty.
    """
    _, types = deployment.api("GET", "/ui/connections/hook_meta")
    (meta,) = [entry for entry in types if entry["connection_type"] == "peopleai"]
    values = {name: field["value"] for name, field in meta["extra_fields"].items()}
    fields = {
        "conn_type": "peopleai",
        "connection_id": connection_id,
        "extra": json.dumps(values, indent=2),
        "host": host,
        "login": login,
        "password": password,
    }
    return {name: value for name, value in fields.items() if value not in ("", None)}


def edit_form_body(deployment: AirflowDeployment, connection_id: str) -> dict[str, Any]:
    """What the UI's edit form posts for a saved connection left unchanged: the connection as the
    REST API gives it (password ``***``).
    """
    _, saved = deployment.api("GET", f"/api/v2/connections/{connection_id}")
    return {name: value for name, value in saved.items() if value is not None}


def connection_test(deployment: AirflowDeployment, body: dict[str, Any]) -> tuple[bool, str, float]:
    """``POST /api/v2/connections/test``: the answer's status and message, and the seconds it took."""
    started = time.monotonic()
    _, answer = deployment.api("POST", "/api/v2/connections/test", body, timeout=120)
    return answer["status"], answer["message"], time.monotonic() - started


def create_and_test_the_connection(deployment: AirflowDeployment, sandbox: Sandbox) -> None:
    body = form_body(deployment, CONNECTION_ID, sandbox.base_url, sandbox.client_id, sandbox.client_secret)
    assert "***" not in body["extra"], "the form would save a masked value"
    ok, message, seconds = connection_test(deployment, body)  # the test button of the new form
    assert ok and seconds < CONNECTION_TEST_SECONDS, (message, seconds)
    deployment.api("POST", "/api/v2/connections", body)

    edit = edit_form_body(deployment, CONNECTION_ID)
    assert edit["password"] == "***" and json.loads(edit["extra"]) == json.loads(body["extra"])
    ok, message, seconds = connection_test(deployment, edit)  # the test button of the edit form
    assert ok and seconds < CONNECTION_TEST_SECONDS, (message, seconds)
    deployment.api("PATCH", f"/api/v2/connections/{CONNECTION_ID}", edit)  # an unchanged edit, saved
    assert edit_form_body(deployment, CONNECTION_ID) == edit
    ok, message, seconds = connection_test(deployment, edit)
    assert ok and seconds < CONNECTION_TEST_SECONDS, (message, seconds)
    assert message.startswith(f"Connected to People.ai at {sandbox.base_url}")

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:  # bound, not listening: refused
        holder.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{holder.getsockname()[1]}"
        ok, message, seconds = connection_test(
            deployment, form_body(deployment, "peopleai_closed_port", closed, sandbox.client_id, sandbox.client_secret)
        )
    assert not ok and seconds < CLOSED_PORT_SECONDS, (message, seconds)
    wrong = form_body(deployment, "peopleai_wrong_secret", sandbox.base_url, sandbox.client_id, "not-the-secret")
    ok, message, seconds = connection_test(deployment, wrong)
    assert not ok and seconds < CONNECTION_TEST_SECONDS, (message, seconds)
    assert "rejected the credentials" in message and "not-the-secret" not in message


# -- the DAG runs ------------------------------------------------------------------------------


def backfill_runs(deployment: AirflowDeployment) -> dict[datetime, dict[str, Any]]:
    """The DAG's backfill runs, by the start of their data interval."""
    _, answer = deployment.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")
    return {
        datetime.fromisoformat(run["data_interval_start"].replace("Z", "+00:00")): run
        for run in answer["dag_runs"]
        if run["run_type"] == "backfill"
    }


def wait_for_runs(deployment: AirflowDeployment, what: str, done: Any, timeout: float = 420.0) -> dict[datetime, dict[str, Any]]:
    """Wait until ``done(runs, task_instances)`` holds for both backfilled days; fail at once when
    a run fails.
    """

    def probe() -> dict[datetime, dict[str, Any]] | None:
        runs = backfill_runs(deployment)
        if set(runs) != {FIRST_DAY, SECOND_DAY}:
            return None
        failed = [run["dag_run_id"] for run in runs.values() if run["state"] == "failed"]
        if failed:
            pytest.fail(f"runs failed: {failed}\n{deployment.diagnostics()}")
        tis = {day: deployment.task_instances(DAG_ID, run["dag_run_id"]) for day, run in runs.items()}
        return runs if done(runs, tis) else None

    return deployment.wait_for(probe, timeout, what, every=2.0)


def test_the_daily_dag_backfills_defers_and_reruns_exactly_on_a_real_deployment(
    airflow_deployment: AirflowDeployment,
    sandbox: Sandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    deployment = airflow_deployment
    lake = tmp_path_factory.mktemp("lake").as_uri()
    root = ObjectStoragePath(lake)
    assert_loopback_only(deployment)

    create_and_test_the_connection(deployment, sandbox)

    # What docs/deployment.md has a user do: the pool, the output Variable, unpause.
    deployment.api("POST", "/api/v2/pools", {"name": "peopleai_api", "slots": 1, "description": "People.ai API"})
    deployment.api("POST", "/api/v2/variables", {"key": "peopleai_output_path", "value": lake})
    parsed = lambda: deployment.api("GET", f"/api/v2/dags/{DAG_ID}", check=False)[0] == 200  # noqa: E731
    deployment.wait_for(parsed, 120, "the DAG to be parsed")
    deployment.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})

    assert sandbox.activity_count(SECOND_DAY, SECOND_DAY + DAY) == 0
    assert sandbox.activity_count(SECOND_DAY + DAY, None, by="created_at") == 0
    first_date, second_date = FIRST_DAY.date().isoformat(), SECOND_DAY.date().isoformat()
    backfill = deployment.cli("backfill", "create", "--dag-id", DAG_ID, "--from-date", first_date, "--to-date", second_date)
    assert backfill.returncode == 0, backfill.stdout[-3000:]

    # The second day's sensor finds nothing and defers; its trigger runs in the triggerer.
    def deferred_in_the_triggerer() -> dict[str, Any] | None:
        runs = backfill_runs(deployment)
        if SECOND_DAY not in runs:
            return None
        sensor = deployment.task_instances(DAG_ID, runs[SECOND_DAY]["dag_run_id"])["wait_for_ingestion"]
        trigger = sensor.get("trigger") or {}
        return sensor if sensor["state"] == "deferred" and trigger.get("triggerer_id") is not None else None

    sensor = deployment.wait_for(deferred_in_the_triggerer, 300, "the second day's sensor to defer to the triggerer", every=2.0)
    assert sensor["trigger"]["classpath"].endswith("PeopleAINewActivitiesTrigger")
    assert sensor["triggerer_job"]["job_type"] == "TriggererJob"
    add_activities_of(sandbox, SECOND_DAY)

    def all_succeeded(runs: dict[datetime, dict[str, Any]], tis: dict[datetime, dict[str, dict[str, Any]]]) -> bool:
        return all(run["state"] == "success" for run in runs.values())

    runs = wait_for_runs(deployment, "both backfilled days to succeed", all_succeeded)
    second = deployment.task_instances(DAG_ID, runs[SECOND_DAY]["dag_run_id"])
    assert second["wait_for_ingestion"]["try_number"] == 1, "the deferred sensor resumed in its first try"

    # Every partition holds exactly the sandbox's records of its day.
    assert activity_uids_by_partition(read_dataset(root, "activities").to_table()) == expected_activity_uids(sandbox, START, 2)
    assert participant_keys_by_day(read_dataset(root, "participants").to_table()) == expected_participant_keys(sandbox, START, 2)
    before = contents(root)
    assert_complete_partitions(before, "activities", activity_partitions(START, 2))
    assert_complete_partitions(before, "participants", participant_partitions(START, 2))

    # Clear the second day: its three tasks run again and leave the same bytes.
    cleared = deployment.cli("tasks", "clear", DAG_ID, "--start-date", second_date, "--end-date", second_date, "--yes")
    assert cleared.returncode == 0, cleared.stdout[-3000:]

    def second_day_rerun(runs: dict[datetime, dict[str, Any]], tis: dict[datetime, dict[str, dict[str, Any]]]) -> bool:
        again = tis[SECOND_DAY].values()
        return runs[SECOND_DAY]["state"] == "success" and all(ti["try_number"] == 2 and ti["state"] == "success" for ti in again)

    runs = wait_for_runs(deployment, "the cleared second day to run again", second_day_rerun)
    first = deployment.task_instances(DAG_ID, runs[FIRST_DAY]["dag_run_id"])
    assert {ti["try_number"] for ti in first.values()} == {1}, "the first day was not run again"
    after = contents(root)
    assert sorted(after) == sorted(before)
    changed = sorted(path for path in after if after[path] != before[path])
    assert all(path.endswith("/_manifest.json") and f"activity_date={SECOND_DAY.date()}" in path for path in changed), changed
    for path in changed:
        assert without_run_details(json.loads(after[path])) == without_run_details(json.loads(before[path])), path

    # Workers and task processes have come and gone: still nothing beyond loopback; then stop all.
    assert_loopback_only(deployment)
    deployment.stop()
    assert deployment.alive() == [], "processes left after stop()"
