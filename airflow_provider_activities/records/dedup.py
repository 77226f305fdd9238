"""Which record identities were seen before: exact de-duplication in about 12 bytes per record.

:class:`SeenKeys` answers, for the identities of one page (or one group of pages), which are
new, and remembers them. It works on 64-bit hashes, in numpy: every identity remembered is a
(hash, id) pair in sorted runs, and a page is checked against each run with one
``searchsorted``. A hash that matches is only a candidate: the identities themselves are kept
too (spilled to a temporary file in blocks), and a candidate is compared with the identity
behind the matching hash, so a hash collision never drops a record.

The hashes come from one of two places, and one :class:`SeenKeys` takes one kind only:

* :func:`batch_hashes`, for Arrow pages: the columns of the identity hashed in numpy,
  whatever their number of rows, without a Python object per value (strings by a polynomial
  hash of their UTF-8 bytes and their length, integers by a 64-bit mixer);
* Python's ``hash()`` of each identity, for pages of dicts.

The identities are kept as :class:`KeyTable` (Arrow key columns, or a list of Python values),
and compared as the Python values :meth:`KeyTable.identities` gives.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_U64 = np.uint64
_MASK = (1 << 64) - 1
_P = 0x100000001B3  # the polynomial's base (odd, so invertible modulo 2**64)
_SPAN = 1 << 16  # bytes of strings hashed with one prefix sum (the power tables and the scratch: 512 KiB each)


def _power_table(base: int) -> np.ndarray:
    """``base**k`` modulo 2**64 for k in 0 ... _SPAN."""
    factors = np.full(_SPAN + 1, base, dtype=_U64)
    factors[0] = 1
    return np.cumprod(factors)


_POWERS = _power_table(_P)
_INVERSE_POWERS = _power_table(pow(_P, -1, 1 << 64))
_LENGTH_FACTOR = _U64(0x9E3779B97F4A7C15)
_COMBINE_FACTOR = _U64(0xC2B2AE3D27D4EB4F)
_NULL_HASH = _U64(0x5BD1E9955BD1E995)


def _mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, element-wise (uint64, wrapping)."""
    values = values ^ (values >> 30)
    values = values * _U64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> 27)
    values = values * _U64(0x94D049BB133111EB)
    return values ^ (values >> 31)


def _polynomial(data: np.ndarray, offsets: np.ndarray, work: np.ndarray) -> np.ndarray:
    """``sum(byte[k] * P**k)`` of each string ``data[offsets[i]:offsets[i + 1]]`` (``offsets[-1] <= _SPAN``).

    ``work`` is scratch space of at least ``_SPAN + 1`` values, reused between calls: fresh
    arrays of this size would each cost page faults.
    """
    size = int(offsets[-1])
    prefix = work[: size + 1]
    prefix[0] = 0
    np.multiply(data[:size], _POWERS[:size], out=prefix[1:])
    np.cumsum(prefix, out=prefix)
    starts = offsets[:-1]
    return (prefix[offsets[1:]] - prefix[starts]) * _INVERSE_POWERS[starts]


def _long_polynomial(data: np.ndarray) -> int:
    """:func:`_polynomial` of one string longer than ``_SPAN`` bytes, in pieces."""
    total = 0
    for start in range(0, len(data), _SPAN):
        piece = data[start : start + _SPAN]
        value = int(np.sum(piece.astype(_U64) * _POWERS[: len(piece)], dtype=_U64))
        total = (total + value * pow(_P, start, 1 << 64)) & _MASK
    return total


