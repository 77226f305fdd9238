"""A task instance's state kept across its tries, on every supported Airflow.

Airflow 3.3 gives a task's context a ``task_state_store`` (``get``, ``set`` with a ``retention``,
``delete``) that survives the task's tries. Airflow 2.11 and 3.0 to 3.2 have none, and XCom is no
substitute there: a new try clears the task instance's XComs before it runs. :func:`task_state_store`
hands out Airflow's store where it exists, and elsewhere a :class:`MarkerStateStore`: small JSON
objects beside the task's output, below a ``_task_state`` directory that Hive-partitioned readers
skip (their names start with ``_``), one object per task instance and key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from airflow_provider_activities.compat import ObjectStoragePath

log = logging.getLogger(__name__)

STATE_DIR = "_task_state"
"""The directory of the marker objects, below the dataset root (skipped by readers: ``_`` prefix)."""


class StateStore(Protocol):
    """What the export operator uses of Airflow's ``task_state_store``."""

    def get(self, key: str, default: Any = None) -> Any:
        """The value kept under ``key``, or ``default``."""

    def set(self, key: str, value: Any, *, retention: timedelta | None = None) -> None:
        """Keep ``value`` (JSON) under ``key``, for ``retention`` (``None``: the store's default)."""

    def delete(self, key: str) -> None:
        """Forget ``key``."""


class MarkerStateStore:
    """The state of one task instance as JSON objects in ``directory`` (one per key).

    Each object names its task instance and key in clear and holds the value and when it
    expires; its file name is a digest of both, so any run id or key makes a valid object name.
    Values must hold no secret: they sit beside the data.

    :param directory: where the objects live (the dataset root's ``_task_state``).
    :param identity: the task instance: ``dag_id``, ``task_id``, ``run_id``, ``map_index``.
    """

    def __init__(self, directory: ObjectStoragePath, identity: dict[str, Any]) -> None:
        self.directory = directory
        self.identity = identity

    def _path(self, key: str) -> ObjectStoragePath:
        digest = hashlib.sha256(json.dumps([self.identity, key], sort_keys=True).encode()).hexdigest()[:32]
        return self.directory / f"{digest}.json"

    def get(self, key: str, default: Any = None) -> Any:
        """The value kept under ``key``; ``default`` when absent, unreadable or expired."""
        path = self._path(key)
        try:
            if not path.exists():
                return default
            marker = json.loads(path.read_text())
            expires_at = datetime.fromisoformat(marker["expires_at"]) if marker.get("expires_at") else None
            value = marker["value"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("Ignoring the unreadable task state object %s (%s).", path, type(err).__name__)
            return default
        if expires_at is not None and expires_at <= datetime.now(timezone.utc):
            return default
        return value

    def set(self, key: str, value: Any, *, retention: timedelta | None = None) -> None:
        """Write ``value`` under ``key`` (one whole object: a reader never sees half of it on
        object stores; on a local disk a torn write reads as absent).
        """
        expires_at = datetime.now(timezone.utc) + retention if retention is not None else None
        marker = {
            **self.identity,
            "key": key,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "value": value,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        self._path(key).write_text(json.dumps(marker, sort_keys=True))

    def delete(self, key: str) -> None:
        """Remove the object of ``key``, if any."""
        path = self._path(key)
        if path.exists():
            path.unlink()
        try:  # a local directory left empty goes too (object stores have none)
            if self.directory.exists() and not any(self.directory.iterdir()):
                self.directory.rmdir()
        except OSError:
            pass  # another task instance's object arrived meanwhile


def task_state_store(context: Any, dataset_root: ObjectStoragePath) -> StateStore | None:
    """Airflow's ``task_state_store`` (3.3 and later), else a :class:`MarkerStateStore` below
    ``dataset_root``; ``None`` when the context names no task instance (a bare ``execute()`` call).

    :param context: the task's context.
    :param dataset_root: the root of the dataset the task writes.
    """
    store = context.get("task_state_store")
    if store is not None:
        return store
    ti = context.get("ti") or context.get("task_instance")
    if ti is None:
        return None
    identity = {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": getattr(ti, "map_index", -1),
    }
    return MarkerStateStore(dataset_root / STATE_DIR, identity)


__all__ = ["STATE_DIR", "MarkerStateStore", "StateStore", "task_state_store"]
