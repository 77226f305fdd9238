"""Client-side bounds and de-duplication of records, as dicts or as Arrow batches.

The API may ignore filters it does not know and may repeat records across pages, so every
record is bounded to the asked interval and de-duplicated here, whatever the server did.

Timestamps arrive as epoch milliseconds or as ISO-8601 strings (``Z`` or an offset); they are
normalised in place to epoch-millisecond ``int`` (UTC), the cheapest form to compare and the
one the Parquet writer takes without conversion.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_activities.api.queries import (
    Bounds,
    FilterStats,
    bound_records,
    participant_identity,
    participant_key,
)
from airflow_provider_activities.records.dedup import ArrowKeys, KeyTable, ListKeys, SeenKeys, batch_hashes, python_hashes


def activity_keys(batch: pa.RecordBatch) -> list[Hashable]:
    """:func:`activity_key` of every row of a batch."""
    return batch.column("uid").to_pylist()


def activity_key_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The columns of an activity's identity: ``uid``."""
    return batch.select(["uid"])


def participant_keys(batch: pa.RecordBatch) -> list[Hashable]:
    """:func:`participant_key` of every row of a batch."""
    columns = (batch.column(name).to_pylist() for name in ("activity_uid", "id", "email"))
    return list(map(participant_identity, *columns))


def participant_key_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The columns of a participant's identity: ``activity_uid``, ``id``, and ``email`` where ``id`` is null."""
    participant_id = batch.column("id")
    email = batch.column("email")
    if participant_id.null_count:
        email = pc.if_else(participant_id.is_null(), email, pa.scalar(None, email.type))
    else:
        email = pa.nulls(batch.num_rows, email.type)
    return pa.RecordBatch.from_arrays(
        [batch.column("activity_uid"), participant_id, email], names=["activity_uid", "id", "email"]
    )


@dataclass(frozen=True)
class BatchKey:
    """How the rows of a ``pa.RecordBatch`` are identified, for :meth:`RecordFilter.apply_batch`.

    :param columns: the identity's columns of a batch (hashed in numpy).
    :param identities: the identity of every row of such columns, as the Python value
        :attr:`RecordFilter.key` gives for a dict (compared when two hashes match).
    """

    columns: Callable[[pa.RecordBatch], pa.RecordBatch]
    identities: Callable[[pa.RecordBatch], list[Hashable]]


ACTIVITY_BATCH_KEY = BatchKey(activity_key_columns, activity_keys)
"""An activity's identity in a batch: ``uid``."""
PARTICIPANT_BATCH_KEY = BatchKey(participant_key_columns, participant_keys)
"""A participant's identity in a batch: (``activity_uid``, ``id``), or the e-mail where ``id`` is missing."""


@dataclass
class RecordFilter:
    """Normalises timestamps, bounds records to ``[start_ms, end_ms)`` on one field, drops repeats.

    :param time_field: the field bounded (``timestamp``, ``activity_timestamp``, ``created_at``).
    :param start_ms: inclusive lower bound, epoch ms.
    :param end_ms: exclusive upper bound, epoch ms; ``None`` for no upper bound.
    :param key: the record identity used to drop repeats (hashable; picklable once there are
        more than a block of them, see :class:`~airflow_provider_activities.records.dedup.SeenKeys`).
    :param timestamp_fields: fields normalised to epoch ms.
    :param fallback_time_field: used when ``time_field`` is missing or null (e.g. ``created_at``
        when a deployment does not send ``ingested_at``).
    :param batch_key: the same identity for the rows of a ``pa.RecordBatch`` (for :meth:`apply_batch`).

    One filter de-duplicates either dicts (:meth:`apply`) or batches (:meth:`apply_batch`,
    :meth:`dedupe_batch`), not both: the two hash identities differently.
    """

    time_field: str
    start_ms: int
    end_ms: int | None
    key: Callable[[dict[str, Any]], Hashable]
    timestamp_fields: tuple[str, ...]
    fallback_time_field: str | None = None
    batch_key: BatchKey | None = None
    stats: FilterStats = field(default_factory=FilterStats)
    _seen: SeenKeys = field(default_factory=SeenKeys, repr=False)

    def apply(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records of one page that are new and inside the interval, timestamps normalised."""
        inside = self.bound(records)
        identities = [self.key(record) for record in inside]
        new = self._new(python_hashes(identities), ListKeys(identities), "python")
        return inside if len(new) == len(inside) else [inside[index] for index in new.tolist()]

    def bound(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records of one page inside the interval, timestamps normalised; not de-duplicated
        (:meth:`apply` does both; :meth:`dedupe_batch` de-duplicates them once converted).
        """
        return bound_records(
            records, self.time_field, self.start_ms, self.end_ms, self.timestamp_fields, self.fallback_time_field, self.stats
        )

    def apply_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """:meth:`apply` for a page parsed into Arrow: its rows that are new and inside the interval.

        :param batch: a page's records, timestamp columns as ``timestamp[ms]``.
        """
        stats = self.stats
        stats.seen += batch.num_rows
        moment = pc.cast(batch.column(self.time_field), pa.int64())
        if self.fallback_time_field is not None:
            moment = pc.coalesce(moment, pc.cast(batch.column(self.fallback_time_field), pa.int64()))
        inside = pc.greater_equal(moment, self.start_ms)
        if self.end_ms is not None:
            inside = pc.and_(inside, pc.less(moment, self.end_ms))
        inside = pc.fill_null(inside, False)
        if not pc.all(inside).as_py():
            kept = batch.filter(inside)
            stats.outside += batch.num_rows - kept.num_rows
            batch = kept
        return self.dedupe_batch(batch)

    def dedupe_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The rows of ``batch`` whose identity was not seen before (nor earlier in it); remembers them.

        For rows already bounded: :meth:`apply_batch`'s second half, or :meth:`bound`'s records
        once converted to Arrow.
        """
        assert self.batch_key is not None, "dedupe_batch needs a batch_key"
        columns = self.batch_key.columns(batch)
        new = self._new(batch_hashes(columns.columns), ArrowKeys(columns, self.batch_key.identities), "arrow")
        return batch if len(new) == batch.num_rows else batch.take(pa.array(new, type=pa.int64()))

    @classmethod
    def of(cls, bounds: Bounds) -> RecordFilter:
        """A filter for a query's :class:`~airflow_provider_activities.api.queries.Bounds`, with the
        batch identity of its record kind.
        """
        return cls(
            time_field=bounds.time_field,
            start_ms=bounds.start_ms,
            end_ms=bounds.end_ms,
            key=bounds.key,
            timestamp_fields=bounds.timestamp_fields,
            fallback_time_field=bounds.fallback_time_field,
            batch_key=PARTICIPANT_BATCH_KEY if bounds.key is participant_key else ACTIVITY_BATCH_KEY,
        )

    def _new(self, hashes: Any, keys: KeyTable, kind: str) -> Any:
        """The positions (numpy) of the identities not seen before (nor earlier in the call); remembers them."""
        new = self._seen.new(hashes, keys, kind)
        self.stats.duplicates += len(hashes) - len(new)
        self.stats.kept += len(new)
        return new