def string_hashes(array: pa.Array) -> np.ndarray:
    """A 64-bit hash of each value of a string or binary array (nulls get one fixed value).

    The hash of a value depends on its bytes only, not on the array it sits in or its position.
    """
    if pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type):
        offset_type: Any = np.int64
    elif pa.types.is_string(array.type) or pa.types.is_binary(array.type):
        offset_type = np.int32
    else:
        raise TypeError(f"string_hashes takes string or binary arrays, not {array.type}")
    count = len(array)
    hashes = np.zeros(count, dtype=_U64)
    if count == 0:
        return hashes
    _, offset_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(
        offset_buffer, dtype=offset_type, count=count + 1, offset=array.offset * np.dtype(offset_type).itemsize
    )
    offsets = offsets.astype(np.int64)
    first = int(offsets[0])
    offsets -= first
    if data_buffer is not None:
        data = np.frombuffer(data_buffer, dtype=np.uint8)[first : first + int(offsets[-1])]
    else:
        data = np.zeros(0, np.uint8)
    work = np.empty(min(len(data), _SPAN) + 1, dtype=_U64)
    row = 0
    while row < count:
        # The rows from `row` whose bytes fit in one span; one row alone may not.
        end = int(np.searchsorted(offsets, offsets[row] + _SPAN, side="right")) - 1
        if end <= row:
            hashes[row] = _long_polynomial(data[offsets[row] : offsets[row + 1]])
            row += 1
            continue
        end = min(end, count)
        base = offsets[row]
        hashes[row:end] = _polynomial(data[base : offsets[end]], offsets[row : end + 1] - base, work)
        row = end
    lengths = (offsets[1:] - offsets[:-1]).astype(_U64)
    hashes = _mix(hashes ^ (lengths * _LENGTH_FACTOR))
    return _with_nulls(hashes, array)


def integer_hashes(array: pa.Array) -> np.ndarray:
    """A 64-bit hash of each value of an integer array (nulls get the same value as in :func:`string_hashes`)."""
    values = np.asarray(array.cast(pa.int64()).fill_null(0), dtype=np.int64).view(_U64)
    return _with_nulls(_mix(values ^ _LENGTH_FACTOR), array)


def _with_nulls(hashes: np.ndarray, array: pa.Array) -> np.ndarray:
    if array.null_count:
        hashes[np.asarray(array.is_null())] = _NULL_HASH
    return hashes


