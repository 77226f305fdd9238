"""PeopleAINewActivitiesSensor: wait until People.ai has ingested new activities."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Sequence

from airflow_provider_activities import DEFAULT_CONN_ID
from airflow_provider_activities.api.errors import PeopleAIAuthError
from airflow_provider_activities.api.validation import check_activity_type
from airflow_provider_activities.compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)
from airflow_provider_activities.hooks.peopleai import IngestCount, PeopleAIHook
from airflow_provider_activities.partitioning import parse_moment
from airflow_provider_activities.triggers.peopleai import PeopleAINewActivitiesTrigger

if TYPE_CHECKING:
    from airflow_provider_activities.compat import Context


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


class PeopleAINewActivitiesSensor(BaseSensorOperator):
    """Succeed once at least ``min_count`` activities were ingested at or after ``ingested_since``.

    The recipe: with the default ``ingested_since="{{ data_interval_end }}"``, a daily DAG waits
    until People.ai's ingestion has moved past the end of the day it extracts, the usual sign that
    the day's activities are in. Its limits: ingestion lag is not bounded (a mailbox connected
    late, a calendar reprocessed), so an activity of the day can still arrive after the sensor
    succeeded; a rerun of the day picks it up, and the delta export catches reprocessed ones.

    The ingestion time is ``ingested_at`` where the API sends it, else ``created_at``; it is
    checked client-side because the API ignores filters it does not know. Transient errors
    (429, 5xx, dropped connections, a revoked token) are retried by the hook and never counted
    as "no data"; rejected credentials fail the task at once.

    :param ingested_since: timezone-aware instant (ISO-8601 string or datetime). Templated.
    :param activity_type: ``None`` for all types, or ``"email"``, ``"call"``, ``"meeting"``. Templated.
    :param min_count: how many activities are needed (at least 1). Templated.
    :param peopleai_conn_id: the ``peopleai`` connection. Templated.
    :param deferrable: wait in the triggerer instead of a worker slot (default:
        ``[operators] default_deferrable``).
    :return: (XCom) ``{"count": N, "latest_ingested_at": ISO-8601 or None}``.

    ``poke_interval``, ``timeout``, ``mode``, ``soft_fail`` and ``exponential_backoff`` work as in
    Airflow's own sensors.
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
        if not _is_template(activity_type):
            check_activity_type(activity_type or None)
        if not _is_template(min_count):
            self._check_min_count(min_count)
        if isinstance(ingested_since, datetime):
            parse_moment(ingested_since, "ingested_since")
        self.ingested_since = ingested_since
        self.activity_type = activity_type
        self.min_count = min_count
        self.peopleai_conn_id = peopleai_conn_id
        self.deferrable = deferrable

    @staticmethod
    def _check_min_count(value: Any) -> int:
        try:
            count = int(value)
        except (TypeError, ValueError):
            count = 0
        if isinstance(value, bool) or count < 1 or str(count) != str(value).strip():
            raise ValueError(f"min_count={value!r} must be a whole number of at least 1.")
        return count

    def _arguments(self) -> tuple[datetime, str | None, int]:
        since = parse_moment(self.ingested_since, "ingested_since")
        return since, check_activity_type(self.activity_type or None), self._check_min_count(self.min_count)

    def _count(self) -> IngestCount:
        since, activity_type, _ = self._arguments()
        hook = PeopleAIHook(peopleai_conn_id=self.peopleai_conn_id)
        try:
            return hook.count_ingested(since, activity_type=activity_type)
        except PeopleAIAuthError as err:
            raise AirflowFailException(str(err)) from None
        finally:
            hook.close()

    @staticmethod
    def _xcom(answer: IngestCount) -> dict[str, Any]:
        latest = answer.latest_ingested_at.isoformat() if answer.latest_ingested_at else None
        return {"count": answer.count, "latest_ingested_at": latest}

    def poke(self, context: Context) -> PokeReturnValue:
        """Count the activities ingested since ``ingested_since``."""
        _, _, min_count = self._arguments()
        answer = self._count()
        self.log.info("%d activities ingested since %s (need %d).", answer.count, self.ingested_since, min_count)
        return PokeReturnValue(is_done=answer.count >= min_count, xcom_value=self._xcom(answer))

    def execute(self, context: Context) -> Any:
        """Poke (or reschedule) as usual; deferrable: poke once, then defer to the trigger."""
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        since, activity_type, min_count = self._arguments()
        deadline = datetime.now(timezone.utc) + timedelta(seconds=self.timeout)
        self.defer(
            trigger=PeopleAINewActivitiesTrigger(
                ingested_since=since.isoformat(),
                activity_type=activity_type,
                min_count=min_count,
                peopleai_conn_id=self.peopleai_conn_id,
                poke_interval=float(self.poke_interval),
                deadline=deadline.isoformat(),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Turn the trigger's event into the task's outcome (XCom on success)."""
        status = event.get("status")
        if status == "success":
            self.log.info("%d activities ingested (latest at %s).", event["count"], event["latest_ingested_at"])
            return {"count": event["count"], "latest_ingested_at": event["latest_ingested_at"]}
        if status == "timeout":
            raise AirflowSensorTimeout(
                f"Sensor has timed out after {self.timeout} s: {event.get('count')} activities ingested since "
                f"{self.ingested_since}, {self.min_count} needed."
            )
        raise AirflowFailException(f"People.ai sensor failed: {event.get('message', event)}")
