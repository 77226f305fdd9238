"""API records to Arrow batches, and Arrow batches to Hive-partitioned Parquet files.

:class:`RecordConverter` turns a page of records (plain dicts) into one ``pa.RecordBatch`` of
an explicit schema, column by column: each column's values are gathered into one Python list
and converted with one ``pa.array`` call. A cheap scan of the value types of each column
guards that call, because ``pa.array`` alone is lenient where it must not be (it truncates
``1.5`` into an int64 column, splits the string ``"ab"`` into the list ``["a", "b"]``, takes
``True`` as ``1.0``). Columns whose values all have the expected Python types take that fast
path; the others are normalised value by value (ISO-8601 strings and datetimes to epoch
milliseconds, integral floats to ints) and a value that does not fit raises
:class:`SchemaMismatchError`.

:class:`PartitionedParquetWriter` writes batches to many partitions at once
(``activity_type=email/activity_date=2026-11-01/part-00000.parquet`` ...) below a staging
directory, with bounded memory and deterministic bytes. See its docstring for the choices.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import chain
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_provider_activities.api.records import to_epoch_ms
from airflow_provider_activities.compat import ObjectStoragePath
from airflow_provider_activities.schemas import EXTRA_FIELD

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_REPR_LIMIT = 200
_NONE = type(None)


# ============================================================================================
# Records -> Arrow
# ============================================================================================


class SchemaMismatchError(ValueError):
    """A record's value does not fit the type of its column.

    :param field: the column.
    :param record_id: the record's identity (``uid`` by default), ``None`` when it has none.
    :param value: the offending value.
    :param expected: the column's Arrow type.
    :param reason: why the value does not fit.
    :param id_field: the name of the identity field, for the message.
    """

    def __init__(
        self,
        field: str,
        record_id: Any,
        value: Any,
        expected: pa.DataType,
        reason: str,
        id_field: str = "uid",
    ) -> None:
        self.field = field
        self.record_id = record_id
        self.value = value
        self.expected = expected
        self.reason = reason
        super().__init__(
            f"Field {field!r} of the record with {id_field}={record_id!r} does not fit the schema type {expected}: "
            f"got {_short_repr(value)} ({reason}). The vendor's type for this field may have changed; the schema "
            "is in airflow_provider_activities/schemas.py."
        )


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


class _Unfit(Exception):
    """Raised by a normaliser for a value that does not fit; carries the reason."""


# -- value normalisers (the slow path, value by value) ----------------------------------------


def _to_int(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is float:
        if not value.is_integer():
            raise _Unfit("not an integer")
        value = int(value)
    if type(value) is not int:
        raise _Unfit(f"expected an integer, got {type(value).__name__}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _Unfit("outside the int64 range")
    return value


def _to_float(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) is int or type(value) is float:
        try:
            return float(value)
        except OverflowError:
            raise _Unfit("too large for float64") from None
    raise _Unfit(f"expected a number, got {type(value).__name__}")


def _to_bool(value: Any) -> bool | None:
    if value is None or type(value) is bool:
        return value
    raise _Unfit(f"expected true, false or null, got {type(value).__name__}")


def _to_str(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    raise _Unfit(f"expected a string, got {type(value).__name__}")


def _to_timestamp(value: Any) -> int | None:
    """Epoch milliseconds: ints are taken as milliseconds, anything else goes through ``to_epoch_ms``."""
    if value is None:
        return None
    try:
        moment = value if type(value) is int else to_epoch_ms(value)
    except ValueError as err:
        raise _Unfit(f"not a timestamp: {err}") from None
    if moment is not None and not _INT64_MIN <= moment <= _INT64_MAX:
        raise _Unfit("outside the int64 range of epoch milliseconds")
    return moment


def _list_of(item: Callable[[Any], Any]) -> Callable[[Any], list[Any] | None]:
    def normalise(value: Any) -> list[Any] | None:
        if value is None:
            return None
        if not isinstance(value, (list, tuple)):
            raise _Unfit(f"expected a list, got {type(value).__name__}")
        return [item(element) for element in value]

    return normalise


@dataclass(frozen=True)
class _ColumnRule:
    """How one column is converted.

    :param fast: the Python types (``None`` included) that ``pa.array`` converts losslessly.
    :param item_fast: for list columns, the same for the items; ``None`` for other columns.
    :param normalise: value-by-value normaliser raising ``_Unfit``; ``None`` to use ``pa.array``.
    """

    fast: frozenset[type] | None
    item_fast: frozenset[type] | None
    normalise: Callable[[Any], Any] | None


def _scalar_rule(type_: pa.DataType) -> tuple[frozenset[type], Callable[[Any], Any]] | None:
    if pa.types.is_int64(type_):
        return frozenset({int, _NONE}), _to_int
    if pa.types.is_float64(type_):
        return frozenset({int, float, _NONE}), _to_float
    if pa.types.is_boolean(type_):
        return frozenset({bool, _NONE}), _to_bool
    if pa.types.is_string(type_):
        return frozenset({str, _NONE}), _to_str
    if pa.types.is_timestamp(type_):
        return frozenset({int, _NONE}), _to_timestamp
    return None


def _rule_for(type_: pa.DataType) -> _ColumnRule:
    scalar = _scalar_rule(type_)
    if scalar is not None:
        return _ColumnRule(fast=scalar[0], item_fast=None, normalise=scalar[1])
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        item = _scalar_rule(type_.value_type)
        if item is not None:
            return _ColumnRule(fast=frozenset({list, _NONE}), item_fast=item[0], normalise=_list_of(item[1]))
    # Other types (structs of a nested schema ...): pa.array decides, value by value on failure.
    return _ColumnRule(fast=None, item_fast=None, normalise=None)


def _json_default(value: Any) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


_EXTRA_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default)
"""Compact JSON, sorted keys; one instance, since ``json.dumps`` with options builds an encoder per call."""


class RecordConverter:
    """Converts pages of API records (dicts) into ``pa.RecordBatch`` of one schema.

    * Missing keys give nulls.
    * Timestamp columns take epoch-millisecond ints as they are (the fast path), and ISO-8601
      strings (``Z`` or an offset; none means UTC), datetimes (naive means UTC) and floats through
      :func:`airflow_provider_activities.api.records.to_epoch_ms`, the parser the API client uses.
    * Keys the schema does not know go, as a JSON object with sorted keys, into the ``_extra``
      column (null when a record has none); their names accumulate in :attr:`unknown_fields` so
      that the caller can log them once. A schema without ``_extra`` drops them (still named
      in :attr:`unknown_fields`).
    * A value that does not fit its column raises :class:`SchemaMismatchError` naming the field,
      the record's id and the value.

    :param schema: the record schema (e.g. ``ACTIVITY_SCHEMA``). Partition columns are kept;
        the writer's caller drops them.
    :param id_field: the field that identifies a record in error messages (``uid`` for
        activities, ``activity_uid`` for participants).
    """

    def __init__(self, schema: pa.Schema, id_field: str = "uid") -> None:
        self.schema = schema
        self.id_field = id_field
        self.unknown_fields: set[str] = set()
        """Names of the fields seen that the schema does not know, over every batch so far."""
        self._columns = [(f.name, f.type, _rule_for(f.type)) for f in schema if f.name != EXTRA_FIELD]
        self._known = frozenset(name for name, _, _ in self._columns)
        self._has_extra = EXTRA_FIELD in schema.names

    def to_batch(self, records: list[dict[str, Any]]) -> pa.RecordBatch:
        """One batch of ``records``, in order, with the converter's schema.

        :param records: the records of one page; not modified.
        :raises SchemaMismatchError: for a value that does not fit its column.
        """
        arrays: dict[str, pa.Array] = {}
        for name, type_, rule in self._columns:
            values = [record.get(name) for record in records]
            arrays[name] = self._array(name, type_, rule, values, records)
        extra = self._extra(records)
        if self._has_extra:
            arrays[EXTRA_FIELD] = pa.array(extra, type=self.schema.field(EXTRA_FIELD).type)
        return pa.RecordBatch.from_arrays([arrays[name] for name in self.schema.names], schema=self.schema)

    def _array(
        self,
        name: str,
        type_: pa.DataType,
        rule: _ColumnRule,
        values: list[Any],
        records: list[dict[str, Any]],
    ) -> pa.Array:
        if rule.fast is not None and rule.fast.issuperset(map(type, values)):
            fast = rule.item_fast is None or rule.item_fast.issuperset(
                map(type, chain.from_iterable(value for value in values if value is not None))
            )
            if fast:
                try:
                    return pa.array(values, type=type_)
                except (pa.ArrowException, OverflowError, TypeError, ValueError):
                    pass  # e.g. an int beyond int64: the slow path names it
        if rule.normalise is not None:
            normalise = rule.normalise
            normalised = []
            for value, record in zip(values, records):
                try:
                    normalised.append(normalise(value))
                except _Unfit as unfit:
                    raise self._mismatch(name, type_, value, record, str(unfit)) from None
            return pa.array(normalised, type=type_)
        try:
            return pa.array(values, type=type_)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            for value, record in zip(values, records):
                try:
                    pa.array([value], type=type_)
                except (pa.ArrowException, OverflowError, TypeError, ValueError) as err:
                    raise self._mismatch(name, type_, value, record, str(err)) from None
            raise

    def _mismatch(self, name: str, type_: pa.DataType, value: Any, record: dict[str, Any], reason: str) -> SchemaMismatchError:
        return SchemaMismatchError(name, record.get(self.id_field), value, type_, reason, id_field=self.id_field)

    def _extra(self, records: list[dict[str, Any]]) -> list[str | None]:
        known = self._known
        extra: list[str | None] = [None] * len(records)
        for index, record in enumerate(records):
            if record.keys() <= known:  # the common case, one C-level check
                continue
            names = record.keys() - known
            self.unknown_fields.update(names)
            if self._has_extra:
                extra[index] = _EXTRA_ENCODER.encode({name: record[name] for name in names})
        return extra


# ============================================================================================
# Arrow -> partitioned Parquet
# ============================================================================================

PARQUET_SETTINGS: dict[str, Any] = {
    "version": "2.6",
    "data_page_version": "1.0",
    "dictionary_pagesize_limit": 1024 * 1024,
    "data_page_size": 1024 * 1024,
    "write_batch_size": 1024,
    "write_statistics": True,
    "write_page_index": False,
    "write_page_checksum": False,
    "use_compliant_nested_type": True,
    "use_deprecated_int96_timestamps": False,
    "store_schema": True,
}
"""Every Parquet writer setting that affects the bytes, fixed (with the codec, the row groups and
the columns with dictionaries, see :func:`dictionary_columns`).

