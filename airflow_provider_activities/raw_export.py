"""Raw Activity Data export records to Arrow: nested conversion, then per-day spooling and
de-duplication with bounded memory.

The pieces, in the order a run uses them:

* :class:`RawRecordConverter` turns a list of export records (dicts, as parsed from the JSON
  Lines) into one ``pa.RecordBatch`` of :data:`~airflow_provider_activities.schemas.RAW_ACTIVITY_SCHEMA`,
  nested columns included. Values are checked against their types (a string where a number
  belongs raises :class:`~airflow_provider_activities.parquet.SchemaMismatchError` naming the field
  path and the record's ``uid``); timestamps may be ISO-8601 (``Z`` or an offset) or epoch
  milliseconds, days ``YYYY-MM-DD``. Fields the schema does not know go to ``_extra`` (JSON, sorted
  keys): a top-level field by its name, a key inside a nested object by its path
  (``crm_status.new_key``, ``participants[2].new_key``).
* :class:`DaySpool` takes converted batches routed to UTC days and keeps at most
  ``max_buffered_rows`` of them (and about ``max_buffered_bytes`` of Arrow data, 64 MiB by
  default) in memory: past that, the buffer is sorted by day and written to a local Arrow IPC
  file (a "round") with an index of where each day's rows are. Reading a day back memory-maps the
  rounds afresh and slices that day out of each.
* :func:`deduplicated_order` (and :func:`deduplicate`) keeps, among a day's rows, one row per
  ``uid``: the one with the latest ``ingest_timestamp`` (the later in the file on a tie), then
  orders the rows by the day's time column and ``uid``, so the output depends on the records
  only, not on their order in the file. Only the key columns are read to decide.
* :meth:`RawExportBuffer.day_batches` hands each day's kept rows over in batches of
  :data:`DEFAULT_CHUNK_ROWS`, taken one at a time from the memory-mapped spool.

So memory holds the spool's buffer, one day's key columns and one batch, whatever the size of
the export or of a day (measured: an export of 100k records peaked at 496 MB RSS in the
operator's process, one of 200k at 502 MB). Local disk holds the spool: about the uncompressed
Arrow size of the whole export, until the run ends.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_activities.api.records import to_epoch_ms
from airflow_provider_activities.parquet import SchemaMismatchError
from airflow_provider_activities.schemas import EXTRA_FIELD, RAW_ACTIVITY_SCHEMA, TIMESTAMP

DAY_MS = 86_400_000
DAY_COLUMN = "_day"
"""Helper column while spooling: the UTC day (days since the epoch) a row belongs to."""
SEQUENCE_COLUMN = "_seq"
"""Helper column while spooling: the row's position in the export files (arrival order)."""
DEFAULT_MAX_BUFFERED_ROWS = 100_000
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024
"""Arrow bytes of converted rows held in memory before they are spilled to a round file (nested
export records are a few KiB each, so this, not the row cap, usually triggers the spill)."""
DEFAULT_CHUNK_ROWS = 16_384
"""Rows per record batch handed to the writer when a day is read back."""
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EPOCH_DAY = date(1970, 1, 1)
_EXTRA_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class _Unfit(Exception):
    def __init__(self, path: str, value: Any, type_: pa.DataType, reason: str) -> None:
        super().__init__(reason)
        self.path, self.value, self.type, self.reason = path, value, type_, reason


Normaliser = Callable[[Any, str, dict[str, Any]], Any]
"""``(value, path, unknown) -> value in the form pa.array takes``; unknown nested keys are added
to ``unknown`` by path."""


def _timestamp(value: Any, path: str, unknown: dict[str, Any]) -> Any:
    """Epoch ms: an int is taken as epoch ms (as the other operators do), anything else goes
    through :func:`~airflow_provider_activities.api.records.to_epoch_ms` (ISO-8601, ...)."""
    if value is None or type(value) is int:
        return value
    if isinstance(value, bool):
        raise _Unfit(path, value, TIMESTAMP, "expected a timestamp, got a boolean")
    try:
        return to_epoch_ms(value)
    except ValueError as err:
        raise _Unfit(path, value, TIMESTAMP, str(err)) from None


