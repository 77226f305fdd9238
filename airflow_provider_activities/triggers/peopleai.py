"""Deferrable triggers: they wait in the triggerer on the async People.ai client
(:class:`~airflow_provider_activities.hooks.peopleai_async.PeopleAIAsyncHook`), so no worker slot
is held. They carry the connection id, never a secret, in their serialized arguments, and fire
exactly one event.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from airflow_provider_activities import DEFAULT_CONN_ID
from airflow_provider_activities.api.errors import PeopleAIAPIError, PeopleAIAuthError, PeopleAIError
from airflow_provider_activities.api.export import ExportJob, check_job_id, job_status_request, parse_export_job
from airflow_provider_activities.api.queries import IngestCount
from airflow_provider_activities.api.validation import (
    check_activity_type,
    check_min_count,
    check_seconds,
    parse_deadline,
    parse_moment,
)
from airflow_provider_activities.compat import AirflowException, BaseTrigger, TriggerEvent
from airflow_provider_activities.export.jobs import WAIT_FOR, wait_is_over
from airflow_provider_activities.hooks.peopleai_async import PeopleAIAsyncHook

UTC = timezone.utc

#: ``error_type`` of an ``error`` event: the API rejected the credentials (the sensor fails
#: the task without retries).
ERROR_AUTH = "auth"
#: ``error_type`` of an ``error`` event: a non-retryable API answer (a 4xx), or the API still
#: failing when the deadline passed.
ERROR_API = "api"
#: ``error_type`` of an ``error`` event: the connection is missing or its settings are invalid.
ERROR_CONNECTION = "connection"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


class PeopleAINewActivitiesTrigger(BaseTrigger):
    """Poll until at least ``min_count`` activities were ingested at or after ``ingested_since``.

    Every ``poke_interval`` seconds it counts the activities ingested since ``ingested_since``
    with :meth:`PeopleAIAsyncHook.count_ingested
    <airflow_provider_activities.hooks.peopleai_async.PeopleAIAsyncHook.count_ingested>` (the same
    answer as the sync hook), then fires exactly one event:

    * ``{"status": "success", "count": N, "latest_ingested_at": ISO-8601 or None}`` once
      ``N >= min_count``;
    * ``{"status": "timeout", "count": N, "latest_ingested_at": ..., "message": ...}`` when a poll
      finds too few activities after ``deadline``;
    * ``{"status": "error", "error_type": ..., "message": ...}`` on a permanent error:
      ``error_type`` is ``"auth"`` (credentials rejected), ``"api"`` (a non-retryable answer such
      as a 4xx, or the API still failing at the deadline) or ``"connection"`` (connection missing
      or invalid). The message never holds a secret.

    Transient errors (429, 5xx, dropped connections, timeouts, a revoked token) are retried inside
    the client with backoff; should the retries run out, the failure is logged and the next poll
    tries again, so an outage is never reported as "no new data".

    :param ingested_since: the instant from which ingestions count (inclusive): an ISO-8601 string
        with a timezone, or an aware ``datetime``. Serialized as ISO-8601.
    :param activity_type: ``None`` (all types), ``"email"``, ``"call"`` or ``"meeting"``.
    :param min_count: how many activities are needed (at least 1).
    :param peopleai_conn_id: the ``peopleai`` connection, read in the triggerer.
    :param poke_interval: seconds between two polls.
    :param deadline: the absolute instant after which the trigger gives up (epoch seconds,
        ISO-8601 or an aware ``datetime``; serialized as ISO-8601), or ``None`` to wait forever.
    :param exponential_backoff: lengthen the wait between polls as Airflow's sensors do with
        ``exponential_backoff=True`` (``poke_interval`` doubling per poll, with jitter).
    :param max_wait: with ``exponential_backoff``, the longest wait between two polls, in seconds.
    """

    def __init__(
        self,
        ingested_since: str | datetime,
        activity_type: str | None = None,
        min_count: int = 1,
        peopleai_conn_id: str = DEFAULT_CONN_ID,
        poke_interval: float = 60.0,
        deadline: str | float | datetime | None = None,
        exponential_backoff: bool = False,
        max_wait: float | None = None,
    ) -> None:
        super().__init__()
        self.ingested_since: datetime = parse_moment(ingested_since, "ingested_since")
        self.activity_type = check_activity_type(activity_type)
        self.min_count = check_min_count(min_count)
        self.peopleai_conn_id = peopleai_conn_id
        self.poke_interval = check_seconds(poke_interval, "poke_interval")
        self.deadline: datetime | None = parse_deadline(deadline)
        self.exponential_backoff = bool(exponential_backoff)
        self.max_wait = float(max_wait) if max_wait is not None else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and keyword arguments that re-create this trigger; no secret among them
        (the connection is named by its id and read again in the triggerer).
        """
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ingested_since": self.ingested_since.isoformat(),
                "activity_type": self.activity_type,
                "min_count": self.min_count,
                "peopleai_conn_id": self.peopleai_conn_id,
                "poke_interval": self.poke_interval,
                "deadline": _iso(self.deadline),
                "exponential_backoff": self.exponential_backoff,
                "max_wait": self.max_wait,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until enough activities, the deadline, or a permanent error; fire one event.

        The HTTP session is closed before the event is fired.
        """
        payload = await self._wait()
        yield TriggerEvent(payload)

    async def _wait(self) -> dict[str, Any]:
        since = self.ingested_since.isoformat()
        poke_count = 0
        async with PeopleAIAsyncHook(self.peopleai_conn_id) as hook:
            try:
                await hook.get_config()
            except (AirflowException, PeopleAIError, ValueError) as err:
                # AirflowNotFoundException (no such connection), or invalid connection settings
                return _error(ERROR_CONNECTION, str(err))
            while True:
                poke_count += 1
                failure: PeopleAIAPIError | None = None
                answer: IngestCount | None = None
                try:
                    answer = await hook.count_ingested(self.ingested_since, activity_type=self.activity_type)
                except PeopleAIAuthError as err:
                    return _error(ERROR_AUTH, str(err))
                except PeopleAIAPIError as err:
                    if err.permanent:
                        return _error(ERROR_API, str(err))
                    failure = err
                except ValueError as err:  # a record the client cannot read (e.g. a bad timestamp)
                    return _error(ERROR_API, f"People.ai sent an answer the client cannot read: {err}")
                now = datetime.now(UTC)
                expired = self.deadline is not None and now >= self.deadline
                if answer is not None:
                    result = {"count": answer.count, "latest_ingested_at": _iso(answer.latest_ingested_at)}
                    if answer.count >= self.min_count:
                        return {"status": "success", **result}
                    if expired:
                        message = (
                            f"{answer.count} of {self.min_count} activities ingested since {since} "
                            f"at the deadline {_iso(self.deadline)}."
                        )
                        return {"status": "timeout", **result, "message": message}
                    self.log.info(
                        "%d of %d activities ingested since %s (latest at %s); next poll in %.0f s.",
                        answer.count, self.min_count, since, result["latest_ingested_at"],
                        self._next_interval(poke_count, now),
                    )
                elif expired:
                    return _error(ERROR_API, f"People.ai was still failing at the deadline {_iso(self.deadline)}: {failure}")
                else:
                    self.log.warning(
                        "People.ai still failing after the client's retries (%s); polling again in %.0f s.",
                        failure, self._next_interval(poke_count, now),
                    )
                await asyncio.sleep(self._next_interval(poke_count, now))

    def _next_interval(self, poke_count: int, now: datetime) -> float:
        """Seconds until the next poll: ``poke_interval``, or with ``exponential_backoff`` the
        interval Airflow's ``BaseSensorOperator`` would use; never past the deadline.
        """
        interval = self.poke_interval
        if self.exponential_backoff:
            # BaseSensorOperator._get_next_poke_interval: at least 1 s, doubling, plus jitter
            min_backoff = max(int(self.poke_interval * (2 ** min(poke_count - 2, 40))), 1)
            seed = f"{self.peopleai_conn_id}#{self.ingested_since.isoformat()}#{poke_count}".encode()
            run_hash = int(hashlib.sha1(seed, usedforsecurity=False).hexdigest(), 16)
            interval = float(min_backoff + run_hash % min_backoff)
            if self.max_wait is not None:
                interval = min(interval, self.max_wait)
        if self.deadline is not None:
            interval = min(interval, max(0.0, (self.deadline - now).total_seconds()))
        return interval


def _error(error_type: str, message: str) -> dict[str, Any]:
    return {"status": "error", "error_type": error_type, "message": message}



class PeopleAIExportJobTrigger(BaseTrigger):
    """Poll bulk export jobs until they end; fire one event with their last known state.

    Every ``poll_interval`` seconds it reads the state of each unfinished job with the async
    client (:class:`~airflow_provider_activities.hooks.peopleai_async.PeopleAIAsyncHook`, the
    same requests and parsing as :meth:`PeopleAIHook.get_export_job
    <airflow_provider_activities.hooks.peopleai.PeopleAIHook.get_export_job>`), and fires:

    * ``{"status": "done", "jobs": [job, ...], "run_state": ...}`` (each job as
      :meth:`ExportJob.as_dict <airflow_provider_activities.api.export.ExportJob.as_dict>`) when
      every job reached a final state, when one ended ``Failed`` or ``Canceled``, or, with
      ``wait_for="any"``, as soon as one of them ended (so the operator can submit the next job);
      with no job ids at all, after one ``poll_interval`` (the operator waits out a "too many
      jobs" answer this way);
    * ``{"status": "error", "error_type": ..., "message": ...}`` on a permanent error: rejected
      credentials (``"auth"``), a non-retryable answer such as a 404 for a job the API no longer
      knows (``"api"``), a missing or invalid connection (``"connection"``).

    Deciding what a ``Failed`` job means is the operator's: the trigger only reports states.
    Transient errors are retried inside the client; should the retries run out, the next poll
    tries again. The task's deferral ``timeout`` bounds the wait.

    :param job_ids: the jobs to wait for.
    :param peopleai_conn_id: the ``peopleai`` connection, read in the triggerer.
    :param poll_interval: seconds between two rounds of polls.
    :param wait_for: ``"all"`` (every job ends) or ``"any"`` (the first one ends).
    :param run_state: the operator's bookkeeping of its jobs (JSON), returned unchanged in the
        ``done`` event as ``run_state`` so the task resumes with it. (Airflow also keeps a
        deferral's ``kwargs`` for the resumed method, but ``dag.test()`` drops them.)
    """

    def __init__(
        self,
        job_ids: list[str],
        peopleai_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        wait_for: str = "all",
        run_state: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(job_ids, (list, tuple)):
            raise ValueError(f"job_ids={job_ids!r} must be a list of export job ids.")
        self.job_ids = [check_job_id(job_id) for job_id in job_ids]
        self.peopleai_conn_id = peopleai_conn_id
        self.poll_interval = check_seconds(poll_interval, "poll_interval")
        if wait_for not in WAIT_FOR:
            raise ValueError(f"wait_for={wait_for!r} must be 'all' or 'any'.")
        self.wait_for = wait_for
        self.run_state = run_state

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and keyword arguments (job ids and the connection id; no secret)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_ids": list(self.job_ids),
                "peopleai_conn_id": self.peopleai_conn_id,
                "poll_interval": self.poll_interval,
                "wait_for": self.wait_for,
                "run_state": self.run_state,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the jobs end (see the class), then fire one event; the session is closed first."""
        payload = await self._wait()
        yield TriggerEvent(payload)

    async def _wait(self) -> dict[str, Any]:
        if not self.job_ids:
            await asyncio.sleep(self.poll_interval)
            return {"status": "done", "jobs": [], "run_state": self.run_state}
        known: dict[str, ExportJob] = {}
        async with PeopleAIAsyncHook(self.peopleai_conn_id) as hook:
            try:
                config = await hook.get_config()
            except (AirflowException, PeopleAIError, ValueError) as err:
                return _error(ERROR_CONNECTION, str(err))
            while True:
                for job_id in self.job_ids:
                    if job_id in known and known[job_id].finished:
                        continue
                    try:
                        known[job_id] = await hook.run(job_status_request(config, job_id), parse_export_job)
                    except PeopleAIAuthError as err:
                        return _error(ERROR_AUTH, str(err))
                    except PeopleAIAPIError as err:
                        if err.permanent:
                            return _error(ERROR_API, f"export job {job_id}: {err}")
                        self.log.warning("People.ai export job %s: still failing after retries (%s).", job_id, err)
                if wait_is_over([known.get(job_id) for job_id in self.job_ids], self.wait_for):
                    jobs = [known[job_id].as_dict() for job_id in self.job_ids]
                    return {"status": "done", "jobs": jobs, "run_state": self.run_state}
                self.log.info(
                    "People.ai export jobs: %s; next poll in %.0f s.",
                    ", ".join(f"{job_id} {known[job_id].state}" if job_id in known else f"{job_id} ?" for job_id in self.job_ids),
                    self.poll_interval,
                )
                await asyncio.sleep(self.poll_interval)
