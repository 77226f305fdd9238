"""Arrow batches to Hive-partitioned Parquet files.

:class:`PartitionedParquetWriter` writes batches to many partitions at once
(``activity_type=email/activity_date=2026-11-01/part-00000.parquet`` ...) below a staging
directory, with bounded memory and deterministic bytes. See its docstring for the choices.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_provider_activities._threads import usable_cpus
from airflow_provider_activities.compat import ObjectStoragePath

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
"""Rows buffered across all partitions: the writer's memory
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
        (see :func:`airflow_provider_activities.records.schemas.file_schema`).
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

    def finish_partition(self, partition: str) -> None:
        """Write ``partition``'s buffered rows and close its file (for object stores, upload it).

        For a caller that knows a partition is complete (the export writes its days one after
        the other): its last row group is written now, not when the buffer cap or :meth:`close`
        comes, and its file's buffers are freed. The bytes are the same; a later write to the
        partition starts its next file.

        :param partition: relative partition path.
        """
        self._check_open()
        state = self._state(partition)
        self._write_rows(state, state.buffered)
        if state.current is not None:
            self._finish_file(state)

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
                    with contextlib.suppress(Exception):
                        closable.close()
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
    "check_partition",
    "dictionary_columns",
]
