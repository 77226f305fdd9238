"""Issue 3's "done when": a daily DAG with both operators, run with ``dag.test()`` for three
consecutive days and then the middle day again, on file:// and on moto's S3.

``tests/dags/extract_daily.py`` (``CronDataIntervalTimetable("0 0 * * *", timezone="UTC")``) is
copied into the session's dags folder (``dag.test()`` runs DAGs of the configured bundles only).
``dag.test()`` runs each task in this process (``run_task_in_process``: the Task SDK talks to an
in-process execution API), so the connection and Variables set as ``AIRFLOW_CONN_*`` /
``AIRFLOW_VAR_*`` environment variables with ``monkeypatch`` reach the tasks. For logical date
``D`` the data interval is ``[D - 1 day, D)``.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from airflow_provider_activities.compat import AIRFLOW_V_3_0_PLUS, ObjectStoragePath
from airflow_provider_activities.records.schemas import ACTIVITY_SCHEMA, PARTICIPANT_SCHEMA
from airflow_provider_activities.testing.sandbox import Sandbox
from tests.airflow_compat import DagBag, asset_event_extras, dag_test, xcom_value
from tests.dag_fixtures import airflow_db  # noqa: F401
from tests.s3_fixtures import moto_s3  # noqa: F401
from tests.test_operators import (
    DAY,
    START,
    TYPES,
    activity_partitions,
    activity_uids_by_partition,
    assert_complete_partitions,
    expected_activity_uids,
    expected_participant_keys,
    manifests,
    no_duplicates,
    participant_key,
    participant_keys_by_day,
    participant_partitions,
    read_dataset,
)
from tests.test_publish import contents

pytestmark = pytest.mark.dag

DAGS = Path(__file__).parent / "dags"
DAG_ID = "peopleai_extract_daily"
TASKS = ("extract_activities", "extract_participants")


def load_dag(airflow_home: Path, file_name: str, dag_id: str) -> Any:
    """A DAG of ``tests/dags``, copied into the configured dags folder and loaded from there."""
    target = airflow_home / "dags" / file_name
    shutil.copyfile(DAGS / file_name, target)
    bag = DagBag(dag_folder=str(target))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


@pytest.fixture(scope="module")
def extract_daily(airflow_db: Path, airflow_home: Path) -> Any:
    """The daily extract DAG (``CronDataIntervalTimetable``)."""
    return load_dag(airflow_home, "extract_daily.py", DAG_ID)


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStoragePath]:
    """Where the DAG writes, set through its Variables; the root as an ObjectStoragePath."""
    if request.param == "file":
        output, conn_id = f"file://{tmp_path}/lake", None
    else:
        moto = request.getfixturevalue("moto_s3")
        output, conn_id = f"s3://{moto.bucket}/dag-{uuid.uuid4().hex[:10]}", moto.conn_id
    monkeypatch.setenv("AIRFLOW_VAR_PEOPLEAI_OUTPUT_PATH", output)
    if conn_id:
        monkeypatch.setenv("AIRFLOW_VAR_PEOPLEAI_OUTPUT_CONN_ID", conn_id)
    else:
        monkeypatch.delenv("AIRFLOW_VAR_PEOPLEAI_OUTPUT_CONN_ID", raising=False)
    yield ObjectStoragePath(output, conn_id=conn_id)


def run_day(dag: Any, logical_date: datetime) -> Any:
    """``dag.test()`` for ``logical_date``; both tasks must succeed."""
    run = dag_test(dag, logical_date)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {task: "success" for task in TASKS}, states
    assert str(run.state) == "success"
    assert (run.data_interval_start, run.data_interval_end) == (logical_date - DAY, logical_date)
    return run


def return_value(run: Any, task_id: str) -> dict[str, Any]:
    """The task's XCom ``return_value``, as stored in the metadata database."""
    value = xcom_value(run, task_id)
    assert value is not None, f"no return value for {task_id}"
    return value


def asset_events(run: Any) -> dict[str, list[dict[str, Any]]]:
    """The asset events a run emitted: their extras by asset URI."""
    return asset_event_extras(run)


def plain_uri(root: ObjectStoragePath) -> str:
    """``s3://bucket/prefix``, ``file:///abs/dir``: the URL without the connection id."""
    return f"{root.protocol}://{root.path}"


