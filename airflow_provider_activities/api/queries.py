"""The reads the provider makes, each as an endpoint, its filters and its client-side filter.

Shared by the sync hook and the async trigger client so both ask the same thing and keep
the same records.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow_provider_activities.api.protocol import (
    ACTIVITY_TIMESTAMP_FIELDS,
    PARTICIPANT_TIMESTAMP_FIELDS,
    PARTICIPANTS_PATH,
    activities_path,
    day_filters,
)
from airflow_provider_activities.api.validation import (
    check_activity_type,
    check_aware,
    check_interval,
    datetime_to_ms,
    to_epoch_ms,
)

# -- record identity and client-side bounds ---------------------------------------------------------


def activity_key(record: dict[str, Any]) -> Hashable:
    """An activity's identity: its ``uid``."""
    return record.get("uid")


def participant_identity(activity_uid: Any, participant_id: Any, email: Any) -> Hashable:
    """A participant's identity from its parts: (``activity_uid``, ``id``), or the e-mail without an ``id``."""
    if participant_id is None:
        return (activity_uid, None, email)
    return (activity_uid, participant_id)


def participant_key(record: dict[str, Any]) -> Hashable:
    """A participant's identity: (``activity_uid``, ``id``), or the e-mail where ``id`` is missing."""
    return participant_identity(record.get("activity_uid"), record.get("id"), record.get("email"))


@dataclass
class FilterStats:
    """What a :class:`RecordFilter` saw.

    :param seen: records received.
    :param kept: records passed on.
    :param duplicates: repeated identities dropped.
    :param outside: records outside the interval dropped (the API ignored or widened a filter).
    """

    seen: int = 0
    kept: int = 0
    duplicates: int = 0
    outside: int = 0


def bound_records(
    records: Iterable[dict[str, Any]],
    time_field: str,
    start_ms: int,
    end_ms: int | None,
    timestamp_fields: tuple[str, ...],
    fallback_time_field: str | None,
    stats: FilterStats,
) -> list[dict[str, Any]]:
    """The records inside ``[start_ms, end_ms)`` on ``time_field`` (``fallback_time_field`` where it
    is missing), their ``timestamp_fields`` normalised in place to epoch ms; counted in ``stats``.
    """
    inside: list[dict[str, Any]] = []
    for record in records:
        stats.seen += 1
        for name in timestamp_fields:
            value = record.get(name)
            if value is not None and type(value) is not int:
                record[name] = to_epoch_ms(value)
        moment = record.get(time_field)
        if moment is None and fallback_time_field is not None:
            moment = record.get(fallback_time_field)
        if moment is None or moment < start_ms or (end_ms is not None and moment >= end_ms):
            stats.outside += 1
            continue
        inside.append(record)
    return inside


@dataclass(frozen=True)
class Bounds:
    """What a read keeps: records in ``[start_ms, end_ms)`` on one field, each identity once.

    :param time_field: the field bounded (``timestamp``, ``activity_timestamp``, ``ingested_at``).
    :param start_ms: inclusive lower bound, epoch ms.
    :param end_ms: exclusive upper bound, epoch ms; ``None`` for no upper bound.
    :param key: the record identity (:func:`activity_key` or :func:`participant_key`).
    :param timestamp_fields: fields normalised to epoch ms.
    :param fallback_time_field: used when ``time_field`` is missing or null (``created_at`` when a
        deployment does not send ``ingested_at``).
    """

    time_field: str
    start_ms: int
    end_ms: int | None
    key: Callable[[dict[str, Any]], Hashable]
    timestamp_fields: tuple[str, ...]
    fallback_time_field: str | None = None


class DistinctRecords:
    """Bounds and de-duplicates pages of dicts with a plain ``set`` of identities.

    For small reads where the standard library is enough (the triggerer's counts); the extract
    path uses :class:`~airflow_provider_activities.records.filters.RecordFilter`, whose key store
    stays small and spills to disk. Both keep the same records.

    :param bounds: what to keep.
    """

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.stats = FilterStats()
        self._seen: set[Hashable] = set()

    def apply(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records of one page that are new and inside the interval, timestamps normalised."""
        b = self.bounds
        inside = bound_records(records, b.time_field, b.start_ms, b.end_ms, b.timestamp_fields, b.fallback_time_field, self.stats)
        new: list[dict[str, Any]] = []
        for record in inside:
            identity = b.key(record)
            if identity in self._seen:
                self.stats.duplicates += 1
                continue
            self._seen.add(identity)
            new.append(record)
        self.stats.kept += len(new)
        return new


@dataclass(frozen=True)
class IngestCount:
    """The answer of ``count_ingested`` (sync and async hooks alike).

    :param count: activities ingested in the window (each ``uid`` once).
    :param latest_ingested_at: the latest ingestion time seen, or ``None`` when none was.
    """

    count: int
    latest_ingested_at: datetime | None


# -- the reads --------------------------------------------------------------------------------------




@dataclass
class Query:
    """One paginated read.

    :param path: the endpoint path.
    :param filters: the query parameters sent with every page (day-granular; may be ignored).
    :param bounds: what is kept of what comes back.
    """

    path: str
    filters: dict[str, str]
    bounds: Bounds


def activities_query(start: datetime, end: datetime, activity_type: str | None = None) -> Query:
    """Activities whose ``timestamp`` is in ``[start, end)``, of one type or all."""
    start, end = check_interval(start, end)
    activity_type = check_activity_type(activity_type)
    return Query(
        path=activities_path(activity_type),
        filters=day_filters(start, end),
        bounds=Bounds(
            time_field="timestamp",
            start_ms=datetime_to_ms(start),
            end_ms=datetime_to_ms(end),
            key=activity_key,
            timestamp_fields=ACTIVITY_TIMESTAMP_FIELDS,
        ),
    )


def participants_query(start: datetime, end: datetime) -> Query:
    """Participants whose ``activity_timestamp`` is in ``[start, end)``."""
    start, end = check_interval(start, end)
    return Query(
        path=PARTICIPANTS_PATH,
        filters=day_filters(start, end),
        bounds=Bounds(
            time_field="activity_timestamp",
            start_ms=datetime_to_ms(start),
            end_ms=datetime_to_ms(end),
            key=participant_key,
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
        bounds=Bounds(
            time_field="ingested_at",
            fallback_time_field="created_at",
            start_ms=datetime_to_ms(since),
            end_ms=datetime_to_ms(until) if until is not None else None,
            key=activity_key,
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
