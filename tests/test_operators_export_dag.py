"""Issue 5's "done when": a ``dag.test()`` run of a DAG with a deferrable snapshot task and a
deferrable delta task writes exactly the sandbox's records, and ``pyarrow.dataset`` reads each
output with the nested schema intact.

``dag.test()`` runs each task in this process and runs the triggers of deferred tasks inline,
then resumes the tasks, as a triggerer and a worker would; the task state store is Airflow's own.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from airflow_provider_activities.schemas import RAW_ACTIVITY_SCHEMA
from airflow_provider_activities.testing.sandbox import Sandbox
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
        run = export_dag.test(logical_date=day + DAY)
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
