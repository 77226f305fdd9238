"""Deferrable triggers: they wait in the triggerer, on the async People.ai client, so no worker
slot is held. They carry the connection id, never a secret, in their serialized arguments."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from airflow_provider_activities import DEFAULT_CONN_ID
from airflow_provider_activities.api.errors import PeopleAIAPIError, PeopleAIError
from airflow_provider_activities.api.policy import RetryPolicy
from airflow_provider_activities.compat import BaseTrigger, TriggerEvent
from airflow_provider_activities.hooks.peopleai_async import PeopleAIAsyncHook


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


class PeopleAINewActivitiesTrigger(BaseTrigger):
    """Poll until at least ``min_count`` activities were ingested at or after ``ingested_since``.

    Fires exactly one event: ``{"status": "success", "count", "latest_ingested_at"}``,
    ``{"status": "timeout", "count", "latest_ingested_at"}`` once ``deadline`` passes, or
    ``{"status": "error", "message"}`` on a permanent error (rejected credentials, a 4xx).
    Transient errors (429, 5xx, dropped connections) are retried inside the client.

    :param ingested_since: ISO-8601, timezone-aware.
    :param activity_type: ``None`` (all), ``"email"``, ``"call"`` or ``"meeting"``.
    :param min_count: activities needed.
    :param peopleai_conn_id: the ``peopleai`` connection, read in the triggerer.
    :param poke_interval: seconds between polls.
    :param deadline: ISO-8601 instant after which the trigger gives up, or ``None``.
    """

    def __init__(
        self,
        ingested_since: str,
        activity_type: str | None = None,
        min_count: int = 1,
        peopleai_conn_id: str = DEFAULT_CONN_ID,
        poke_interval: float = 60.0,
        deadline: str | None = None,
    ) -> None:
        super().__init__()
        self.ingested_since = ingested_since
        self.activity_type = activity_type
        self.min_count = min_count
        self.peopleai_conn_id = peopleai_conn_id
        self.poke_interval = poke_interval
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and arguments; no secret among them."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ingested_since": self.ingested_since,
                "activity_type": self.activity_type,
                "min_count": self.min_count,
                "peopleai_conn_id": self.peopleai_conn_id,
                "poke_interval": self.poke_interval,
                "deadline": self.deadline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll ``count_ingested`` until enough data, the deadline, or a permanent error."""
        since = datetime.fromisoformat(self.ingested_since)
        deadline = datetime.fromisoformat(self.deadline) if self.deadline else None
        async with PeopleAIAsyncHook(self.peopleai_conn_id) as hook:
            while True:
                try:
                    answer = await hook.count_ingested(since, activity_type=self.activity_type)
                except (PeopleAIError, ValueError) as err:
                    if isinstance(err, PeopleAIAPIError) and (err.status is None or RetryPolicy.retryable_status(err.status)):
                        self.log.warning("People.ai still failing after retries (%s); polling again.", err)
                        await asyncio.sleep(self.poke_interval)
                        continue
                    yield TriggerEvent({"status": "error", "message": str(err)})
                    return
                result = {"count": answer.count, "latest_ingested_at": _iso(answer.latest_ingested_at)}
                if answer.count >= self.min_count:
                    yield TriggerEvent({"status": "success", **result})
                    return
                now = datetime.now(timezone.utc)
                if deadline is not None and now >= deadline:
                    yield TriggerEvent({"status": "timeout", **result})
                    return
                self.log.info(
                    "%d of %d activities ingested since %s; next poll in %.0f s.",
                    answer.count, self.min_count, self.ingested_since, self.poke_interval,
                )
                wait = self.poke_interval
                if deadline is not None:
                    wait = max(0.0, min(wait, (deadline - now).total_seconds()))
                await asyncio.sleep(wait)
