"""The example DAGs: each loads without import errors and runs end to end against the sandbox."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from airflow_provider_activities.testing.sandbox import Sandbox
from tests.airflow_compat import dag_test
from tests.dag_fixtures import airflow_db  # noqa: F401

EXAMPLES = Path(__file__).resolve().parent.parent / "dags_examples"
START = datetime(2026, 11, 1, tzinfo=timezone.utc)


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.py"))


def test_every_example_loads() -> None:
    from tests.airflow_compat import DagBag

    bag = DagBag(dag_folder=str(EXAMPLES))
    assert not bag.import_errors, bag.import_errors
    assert {"peopleai_daily", "peopleai_history_snapshot", "peopleai_delta_daily"} <= set(bag.dags)
    assert len(bag.dags) >= len(example_files())


def test_examples_have_no_secrets_or_wall_clock() -> None:
    for path in example_files():
        text = path.read_text()
        assert "datetime.now(" not in text and "utcnow(" not in text, path
        assert "password" not in text.lower() and "client_secret" not in text.lower(), path


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(seed=8, activities=900, start=START, days=4, rate_limit=5.0) as sb:
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sb.connection_json())
        monkeypatch.setenv("AIRFLOW_VAR_PEOPLEAI_OUTPUT_PATH", (tmp_path / "lake").as_uri())
        yield sb


@pytest.mark.dag
def test_daily_example_runs_end_to_end(
    sandbox: Sandbox, airflow_home: Path, airflow_db: Path, tmp_path: Path
) -> None:
    """peopleai_daily for one day, as shipped (deferrable sensor, 5 requests/s enforced)."""
    from tests.airflow_compat import DagBag

    target = airflow_home / "dags" / "peopleai_daily.py"
    shutil.copyfile(EXAMPLES / "peopleai_daily.py", target)
    bag = DagBag(dag_folder=str(target))
    assert not bag.import_errors, bag.import_errors
    day = START + timedelta(days=2)
    run = dag_test(bag.dags["peopleai_daily"], day)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert set(states.values()) == {"success"}, states
    interval = (day - timedelta(days=1), day)
    activities = ds.dataset(tmp_path / "lake" / "activities", format="parquet", partitioning="hive").to_table()
    assert sorted(activities.column("uid").to_pylist()) == sorted(r["uid"] for r in sandbox.expected_activities(*interval))
    participants = ds.dataset(tmp_path / "lake" / "participants", format="parquet", partitioning="hive").to_table()
    assert participants.num_rows == len(sandbox.expected_participants(*interval))
    # each task's hook paces itself; tasks running back to back start with fresh budgets, so the
    # sandbox may answer an occasional 429, which the hooks retry: the data above is still exact
    assert sandbox.errors == []


@pytest.mark.dag
def test_history_examples_lay_down_a_snapshot_then_a_daily_delta(
    sandbox: Sandbox, airflow_home: Path, airflow_db: Path, tmp_path: Path
) -> None:
    """peopleai_history_snapshot for three days (from the run's conf), then peopleai_delta_daily
    for one day, as shipped (deferrable, 5 requests/s enforced); each output exactly the sandbox's.
    """
    from tests.airflow_compat import DagBag
    from tests.test_operators_export import expected_rows, written_rows

    target = airflow_home / "dags" / "peopleai_history.py"
    shutil.copyfile(EXAMPLES / "peopleai_history.py", target)
    bag = DagBag(dag_folder=str(target))
    assert not bag.import_errors, bag.import_errors
    sandbox.export.settings.polls = 0  # jobs end at their first poll: the examples' poll intervals are minutes

    run = dag_test(
        bag.dags["peopleai_history_snapshot"], START + timedelta(days=10), run_conf={"start": "2026-11-01", "end": "2026-11-04"}
    )
    assert {ti.task_id: str(ti.state) for ti in run.get_task_instances()} == {"export_snapshot": "success"}
    snapshot = written_rows(tmp_path / "lake", "raw_activities")
    assert snapshot == expected_rows(sandbox, START.date(), START.date() + timedelta(days=2), "snapshot")
    assert len(snapshot) == 3 and all(snapshot.values())

    day = START + timedelta(days=2)
    run = dag_test(bag.dags["peopleai_delta_daily"], day)
    assert {ti.task_id: str(ti.state) for ti in run.get_task_instances()} == {"export_delta": "success"}
    delta = written_rows(tmp_path / "lake", "raw_activities_delta")
    assert delta == expected_rows(sandbox, (day - timedelta(days=1)).date(), (day - timedelta(days=1)).date(), "delta")
    assert sandbox.errors == []
