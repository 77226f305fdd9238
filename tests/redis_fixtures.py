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
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = (
    "redis-server is not installed: install it with `apt-get install redis-server` "
    "(Debian/Ubuntu; `.ci/run` installs it when missing)"
)
START_SECONDS = 10.0


@dataclass(frozen=True)
class RedisServer:
    """A running ``redis-server``.

    :param host: ``127.0.0.1``.
    :param port: its port.
    """

    host: str
    port: int

    def client(self) -> Any:
        """A ``redis.Redis`` client of the server."""
        import redis  # here, so that without the package the tests skip instead of failing to import

        return redis.Redis(host=self.host, port=self.port)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_redis(port: int, *options: str) -> Iterator[RedisServer]:
    """Run ``redis-server`` on ``127.0.0.1:port`` until the block ends; skip the test without it.

    :param options: more command-line options, e.g. ``"--requirepass", "pw"``.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(INSTALL_HINT)
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        pytest.skip("the redis package is missing: pip install 'airflow-provider-activities[redis]'")
    with tempfile.TemporaryDirectory(prefix="peopleai-test-redis-") as workdir:
        log_path = Path(workdir) / "redis.log"
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", workdir, "--logfile", str(log_path), *options]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            client = redis.Redis(
                host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0)
            )
            deadline = time.monotonic() + START_SECONDS
            while True:
                try:
                    client.ping()
                    break
                except redis.exceptions.AuthenticationError:
                    break  # it answers, and wants the password the options gave it
                except redis.exceptions.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        log = log_path.read_text(errors="replace") if log_path.exists() else ""
                        raise RuntimeError(f"redis-server on port {port} did not start: {log[-2000:]}") from None
                    time.sleep(0.02)
            client.close()
            yield RedisServer("127.0.0.1", port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session", name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    """One ``redis-server`` on loopback for the session (skips, saying how to install it, when absent)."""
    with running_redis(free_port()) as server:
        yield server
