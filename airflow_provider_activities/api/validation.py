"""Time and input: parsing timestamps and moments, and checks of caller input.

Every check runs before any HTTP call or write, and each error names the parameter and the fix.
Standard library only: the triggerer imports it.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from airflow_provider_activities.api.protocol import ACTIVITY_TYPES

MAX_RANGE = timedelta(days=731)  # the API's limit for activity data: 2 years
UTC = timezone.utc
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# -- timestamps ----------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Below this magnitude a number is taken as epoch seconds, above as epoch milliseconds
# (10**11 s is the year 5138; 10**11 ms is March 1973).
_SECONDS_CUTOFF = 100_000_000_000


def to_epoch_ms(value: Any) -> int | None:
    """Epoch milliseconds (UTC) of a timestamp in any form the API uses.

    Accepts ``None``, epoch milliseconds (or seconds, below 10**11), numeric strings, ISO-8601
    strings with ``Z`` or an offset (a string without one is taken as UTC, as the API says all
    its times are), and ``datetime`` (naive taken as UTC).

    :raises ValueError: for anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int):
        return value if abs(value) >= _SECONDS_CUTOFF else value * 1000
    if isinstance(value, float):
        return int(value) if abs(value) >= _SECONDS_CUTOFF else round(value * 1000)
    if isinstance(value, datetime):
        return _datetime_ms(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.lstrip("-").isdigit():
            return to_epoch_ms(int(text))
        return _datetime_ms(_parse_iso(text))
    raise ValueError(f"not a timestamp: {value!r}")


def _parse_iso(text: str) -> datetime:
    candidate = text[:-1] + "+00:00" if text[-1] in "Zz" else text
    try:
        return datetime.fromisoformat(candidate)
    except ValueError:
        pass
    # Python 3.10's fromisoformat takes only 3 or 6 fraction digits: pad or cut them.
    head, sep, tail = candidate.partition(".")
    if sep:
        digits = len(tail) - len(tail.lstrip("0123456789"))
        fraction, rest = tail[:digits], tail[digits:]
        try:
            return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}{rest}")
        except ValueError:
            pass
    raise ValueError(f"not an ISO-8601 timestamp: {text!r}")


def _datetime_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_datetime(value: int | None) -> datetime | None:
    """The timezone-aware UTC ``datetime`` of epoch milliseconds."""
    if value is None:
        return None
    return _EPOCH + timedelta(milliseconds=value)


def datetime_to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware ``datetime``."""
    return _datetime_ms(value)


# -- moments and days given by callers -------------------------------------------------------------


def parse_moment(value: Any, param: str) -> datetime:
    """A rendered ``start``/``end`` (ISO-8601 string, ``datetime`` or pendulum) as an aware datetime.

    :raises ValueError: naming ``param`` for an empty, unparsable or naive value.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise ValueError(
                f"{param}={value!r} is not an ISO-8601 datetime such as 2026-11-01T00:00:00+00:00."
            ) from None
    else:
        raise ValueError(
            f"{param}={value!r} is empty or not a datetime: it must render to an ISO-8601 datetime "
            "(the default is the data interval's bound)."
        )
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{param}={value!r} has no timezone: add one, e.g. +00:00.")
    return moment.astimezone(timezone.utc)


def parse_deadline(value: str | float | datetime | None) -> datetime | None:
    """An absolute deadline as an aware UTC ``datetime``.

    :param value: ``None`` (no deadline), epoch seconds (a number or a numeric string), an
        ISO-8601 string with a timezone, or an aware ``datetime``.
    :raises ValueError: naming ``deadline`` for anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"deadline={value!r} is neither epoch seconds nor an ISO-8601 datetime.")
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        try:
            return datetime.fromtimestamp(float(value.strip()), UTC)
        except ValueError:
            pass
    return parse_moment(value, "deadline")


def to_day(value: Any, param: str) -> date:
    """A day from a ``date``, a ``YYYY-MM-DD`` string, or an aware ``datetime`` at a UTC midnight."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{param}={value.isoformat()} is a naive datetime: pass a date (datetime.date) instead.")
        moment = value.astimezone(UTC)
        if moment.time() != time(0):
            raise ValueError(
                f"{param}={value.isoformat()} is not a UTC midnight: export jobs cover whole UTC days; pass a date."
            )
        return moment.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DAY_RE.match(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{param}={value!r} is not a day: pass a datetime.date or a 'YYYY-MM-DD' string.")


# -- caller input ---------------------------------------------------------------------------------


def is_template(value: Any) -> bool:
    """Whether ``value`` is a Jinja template not rendered yet (checked again once rendered)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_min_count(value: Any, param: str = "min_count") -> int:
    """A count of at least 1, as an ``int``; a rendered template gives a string such as ``"5"``.

    :raises ValueError: naming ``param`` for anything else (booleans, fractions, words, 0).
    """
    if isinstance(value, bool):
        count = 0
    elif isinstance(value, int):
        count = value
    elif isinstance(value, str) and value.strip().isdigit():
        count = int(value.strip())
    else:
        count = 0
    if count < 1:
        raise ValueError(f"{param}={value!r} must be a whole number of at least 1.")
    return count


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
