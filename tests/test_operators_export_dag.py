"""Issue 5's "done when": a ``dag.test()`` run of a DAG with a deferrable snapshot task and a
deferrable delta task writes exactly the sandbox's records, and ``pyarrow.dataset`` reads each
output with the nested schema intact.

``dag.test()`` runs each task in this process and runs the triggers of deferred tasks inline,
then resumes the tasks, as a triggerer and a worker would; the task state store is Airflow's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from airflow_provider_activities.compat import AIRFLOW_V_3_0_PLUS
from airflow_provider_activities.records.schemas import RAW_ACTIVITY_SCHEMA
from airflow_provider_activities.testing.sandbox import Sandbox
from tests.airflow_compat import dag_test
from tests.dag_fixtures import airflow_db  # noqa: F401
from tests.test_operators_dag import load_dag, return_value
from tests.test_operators_export import DATASET, DAY, START, expected_rows, written_rows

pytestmark = pytest.mark.dag


@pytest.fixture(scope="module")
def export_dag(airflow_db: Path, airflow_home: Path) -> Any:
    return load_dag(airflow_home, "export_daily.py", "peopleai_export_test")


def test_a_dag_with_deferrable_snapshot_and_delta_tasks_writes_exactly_the_sandboxs_records(
    export_dag: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = f"file://{tmp_path}/lake"
    monkeypatch.setenv("AIRFLOW_VAR_PEOPLEAI_OUTPUT_PATH", output)
    day = START + DAY
    with Sandbox(seed=29, activities=600, start=START, days=3, rate_limit=None) as sandbox:
        sandbox.export.settings.redirect = "other_host"
        sandbox.export.settings.stale_duplicates = True
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json(requests_per_second=10_000))
        run = dag_test(export_dag, day + DAY)
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        assert states == {"export_snapshot": "success", "export_delta": "success"}, states
        assert (run.data_interval_start, run.data_interval_end) == (day, day + DAY)

        for export_type in ("snapshot", "delta"):
            written = written_rows(tmp_path / "lake", DATASET[export_type])
            expected = expected_rows(sandbox, day.date(), day.date(), export_type)
            assert written == expected, export_type
            assert sum(len(rows) for rows in written.values()) > 100
            table = ds.dataset(tmp_path / "lake" / DATASET[export_type], format="parquet", partitioning="hive").to_table()
            for field in RAW_ACTIVITY_SCHEMA:
                assert table.schema.field(field.name).type == field.type, field.name
            summary = return_value(run, f"export_{export_type}")
            assert summary["rows"] == table.num_rows
            assert summary["jobs"] == [job.job_id for job in sandbox.export.jobs if job.export_type == export_type]
        assert all(not request.authorization for request in sandbox.export.file_requests)


@pytest.fixture(scope="module")
def timeout_dag(airflow_db: Path, airflow_home: Path) -> Any:
    return load_dag(airflow_home, "export_timeout.py", "peopleai_export_timeout_test")


@pytest.mark.skipif(
    not AIRFLOW_V_3_0_PLUS,
    reason="Airflow 2's dag.test() lets AirflowTaskTimeout (a BaseException there) out; test_export_retry covers the retry",
)
def test_a_job_running_past_the_tasks_timeout_fails_the_try_and_the_retry_reuses_it(
    timeout_dag: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session
    from sqlalchemy import select

    output = f"file://{tmp_path}/lake"
    monkeypatch.setenv("AIRFLOW_VAR_PEOPLEAI_OUTPUT_PATH", output)
    day = START + DAY
    with Sandbox(seed=31, activities=600, start=START, days=3, rate_limit=None) as sandbox:
        # About 25 polls of 0.1 s: longer than the first try's 3 s timeout, shorter than two tries.
        sandbox.export.settings.polls = 45
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json(requests_per_second=10_000))
        run = dag_test(timeout_dag, day + DAY)
        (ti,) = run.get_task_instances()
        assert str(ti.state) == "success" and ti.try_number == 2
        with create_session() as session:
            first_try = session.scalars(
                select(TaskInstanceHistory).where(TaskInstanceHistory.run_id == run.run_id, TaskInstanceHistory.try_number == 1)
            ).one()
        assert str(first_try.state) in ("up_for_retry", "failed")
        assert len(sandbox.export.jobs) == 1  # the retry reused the job
        assert written_rows(tmp_path / "lake", DATASET["delta"]) == expected_rows(sandbox, day.date(), day.date(), "delta")