def combine(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The hash of a pair, from the hashes of its parts (order matters)."""
    return _mix(first * _COMBINE_FACTOR + second)


def batch_hashes(columns: Sequence[pa.Array]) -> np.ndarray:
    """The hash of each row of the identity made of ``columns`` (strings, binaries or integers)."""
    hashes: np.ndarray | None = None
    for column in columns:
        part = integer_hashes(column) if pa.types.is_integer(column.type) else string_hashes(column)
        hashes = part if hashes is None else combine(hashes, part)
    assert hashes is not None, "an identity needs at least one column"
    return hashes


def python_hashes(identities: Sequence[Hashable]) -> np.ndarray:
    """Python's ``hash()`` of each identity, as uint64 (for identities of dict records)."""
    return np.fromiter(map(hash, identities), dtype=np.int64, count=len(identities)).view(_U64)


# ============================================================================================
# The identities themselves, for the exact comparison
# ============================================================================================


class KeyTable:
    """The identities of some rows, kept for exact comparison (Arrow columns or Python values)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def take(self, rows: np.ndarray) -> KeyTable:
        """The rows at ``rows``, in that order."""
        raise NotImplementedError

    def identities(self) -> list[Hashable]:
        """Each row's identity as a Python value (what is compared)."""
        raise NotImplementedError

    @staticmethod
    def concat(tables: list[KeyTable]) -> KeyTable:
        """The rows of ``tables`` (of one kind), in order."""
        return tables[0].concat(tables)


@dataclass
class ListKeys(KeyTable):
    """Identities given as Python values (records parsed to dicts).

    :param values: one identity per row.
    """

    values: list[Hashable]

    def __len__(self) -> int:
        return len(self.values)

    def take(self, rows: np.ndarray) -> ListKeys:
        """The identities at ``rows``."""
        values = self.values
        return ListKeys([values[row] for row in rows.tolist()])

    def identities(self) -> list[Hashable]:
        """Every identity, in order."""
        return self.values

    @staticmethod
    def concat(tables: list[KeyTable]) -> ListKeys:
        """The tables' identities, one after another."""
        return ListKeys([value for table in tables for value in table.identities()])


@dataclass
class ArrowKeys(KeyTable):
    """Identities given as Arrow columns (records parsed to a ``pa.RecordBatch``).

    :param batch: the identity's columns.
    :param to_identities: the Python identity of every row of such a batch (a module-level
        function, so that the table can be pickled to the spool).
    """

    batch: pa.RecordBatch
    to_identities: Callable[[pa.RecordBatch], list[Hashable]]

    def __len__(self) -> int:
        return self.batch.num_rows

    def take(self, rows: np.ndarray) -> ArrowKeys:
        """The identities at ``rows``."""
        return ArrowKeys(self.batch.take(pa.array(rows, type=pa.int64())), self.to_identities)

    def identities(self) -> list[Hashable]:
        """Every identity, in order, as Python values."""
        return self.to_identities(self.batch)

    @staticmethod
    def concat(tables: list[KeyTable]) -> ArrowKeys:
        """The tables' identities, one after another."""
        first = tables[0]
        assert isinstance(first, ArrowKeys)
        batches = [table.batch for table in tables if isinstance(table, ArrowKeys)]
        return ArrowKeys(pa.concat_batches(batches), first.to_identities)


# ============================================================================================
# The seen identities
# ============================================================================================


@dataclass
class _Run:
    """Sorted hashes, and the id (order of arrival, uint32) of the identity behind each."""

    hashes: np.ndarray
    ids: np.ndarray


def _merged(first: _Run, second: _Run) -> _Run:
    """One sorted run of two, placed by ``searchsorted``: less memory than sorting both again."""
    at = np.searchsorted(first.hashes, second.hashes, side="right") + np.arange(len(second.hashes))
    size = len(first.hashes) + len(second.hashes)
    from_second = np.zeros(size, dtype=bool)
    from_second[at] = True
    hashes = np.empty(size, dtype=_U64)
    ids = np.empty(size, dtype=first.ids.dtype)
    hashes[at], ids[at] = second.hashes, second.ids
    from_first = ~from_second
    hashes[from_first], ids[from_first] = first.hashes, first.ids
    return _Run(hashes, ids)


class SeenKeys:
    """The identities seen so far, exactly, in about 12 bytes each in memory.

    Each identity remembered is a 64-bit hash and a 32-bit id (its number, in order of arrival), kept in
    sorted runs; a run is merged with the one before it once that one is no more than twice
    its size, so there are about log2(n / page) runs and every identity is merged about as
    many times. The identities themselves are kept in order of arrival, the latest
    ``block_size`` or more in memory, the others pickled to a temporary file in blocks;
    they are read back only for a hash that matches (the last block read is kept).

    :param block_size: identities kept in memory before they are spilled to the file.
    """

    def __init__(self, block_size: int = 65_536) -> None:
        self.block_size = block_size
        self.kind: str | None = None
        """``"arrow"`` or ``"python"``: the kind of hashes taken (the first call decides)."""
        self._runs: list[_Run] = []
        self._count = 0  # identities remembered; the next one's id
        self._pending: list[KeyTable] = []  # identities not spilled yet, from id self._spilled on
        self._pending_table: KeyTable | None = None  # _pending concatenated, while it holds
        self._spilled = 0
        self._blocks: list[tuple[int, int, int]] = []  # (first id, file offset, byte length)
        self._spool: IO[bytes] | None = None
        self._loaded: tuple[int, KeyTable] | None = None

    def __len__(self) -> int:
        return self._count

    def new(self, hashes: np.ndarray, keys: KeyTable, kind: str) -> np.ndarray:
        """The positions of the rows whose identity is not remembered (nor earlier in this call),
        in order; remembers those.

        :param hashes: each row's hash (uint64), from :func:`batch_hashes` or :func:`python_hashes`.
        :param keys: each row's identity, for the exact comparison.
        :param kind: ``"arrow"`` or ``"python"``, the source of ``hashes`` (they must not be mixed).
        """
        if self._count + len(hashes) >= 1 << 32:
            raise OverflowError("SeenKeys numbers identities in 32 bits: more than 4,294,967,295 in one read.")
        if self.kind is None:
            self.kind = kind
        elif kind != self.kind:
            raise ValueError(f"SeenKeys holds {self.kind} hashes; {kind} hashes cannot be compared with them.")
        order = np.argsort(hashes)
        ordered = hashes[order]  # searchsorted is several times faster with sorted needles
        fresh = np.ones(len(hashes), dtype=bool)
        self._drop_repeats(ordered, order, keys, fresh)
        for run in self._runs:
            self._drop_remembered(run, ordered, order, keys, fresh)
        rows = np.flatnonzero(fresh)
        if len(rows):
            new_sorted = fresh[order]
            ids = self._count + (np.cumsum(fresh) - 1)[order[new_sorted]]  # ids in order of arrival
            self._remember(ordered[new_sorted], ids, keys if len(rows) == len(keys) else keys.take(rows))
        return rows

    def close(self) -> None:
        """Remove the temporary file (it is removed at exit anyway)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _drop_repeats(ordered: np.ndarray, order: np.ndarray, keys: KeyTable, fresh: np.ndarray) -> None:
        """Mark the rows whose identity an earlier row of the same call has (``ordered``: the
        call's hashes sorted, ``order``: their rows).
        """
        same = ordered[1:] == ordered[:-1]
        if not same.any():
            return
        shared = np.zeros(len(ordered), dtype=bool)  # the sorted positions whose hash another row has
        shared[1:] |= same
        shared[:-1] |= same
        rows = np.sort(order[shared])
        first: set[Hashable] = set()
        for row, identity in zip(rows.tolist(), keys.take(rows).identities(), strict=True):
            if identity in first:
                fresh[row] = False
            else:
                first.add(identity)

    def _drop_remembered(self, run: _Run, ordered: np.ndarray, order: np.ndarray, keys: KeyTable, fresh: np.ndarray) -> None:
        """Mark the rows whose identity ``run`` holds."""
        at = np.minimum(np.searchsorted(run.hashes, ordered), len(run.hashes) - 1)
        matched = np.flatnonzero((run.hashes[at] == ordered) & fresh[order])
        if not len(matched):
            return
        rows = order[matched]
        # Every remembered identity with a matching hash (two, rarely, when two identities collide).
        stop = np.searchsorted(run.hashes, ordered[matched], side="right")
        pairs = [
            (row, index)
            for row, begin, end in zip(rows.tolist(), at[matched].tolist(), stop.tolist(), strict=True)
            for index in range(begin, end)
        ]
        remembered = self._identities(run.ids[[index for _, index in pairs]])
        incoming = dict(zip(rows.tolist(), keys.take(rows).identities(), strict=True))
        for (row, _), identity in zip(pairs, remembered, strict=True):
            if incoming[row] == identity:
                fresh[row] = False

    def _remember(self, hashes: np.ndarray, ids: np.ndarray, keys: KeyTable) -> None:
        """Add identities: ``hashes`` sorted, ``ids`` theirs, ``keys`` the identities in order of arrival."""
        self._runs.append(_Run(hashes, ids.astype(np.uint32)))
        while len(self._runs) > 1 and len(self._runs[-2].hashes) <= 2 * len(self._runs[-1].hashes):
            last = self._runs.pop()
            self._runs.append(_merged(self._runs.pop(), last))
        self._count += len(hashes)
        self._pending.append(keys)
        self._pending_table = None
        if self._count - self._spilled >= self.block_size:
            self._spill()

    def _spill(self) -> None:
        table = KeyTable.concat(self._pending)
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(prefix="peopleai-seen-")  # noqa: SIM115 - open until close()
        data = pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL)
        self._spool.seek(0, 2)
        self._blocks.append((self._spilled, self._spool.tell(), len(data)))
        self._spool.write(data)
        self._spilled = self._count
        self._pending = []
        self._pending_table = None

    def _identities(self, ids: np.ndarray) -> list[Hashable]:
        """The remembered identities of ``ids``, in that order."""
        found: list[Hashable] = [None] * len(ids)
        firsts = np.array([first for first, _, _ in self._blocks] + [self._spilled], dtype=np.int64)
        where = np.searchsorted(firsts, ids, side="right") - 1  # block number; len(self._blocks): pending
        for number in np.unique(where).tolist():
            positions = np.flatnonzero(where == number)
            table = self._block(number)
            local = ids[positions] - firsts[number]
            for position, identity in zip(positions.tolist(), table.take(local).identities(), strict=True):
                found[position] = identity
        return found

    def _block(self, number: int) -> KeyTable:
        if number == len(self._blocks):
            if self._pending_table is None:
                self._pending_table = KeyTable.concat(self._pending)
            return self._pending_table
        if self._loaded is None or self._loaded[0] != number:
            assert self._spool is not None
            _, offset, length = self._blocks[number]
            self._spool.seek(offset)
            self._loaded = (number, pickle.loads(self._spool.read(length)))
        return self._loaded[1]


__all__ = [
    "ArrowKeys",
    "KeyTable",
    "ListKeys",
    "SeenKeys",
    "batch_hashes",
    "combine",
    "deduplicate",
    "deduplicated_order",
    "integer_hashes",
    "python_hashes",
    "string_hashes",
    "superseded",
]


# ============================================================================================
# The latest version of each identity in a table (the bulk export's days)
# ============================================================================================

SEQUENCE_COLUMN = "_seq"
"""The default arrival-order column: a row's position in the export files."""


def _latest_rows(keys: pa.Table, id_column: str, sequence_column: str) -> pa.Array:
    """The indices of the latest row of each identity (greatest ``ingest_timestamp``, nulls
    lowest, then greatest ``sequence_column``), in identity order; every row without an identity.
    """
    rows = keys.num_rows
    order = pc.sort_indices(
        keys,
        sort_keys=[
            (id_column, "ascending", "at_start"),
            ("ingest_timestamp", "ascending", "at_start"),
            (sequence_column, "ascending", "at_start"),
        ],
    )
    ids = keys.column(id_column).take(order)
    later_differs = pc.fill_null(pc.not_equal(ids.slice(0, rows - 1), ids.slice(1)), True)
    last_of_id = pa.concat_arrays([*later_differs.chunks, pa.array([True])])
    return pc.filter(order, last_of_id)


def deduplicated_order(
    table: pa.Table, time_column: str, id_column: str = "uid", sequence_column: str = SEQUENCE_COLUMN
) -> pa.Array:
    """The indices of the rows :func:`deduplicate` keeps, in its order; only the key columns
    (``id_column``, ``ingest_timestamp``, ``time_column``, ``sequence_column``) are read.

    :param table: rows with ``sequence_column``.
    """
    rows = table.num_rows
    if rows < 2:
        return pa.array(range(rows), type=pa.uint64())
    keys = table.select(list(dict.fromkeys([id_column, "ingest_timestamp", time_column, sequence_column])))
    kept = _latest_rows(keys, id_column, sequence_column)
    kept_keys = keys.take(kept)
    final = pc.sort_indices(
        kept_keys,
        sort_keys=[
            (time_column, "ascending", "at_end"),
            (id_column, "ascending", "at_end"),
            (sequence_column, "ascending", "at_end"),
        ],
    )
    return kept.take(final)


def superseded(keys: pa.Table, id_column: str = "uid", sequence_column: str = SEQUENCE_COLUMN) -> np.ndarray:
    """The sequence numbers of the rows that are not the latest version of their identity, sorted.

    The latest version is the one :func:`deduplicate` keeps: the greatest ``ingest_timestamp``
    (nulls lowest), then the greatest ``sequence_column``. Rows without an identity are never
    superseded.

    :param keys: the columns ``id_column``, ``ingest_timestamp`` and ``sequence_column`` of every
        version of some identities (a run's repeated ones, across all its days).
    """
    if keys.num_rows < 2:
        return np.zeros(0, dtype=np.int64)
    kept = np.zeros(keys.num_rows, dtype=bool)
    kept[np.asarray(_latest_rows(keys, id_column, sequence_column), dtype=np.int64)] = True
    sequence = np.asarray(keys.column(sequence_column).combine_chunks(), dtype=np.int64)
    return np.sort(sequence[~kept])


def deduplicate(
    table: pa.Table, time_column: str, id_column: str = "uid", sequence_column: str = SEQUENCE_COLUMN
) -> tuple[pa.Table, int]:
    """One row per ``id_column`` (the latest ``ingest_timestamp``, then the latest arrival wins),
    ordered by ``time_column``, ``id_column`` and arrival; rows without an id are all kept.

    :param table: rows with ``sequence_column``.
    :return: the rows kept, and how many were dropped.
    """
    if table.num_rows < 2:
        return table, 0
    order = deduplicated_order(table, time_column, id_column, sequence_column)
    return table.take(order), table.num_rows - len(order)