def test_daily_dag_for_three_days_then_the_middle_day_again_leaves_exactly_each_days_records(
    extract_daily: Any, store: ObjectStoragePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = plain_uri(store)
    with Sandbox(seed=23, activities=700, start=START, days=3, rate_limit=None) as sandbox:
        monkeypatch.setenv(
            "AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json(page_size=250, requests_per_second=10_000)
        )
        for number in (1, 2, 3):  # logical dates 11-02 .. 11-04: the days 11-01 .. 11-03
            last = run_day(extract_daily, START + number * DAY)
        after_three = contents(store)
        assert sum(1 for path in after_three if path.endswith(".parquet")) == 12

        middle = START + DAY
        added = sandbox.add_activities(6, timestamp=middle + timedelta(hours=13))
        sandbox.reset_log()
        rerun = run_day(extract_daily, START + 2 * DAY)
        asked = {(r.query.get("from"), r.query.get("to")) for r in sandbox.requests if r.path != "/auth/v1/tokens"}
        assert asked == {("2026-11-02", "2026-11-02")}  # the rerun asked the API for its own day only

        final = contents(store)
        # Exactly the sandbox's records of each day, each once.
        activities = read_dataset(store, "activities").to_table()
        participants = read_dataset(store, "participants").to_table()
        assert activity_uids_by_partition(activities) == expected_activity_uids(sandbox, START, 3)
        assert participant_keys_by_day(participants) == expected_participant_keys(sandbox, START, 3)
        assert no_duplicates(activities.column("uid").to_pylist())
        assert no_duplicates([participant_key(r) for r in participants.select(["activity_uid", "id", "email"]).to_pylist()])
        assert {a["uid"] for a in added} <= set(activities.column("uid").to_pylist())
        assert {a["uid"] for a in added} <= set(participants.column("activity_uid").to_pylist())

    # No leftovers: every partition holds exactly its manifest's files, no staging anywhere.
    assert_complete_partitions(final, "activities", activity_partitions(START, 3))
    assert_complete_partitions(final, "participants", participant_partitions(START, 3))
    assert sorted(final) == sorted(after_three)  # one file per partition before and after
    unchanged = {p: d for p, d in after_three.items() if "activity_date=2026-11-02" not in p}
    assert {p: d for p, d in final.items() if "activity_date=2026-11-02" not in p} == unchanged
    rewritten = [p for p in final if "activity_date=2026-11-02" in p and p.endswith(".parquet")]
    assert any(final[p] != after_three[p] for p in rewritten)  # the new activities are in
    assert {m["run_id"] for p, m in manifests(final, "activities").items() if "2026-11-02" in p} == {rerun.run_id}
    assert {m["run_id"] for p, m in manifests(final, "activities").items() if "2026-11-03" in p} == {last.run_id}

    # One table with the documented schema: the files' columns plus the keys from the paths.
    for table, schema in ((activities, ACTIVITY_SCHEMA), (participants, PARTICIPANT_SCHEMA)):
        assert set(table.column_names) == set(schema.names) | {"activity_date"}
        for field in schema:
            assert table.schema.field(field.name).type == field.type, field.name
    assert set(activities.column("activity_type").to_pylist()) == set(TYPES)
    assert set(participants.column("activity_date").to_pylist()) == {"2026-11-01", "2026-11-02", "2026-11-03"}
    fingerprints = {m["schema_fingerprint"] for m in manifests(final, "activities").values()}
    assert len(fingerprints) == 1
    pa.unify_schemas([f.physical_schema for f in read_dataset(store, "activities").get_fragments()])

    # The return values (XCom) and the asset events of the rerun.
    summary = return_value(rerun, "extract_activities")
    assert summary["rows"] == sum(1 for d in activities.column("activity_date").to_pylist() if d == "2026-11-02")
    assert summary["partitions"] == [
        {
            "partition": f"activity_type={kind}/activity_date=2026-11-02",
            "uri": f"{output}/activities/activity_type={kind}/activity_date=2026-11-02",
            "rows": manifests(final, "activities")[f"activity_type={kind}/activity_date=2026-11-02"]["rows"],
        }
        for kind in TYPES
    ]
    people = return_value(rerun, "extract_participants")
    assert people["partitions"] == [
        {"partition": "activity_date=2026-11-02", "uri": f"{output}/participants/activity_date=2026-11-02", "rows": people["rows"]}
    ]
    assert "sandbox-client-secret" not in json.dumps([summary, people])
    events = asset_events(rerun)
    assert set(events) == {f"{output}/activities", f"{output}/participants"}
    (activity_event,) = events[f"{output}/activities"]
    assert activity_event["rows"] == summary["rows"]
    assert activity_event["partitions"] == [p["partition"] for p in summary["partitions"]]
    (participant_event,) = events[f"{output}/participants"]
    assert participant_event["rows"] == people["rows"]
    assert participant_event["partitions"] == ["activity_date=2026-11-02"]


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 2 gives a cron schedule data intervals: no zero-width interval")
def test_a_plain_daily_schedule_fails_before_any_call_or_write_and_says_how_to_fix_it(
    airflow_db: Path, airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dag = load_dag(airflow_home, "extract_zero_width.py", "peopleai_extract_zero_width")
    with Sandbox(seed=1, activities=100, start=START, days=2, rate_limit=None) as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json())
        monkeypatch.setenv("AIRFLOW_VAR_PEOPLEAI_OUTPUT_PATH", f"file://{tmp_path}/lake")
        capsys.readouterr()
        run = dag_test(dag, START + DAY)
        assert run.data_interval_start == run.data_interval_end  # what "@daily" gives in Airflow 3
        assert [str(ti.state) for ti in run.get_task_instances()] == ["failed"]
        assert sandbox.requests == []
    assert list(tmp_path.iterdir()) == []
    logged = capsys.readouterr()
    text = logged.out + logged.err
    assert "zero-width" in text and "CronDataIntervalTimetable" in text and "start/end" in text
