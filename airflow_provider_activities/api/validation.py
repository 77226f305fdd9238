"""Checks of caller input, run before any HTTP call; each error names the parameter and the fix."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_activities.api.protocol import ACTIVITY_TYPES

MAX_RANGE = timedelta(days=731)  # the API's limit for activity data: 2 years


def check_seconds(value: Any, param: str) -> float:
    """A wait in seconds (``int`` or ``float``, 0 or more) as a ``float``.

    :raises ValueError: naming ``param`` for anything else.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{param}={value!r} must be a number of seconds, 0 or more.")
    return float(value)


def check_activity_type(activity_type: Any, param: str = "activity_type") -> str | None:
    """``None`` (all types) or one of ``email``, ``call``, ``meeting``."""
    if activity_type is None or activity_type in ACTIVITY_TYPES:
        return activity_type
    raise ValueError(
        f"{param}={activity_type!r} is not an activity type: use None (all types) or one of {', '.join(ACTIVITY_TYPES)}."
    )


def check_aware(value: Any, param: str) -> datetime:
    """A timezone-aware ``datetime``, returned converted to UTC.

    The API's day filters are UTC days: ``2026-11-02T00:00+05:00`` is ``2026-11-01T19:00Z``, so
    its day is 2026-11-01. Every caller therefore works on the UTC value.
    """
    if not isinstance(value, datetime):
        raise ValueError(f"{param} must be a timezone-aware datetime, got {type(value).__name__} {value!r}.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{param}={value.isoformat()} is a naive datetime: give it a timezone, e.g. "
            f"{param}.replace(tzinfo=datetime.timezone.utc) or pendulum.datetime(..., tz='UTC')."
        )
    return value.astimezone(timezone.utc)


def check_interval(
    start: Any, end: Any, start_param: str = "start", end_param: str = "end", max_range: timedelta = MAX_RANGE
) -> tuple[datetime, datetime]:
    """A non-empty interval ``[start, end)`` of aware datetimes, no longer than the API allows."""
    start = check_aware(start, start_param)
    end = check_aware(end, end_param)
    if end <= start:
        raise ValueError(
            f"{end_param} ({end.isoformat()}) must be after {start_param} ({start.isoformat()}): the interval "
            f"[{start_param}, {end_param}) is empty or inverted."
        )
    if end - start > max_range:
        raise ValueError(
            f"[{start_param}, {end_param}) spans {end - start}, over the API's {max_range.days}-day limit: "
            "split it into shorter intervals (e.g. one per day with a daily schedule and catchup)."
        )
    return start, end
