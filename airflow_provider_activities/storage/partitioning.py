"""Which Hive partitions a run owns, and which rows go to which of them.

A run for an interval owns its partitions outright: every (type, day) partition of the days
the interval covers with ``partition_by="day"``, or one partition per type keyed by the
interval with ``partition_by="interval"``. Rows are routed by the UTC day of their time
column; the interval was already enforced on every record by the API client, so a row never
lands outside the partitions its run owns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_activities.api.protocol import ACTIVITY_TYPES
from airflow_provider_activities.api.validation import MAX_RANGE, check_activity_type

PARTITION_MODES = ("day", "interval")
OTHER_TYPE = "other"
_DAY_MS = 86_400_000
_ZERO_WIDTH_HELP = (
    "Airflow 3 gives plain cron and timedelta schedules zero-width data intervals "
    "(CronTriggerTimetable, data_interval_start == data_interval_end). Either schedule the DAG with a "
    'data-interval timetable, e.g. schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC") or '
    "DeltaDataIntervalTimetable(timedelta(days=1)), or pass explicit start/end templates, e.g. "
    "start=\"{{ (logical_date - macros.timedelta(days=1)) | ds }}T00:00:00+00:00\"."
)


def _is_midnight(moment: datetime) -> bool:
    return moment.time() == time(0, 0)


@dataclass(frozen=True)
class PartitionPlan:
    """The partitions one run owns and how rows are routed to them.

    :param start: interval start, UTC.
    :param end: interval end, UTC.
    :param partition_by: ``"day"`` or ``"interval"``.
    :param types: the activity types partitioned by, or ``None`` for datasets without a type level.
    :param date_key: the name of the day level (``activity_date``, ``ingest_date``).
    """

    start: datetime
    end: datetime
    partition_by: str
    types: tuple[str, ...] | None
    date_key: str = "activity_date"

    @property
    def days(self) -> list[str]:
        """The UTC days (``YYYY-MM-DD``) the interval covers."""
        first = self.start.date()
        count = (self.end - datetime.combine(first, time(0), timezone.utc) - timedelta(milliseconds=1)).days + 1
        return [(first + timedelta(days=i)).isoformat() for i in range(count)]

    @property
    def interval_label(self) -> str:
        """``20261101T0000Z_20261101T0100Z``: the key of a ``partition_by="interval"`` partition."""
        return f"{self.start:%Y%m%dT%H%MZ}_{self.end:%Y%m%dT%H%MZ}"

    def partition(self, day: str, activity_type: str | None = None) -> str:
        """The relative path of one partition."""
        parts = [] if activity_type is None else [f"activity_type={activity_type}"]
        if self.partition_by == "interval":
            parts += [f"{self.date_key}={self.days[0]}", f"interval={self.interval_label}"]
        else:
            parts.append(f"{self.date_key}={day}")
        return "/".join(parts)

    def owned(self, types: tuple[str, ...] | None = None) -> list[str]:
        """Every partition this run owns (each gets files and a manifest, even with no rows).

        :param types: the types to list instead of the plan's own (e.g. ``("other",)``); only
            for a plan with a type level.
        """
        days = self.days[:1] if self.partition_by == "interval" else self.days
        listed: tuple[str | None, ...] = types or self.types or (None,)
        return [self.partition(day, activity_type) for activity_type in listed for day in days]

    def split(
        self, batch: pa.RecordBatch, time_column: str, type_column: str | None = None
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Route the rows of ``batch`` to partitions: ``(partition, rows)`` pairs, row order kept.

        Types outside the known three are routed to ``activity_type=other`` (nothing is dropped).
        """
        if batch.num_rows == 0:
            return
        days = pc.divide(pc.cast(batch.column(time_column), pa.int64()), _DAY_MS)
        types = None
        if type_column is not None:
            raw = pc.fill_null(batch.column(type_column), OTHER_TYPE)
            known = pc.is_in(raw, value_set=pa.array(ACTIVITY_TYPES))
            types = pc.if_else(known, raw, OTHER_TYPE)
        day_values = pc.unique(days).to_pylist()
        type_values = pc.unique(types).to_pylist() if types is not None else [None]
        if self.partition_by == "interval":
            day_values = [None]
        for day_number in day_values:
            day_mask = None if day_number is None or len(day_values) == 1 else pc.equal(days, day_number)
            day = self.days[0] if day_number is None else _epoch_day(day_number)
            for activity_type in type_values:
                mask = day_mask
                if types is not None and len(type_values) > 1:
                    type_mask = pc.equal(types, activity_type)
                    mask = type_mask if mask is None else pc.and_(mask, type_mask)
                rows = batch if mask is None else batch.filter(mask)
                if rows.num_rows:
                    yield self.partition(day, activity_type), rows


def _epoch_day(day_number: int) -> str:
    return (datetime(1970, 1, 1) + timedelta(days=day_number)).date().isoformat()


def plan_partitions(
    start: datetime,
    end: datetime,
    partition_by: str,
    activity_type: str | None = None,
    typed: bool = True,
    date_key: str = "activity_date",
) -> PartitionPlan:
    """Validate an interval for a partitioning mode and plan the run's partitions.

    :param start: the rendered ``start``, aware.
    :param end: the rendered ``end``, aware.
    :param partition_by: ``"day"`` (start and end on UTC midnights) or ``"interval"`` (an
        interval within one UTC day, for sub-daily schedules).
    :param activity_type: the one type extracted, or ``None`` for all three.
    :param typed: whether the dataset has an ``activity_type`` level.
    :raises ValueError: for a zero-width, inverted, too long or misaligned interval, naming the fix.
    """
    if partition_by not in PARTITION_MODES:
        raise ValueError(f"partition_by={partition_by!r} is not supported: use 'day' or 'interval'.")
    if end == start:
        raise ValueError(f"The interval is zero-width: start == end == {start.isoformat()}. {_ZERO_WIDTH_HELP}")
    if end < start:
        raise ValueError(f"end ({end.isoformat()}) is before start ({start.isoformat()}): the interval is inverted.")
    if end - start > MAX_RANGE:
        raise ValueError(
            f"[start, end) spans {end - start}, over the API's {MAX_RANGE.days}-day limit: backfill it as daily runs."
        )
    if partition_by == "day" and not (_is_midnight(start) and _is_midnight(end)):
        raise ValueError(
            f"partition_by='day' needs start and end on UTC midnights, got [{start.isoformat()}, {end.isoformat()}). "
            "Use partition_by='interval' for sub-daily schedules, or align the schedule to UTC days "
            '(CronDataIntervalTimetable("0 0 * * *", timezone="UTC")).'
        )
    if partition_by == "interval":
        next_midnight = datetime.combine(start.date() + timedelta(days=1), time(0), timezone.utc)
        if end > next_midnight:
            raise ValueError(
                f"partition_by='interval' needs an interval within one UTC day, got [{start.isoformat()}, "
                f"{end.isoformat()}). Use partition_by='day' for intervals of whole days."
            )
    types: tuple[str, ...] | None = None
    if typed:
        activity_type = check_activity_type(activity_type)
        types = ACTIVITY_TYPES if activity_type is None else (activity_type,)
    return PartitionPlan(start=start, end=end, partition_by=partition_by, types=types, date_key=date_key)
