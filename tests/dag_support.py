"""A metadata database for DAG-level tests: ``airflow db migrate`` once per test session.

``tests/dag_fixtures.py`` (shared with the sensor tests) provides the same ``airflow_db``
fixture; test modules import it from there when it exists, so a session migrates once. This
module is the fallback, and it too skips the migration when the session's database is already
migrated (by whichever fixture ran first).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


def _migrated(database: Path) -> bool:
    if not database.exists():
        return False
    try:
        with sqlite3.connect(database) as connection:
            return bool(connection.execute("SELECT version_num FROM alembic_version").fetchall())
    except sqlite3.Error:
        return False


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """The session's sqlite metadata database (``$AIRFLOW_HOME/airflow.db``), migrated."""
    database = airflow_home / "airflow.db"
    if not _migrated(database):
        airflow = Path(sys.executable).with_name("airflow")
        result = subprocess.run(
            [str(airflow), "db", "migrate"], env=dict(os.environ), capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            pytest.fail(f"airflow db migrate failed ({result.returncode}):\n{result.stderr[-3000:]}")
    assert _migrated(database), f"airflow db migrate did not create {database}"
    return database
