"""Per-day spooling of converted export records, with bounded memory.

The pieces, in the order a run uses them:

* :class:`~airflow_provider_activities.export.lines.RawLinesConverter` turns blocks of a
  downloaded file's lines into tables of the nested raw schema (Arrow's reader where exact,
  :class:`~airflow_provider_activities.records.convert.RawRecordConverter` record by record
  elsewhere); :class:`RawExportBuffer` bounds the rows to the run's days and numbers them in file
  order.
* :class:`DaySpool` takes converted batches routed to UTC days and keeps at most
  ``max_buffered_rows`` of them (and about ``max_buffered_bytes`` of Arrow data) in memory: past
  that, the buffer is sorted by day (unless it arrived in day order) and written to a local
  Arrow IPC file (a "round"; uncompressed for the first 2 GiB, LZ4-compressed after), each day's
  rows in record batches of their own, with an index of them. Reading a day back reads only
  that day's batches of each round.
* De-duplication across the whole run (snapshots): while rows are spooled, a
  :class:`~airflow_provider_activities.records.dedup.SeenKeys` (about 12 bytes per ``uid``) tells
  which ``uid`` came before; only those repeated ones are looked at again once every file is read:
  the key columns of their rows are read back from the spool and
  :func:`~airflow_provider_activities.records.dedup.superseded` names every version but the latest
  (greatest ``ingest_timestamp``, then the later in the files), wherever its day. Those rows are
  left out of their days: a ``uid`` whose timestamp moved between two days of the run is written
  once, in the day of its latest version.
* :func:`~airflow_provider_activities.records.dedup.deduplicated_order` keeps, among a day's rows,
  one row per ``uid``: the one with the latest ``ingest_timestamp`` (the later in the file on a
  tie), then orders the rows by the day's time column and ``uid``, so the output depends on the
  records only, not on their order in the file. Only the key columns are read to decide.
* :meth:`RawExportBuffer.day_batches` hands each day's kept rows over in batches of
  :data:`DEFAULT_CHUNK_ROWS`, gathered one at a time from the spool (:meth:`RawExportBuffer.rows_by_day`:
  by a thread of their own one batch ahead of the writer, or in the thread of the lane writing
  the day, see :mod:`airflow_provider_activities.export.days`).

So memory holds the spool's buffer (and the round being written), the seen ``uid`` hashes, one
day's key columns and two batches (with the day's rows of the rounds they draw on), whatever the
size of the export or of a day. Local disk holds the spool, the export's Arrow data (compressed
beyond :data:`DEFAULT_PLAIN_SPOOL_BYTES`), until the run ends.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_activities._threads import read_ahead, usable_cpus
from airflow_provider_activities.export.files import DEFAULT_BLOCK_BYTES, iter_export_blocks
from airflow_provider_activities.export.lines import RawLinesConverter
from airflow_provider_activities.records.convert import RawRecordConverter
from airflow_provider_activities.records.dedup import (
    SEQUENCE_COLUMN,
    ArrowKeys,
    SeenKeys,
    batch_hashes,
    deduplicate,
    deduplicated_order,
    superseded,
)
from airflow_provider_activities.records.filters import activity_keys
from airflow_provider_activities.records.schemas import RAW_ACTIVITY_SCHEMA
from airflow_provider_activities.storage.writer import release_freed_memory

DAY_MS = 86_400_000
DAY_COLUMN = "_day"
"""Helper column while spooling: the UTC day (days since the epoch) a row belongs to."""
DEFAULT_MAX_BUFFERED_ROWS = 100_000
DEFAULT_MAX_BUFFERED_BYTES = 16 * 1024 * 1024
"""Arrow bytes of converted rows held in memory before they are spilled to a round file (nested
export records are a few KiB each, so this, not the row cap, usually triggers the spill). Small
enough that a run of a few tens of thousands of records fills it as a large one does: memory is
then the same whatever the size of the export."""
DEFAULT_CHUNK_ROWS = 8_192
"""Rows per record batch handed to the writer when a day is read back. Half the export's row group:
the batch being gathered (and, read ahead, the one parked) and the writer's buffer then hold
little more than a row group, however large the days are (the writer joins two batches into a row group; the bytes
do not depend on how batches are cut)."""
_EPOCH_DAY = date(1970, 1, 1)
MAX_CONVERT_WORKERS = 4
"""Threads converting an export file's blocks at most (each holds a block and its table)."""


