"""Worker processes that extract one interval each with the real hook, as tasks on Airflow workers.

Each worker is an OS process of its own (its own hook, token cache, per-process limiter and Redis
client), forked by a ``multiprocessing`` fork server that imported the hook once: Airflow's
import costs seconds of CPU, paid once rather than once per worker (as a Celery worker forks its
pool from a parent that imported the code). :class:`Worker` starts one, :func:`run_worker` is
what runs in it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

HOOK_MODULE = "airflow_provider_activities.hooks.peopleai"
WAIT_SECONDS = 120.0

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([HOOK_MODULE])  # (no effect when the fork server already runs)


def records_digest(records: list[dict[str, Any]]) -> str:
    """SHA-256 of the records as canonical JSON: equal digests, equal records in the same order."""
    return hashlib.sha256(json.dumps(records, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Collect(logging.Handler):
    """Keeps the messages of the warnings it is given."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_worker(interval: tuple[str, str], environment: dict[str, str], channel: Connection) -> None:
    """In the worker: read the connection (``AIRFLOW_CONN_*`` in ``environment``), say ``ready``,
    wait for ``go`` (so that several start together), read every activity of ``interval`` (ISO
    8601 bounds) with ``PeopleAIHook.stream_activities``, and send back the ``uids`` in order, the
    ``digest`` of the records and the ``warnings`` the rate budget logged.
    """
    os.environ.update(environment)
    from airflow_provider_activities.hooks import _shared_budget
    from airflow_provider_activities.hooks.peopleai import PeopleAIHook

    warnings = Collect()
    logging.getLogger(_shared_budget.__name__).addHandler(warnings)
    hook = PeopleAIHook()
    assert hook.config.rate_limit_redis_conn_id is not None, "the connection should name the Redis of the budget"
    channel.send("ready")
    try:
        if channel.recv() != "go":
            return
    except EOFError:  # the test gave up before starting
        return
    start, end = datetime.fromisoformat(interval[0]), datetime.fromisoformat(interval[1])
    records = [record for page in hook.stream_activities(start, end) for record in page]
    hook.close()
    channel.send({"uids": [r["uid"] for r in records], "digest": records_digest(records), "warnings": warnings.messages})


class Worker:
    """One worker process extracting ``interval`` with the connections of ``environment``.

    :param interval: the bounds ``[start, end)``.
    :param environment: ``AIRFLOW_CONN_PEOPLEAI_DEFAULT`` and the Redis connection it names.
    """

    def __init__(self, interval: tuple[datetime, datetime], environment: dict[str, str]) -> None:
        self.interval = interval
        self._channel, theirs = _CONTEXT.Pipe()
        bounds = (interval[0].isoformat(), interval[1].isoformat())
        self.process = _CONTEXT.Process(target=run_worker, args=(bounds, environment, theirs), daemon=True)
        self.process.start()
        theirs.close()

    def receive(self) -> Any:
        """The worker's next message (``"ready"``, then its result)."""
        if not self._channel.poll(WAIT_SECONDS):
            raise AssertionError(f"worker {self.process.pid} said nothing in {WAIT_SECONDS:g} s")
        try:
            return self._channel.recv()
        except EOFError:
            self.process.join(5)
            raise AssertionError(f"worker {self.process.pid} ended early (exit code {self.process.exitcode})") from None

    def go(self) -> None:
        """Let it start extracting."""
        self._channel.send("go")

    def stop(self) -> None:
        """End it: a worker still waiting for ``go`` ends, one still running is killed after a while."""
        self._channel.close()
        self.process.join(WAIT_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
