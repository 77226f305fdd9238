"""The export operator's retry finds the job its failed try created, on every Airflow line:
through Airflow's ``task_state_store`` on 3.3 and later, through marker objects beside the output
on 2.11 and 3.0 to 3.2 (:mod:`airflow_provider_activities.task_state`).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from airflow_provider_activities.compat import ObjectStoragePath
from airflow_provider_activities.task_state import STATE_DIR, MarkerStateStore, task_state_store
from airflow_provider_activities.testing.sandbox import Sandbox
from tests.airflow_compat import dag_test
from tests.dag_fixtures import airflow_db  # noqa: F401
from tests.test_operators_dag import load_dag
from tests.test_operators_export import expected_rows, written_rows

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)
STATUS_PATH = "/pull/v1/export/activities/jobs/{job_id}"


class TI:
    """The task instance fields a context's ``ti`` gives."""

    dag_id, task_id, run_id, map_index = "d", "t", "scheduled__2026-11-02T00:00:00+00:00", -1


def test_marker_store_keeps_a_value_per_task_instance_until_deleted_or_expired(tmp_path: Path) -> None:
    root = ObjectStoragePath(tmp_path.as_uri()) / "raw_activities_delta"
    store = task_state_store({"ti": TI()}, root)
    assert isinstance(store, MarkerStateStore)
    assert store.get("jobs") is None
    store.set("jobs", {"version": 1, "jobs": {"a": {"job_id": "j1"}}}, retention=timedelta(days=10))
    again = task_state_store({"ti": TI()}, root)  # the next try builds its own
    assert again is not None and again.get("jobs") == {"version": 1, "jobs": {"a": {"job_id": "j1"}}}
    other = TI()
    other.run_id = "manual__other"
    assert task_state_store({"ti": other}, root).get("jobs") is None  # type: ignore[union-attr]
    (marker,) = (tmp_path / "raw_activities_delta" / STATE_DIR).iterdir()
    assert '"run_id": "scheduled__2026-11-02T00:00:00+00:00"' in marker.read_text()
    again.delete("jobs")
    assert again.get("jobs") is None and not (tmp_path / "raw_activities_delta" / STATE_DIR).exists()

    store.set("jobs", [1], retention=timedelta(seconds=-1))  # already expired
    assert store.get("jobs", "none") == "none"
    marker_path = next((tmp_path / "raw_activities_delta" / STATE_DIR).iterdir())
    marker_path.write_text("{not json")
    assert store.get("jobs") is None


def test_airflows_own_store_wins_and_a_bare_context_has_none(tmp_path: Path) -> None:
    root = ObjectStoragePath(tmp_path.as_uri())
    own = object()
    assert task_state_store({"task_state_store": own, "ti": TI()}, root) is own
    assert task_state_store({}, root) is None


@pytest.mark.dag
def test_a_retry_after_a_failed_try_reuses_its_export_job(
    airflow_db: Path, airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag = load_dag(airflow_home, "export_retry.py", "peopleai_export_retry_test")
    monkeypatch.setenv("AIRFLOW_VAR_PEOPLEAI_OUTPUT_PATH", f"file://{tmp_path}/lake")
    day = START + DAY
    with Sandbox(seed=37, activities=600, start=START, days=3, rate_limit=None) as sandbox:
        sandbox.export.settings.polls = 8  # the job runs for 8 polls of 0.1 s
        monkeypatch.setenv(
            "AIRFLOW_CONN_PEOPLEAI_DEFAULT",
            sandbox.connection_json(requests_per_second=10_000, max_retries=1, backoff_base=0.001, backoff_max=0.01),
        )

        def fail_the_first_tries_polls() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not sandbox.export.jobs:
                time.sleep(0.01)
            # more failed answers than one poll's retries: the try fails while its job runs
            sandbox.faults.fail_next(2, 503, path=STATUS_PATH.format(job_id=sandbox.export.jobs[0].job_id))

        failing = threading.Thread(target=fail_the_first_tries_polls, daemon=True)
        failing.start()
        run = dag_test(dag, day + DAY)
        failing.join(timeout=60)

        (ti,) = run.get_task_instances()
        assert str(ti.state) == "success" and ti.try_number == 2
        assert len(sandbox.export.jobs) == 1  # the retry reused the first try's job
        assert written_rows(tmp_path / "lake", "raw_activities_delta") == expected_rows(sandbox, day.date(), day.date(), "delta")
    # the marker objects were used below 3.3 only, and none is left once the task succeeded
    assert not (tmp_path / "lake" / "raw_activities_delta" / STATE_DIR).exists()