# -- spooling by day ----------------------------------------------------------------------------


_MOST_RUNS = 64
"""A batch gathered from fewer runs of consecutive spooled rows is made of slices of them."""


_SPOOL_BATCH_ROWS = 16_384
"""Rows per record batch of a round file (each holds one day's rows)."""
DEFAULT_PLAIN_SPOOL_BYTES = 2 * 1024**3
"""Arrow bytes a spool writes uncompressed before it compresses its rounds with LZ4. Uncompressed
rounds are written and read back at the speed of a copy; LZ4 halves the CPU-bound export's speed
of spooling but takes a third of the disk. So an export of up to a few million records spools
at full speed, and a year of a large tenant's history needs a third of its Arrow size on disk
beyond the first 2 GiB."""
_PLAIN = pa.ipc.IpcWriteOptions(compression=None)
_LZ4 = pa.ipc.IpcWriteOptions(compression="lz4")


def _read_batches(path: str, first: int, count: int, columns: list[int] | None = None, compressed: bool = False) -> pa.Table:
    """Record batches ``first`` to ``first + count`` of a round file (only ``columns``, by index, if given).

    The file is memory-mapped. An uncompressed round's batches are read whole, without a copy,
    then the columns selected: only the pages of the columns kept are ever touched. (Asked for
    some fields, Arrow's reader reads a batch's whole body into memory, and a day's few key
    columns would hold all of its rows.) A compressed round's fields are inflated one by one,
    so only those asked for are read.
    """
    options = pa.ipc.IpcReadOptions(included_fields=columns) if columns is not None and compressed else None
    with pa.memory_map(path, "r") as source:
        reader = pa.ipc.open_file(source, options=options)
        table = pa.Table.from_batches([reader.get_batch(i) for i in range(first, first + count)], schema=reader.schema)
    return table if columns is None or compressed else table.select(columns)


def _round_rows(part: tuple[str, int, int, int]) -> pa.Table:
    """The rows of one day in one round file, without the helper columns (an uncompressed round's
    straight from its memory map: batches gathered from them are the only copies).
    """
    path, first, count, _rows = part
    return _read_batches(path, first, count).drop_columns([DAY_COLUMN, SEQUENCE_COLUMN])


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    """The rows of ``table`` (at least one) as one record batch (no copy when they are in one chunk already)."""
    (batch,) = table.combine_chunks().to_batches()
    return batch


