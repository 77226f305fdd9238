"""A migrated metadata database for DAG-level tests (``dag.test()``), once per test session.

Import the fixture into a test module that runs DAGs::

    from tests.dag_fixtures import airflow_db  # noqa: F401

``airflow db migrate`` runs in a subprocess (so this process's ORM set-up is not disturbed),
against the session's throwaway ``AIRFLOW_HOME`` (see ``tests/conftest.py``), and only when the
session's sqlite database is not migrated yet: every module that imports the fixture shares one
migration. This is the only module providing it (``tests/dag_support.py`` was merged into it).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


def is_migrated(database: Path) -> bool:
    """Whether ``database`` is a sqlite metadata database that ``airflow db migrate`` set up."""
    if not database.exists():
        return False
    try:
        with sqlite3.connect(database) as connection:
            return bool(connection.execute("SELECT version_num FROM alembic_version").fetchall())
    except sqlite3.Error:
        return False


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """The session's sqlite metadata database (``$AIRFLOW_HOME/airflow.db``), migrated once."""
    database = airflow_home / "airflow.db"
    if not is_migrated(database):
        airflow = Path(sys.executable).with_name("airflow")
        result = subprocess.run(
            [str(airflow), "db", "migrate"], env=dict(os.environ), capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            pytest.fail(f"airflow db migrate failed ({result.returncode}):\n{result.stderr[-3000:]}")
    assert is_migrated(database), f"airflow db migrate did not create {database}"
    return database
