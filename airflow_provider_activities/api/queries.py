"""The reads the provider makes, each as an endpoint, its filters and its client-side filter.

Shared by the sync hook and the async trigger client so both ask the same thing and keep
the same records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from airflow_provider_activities.api.protocol import PARTICIPANTS_PATH, activities_path, day_filters
from airflow_provider_activities.api.records import (
    ACTIVITY_BATCH_KEY,
    ACTIVITY_TIMESTAMP_FIELDS,
    PARTICIPANT_BATCH_KEY,
    PARTICIPANT_TIMESTAMP_FIELDS,
    RecordFilter,
    activity_key,
    datetime_to_ms,
    participant_key,
)
from airflow_provider_activities.api.validation import check_activity_type, check_aware, check_interval


@dataclass
class Query:
    """One paginated read.

    :param path: the endpoint path.
    :param filters: the query parameters sent with every page (day-granular; may be ignored).
    :param record_filter: bounds and de-duplicates what comes back.
    """

    path: str
    filters: dict[str, str]
    record_filter: RecordFilter


def activities_query(start: datetime, end: datetime, activity_type: str | None = None) -> Query:
    """Activities whose ``timestamp`` is in ``[start, end)``, of one type or all."""
    start, end = check_interval(start, end)
    activity_type = check_activity_type(activity_type)
    return Query(
        path=activities_path(activity_type),
        filters=day_filters(start, end),
        record_filter=RecordFilter(
            time_field="timestamp",
            start_ms=datetime_to_ms(start),
            end_ms=datetime_to_ms(end),
            key=activity_key,
            batch_key=ACTIVITY_BATCH_KEY,
            timestamp_fields=ACTIVITY_TIMESTAMP_FIELDS,
        ),
    )


def participants_query(start: datetime, end: datetime) -> Query:
    """Participants whose ``activity_timestamp`` is in ``[start, end)``."""
    start, end = check_interval(start, end)
    return Query(
        path=PARTICIPANTS_PATH,
        filters=day_filters(start, end),
        record_filter=RecordFilter(
            time_field="activity_timestamp",
            start_ms=datetime_to_ms(start),
            end_ms=datetime_to_ms(end),
            key=participant_key,
            batch_key=PARTICIPANT_BATCH_KEY,
            timestamp_fields=PARTICIPANT_TIMESTAMP_FIELDS,
        ),
    )


def ingested_query(since: datetime, until: datetime | None = None, activity_type: str | None = None) -> Query:
    """Activities ingested in ``[since, until)``: ``ingested_at`` where present, else ``created_at``."""
    if until is None:
        since = check_aware(since, "since")
        filters = {"ingested-from": since.date().isoformat()}
    else:
        since, until = check_interval(since, until, "since", "until")
        filters = day_filters(since, until, prefix="ingested-")
    activity_type = check_activity_type(activity_type)
    return Query(
        path=activities_path(activity_type),
        filters=filters,
        record_filter=RecordFilter(
            time_field="ingested_at",
            fallback_time_field="created_at",
            start_ms=datetime_to_ms(since),
            end_ms=datetime_to_ms(until) if until is not None else None,
            key=activity_key,
            batch_key=ACTIVITY_BATCH_KEY,
            timestamp_fields=ACTIVITY_TIMESTAMP_FIELDS,
        ),
    )


def latest_ingested_ms(records: Iterable[dict[str, Any]], current: int | None) -> int | None:
    """The latest ingestion time (epoch ms) among ``records`` and ``current``."""
    for record in records:
        moment = record.get("ingested_at")
        if moment is None:
            moment = record.get("created_at")
        if moment is not None and (current is None or moment > current):
            current = moment
    return current