def _date(value: Any, path: str, unknown: dict[str, Any]) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10:
            try:
                return date.fromisoformat(text)
            except ValueError:
                pass
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        try:  # an ISO datetime or epoch ms: its UTC day
            ms = to_epoch_ms(value)
        except ValueError:
            ms = None
        if ms is not None:
            return date.fromordinal(_EPOCH_DAY.toordinal() + ms // DAY_MS)
    raise _Unfit(path, value, pa.date32(), "expected a day as YYYY-MM-DD")


def _int(value: Any, path: str, unknown: dict[str, Any]) -> Any:
    if value is None:
        return None
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise _Unfit(path, value, pa.int64(), f"expected an integer, got {type(value).__name__}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _Unfit(path, value, pa.int64(), "outside the int64 range")
    return value


def _float(value: Any, path: str, unknown: dict[str, Any]) -> Any:
    if value is None or type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise _Unfit(path, value, pa.float64(), f"expected a number, got {type(value).__name__}")


def _bool(value: Any, path: str, unknown: dict[str, Any]) -> Any:
    if value is None or type(value) is bool:
        return value
    raise _Unfit(path, value, pa.bool_(), f"expected true, false or null, got {type(value).__name__}")


def _str(value: Any, path: str, unknown: dict[str, Any]) -> Any:
    if value is None or type(value) is str:
        return value
    raise _Unfit(path, value, pa.string(), f"expected a string, got {type(value).__name__}")


def _compile(type_: pa.DataType) -> Normaliser:
    """The normaliser of one Arrow type (recursively for lists and structs)."""
    if pa.types.is_timestamp(type_):
        return _timestamp
    if pa.types.is_date32(type_):
        return _date
    if pa.types.is_int64(type_):
        return _int
    if pa.types.is_float64(type_):
        return _float
    if pa.types.is_boolean(type_):
        return _bool
    if pa.types.is_string(type_):
        return _str
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        item = _compile(type_.value_type)

        def as_list(value: Any, path: str, unknown: dict[str, Any]) -> Any:
            if value is None:
                return None
            if not isinstance(value, list):
                raise _Unfit(path, value, type_, f"expected a list, got {type(value).__name__}")
            return [item(element, f"{path}[{index}]", unknown) for index, element in enumerate(value)]

        return as_list
    if pa.types.is_struct(type_):
        children = [(type_.field(i).name, _compile(type_.field(i).type)) for i in range(type_.num_fields)]
        known = frozenset(name for name, _ in children)

        def as_struct(value: Any, path: str, unknown: dict[str, Any]) -> Any:
            if value is None:
                return None
            if not isinstance(value, dict):
                raise _Unfit(path, value, type_, f"expected an object, got {type(value).__name__}")
            out = {name: child(value.get(name), f"{path}.{name}", unknown) for name, child in children}
            if not value.keys() <= known:
                for name in value.keys() - known:
                    unknown[f"{path}.{name}"] = value[name]
            return out

        return as_struct
    raise TypeError(f"no conversion for the Arrow type {type_}")


class RawRecordConverter:
    """Converts lists of export records into ``pa.RecordBatch`` of a nested schema.

    :param schema: the record schema, :data:`~airflow_provider_activities.schemas.RAW_ACTIVITY_SCHEMA`
        by default; its last field ``_extra`` (when present) receives the unknown fields.
    :param id_field: the field naming a record in error messages.
    """

    def __init__(self, schema: pa.Schema = RAW_ACTIVITY_SCHEMA, id_field: str = "uid") -> None:
        self.schema = schema
        self.id_field = id_field
        self.unknown_fields: set[str] = set()
        """Unknown field names seen so far (nested ones by path, list indexes as ``[]``)."""
        self._columns = [(f.name, f.type, _compile(f.type)) for f in schema if f.name != EXTRA_FIELD]
        self._known = frozenset(name for name, _, _ in self._columns)
        self._has_extra = EXTRA_FIELD in schema.names

    def to_batch(self, records: list[dict[str, Any]]) -> pa.RecordBatch:
        """One batch of ``records``, in order.

        :raises SchemaMismatchError: for a value that does not fit its type (named by its path,
            e.g. ``participants[1].time_spent``).
        """
        columns: list[list[Any]] = [[] for _ in self._columns]
        extras: list[str | None] = []
        known = self._known
        for record in records:
            unknown: dict[str, Any] = {}
            try:
                for values, (name, _type, normalise) in zip(columns, self._columns):
                    values.append(normalise(record.get(name), name, unknown))
            except _Unfit as unfit:
                raise SchemaMismatchError(
                    unfit.path, record.get(self.id_field), unfit.value, unfit.type, unfit.reason, id_field=self.id_field
                ) from None
            if not record.keys() <= known:
                for name in record.keys() - known:
                    unknown[name] = record[name]
            if unknown:
                self.unknown_fields.update(_without_indexes(path) for path in unknown)
                extras.append(_EXTRA_ENCODER.encode(unknown) if self._has_extra else None)
            else:
                extras.append(None)
        arrays = [pa.array(values, type=type_) for values, (_name, type_, _n) in zip(columns, self._columns)]
        if self._has_extra:
            arrays.append(pa.array(extras, type=pa.string()))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _without_indexes(path: str) -> str:
    out, depth = [], 0
    for char in path:
        if char == "[":
            depth += 1
            out.append("[]")
        elif char == "]":
            depth -= 1
        elif depth == 0:
            out.append(char)
    return "".join(out)


# -- spooling by day ----------------------------------------------------------------------------


def spool_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the helper columns :data:`DAY_COLUMN` and :data:`SEQUENCE_COLUMN` appended."""
    return schema.append(pa.field(DAY_COLUMN, pa.int32())).append(pa.field(SEQUENCE_COLUMN, pa.int64()))


@dataclass
class _Round:
    path: str
    index: dict[int, tuple[int, int]]  # day -> (offset, rows)


class DaySpool:
    """Rows grouped by UTC day on local disk, with at most ``max_buffered_rows`` rows (and about
    ``max_buffered_bytes`` of Arrow data) in memory.

    Reading a day back memory-maps the round files afresh and slices that day out of each; the
    maps are released with the returned table, so pages of days already read do not stay resident.

    :param directory: a local directory for the round files (removed by :meth:`close`' caller).
    :param schema: the schema of the batches added (with the helper columns, see :func:`spool_schema`).
    :param max_buffered_rows: rows kept in memory before they are written out as a round.
    :param max_buffered_bytes: Arrow bytes kept in memory before they are written out as a round.
    """

    def __init__(
        self,
        directory: str,
        schema: pa.Schema,
        max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
    ) -> None:
        self.directory = directory
        self.schema = schema
        self.max_buffered_rows = max_buffered_rows
        self.max_buffered_bytes = max_buffered_bytes
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._buffered_bytes = 0
        self._rounds: list[_Round] = []

    @property
    def buffered_rows(self) -> int:
        """Rows held in memory now."""
        return self._buffered

    @property
    def rounds(self) -> int:
        """Round files written so far."""
        return len(self._rounds)

    def add(self, batch: pa.RecordBatch) -> None:
        """Add rows (with their :data:`DAY_COLUMN` and :data:`SEQUENCE_COLUMN`)."""
        if batch.num_rows == 0:
            return
        self._buffer.append(batch)
        self._buffered += batch.num_rows
        self._buffered_bytes += batch.nbytes
        if self._buffered >= self.max_buffered_rows or self._buffered_bytes >= self.max_buffered_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows out as one round, sorted by day then arrival."""
        if not self._buffered:
            return
        table = pa.Table.from_batches(self._buffer, schema=self.schema)
        self._buffer, self._buffered, self._buffered_bytes = [], 0, 0
        table = table.take(pc.sort_indices(table, sort_keys=[(DAY_COLUMN, "ascending"), (SEQUENCE_COLUMN, "ascending")]))
        counts = pc.value_counts(table.column(DAY_COLUMN)).to_pylist()
        index: dict[int, tuple[int, int]] = {}
        offset = 0
        for entry in sorted(counts, key=lambda item: item["values"]):
            index[entry["values"]] = (offset, entry["counts"])
            offset += entry["counts"]
        path = os.path.join(self.directory, f"round-{len(self._rounds):05d}.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, self.schema) as writer:
            writer.write_table(table, max_chunksize=64 * 1024)
        self._rounds.append(_Round(path, index))

    def days(self) -> list[int]:
        """Every day holding rows (days since the epoch), in order; flushes the buffer first."""
        self.flush()
        found: set[int] = set()
        for spilled in self._rounds:
            found.update(spilled.index)
        return sorted(found)

    def read_day(self, day: int) -> pa.Table:
        """All rows of ``day`` (arrival order within each round), memory-mapped: nothing is
        copied until the rows are used, and the maps close when the table is released."""
        self.flush()
        parts = []
        for spilled in self._rounds:
            where = spilled.index.get(day)
            if where is None:
                continue
            parts.append(pa.ipc.open_file(pa.memory_map(spilled.path, "r")).read_all().slice(*where))
        if not parts:
            return self.schema.empty_table()
        return pa.concat_tables(parts)

    def close(self) -> None:
        """Drop the buffered rows (the round files stay for the caller to remove)."""
        self._buffer, self._buffered, self._buffered_bytes = [], 0, 0


_PER_KEY_NULL_PLACEMENT = int(pa.__version__.split(".")[0]) >= 25
"""pyarrow 25 deprecates one ``null_placement`` for all sort keys in favour of one per key."""


def _sort_indices(table: pa.Table, keys: list[tuple[str, str]], null_placement: str) -> pa.Array:
    """``pc.sort_indices`` with nulls placed ``null_placement`` for every key (either pyarrow API)."""
    if _PER_KEY_NULL_PLACEMENT:
        return pc.sort_indices(table, sort_keys=[(name, order, null_placement) for name, order in keys])
    return pc.sort_indices(table, sort_keys=keys, null_placement=null_placement)


def deduplicated_order(table: pa.Table, time_column: str, id_column: str = "uid") -> pa.Array:
    """The indices of the rows :func:`deduplicate` keeps, in its order; only the key columns
    (``id_column``, ``ingest_timestamp``, ``time_column``, :data:`SEQUENCE_COLUMN`) are read.

    :param table: rows with :data:`SEQUENCE_COLUMN`.
    """
    rows = table.num_rows
    if rows < 2:
        return pa.array(range(rows), type=pa.uint64())
    keys = table.select(list(dict.fromkeys([id_column, "ingest_timestamp", time_column, SEQUENCE_COLUMN])))
    order = _sort_indices(
        keys, [(id_column, "ascending"), ("ingest_timestamp", "ascending"), (SEQUENCE_COLUMN, "ascending")], "at_start"
    )
    ids = keys.column(id_column).take(order)
    later_differs = pc.fill_null(pc.not_equal(ids.slice(0, rows - 1), ids.slice(1)), True)
    last_of_id = pa.concat_arrays([*later_differs.chunks, pa.array([True])])
    kept = pc.filter(order, last_of_id)
    kept_keys = keys.take(kept)
    final = _sort_indices(
        kept_keys, [(time_column, "ascending"), (id_column, "ascending"), (SEQUENCE_COLUMN, "ascending")], "at_end"
    )
    return kept.take(final)


def deduplicate(table: pa.Table, time_column: str, id_column: str = "uid") -> tuple[pa.Table, int]:
    """One row per ``id_column`` (the latest ``ingest_timestamp``, then the latest arrival wins),
    ordered by ``time_column``, ``id_column`` and arrival; rows without an id are all kept.

    :param table: rows with :data:`SEQUENCE_COLUMN`.
    :return: the rows kept, and how many were dropped.
    """
    if table.num_rows < 2:
        return table, 0
    order = deduplicated_order(table, time_column, id_column)
    return table.take(order), table.num_rows - len(order)


@dataclass
class ExportCounts:
    """What a :class:`RawExportBuffer` saw.

    :param received: records read from the files.
    :param outside: records outside the requested days (or without the time field), dropped.
    :param duplicates: repeated ``uid`` within a day, dropped.
    """

    received: int = 0
    outside: int = 0
    duplicates: int = 0


class RawExportBuffer:
    """Converts, bounds and spools export records; gives them back deduplicated, day by day.

    :param directory: local directory for the spool files.
    :param time_column: ``timestamp`` (snapshot: ``activity_date``) or ``ingest_timestamp`` (delta:
        ``ingest_date``): the field that places a record in a day.
    :param start_ms: first instant kept (epoch ms, a UTC midnight).
    :param end_ms: first instant no longer kept.
    :param max_buffered_rows: converted rows held in memory before spilling to disk.
    :param max_buffered_bytes: Arrow bytes of converted rows held in memory before spilling.
    """

    def __init__(
        self,
        directory: str,
        time_column: str,
        start_ms: int,
        end_ms: int,
        schema: pa.Schema = RAW_ACTIVITY_SCHEMA,
        max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
    ) -> None:
        self.schema = schema
        self.time_column = time_column
        self.start_ms, self.end_ms = start_ms, end_ms
        self.converter = RawRecordConverter(schema)
        self.spool = DaySpool(directory, spool_schema(schema), max_buffered_rows, max_buffered_bytes)
        self.counts = ExportCounts()

    def add(self, records: list[dict[str, Any]]) -> None:
        """Convert a list of records and keep those inside the days."""
        if not records:
            return
        batch = self.converter.to_batch(records)
        first = self.counts.received
        self.counts.received += batch.num_rows
        times = pc.cast(batch.column(batch.schema.get_field_index(self.time_column)), pa.int64())
        inside = pc.fill_null(pc.and_(pc.greater_equal(times, self.start_ms), pc.less(times, self.end_ms)), False)
        sequence = pa.array(range(first, first + batch.num_rows), type=pa.int64())
        days = pc.cast(pc.divide(times, DAY_MS), pa.int32())
        extended = pa.RecordBatch.from_arrays(
            [*batch.columns, days, sequence], schema=self.spool.schema
        ).filter(inside)
        self.counts.outside += batch.num_rows - extended.num_rows
        self.spool.add(extended)

    def days(self) -> Iterator[tuple[date, pa.Table]]:
        """Each day holding records, in order, with its rows deduplicated and sorted (helper
        columns dropped)."""
        for day in self.spool.days():
            table, dropped = deduplicate(self.spool.read_day(day), self.time_column)
            self.counts.duplicates += dropped
            yield date.fromordinal(_EPOCH_DAY.toordinal() + day), table.drop_columns([DAY_COLUMN, SEQUENCE_COLUMN])

    def day_batches(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[date, Iterator[pa.RecordBatch]]]:
        """Like :meth:`days`, with each day's rows as record batches of at most ``chunk_rows``,
        materialized one at a time from the memory-mapped spool: memory holds the day's key
        columns and one batch, not the whole day. Consume each day's batches before the next day.
        """
        for day in self.spool.days():
            table = self.spool.read_day(day)
            order = deduplicated_order(table, self.time_column)
            self.counts.duplicates += table.num_rows - len(order)
            yield date.fromordinal(_EPOCH_DAY.toordinal() + day), self._chunks(table, order, chunk_rows)
            del table

    @staticmethod
    def _chunks(table: pa.Table, order: pa.Array, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        data = table.drop_columns([DAY_COLUMN, SEQUENCE_COLUMN])
        for offset in range(0, len(order), chunk_rows):
            chunk = data.take(order.slice(offset, chunk_rows))
            yield from chunk.combine_chunks().to_batches()

    def close(self) -> None:
        """Release buffers and memory maps."""
        self.spool.close()


__all__ = [
    "DAY_COLUMN",
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_MAX_BUFFERED_BYTES",
    "DEFAULT_MAX_BUFFERED_ROWS",
    "DaySpool",
    "ExportCounts",
    "RawExportBuffer",
    "RawRecordConverter",
    "SEQUENCE_COLUMN",
    "deduplicate",
    "deduplicated_order",
    "spool_schema",
]
