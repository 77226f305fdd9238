"""PeopleAINewActivitiesSensor: wait until People.ai has ingested new activities."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_activities import DEFAULT_CONN_ID
from airflow_provider_activities.api.errors import PeopleAIAuthError, PeopleAIError
from airflow_provider_activities.api.queries import IngestCount
from airflow_provider_activities.api.validation import check_activity_type, check_min_count, is_template, parse_moment
from airflow_provider_activities.compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)
from airflow_provider_activities.hooks.peopleai import PeopleAIHook
from airflow_provider_activities.triggers.peopleai import ERROR_AUTH, PeopleAINewActivitiesTrigger

if TYPE_CHECKING:
    from airflow_provider_activities.compat import Context


def _check_activity_type(value: Any) -> str | None:
    """``activity_type`` as ``None`` or a known type (an empty rendered template means all types)."""
    if isinstance(value, str):
        value = value.strip() or None
    return check_activity_type(value)


class PeopleAINewActivitiesSensor(BaseSensorOperator):
    """Succeed once at least ``min_count`` activities were ingested at or after ``ingested_since``.

    **The recipe.** With the default ``ingested_since="{{ data_interval_end }}"``, a daily DAG waits
    until People.ai's ingestion has moved past the end of the interval it extracts: an activity
    ingested after midnight is the usual sign that the day's activities are in, so the extract
    that follows reads a complete day::

        wait = PeopleAINewActivitiesSensor(task_id="wait_for_ingestion", deferrable=True,
                                           poke_interval=600, timeout=12 * 3600)
        wait >> extract_activities

    **Its limits.** Ingestion lag is not bounded: a mailbox connected late, a user added later or a
    calendar reprocessed brings activities of the day after the sensor succeeded. Those late
    activities are not in the extract; a rerun of the day (clear the run) picks them up, and the
    export API's ``delta`` jobs catch reprocessed ones. Ingestion is not in activity order either,
    so "ingestion moved past the interval" is a heuristic, not a guarantee. And a reprocessing
    of old data also counts as new ingestion, so the sensor may succeed early on such a day.

    The ingestion time is ``ingested_at`` where the API sends it, else ``created_at``; it is checked
    client-side (the API ignores filters it does not know). Each ``uid`` counts once.

    **Errors.** Transient errors (429, 5xx, dropped connections, timeouts, a revoked token) are
    retried by the hook with backoff and never counted as "no data". Rejected credentials fail
    the task at once (``AirflowFailException``, no retries); other API errors fail the try (task
    ``retries`` apply). As in Airflow's own sensors, ``soft_fail=True`` turns a timeout, and also an
    ``AirflowFailException``, into a skip; ``never_fail`` and ``silent_fail`` work as in Airflow too.

    **Modes.** ``mode="poke"`` (default) holds a worker slot and sleeps between pokes;
    ``mode="reschedule"`` frees it between pokes; ``deferrable=True`` pokes once and, when the
    data is not there yet, waits in the triggerer on
    :class:`~airflow_provider_activities.triggers.peopleai.PeopleAINewActivitiesTrigger`. ``timeout``
    counts from the first poke in every mode, and ``exponential_backoff`` / ``max_wait`` lengthen
    the wait between pokes in every mode.

    :param ingested_since: the instant from which ingestions count (inclusive): an ISO-8601 string
        with a timezone, or an aware ``datetime``/pendulum. Templated; default
        ``"{{ data_interval_end }}"``.
    :param activity_type: ``None`` for all types, or ``"email"``, ``"call"``, ``"meeting"``. Templated.
    :param min_count: how many activities are needed, at least 1. Templated (a rendered ``"5"`` is fine).
    :param peopleai_conn_id: the ``peopleai`` connection. Templated (like the operators' own), so
        that e.g. ``"{{ var.value.peopleai_conn_id }}"`` picks it per deployment.
    :param deferrable: wait in the triggerer instead of a worker slot; default
        ``[operators] default_deferrable`` (``False`` unless configured).
    :param kwargs: ``task_id``, ``poke_interval``, ``timeout``, ``mode``, ``soft_fail``,
        ``exponential_backoff``, ``max_wait`` and the other arguments of Airflow's
        ``BaseSensorOperator``.
    :return: (XCom ``return_value``) ``{"count": N, "latest_ingested_at": ISO-8601 or None}``, the
        count and latest ingestion time found by the successful poke.
    :raises ValueError: for a bad ``ingested_since``, ``activity_type`` or ``min_count``, naming
        the parameter: at construction when not templated, else before any API call.
    """

    template_fields: Sequence[str] = ("ingested_since", "activity_type", "min_count", "peopleai_conn_id")
    ui_color = "#fdf3e8"

    def __init__(
        self,
        *,
        ingested_since: str | datetime = "{{ data_interval_end }}",
        activity_type: str | None = None,
        min_count: int | str = 1,
        peopleai_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not is_template(ingested_since):
            parse_moment(ingested_since, "ingested_since")
        if not is_template(activity_type):
            _check_activity_type(activity_type)
        if not is_template(min_count):
            check_min_count(min_count)
        self.ingested_since = ingested_since
        self.activity_type = activity_type
        self.min_count = min_count
        self.peopleai_conn_id = peopleai_conn_id
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> PeopleAIHook:
        """The sync hook of the pokes (one per task try, so pokes share its token)."""
        return PeopleAIHook(peopleai_conn_id=self.peopleai_conn_id)

    def _arguments(self) -> tuple[datetime, str | None, int]:
        """The rendered arguments, checked: ``(ingested_since, activity_type, min_count)``."""
        since = parse_moment(self.ingested_since, "ingested_since")
        return since, _check_activity_type(self.activity_type), check_min_count(self.min_count)

    @staticmethod
    def _xcom(answer: IngestCount) -> dict[str, Any]:
        latest = answer.latest_ingested_at.isoformat() if answer.latest_ingested_at else None
        return {"count": answer.count, "latest_ingested_at": latest}

    def poke(self, context: Context) -> PokeReturnValue:
        """Count the activities ingested since ``ingested_since``; done when at least ``min_count``.

        :raises AirflowFailException: when People.ai rejects the connection's credentials.
        """
        since, activity_type, min_count = self._arguments()
        try:
            answer = self.hook.count_ingested(since, activity_type=activity_type)
        except PeopleAIAuthError as err:
            raise AirflowFailException(str(err)) from None
        self.log.info(
            "%d %s ingested since %s (need %d; latest at %s).",
            answer.count, f"{activity_type} activities" if activity_type else "activities",
            since.isoformat(), min_count, self._xcom(answer)["latest_ingested_at"],
        )
        return PokeReturnValue(is_done=answer.count >= min_count, xcom_value=self._xcom(answer))

    def execute(self, context: Context) -> Any:
        """Poke (``poke`` or ``reschedule`` mode) as Airflow's sensors do; deferrable: poke once,
        return at once when done, else defer to the trigger until the timeout.
        """
        try:
            if not self.deferrable:
                return super().execute(context)
            return self._execute_deferrable(context)
        finally:
            if "hook" in self.__dict__:
                self.hook.close()

    def _execute_deferrable(self, context: Context) -> Any:
        started = datetime.now(timezone.utc)
        first = self._first_poke(context)
        if first:
            self.log.info("Success criteria met. Exiting.")
            return first.xcom_value
        since, activity_type, min_count = self._arguments()
        self.defer(
            trigger=PeopleAINewActivitiesTrigger(
                ingested_since=since,
                activity_type=activity_type,
                min_count=min_count,
                peopleai_conn_id=self.peopleai_conn_id,
                poke_interval=float(self.poke_interval),
                deadline=started + timedelta(seconds=self.timeout),
                exponential_backoff=self.exponential_backoff,
                max_wait=self.max_wait.total_seconds() if self.max_wait is not None else None,
            ),
            method_name="execute_complete",
        )

    def _first_poke(self, context: Context) -> PokeReturnValue:
        """The deferrable mode's first poke, its exceptions handled as ``BaseSensorOperator.execute`` does."""
        try:
            return self.poke(context)
        except (AirflowSensorTimeout, AirflowFailException) as err:
            if self.soft_fail:
                raise AirflowSkipException("Skipping due to soft_fail is set to True.") from err
            if self.never_fail:
                raise AirflowSkipException("Skipping due to never_fail is set to True.") from err
            raise
        except AirflowSkipException:
            raise
        except Exception as err:
            if self.silent_fail:
                self.log.error("Sensor poke failed: \n %s", traceback.format_exc())
                return PokeReturnValue(is_done=False)
            if self.never_fail:
                raise AirflowSkipException("Skipping due to never_fail is set to True.") from err
            raise

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Turn the trigger's event into the task's outcome.

        :return: (XCom) ``{"count": N, "latest_ingested_at": ISO-8601 or None}`` on success.
        :raises AirflowSensorTimeout: on a ``timeout`` event (Airflow skips the task instead when
            ``soft_fail`` is set).
        :raises AirflowFailException: on an ``error`` event for rejected credentials.
        :raises PeopleAIError: on any other ``error`` event (task retries apply).
        """
        event = event or {}
        status = event.get("status")
        if status == "success":
            self.log.info(
                "Success criteria met: %d activities ingested (latest at %s).", event["count"], event["latest_ingested_at"]
            )
            return {"count": event["count"], "latest_ingested_at": event["latest_ingested_at"]}
        if status == "timeout":
            detail = f": {event['message']}" if event.get("message") else "."
            raise AirflowSensorTimeout(f"Sensor has timed out after {self.timeout} s{detail}")
        if status == "error":
            message = f"People.ai sensor failed: {event.get('message')}"
            if event.get("error_type") == ERROR_AUTH:
                raise AirflowFailException(message)
            raise PeopleAIError(message)
        raise PeopleAIError(f"People.ai sensor got an unexpected trigger event: {event!r}")
