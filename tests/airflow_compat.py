"""What the tests and their DAG files take from Airflow, for Airflow 2.11 and 3.x alike.

The provider's own Airflow names live in :mod:`airflow_provider_activities.compat`; this module
adds what only tests use: the DAG class, the DagBag, the operator test switch, outlet-event
accessors, ``dag.test()`` for a logical date, and reads of the metadata database (XCom, asset or
dataset events, reschedules) whose models differ between the two lines.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from airflow_provider_activities.compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_2_PLUS, TaskDeferred

if TYPE_CHECKING:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.xcom import XComModel
    from airflow.sdk import DAG, task
    from airflow.sdk.bases.operator import ExecutorSafeguard
    from airflow.sdk.execution_time.context import OutletEventAccessors
elif AIRFLOW_V_3_0_PLUS:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.xcom import XComModel
    from airflow.sdk import DAG, task
    from airflow.sdk.bases.operator import ExecutorSafeguard
    from airflow.sdk.execution_time.context import OutletEventAccessors

    if AIRFLOW_V_3_2_PLUS:
        from airflow.dag_processing.dagbag import DagBag
    else:
        from airflow.models.dagbag import DagBag
else:
    from airflow import DAG
    from airflow.decorators import task
    from airflow.models.baseoperator import ExecutorSafeguard
    from airflow.models.dagbag import DagBag
    from airflow.models.dataset import DatasetEvent as AssetEvent
    from airflow.models.dataset import DatasetModel as AssetModel
    from airflow.models.xcom import XCom as XComModel
    from airflow.utils.context import OutletEventAccessors

_STARTED: dict[tuple[str, str], datetime] = {}
"""When :func:`dag_test` started each Airflow 2 run, by (dag_id, run_id)."""


def dag_test(dag: Any, logical_date: datetime, **kwargs: Any) -> Any:
    """``dag.test()`` for one logical date (``execution_date`` on Airflow 2); returns the DagRun.

    Airflow 3's ``dag.test()`` writes the DAG to the metadata database first; Airflow 2's does not,
    so here the DAG is synced first, as a DAG processor would: its datasets and dataset aliases
    must exist there for the tasks' dataset events to be recorded. On Airflow 2 the FAB user model
    is loaded too: rerunning a date deletes its DagRun, whose note refers to the ``ab_user`` table.

    :param dag: the DAG.
    :param logical_date: the run's logical date.
    :param kwargs: further ``dag.test()`` arguments (``run_conf``, ...).
    """
    if AIRFLOW_V_3_0_PLUS:
        return dag.test(logical_date=logical_date, **kwargs)
    # The user table that dag_run_note refers to: without it a run cannot be deleted (a rerun of a date).
    import airflow.providers.fab.auth_manager.models  # noqa: F401
    from airflow.utils import timezone

    dag.sync_to_db()
    started = timezone.utcnow()
    run = dag.test(execution_date=logical_date, **kwargs)
    _STARTED[(run.dag_id, run.run_id)] = started
    return run


def xcom_value(run: Any, task_id: str, key: str = "return_value") -> Any:
    """A task's XCom ``key`` in ``run``, as stored in the metadata database (``None`` if absent)."""
    from airflow.utils.session import create_session

    if not AIRFLOW_V_3_0_PLUS:  # Airflow 2's XCom model deserializes its value when loaded
        value = XComModel.get_one(run_id=run.run_id, dag_id=run.dag_id, task_id=task_id, key=key)
        return json.loads(value) if isinstance(value, str) else value
    with create_session() as session:
        row = session.scalar(
            select(XComModel).where(
                XComModel.dag_id == run.dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
        )
        if row is None:
            return None
        value = XComModel.deserialize_value(row)
    return json.loads(value) if isinstance(value, str) else value


def asset_event_extras(run: Any) -> dict[str, list[dict[str, Any]]]:
    """The asset (Airflow 2: dataset) events ``run`` emitted: their extras by URI."""
    from airflow.utils.session import create_session

    where = [AssetEvent.source_dag_id == run.dag_id, AssetEvent.source_run_id == run.run_id]
    if AIRFLOW_V_3_0_PLUS:
        target_id = AssetEvent.asset_id
    else:
        # Airflow 2's dag.test() names every run of a date alike (manual__<date>): keep the events
        # emitted since dag_test() started this run.
        target_id = AssetEvent.dataset_id
        where.append(AssetEvent.timestamp >= _STARTED[(run.dag_id, run.run_id)])
    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra).join(AssetModel, AssetModel.id == target_id).where(*where)
        ).all()
    found: dict[str, list[dict[str, Any]]] = {}
    for uri, extra in rows:
        found.setdefault(uri, []).append(extra)
    return found


def reschedule_count(ti: Any) -> int:
    """How many times a task instance was rescheduled (``mode="reschedule"``)."""
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    if AIRFLOW_V_3_0_PLUS:
        where = [TaskReschedule.ti_id == ti.id]
    else:
        where = [
            TaskReschedule.dag_id == ti.dag_id,
            TaskReschedule.task_id == ti.task_id,
            TaskReschedule.run_id == ti.run_id,
            TaskReschedule.map_index == ti.map_index,
        ]
    with create_session() as session:
        return session.scalar(select(func.count()).select_from(TaskReschedule).where(*where)) or 0


__all__ = [
    "DAG",
    "AssetEvent",
    "AssetModel",
    "DagBag",
    "ExecutorSafeguard",
    "OutletEventAccessors",
    "TaskDeferred",
    "XComModel",
    "asset_event_extras",
    "dag_test",
    "reschedule_count",
    "task",
    "xcom_value",
]


def redact(text: str) -> str:
    """``text`` as Airflow's secrets masker shows it (its module moved in Airflow 3)."""
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.log import _secrets_masker
    else:
        from airflow.utils.log.secrets_masker import _secrets_masker
    return str(_secrets_masker().redact(text))


def should_hide_value_for_key(name: str) -> bool:
    """Whether Airflow's secrets masker hides the value of a field named ``name`` (its module moved)."""
    if AIRFLOW_V_3_0_PLUS:
        from airflow._shared.secrets_masker import should_hide_value_for_key as hides
    else:
        from airflow.utils.log.secrets_masker import should_hide_value_for_key as hides
    return bool(hides(name))
