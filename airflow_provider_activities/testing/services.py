"""Local services for offline tests: a free loopback port, and a real ``redis-server`` on it.

A ``redis-server`` backs the connection extra ``rate_limit_redis_conn_id`` (one rate budget shared
by every process on a key). :func:`running_redis` starts one from the system packages on
``127.0.0.1`` with no persistence, waits until it answers, and stops it when the block ends; the
project's tests and its backfill benchmark both use it, and so can a user's own tests.
:func:`redis_missing` says what is missing to run one, so that a test can skip with that reason.
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

REDIS_INSTALL_HINT = (
    "redis-server is not installed: install it with `apt-get install redis-server` "
    "(Debian/Ubuntu; `.ci/run` installs it when missing)"
)
REDIS_PACKAGE_HINT = "the redis package is missing: pip install 'airflow-provider-activities[redis]'"
REDIS_START_SECONDS = 10.0
"""How long a ``redis-server`` may take to answer ``PING`` after it was started."""


def free_port() -> int:
    """A TCP port of ``127.0.0.1`` nothing listens on at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
        import redis

        return redis.Redis(host=self.host, port=self.port)


def redis_missing() -> str | None:
    """Why :func:`running_redis` cannot start a server here (what to install), or ``None``."""
    if shutil.which("redis-server") is None:
        return REDIS_INSTALL_HINT
    try:
        import redis  # noqa: F401
    except ImportError:
        return REDIS_PACKAGE_HINT
    return None


@contextlib.contextmanager
def running_redis(port: int, *options: str) -> Iterator[RedisServer]:
    """Run ``redis-server`` on ``127.0.0.1:port`` (no persistence) until the block ends.

    :param port: the port (see :func:`free_port`).
    :param options: more command-line options, e.g. ``"--requirepass", "pw"``.
    :raises RuntimeError: when it cannot run here (:func:`redis_missing` says why), or does not
        answer within :data:`REDIS_START_SECONDS` (with the end of its log).
    """
    missing = redis_missing()
    if missing is not None:
        raise RuntimeError(missing)
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    binary = shutil.which("redis-server") or "redis-server"
    with tempfile.TemporaryDirectory(prefix="peopleai-redis-") as workdir:
        log_path = Path(workdir) / "redis.log"
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", workdir, "--logfile", str(log_path), *options]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            client = redis.Redis(
                host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0)
            )
            deadline = time.monotonic() + REDIS_START_SECONDS
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


__all__ = [
    "REDIS_INSTALL_HINT",
    "REDIS_PACKAGE_HINT",
    "REDIS_START_SECONDS",
    "RedisServer",
    "free_port",
    "redis_missing",
    "running_redis",
]