No writer setting puts a wall-clock value into a file; the ``created_by`` string names the
pyarrow version, so files are byte-identical for the same input and the same pyarrow.
"""



def dictionary_columns(schema: pa.Schema, plain: Iterable[str] = ()) -> list[str]:
    """The Parquet leaf columns of ``schema`` that get a dictionary: all but those of ``plain``.

    :param schema: the file schema.
    :param plain: top-level fields written without dictionary (values unique per record).
    :return: Parquet column paths, as ``use_dictionary`` takes them (``tags.list.element``).
    """
    skipped = set(plain)
    return [path for field in schema if field.name not in skipped for path in _leaf_paths(field.name, field.type)]


def _leaf_paths(path: str, type_: pa.DataType) -> list[str]:
    """The Parquet paths of the leaves under an Arrow field (compliant nested types)."""
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return _leaf_paths(f"{path}.list.element", type_.value_type)
    if pa.types.is_struct(type_):
        return [leaf for child in type_ for leaf in _leaf_paths(f"{path}.{child.name}", child.type)]
    if pa.types.is_map(type_):
        return _leaf_paths(f"{path}.key_value.key", type_.key_type) + _leaf_paths(f"{path}.key_value.value", type_.item_type)
    return [path]


DEFAULT_ROW_GROUP_SIZE = 100_000
DEFAULT_MAX_ROWS_PER_FILE = 1_000_000
DEFAULT_MAX_BUFFERED_ROWS = 100_000
"""Rows buffered across all partitions (about 35 MB of activities in Arrow): the writer's memory
does not grow with the run. With several partitions filling at once, the largest buffer is then
written as a row group before it reaches ``row_group_size``."""
_DRAIN_BYTES = 4 * 1024 * 1024


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # glibc only (not musl, not macOS)
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc_malloc_trim() if sys.platform.startswith("linux") else None


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def release_freed_memory() -> None:
    """Hand memory the process has freed back to the OS (called after each row group).

    Arrow's allocator (mimalloc or jemalloc) keeps freed pages for reuse, and so does glibc's
    ``malloc`` in one arena per thread (the hook's page threads decode pages in theirs): both
    make the process's memory creep up with the length of a run although what it holds does
    not. ``release_unused`` and glibc's ``malloc_trim(0)`` give the free pages back; each takes
    about a millisecond.
    """
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@dataclass(frozen=True)
class FileInfo:
    """One written Parquet file.

    :param name: file name within its partition (``part-00000.parquet``).
    :param rows: number of rows.
    :param bytes: size in bytes.
    """

    name: str
    rows: int
    bytes: int


def check_partition(partition: str) -> str:
    """Validate a relative partition path such as ``activity_type=email/activity_date=2026-11-01``.

    :param partition: ``key=value`` segments joined by ``/``.
    :return: ``partition`` unchanged.
    :raises ValueError: for an absolute path, an empty, ``.``/``..`` or hidden (``_``/``.``)
        segment, or a segment without ``=``.
    """
    if not isinstance(partition, str) or not partition or partition.startswith("/") or partition.endswith("/"):
        raise ValueError(f"partition={partition!r} must be a relative path like 'activity_date=2026-11-01'.")
    for segment in partition.split("/"):
        if not segment or segment[0] in "._" or "=" not in segment or "\\" in segment:
            raise ValueError(
                f"partition={partition!r}: segment {segment!r} is not a visible key=value directory name."
            )
    return partition


def _makedirs(directory: str, attempts: int = 3) -> None:
    """``os.makedirs``, again when a parent vanished meanwhile.

    Another run of the same dataset removes the shared ``_staging`` directory when it finds it
    empty; that can happen between ``makedirs`` creating it and creating our directory in it.
    """
    for attempt in range(attempts):
        try:
            os.makedirs(directory, exist_ok=True)
            return
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise


class _AppendSink:
    """A write-only file for ``pa.PythonFile`` that holds no file descriptor between writes.

    Bytes are kept in memory until :meth:`drain` (called after every row group, and whenever
    4 MiB have accumulated) appends them to ``path`` with an open/append/close.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.closed = False
        self._pending = bytearray()
        self._position = 0
        with open(path, "wb"):
            pass

    def write(self, data: bytes) -> int:
        self._pending += data
        self._position += len(data)
        if len(self._pending) >= _DRAIN_BYTES:
            self.drain()
        return len(data)

    def drain(self) -> None:
        if self._pending:
            with open(self.path, "ab") as file:
                file.write(self._pending)
            self._pending.clear()

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.drain()
        self.closed = True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False


@dataclass
class _OpenFile:
    name: str
    local_path: str
    sink: _AppendSink
    stream: pa.BufferedOutputStream
    writer: pq.ParquetWriter
    rows: int = 0


@dataclass
class _PartitionState:
    name: str
    buffer: list[pa.RecordBatch] = field(default_factory=list)
    buffered: int = 0
    files: list[FileInfo] = field(default_factory=list)
    current: _OpenFile | None = None
    unsent: list[_OpenFile] = field(default_factory=list)  # finished, not uploaded yet (object stores)


class PartitionedParquetWriter:
    """Writes Arrow batches into many Hive partitions below one (staging) directory.

    ``write("activity_type=email/activity_date=2026-11-01", batch)`` appends rows to that
    partition; :meth:`close` finishes every file and returns what was written. Files are named
    ``part-00000.parquet``, ``part-00001.parquet`` ... in order, a new one starting after
    ``max_rows_per_file`` rows.

    **Row groups and memory.** Rows are buffered per partition and written as a row group of
    exactly ``row_group_size`` rows when a buffer reaches that size. The rows buffered across
    all partitions are capped at ``max_buffered_rows``: past it, the largest buffer (the first
    one on ties) is written as a smaller row group. So memory stays bounded however many
    partitions are open (a year is 365 days x 3 types); what is written depends only on the
    sequence of ``write`` calls, so row-group boundaries, and the bytes, are deterministic.

    **Files.** Parquet is written sequentially, so a partition's file stays "open" from its first
    row group until it rolls or :meth:`close`. No file descriptor or upload is held open in
    between: each file is written through a sink that appends its bytes to a *local* file and
    closes it again after every row group (hundreds of partitions would otherwise need hundreds
    of descriptors, or for object stores hundreds of concurrent multipart uploads each buffering
    5 MiB or more in memory). For a ``file://`` root the local file is the staging file itself;
    for object stores (``s3://`` ...) it lives in a local temporary spool directory and is
    uploaded with the root's filesystem (``fs.put_file``) once complete, then removed. The
    spool therefore needs local disk for the files not yet complete (at most the run's output).

    **Determinism.** Fixed Parquet settings (:data:`PARQUET_SETTINGS`, the codec, row groups
    made contiguous before writing), no wall-clock metadata: the same sequence of writes gives
    byte-identical files.

    :param root: the staging directory (``ObjectStoragePath``, ``file://`` or an object store).
    :param file_schema: the schema of the files: the record schema without partition columns
        (see :func:`airflow_provider_activities.schemas.file_schema`).
    :param compression: Parquet codec (``zstd``, ``snappy``, ``gzip``, ``lz4``, ``brotli``, ``none``).
    :param row_group_size: rows per row group (smaller ones are written when the buffer cap,
        a file roll or the end of the data cuts them short).
    :param max_rows_per_file: rows per file before the next ``part-NNNNN`` starts.
    :param max_buffered_rows: cap of the rows buffered across all partitions.
    :param spool_dir: where object-store files are assembled before upload; a new temporary
        directory by default (removed by :meth:`close` and :meth:`abort`).
    :param plain_columns: top-level columns written without a dictionary (values unique to each
        record, such as identifiers); every other column gets one.
    """

    def __init__(
        self,
        root: ObjectStoragePath,
        file_schema: pa.Schema,
        compression: str = "zstd",
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        max_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE,
        max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS,
        spool_dir: str | None = None,
        plain_columns: Iterable[str] = (),
    ) -> None:
        for name, value in (
            ("row_group_size", row_group_size),
            ("max_rows_per_file", max_rows_per_file),
            ("max_buffered_rows", max_buffered_rows),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        self.root = root
        self.file_schema = file_schema
        self.compression = compression
        self.row_group_size = row_group_size
        self.max_rows_per_file = max_rows_per_file
        self.max_buffered_rows = max_buffered_rows
        self._dictionary_columns = dictionary_columns(file_schema, plain_columns)
        self._local = (root.protocol or "file") in ("file", "local")
        self._spool_dir = spool_dir
        self._spool: tempfile.TemporaryDirectory[str] | None = None
        self._partitions: dict[str, _PartitionState] = {}
        self._buffered = 0
        self._closed = False

    # -- public ---------------------------------------------------------------------------------

    @property
    def buffered_rows(self) -> int:
        """Rows held in memory, across all partitions, not yet written to a row group."""
        return self._buffered

    def write(self, partition: str, batch: pa.RecordBatch) -> None:
        """Append the rows of ``batch`` to ``partition``.

        :param partition: relative partition path, e.g. ``activity_type=email/activity_date=2026-11-01``.
        :param batch: rows with the file schema (partition columns already dropped). A zero-row
            batch only registers the partition, like :meth:`ensure_partition`.
        :raises ValueError: for a bad partition path or a batch of another schema.
        """
        self._check_open()
        if not batch.schema.equals(self.file_schema, check_metadata=False):
            raise ValueError(
                f"The batch for {partition!r} does not have the writer's file schema (partition columns must be "
                f"dropped first).\nBatch: {batch.schema.to_string(show_field_metadata=False)}\n"
                f"File schema: {self.file_schema.to_string(show_field_metadata=False)}"
            )
        state = self._state(partition)
        if batch.num_rows == 0:
            return
        state.buffer.append(batch)
        state.buffered += batch.num_rows
        self._buffered += batch.num_rows
        while state.buffered >= self.row_group_size:
            self._write_rows(state, self.row_group_size)
        while self._buffered > self.max_buffered_rows:
            largest = max(self._partitions.values(), key=lambda candidate: candidate.buffered)
            self._write_rows(largest, largest.buffered)

    def ensure_partition(self, partition: str) -> None:
        """Make sure ``partition`` gets a file, with zero rows if nothing is written to it.

        A zero-row Parquet file still carries the schema, so readers infer the columns of an
        empty day, and publishing the partition replaces whatever an earlier run left there.

        :param partition: relative partition path.
        """
        self._check_open()
        self._state(partition)

    def close(self) -> dict[str, list[FileInfo]]:
        """Write what is buffered, finish every file, upload them (object stores).

        The partitions are encoded and their files closed in parallel, one thread per CPU (each
        file's bytes depend on its own rows only, and Arrow encodes with the GIL released); the
        uploads then follow one by one, in partition order, stopping at the first failure.

        :return: the files of every partition, partitions in sorted order, files in name order.
        """
        self._check_open()
        try:
            names = sorted(self._partitions)
            tails = {name: self._take_rows(self._partitions[name], self._partitions[name].buffered) for name in names}
            self._local_base()  # the spool, created once before the threads

            def finish(name: str) -> None:
                state = self._partitions[name]
                if tails[name] is not None:
                    self._write_table(state, tails[name], upload=False)
                if state.current is None and not state.files:
                    self._open_file(state)
                if state.current is not None:
                    self._finish_file(state, upload=False)

            workers = min(len(names), usable_cpus())
            if workers > 1:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="peopleai-parquet") as pool:
                    for _ in pool.map(finish, names):
                        pass
            else:
                for name in names:
                    finish(name)
            for name in names:
                self._upload(self._partitions[name])
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._remove_spool()
        return {name: list(self._partitions[name].files) for name in sorted(self._partitions)}

    def abort(self) -> None:
        """Stop after a failure: drop buffers, close files, remove the local spool (best effort).

        Files already under ``root`` are left to the caller, which removes the staging directory.
        """
        self._closed = True
        for state in self._partitions.values():
            state.buffer.clear()
            state.buffered = 0
            if state.current is not None:
                for closable in (state.current.writer, state.current.stream):
                    try:
                        closable.close()
                    except Exception:  # noqa: BLE001 - best effort after a failure
                        pass
                state.current = None
        self._buffered = 0
        self._remove_spool()

    def __enter__(self) -> PartitionedParquetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None or not self._closed:
            self.abort()

    # -- internals ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("This PartitionedParquetWriter is closed.")

    def _state(self, partition: str) -> _PartitionState:
        state = self._partitions.get(partition)
        if state is None:
            check_partition(partition)
            state = self._partitions[partition] = _PartitionState(partition)
        return state

    def _write_rows(self, state: _PartitionState, count: int) -> None:
        """Write the first ``count`` buffered rows of ``state`` as row groups (split at file rolls)."""
        table = self._take_rows(state, count)
        if table is not None:
            self._write_table(state, table)

    def _take_rows(self, state: _PartitionState, count: int) -> pa.Table | None:
        """The first ``count`` buffered rows of ``state``, out of the buffer, as one chunk (``None`` for none)."""
        if not count:
            return None
        table = pa.Table.from_batches(state.buffer, schema=self.file_schema)
        head, rest = table.slice(0, count), table.slice(count)
        state.buffer = rest.to_batches() if rest.num_rows else []
        state.buffered -= count
        self._buffered -= count
        return head.combine_chunks()  # the bytes then depend on the rows only, not on how batches were cut

    def _write_table(self, state: _PartitionState, table: pa.Table, upload: bool = True) -> None:
        """Write ``table`` to ``state``'s files as row groups (split at file rolls; ``upload``: see :meth:`_finish_file`)."""
        count = table.num_rows
        offset = 0
        while offset < count:
            current = state.current or self._open_file(state)
            rows = min(self.max_rows_per_file - current.rows, count - offset)
            current.writer.write_table(table.slice(offset, rows), row_group_size=rows)
            current.stream.flush()
            current.sink.drain()
            current.rows += rows
            offset += rows
            if current.rows >= self.max_rows_per_file:
                self._finish_file(state, upload=upload)
        release_freed_memory()

    def _open_file(self, state: _PartitionState) -> _OpenFile:
        name = f"part-{len(state.files):05d}.parquet"
        directory = os.path.join(self._local_base(), *state.name.split("/"))
        _makedirs(directory)
        sink = _AppendSink(os.path.join(directory, name))
        # Arrow buffers the writer's many small writes (page headers, pages) in C++ and hands the
        # Python sink a few large ones: each call into Python needs the GIL, which the page
        # threads often hold, and waiting for it hundreds of times per row group costs more
        # than the encoding's own CPU.
        stream = pa.BufferedOutputStream(pa.PythonFile(sink, mode="w"), buffer_size=_DRAIN_BYTES)
        writer = pq.ParquetWriter(
            stream,
            self.file_schema,
            compression=self.compression,
            use_dictionary=self._dictionary_columns,
            **PARQUET_SETTINGS,
        )
        state.current = _OpenFile(name=name, local_path=sink.path, sink=sink, stream=stream, writer=writer)
        return state.current

    def _finish_file(self, state: _PartitionState, upload: bool = True) -> None:
        """Close the partition's open file; for object stores upload it, now or (``upload=False``) with :meth:`_upload`."""
        current = state.current
        assert current is not None
        current.writer.close()
        if not current.stream.closed:
            current.stream.close()
        current.sink.close()
        state.files.append(FileInfo(name=current.name, rows=current.rows, bytes=os.path.getsize(current.local_path)))
        state.current = None
        if not self._local:
            state.unsent.append(current)
            if upload:
                self._upload(state)

    def _upload(self, state: _PartitionState) -> None:
        """Upload the partition's finished files, in order, each removed from the spool once sent."""
        while state.unsent:
            sent = state.unsent[0]
            self.root.fs.put_file(sent.local_path, (self.root / state.name / sent.name).path)
            os.remove(sent.local_path)
            state.unsent.pop(0)

    def _local_base(self) -> str:
        if self._local:
            return self.root.path
        if self._spool is None:
            self._spool = tempfile.TemporaryDirectory(prefix="peopleai-parquet-", dir=self._spool_dir)
        return self._spool.name

    def _remove_spool(self) -> None:
        if self._spool is not None:
            self._spool.cleanup()
            self._spool = None


__all__ = [
    "DEFAULT_MAX_BUFFERED_ROWS",
    "DEFAULT_MAX_ROWS_PER_FILE",
    "DEFAULT_ROW_GROUP_SIZE",
    "PARQUET_SETTINGS",
    "FileInfo",
    "PartitionedParquetWriter",
    "RecordConverter",
    "SchemaMismatchError",
    "check_partition",
    "dictionary_columns",
]