def spool_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the helper columns :data:`DAY_COLUMN` and :data:`SEQUENCE_COLUMN` appended."""
    return schema.append(pa.field(DAY_COLUMN, pa.int32())).append(pa.field(SEQUENCE_COLUMN, pa.int64()))


@dataclass
class _Round:
    path: str
    index: dict[int, tuple[int, int]]  # day -> (offset, rows)
    batches: dict[int, tuple[int, int]]  # day -> (first record batch, record batches)
    compressed: bool


def _write_round(path: str, table: pa.Table, schema: pa.Schema, compressed: bool) -> _Round:
    """Write ``table`` (rows in arrival order) to the round file ``path``, sorted by day then
    arrival (LZ4-compressed if ``compressed``).
    """
    days = np.asarray(table.column(DAY_COLUMN).combine_chunks(), dtype=np.int32)
    if (np.diff(days) < 0).any():  # rows arrive in file order: sorting is needed unless the file is in day order
        table = table.take(pc.sort_indices(table, sort_keys=[(DAY_COLUMN, "ascending"), (SEQUENCE_COLUMN, "ascending")]))
    counts = pc.value_counts(table.column(DAY_COLUMN)).to_pylist()
    index: dict[int, tuple[int, int]] = {}
    offset = 0
    for entry in sorted(counts, key=lambda item: item["values"]):
        index[entry["values"]] = (offset, entry["counts"])
        offset += entry["counts"]
    batches: dict[int, tuple[int, int]] = {}
    written = 0
    options = _LZ4 if compressed else _PLAIN
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, schema, options=options) as writer:
        for day, (offset, rows) in index.items():  # each day's rows in batches of their own
            pieces = table.slice(offset, rows).to_batches(max_chunksize=_SPOOL_BATCH_ROWS)
            for piece in pieces:
                writer.write_batch(piece)
            batches[day] = (written, len(pieces))
            written += len(pieces)
    return _Round(path, index, batches, compressed)


class DaySpool:
    """Rows grouped by UTC day on local disk, with at most ``max_buffered_rows`` rows (and about
    ``max_buffered_bytes`` of Arrow data) in memory.

    Round files are Arrow IPC files, each day's rows in record batches of their own: reading a
    day back reads only that day's batches, or only some columns. The first ``plain_bytes`` of
    Arrow data are written uncompressed, the rest LZ4-compressed (see :data:`DEFAULT_PLAIN_SPOOL_BYTES`).

    :param directory: a local directory for the round files (removed by :meth:`close`' caller).
    :param schema: the schema of the batches added (with the helper columns, see :func:`spool_schema`).
    :param max_buffered_rows: rows kept in memory before they are written out as a round.
    :param max_buffered_bytes: Arrow bytes kept in memory before they are written out as a round.
    :param plain_bytes: Arrow bytes written out uncompressed before rounds are LZ4-compressed.
    """

    def __init__(
        self,
        directory: str,
        schema: pa.Schema,
        max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        plain_bytes: int = DEFAULT_PLAIN_SPOOL_BYTES,
    ) -> None:
        self.directory = directory
        self.schema = schema
        self.max_buffered_rows = max_buffered_rows
        self.max_buffered_bytes = max_buffered_bytes
        self.plain_bytes = plain_bytes
        self.spilled_bytes = 0
        """Arrow bytes written out to round files so far."""
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._buffered_bytes = 0
        self._rounds: list[_Round] = []
        self._writer: ThreadPoolExecutor | None = None
        self._writing: Future[_Round] | None = None

    @property
    def buffered_rows(self) -> int:
        """Rows held in memory now."""
        return self._buffered

    @property
    def rounds(self) -> int:
        """Round files written so far (the one being written included)."""
        return len(self._rounds) + (self._writing is not None)

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
        """Write the buffered rows out as one round, sorted by day then arrival.

        The round is sorted and written by a thread of its own (Arrow's sort, take, compression and
        writes release the GIL) while the caller converts the next rows; one round at a time.
        """
        if not self._buffered:
            return
        table = pa.Table.from_batches(self._buffer, schema=self.schema)
        compressed = self.spilled_bytes >= self.plain_bytes
        self.spilled_bytes += self._buffered_bytes
        self._buffer, self._buffered, self._buffered_bytes = [], 0, 0
        self._settle()
        path = os.path.join(self.directory, f"round-{len(self._rounds):05d}.arrow")
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="peopleai-spool")
        self._writing = self._writer.submit(_write_round, path, table, self.schema, compressed)

    def _settle(self) -> None:
        """Wait for the round being written, if any (its error is raised here)."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            self._rounds.append(writing.result())

    def _complete(self) -> None:
        """Every row added is in a round file."""
        self.flush()
        self._settle()

    def days(self) -> list[int]:
        """Every day holding rows (days since the epoch), in order; writes the buffer out first."""
        self._complete()
        found: set[int] = set()
        for spilled in self._rounds:
            found.update(spilled.index)
        return sorted(found)

    def read_day(self, day: int, columns: list[str] | None = None) -> pa.Table:
        """All rows of ``day`` (arrival order within each round), or only some columns of them:
        only the record batches of that day are read from each round file.
        """
        self._complete()
        fields = None if columns is None else [self.schema.get_field_index(name) for name in columns]
        parts = [
            _read_batches(spilled.path, *spilled.batches[day], fields, spilled.compressed)
            for spilled in self._rounds
            if day in spilled.batches
        ]
        if not parts:
            schema = self.schema if columns is None else pa.schema([self.schema.field(name) for name in columns])
            return schema.empty_table()
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def day_parts(self, day: int) -> list[tuple[str, int, int, int]]:
        """Where the rows of ``day`` are: ``(round file, first batch, batches, rows)``, in :meth:`read_day`'s order."""
        self._complete()
        return [(s.path, *s.batches[day], s.index[day][1]) for s in self._rounds if day in s.batches]

    def select(self, columns: list[str]) -> Iterator[pa.Table]:
        """Some columns of every row, round by round (writes the buffer out first)."""
        self._complete()
        fields = [self.schema.get_field_index(name) for name in columns]
        for spilled in self._rounds:
            count = sum(batches for _, batches in spilled.batches.values())
            yield _read_batches(spilled.path, 0, count, fields, spilled.compressed)

    def close(self) -> None:
        """Drop the buffered rows, and wait for a round being written (the round files stay for
        the caller to remove).
        """
        self._buffer, self._buffered, self._buffered_bytes = [], 0, 0
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer, self._writing = None, None


@dataclass
class ExportCounts:
    """What a :class:`RawExportBuffer` saw.

    :param received: records read from the files.
    :param outside: records outside the requested days (or without the time field), dropped.
    :param duplicates: repeated ``uid`` within a day (or across the run's days), dropped.
    :param arrow: records read by Arrow's JSON reader (the others the Python way).
    """

    received: int = 0
    outside: int = 0
    duplicates: int = 0
    arrow: int = 0


class RawExportBuffer:
    """Converts, bounds and spools export records; gives them back deduplicated, day by day.

    :param directory: local directory for the spool files.
    :param time_column: ``timestamp`` (snapshot: ``activity_date``) or ``ingest_timestamp`` (delta:
        ``ingest_date``): the field that places a record in a day.
    :param start_ms: first instant kept (epoch ms, a UTC midnight).
    :param end_ms: first instant no longer kept.
    :param schema: the record schema.
    :param max_buffered_rows: converted rows held in memory before spilling to disk.
    :param max_buffered_bytes: Arrow bytes of converted rows held in memory before spilling.
    :param across_days: keep one version of each ``uid`` in the whole run (a snapshot: an
        activity whose timestamp moved is written in the day of its latest version only), not one
        per day (a delta: each day's partition holds the versions processed that day).
    :param arrow: read files with Arrow's JSON reader where exact (:meth:`add_file`); ``False``
        reads every record the Python way (same rows).
    :param block_bytes: bytes of a file read and converted at a time.
    :param convert_workers: threads converting blocks at once; ``None``: one per CPU, at most
        :data:`MAX_CONVERT_WORKERS`.
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
        across_days: bool = False,
        arrow: bool = True,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        convert_workers: int | None = None,
    ) -> None:
        self.schema = schema
        self.time_column = time_column
        self.start_ms, self.end_ms = start_ms, end_ms
        self.across_days = across_days
        self.block_bytes = block_bytes
        self.convert_workers = convert_workers or min(usable_cpus(), MAX_CONVERT_WORKERS)
        self.lines = RawLinesConverter(schema, arrow=arrow)
        self.converter: RawRecordConverter = self.lines.python
        """The Python converter (its ``unknown_fields`` names every unknown field seen, either way)."""
        self.spool = DaySpool(directory, spool_schema(schema), max_buffered_rows, max_buffered_bytes)
        self.counts = ExportCounts()
        self._seen = SeenKeys() if across_days else None
        self._repeated: set[str] = set()  # uids seen more than once in the run
        self._superseded: np.ndarray | None = None
        self._lock = threading.Lock()  # days may be read back by several threads at once

    def add(self, records: list[dict[str, Any]]) -> None:
        """Convert a list of records (the Python way) and keep those inside the days."""
        if records:
            self.add_table(pa.Table.from_batches([self.converter.to_batch(records)]))

    def add_file(self, path: str) -> None:
        """Convert every record of a downloaded export file, block by block, and keep those inside the days.

        :raises ExportFileError: for a line that is not a JSON object.
        :raises SchemaMismatchError: for a value that does not fit its type.
        """
        self.lines.path = path
        before = self.lines.arrow_rows
        # Blocks are converted by threads of their own, a block each: Arrow's parse and most of
        # the checks release the GIL, and overlap with this thread's spooling of the block before.
        for table in iter_export_blocks(path, self.block_bytes, prepare=self.lines.convert, workers=self.convert_workers):
            self.add_table(table)
        self.counts.arrow += self.lines.arrow_rows - before
        release_freed_memory()  # what the converting threads freed, before the days are written

    def add_table(self, table: pa.Table) -> None:
        """Keep the rows of ``table`` (converted records, in file order) that are inside the days."""
        if not table.num_rows:
            return
        first = self.counts.received
        self.counts.received += table.num_rows
        times = pc.cast(table.column(self.time_column), pa.int64())
        inside = pc.fill_null(pc.and_(pc.greater_equal(times, self.start_ms), pc.less(times, self.end_ms)), False)
        sequence = pa.array(np.arange(first, first + table.num_rows, dtype=np.int64))
        days = pc.cast(pc.divide(times, DAY_MS), pa.int32())
        extended = pa.Table.from_arrays([*table.columns, days, sequence], schema=self.spool.schema)
        if not pc.all(inside).as_py():  # (a filter copies every nested value, even when it keeps every row)
            extended = extended.filter(inside)
        self.counts.outside += table.num_rows - extended.num_rows
        for batch in extended.to_batches():
            self.spool.add(batch)
            self._note_repeats(batch)

    def _note_repeats(self, batch: pa.RecordBatch) -> None:
        """Remember the batch's uids; keep those seen before (only they are looked at again)."""
        if self._seen is None or not batch.num_rows:
            return
        uids = batch.column(batch.schema.get_field_index("uid"))
        if uids.null_count:  # rows without a uid are all kept
            batch = batch.filter(uids.is_valid())
            uids = batch.column(batch.schema.get_field_index("uid"))
        keys = pa.RecordBatch.from_arrays([uids], names=["uid"])
        new = self._seen.new(batch_hashes([uids]), ArrowKeys(keys, activity_keys), "arrow")
        if len(new) < len(uids):
            repeated = np.ones(len(uids), dtype=bool)
            repeated[new] = False
            self._repeated.update(uids.filter(pa.array(repeated)).to_pylist())

    def _superseded_rows(self) -> np.ndarray | None:
        """The sequence numbers of the versions the run's latest versions replace (across days)."""
        if self._seen is None or not self._repeated:
            return None
        with self._lock:
            if self._superseded is None:
                wanted = pa.array(sorted(self._repeated), type=pa.string())
                keys = [
                    table.filter(pc.is_in(table.column("uid"), value_set=wanted))
                    for table in self.spool.select(["uid", "ingest_timestamp", SEQUENCE_COLUMN])
                ]
                self._superseded = superseded(pa.concat_tables(keys)) if keys else np.zeros(0, np.int64)
                self._seen.close()
        return self._superseded

    def _kept_order(self, table: pa.Table) -> pa.Array:
        """The rows of one day's table to write, in order: superseded versions out, then
        :func:`deduplicated_order`.
        """
        gone = self._superseded_rows()
        if gone is None or not len(gone):
            return deduplicated_order(table, self.time_column)
        sequence = np.asarray(table.column(SEQUENCE_COLUMN).combine_chunks(), dtype=np.int64)
        keep = np.flatnonzero(~np.isin(sequence, gone, assume_unique=False))
        keys = table.select(list(dict.fromkeys(["uid", "ingest_timestamp", self.time_column, SEQUENCE_COLUMN])))
        if len(keep) == table.num_rows:
            return deduplicated_order(keys, self.time_column)
        order = np.asarray(deduplicated_order(keys.take(pa.array(keep)), self.time_column), dtype=np.int64)
        return pa.array(keep[order], type=pa.uint64())

    def days(self) -> Iterator[tuple[date, pa.Table]]:
        """Each day holding records, in order, with its rows deduplicated and sorted (helper
        columns dropped).
        """
        for day in self.spool.days():
            table = self.spool.read_day(day)
            if self._superseded_rows() is None:
                table, dropped = deduplicate(table, self.time_column)
            else:
                order = self._kept_order(table)
                dropped = table.num_rows - len(order)
                table = table.take(order)
            self.counts.duplicates += dropped
            yield date.fromordinal(_EPOCH_DAY.toordinal() + day), table.drop_columns([DAY_COLUMN, SEQUENCE_COLUMN])

    def day_batches(
        self, chunk_rows: int = DEFAULT_CHUNK_ROWS, only: Collection[date] | None = None
    ) -> Iterator[tuple[date, Iterator[pa.RecordBatch]]]:
        """Like :meth:`days`, with each day's rows as record batches of at most ``chunk_rows``,
        gathered one at a time from the spool: memory holds the day's key columns and one batch,
        not the whole day. Consume each day's batches before the next day. A day whose every row
        was superseded by a later version in another day is left out.

        :param only: these days alone (the others are left out); several threads may each read
            back days of their own at once.
        """
        keys = list(dict.fromkeys(["uid", "ingest_timestamp", self.time_column, SEQUENCE_COLUMN]))
        with self._lock:
            spooled = self.spool.days()  # (the spool's last round is written here, once)
        for day in spooled:
            when = date.fromordinal(_EPOCH_DAY.toordinal() + day)
            if only is not None and when not in only:
                continue
            table = self.spool.read_day(day, keys)
            order = self._kept_order(table)
            with self._lock:
                self.counts.duplicates += table.num_rows - len(order)
            del table
            if not len(order):
                continue
            yield when, self._chunks(self.spool.day_parts(day), order, chunk_rows)

    def rows_by_day(
        self, chunk_rows: int = DEFAULT_CHUNK_ROWS, only: Collection[date] | None = None, ahead: bool = True
    ) -> Generator[tuple[date, pa.RecordBatch], None, None]:
        """The batches of :meth:`day_batches`, each with its day.

        :param only: these days alone (see :meth:`day_batches`).
        :param ahead: gather the batches by a thread of their own, one batch ahead: reading the
            spool back (gathering rows; off the GIL) then overlaps with what the caller does with
            the batch before, such as encoding Parquet. Not worth its memory (two more batches)
            where other threads read other days at once.
        """
        if not ahead:
            return self._rows_by_day(chunk_rows, only)
        return read_ahead(self._rows_by_day(chunk_rows, only), depth=1, name="peopleai-export-days")

    def _rows_by_day(self, chunk_rows: int, only: Collection[date] | None) -> Generator[tuple[date, pa.RecordBatch], None, None]:
        for day, batches in self.day_batches(chunk_rows, only):
            for batch in batches:
                yield day, batch

    @staticmethod
    def _chunks(parts: list[tuple[str, int, int, int]], order: pa.Array, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        """The day's rows of ``order`` (positions in the day, as :meth:`DaySpool.read_day` lays them
        out), in batches of ``chunk_rows``, made of slices of the day's rows of the round files
        they draw on (or gathered from them when the rows are far from file order). Only those
        rounds' rows of the day are read, and kept while the next batch draws on them too: a day
        is never all in memory, and no take runs on the whole day (it would first copy the day
        into one array, for every batch).
        """
        starts = np.cumsum([0] + [rows for _, _, _, rows in parts])
        cached: dict[int, pa.Table] = {}  # the rounds the last batch drew on
        positions = np.asarray(order, dtype=np.int64)
        for offset in range(0, len(positions), chunk_rows):
            wanted = positions[offset : offset + chunk_rows]
            source = np.searchsorted(starts, wanted, side="right") - 1
            breaks = np.flatnonzero((np.diff(wanted) != 1) | (np.diff(source) != 0)) + 1
            rounds = {n: cached[n] if n in cached else _round_rows(parts[n]) for n in np.unique(source).tolist()}
            cached = rounds
            if len(breaks) < _MOST_RUNS:  # few runs of consecutive rows (a file near day order): slices
                pieces = []
                for run in np.split(np.arange(len(wanted)), breaks):
                    number = int(source[run[0]])
                    pieces.append(rounds[number].slice(int(wanted[run[0]] - starts[number]), len(run)))
                batch = _one_batch(pa.concat_tables(pieces))
            else:  # gathered round by round, then put back in the order asked
                gathered, picked = [], []
                for number in np.unique(source).tolist():
                    rows = np.flatnonzero(source == number)
                    local = pa.array(wanted[rows] - starts[number], type=pa.int64())
                    gathered.append(rounds[number].take(local))
                    picked.append(rows)
                batch = _one_batch(pa.concat_tables(gathered))
                arrival = np.concatenate(picked)
                if (np.diff(arrival) < 0).any():
                    batch = batch.take(pa.array(np.argsort(arrival, kind="stable"), type=pa.int64()))
            yield batch

    def close(self) -> None:
        """Release buffers and the seen-keys file."""
        self.spool.close()
        if self._seen is not None:
            self._seen.close()


__all__ = [
    "DAY_COLUMN",
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_MAX_BUFFERED_BYTES",
    "DEFAULT_MAX_BUFFERED_ROWS",
    "DEFAULT_PLAIN_SPOOL_BYTES",
    "DaySpool",
    "ExportCounts",
    "RawExportBuffer",
    "spool_schema",
]
