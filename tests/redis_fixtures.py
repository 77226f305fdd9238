"""A real Redis for tests: ``redis-server`` from the system packages, on loopback and a free port.

Import the fixture into a test module (``from tests.redis_fixtures import redis_server_fixture  # noqa: F401``);
tests then ask for ``redis_server``. It starts one server per session (no persistence: ``--save ''``,
``--appendonly no``), waits until it answers ``PING`` and stops it at the end. Without the
``redis-server`` binary, or without the ``redis`` Python package, the tests that use it skip and
say how to get it. :func:`running_redis` starts one more server for a single test (on a port
chosen by the test).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from airflow_provider_activities.testing.services import RedisServer, free_port, redis_missing
from airflow_provider_activities.testing.services import running_redis as _running_redis

__all__ = ["RedisServer", "free_port", "redis_server_fixture", "running_redis"]


@contextlib.contextmanager
def running_redis(port: int, *options: str) -> Iterator[RedisServer]:
    """Run ``redis-server`` on ``127.0.0.1:port`` until the block ends; skip the test without it
    (see :func:`airflow_provider_activities.testing.services.running_redis`).

    :param options: more command-line options, e.g. ``"--requirepass", "pw"``.
    """
    missing = redis_missing()
    if missing is not None:
        pytest.skip(missing)
    with _running_redis(port, *options) as server:
        yield server


@pytest.fixture(scope="session", name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    """One ``redis-server`` on loopback for the session (skips, saying how to install it, when absent)."""
    with running_redis(free_port()) as server:
        yield server
