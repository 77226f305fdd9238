"""Blocks of an export file's JSON Lines into Arrow batches of the nested raw schema.

Decoding a record with ``json.loads`` and walking its nested values in Python costs tens of
microseconds; Arrow's JSON reader parses the same bytes into columns in C++, off the GIL, on every
core. :class:`RawLinesConverter` hands each block of whole lines to Arrow's reader with an
explicit schema (the raw schema, timestamps and days read as their text, or timestamps as
integers) and takes its answer wherever it is exactly what the Python path
(``json.loads``, then :class:`~airflow_provider_activities.records.convert.RawRecordConverter`)
gives. The other records, and only those, go the Python way, which keeps every rule and every
error message. The rows come out in file order, with the same values whichever way each was read,
so the Parquet files written from them are the same bytes.

**What goes the Python way**, record by record:

* a timestamp that is not ``YYYY-MM-DDTHH:MM:SS`` with 0 to 3 decimals and ``Z`` or a ``±HH:MM``
  offset, or of year 0000; a day that is not ``YYYY-MM-DD``;
* a float that is not finite or is ``-0.0`` (Arrow reads the integer ``-0`` as ``-0.0``);
* a record with a key the schema does not know inside a nested object (``_extra`` names it by
  its path and list index), or whose line holds such a key's name;
* a record with an unknown top-level key, unless its ``_extra`` text can be proven from Arrow's
  values: the value is made of strings, integers, booleans, nulls, objects and lists; it is
  written as the Python path writes ``_extra`` (compact, sorted keys), and it is taken only where
  the line holds exactly those bytes after the key, the key once (or the same value spelled as
  ``json.dumps`` writes it by default, with spaces; or with an object's null members left out,
  since Arrow gives every object of a column the members any of them had). Then ``json.loads``
  would read that very value back, and the Python path would write the same text. A line with a
  key written with a ``u`` escape (backslash, u) goes the Python way when the block has unknown
  keys: the escape could spell an unknown key.

**What sends a range of lines back to Arrow in halves**, down to :attr:`RawLinesConverter.min_lines`
lines, below which the whole range goes the Python way: Arrow's reader refusing the range (a
value of another type, such as ``60.0`` in an integer field, timestamps both as text and as
numbers, an unknown key of two types, a key given twice, a line that is not one JSON object, a
line longer than the reader's block), invalid UTF-8 (Arrow does not check it; ``json.loads``
refuses the line), a row count that is not the number of non-blank lines, a day or time the cast
refuses (``2026-02-30``), and an unknown key name with a quote, backslash, slash or control
character in it. A block is read with timestamps as text first, or as integers first after a
block that needed them so.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from airflow_provider_activities.export.files import ExportBlock, ExportFileError
from airflow_provider_activities.records.convert import RawRecordConverter
from airflow_provider_activities.records.schemas import EXTRA_FIELD, RAW_ACTIVITY_SCHEMA

TIMESTAMP_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?(Z|[+-]\d\d:\d\d)$"
"""Timestamps Arrow's cast reads into the same epoch milliseconds as the Python rules do."""
DATE_PATTERN = r"^\d{4}-\d\d-\d\d$"
"""Days Arrow's cast reads into the same date as the Python rules do."""
DEFAULT_MIN_LINES = 64
"""A range of lines Arrow refuses is split in halves down to this many lines, then goes the Python way."""
READ_BLOCK_BYTES = 1024 * 1024
"""Arrow's reader parses a block in pieces of this size (a longer line is refused)."""

_WHITESPACE = b" \t\n\r\x0b\x0c"
_SPECIAL_IN_STRING = r'["\\\x00-\x1f]'
_SPECIAL_IN_NAME = frozenset('"\\/') | frozenset(chr(code) for code in range(32))
_DELIMITERS = np.frombuffer(b",} \t\r\n", dtype=np.uint8)
"""What may follow a value inside an object."""
_WIRE_FORMS = ("text", "integer")
_ESCAPED_KEY = re.compile(rb'\\u[0-9a-fA-F]{4}(?:[^"\\]|\\.)*":')
"""A ``u`` escape in a string that a colon follows: a key (a value is followed by ``,``, ``}`` or ``]``)."""


def _wire_type(type_: pa.DataType, timestamps: str) -> pa.DataType:
    """What Arrow's reader reads for a field of the record schema: its text for timestamps (or an
    integer) and days, the type itself otherwise (recursively).
    """
    if pa.types.is_timestamp(type_):
        return pa.string() if timestamps == "text" else pa.int64()
    if pa.types.is_date(type_):
        return pa.string()
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return pa.list_(_wire_type(type_.value_type, timestamps))
    if pa.types.is_struct(type_):
        return pa.struct([pa.field(child.name, _wire_type(child.type, timestamps)) for child in type_])
    return type_


def _nested_names(type_: pa.DataType) -> set[str]:
    """Every key name below a type (the names of struct fields at any depth)."""
    names: set[str] = set()
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        names |= _nested_names(type_.value_type)
    elif pa.types.is_struct(type_):
        for child in type_:
            names.add(child.name)
            names |= _nested_names(child.type)
    return names


@dataclass
class _Lines:
    """The lines of a block: where each starts and ends, and which hold a record."""

    data: bytes
    starts: np.ndarray
    ends: np.ndarray  # exclusive, the newline left out
    records: np.ndarray  # indexes of the lines that are not blank (as Python's ``bytes.strip`` sees it)
    first_line: int

    @classmethod
    def of(cls, block: ExportBlock) -> _Lines:
        data = block.data
        newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A)
        ends = newlines if data.endswith(b"\n") else np.append(newlines, len(data))
        starts = np.concatenate(([0], newlines[: len(ends) - 1] + 1)) if len(ends) else np.zeros(0, np.int64)
        view = np.frombuffer(data, dtype=np.uint8)
        opening = np.zeros(len(starts), dtype=bool)
        filled = starts < ends
        opening[filled] = view[starts[filled]] == 0x7B  # "{": a record (the common case)
        records = opening.copy()
        for index in np.flatnonzero(~opening).tolist():  # anything else: as Python sees it
            records[index] = bool(data[starts[index] : ends[index]].strip(_WHITESPACE))
        return cls(data, starts.astype(np.int64), ends.astype(np.int64), np.flatnonzero(records), block.first_line)

    def line(self, record: int) -> bytes:
        index = self.records[record]
        return self.data[self.starts[index] : self.ends[index]]

    def line_number(self, record: int) -> int:
        return self.first_line + int(self.records[record])


@dataclass
class RawLinesConverter:
    """Converts blocks of export lines into tables of the raw schema (see the module's docstring).

    :param schema: the record schema, :data:`~airflow_provider_activities.records.schemas.RAW_ACTIVITY_SCHEMA`
        by default (its last field ``_extra`` receives the unknown fields).
    :param arrow: read with Arrow where that is exact; ``False`` reads every record the Python way
        (the same rows, more slowly).
    :param min_lines: a range Arrow refuses is halved down to this many lines.
    :param path: the file's name, for error messages.
    """

    schema: pa.Schema = RAW_ACTIVITY_SCHEMA
    arrow: bool = True
    min_lines: int = DEFAULT_MIN_LINES
    path: str = ""
    python: RawRecordConverter = field(init=False, repr=False)
    arrow_rows: int = 0
    """Records read by Arrow so far."""
    python_rows: int = 0
    """Records read the Python way so far."""

    def __post_init__(self) -> None:
        self.python = RawRecordConverter(self.schema)
        self._fields = [f for f in self.schema if f.name != EXTRA_FIELD]
        self._wire = {form: pa.schema([pa.field(f.name, _wire_type(f.type, form)) for f in self._fields]) for form in _WIRE_FORMS}
        self._options = {
            form: pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
            for form, schema in self._wire.items()
        }
        self._forms = list(_WIRE_FORMS)  # the form that worked last first
        self._known = {f.name for f in self._fields}
        self._known_nested = set().union(*(_nested_names(f.type) for f in self._fields))
        self._lock = threading.Lock()  # blocks may be converted by several threads at once

    @property
    def unknown_fields(self) -> set[str]:
        """Names of the unknown fields seen so far (nested ones by path, list indexes as ``[]``)."""
        return self.python.unknown_fields

    def convert(self, block: ExportBlock) -> pa.Table:
        """The records of ``block``, in order, as a table of :attr:`schema`.

        Safe to call from several threads at once (each block is parsed by Arrow in the calling
        thread alone: blocks in parallel use the cores with less work than one block on all).

        :raises ExportFileError: for a line that is not a JSON object.
        :raises SchemaMismatchError: for a value that does not fit its type.
        """
        lines = _Lines.of(block)
        count = len(lines.records)
        if not count:
            return self.schema.empty_table()
        if not self.arrow:
            return self._python(lines, np.arange(count))
        parts = list(self._convert_range(lines, 0, count))
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    # -- Arrow, and halves of what it refuses --------------------------------------------------

    def _convert_range(self, lines: _Lines, first: int, stop: int) -> Iterator[pa.Table]:
        """Records ``first`` to ``stop`` (exclusive): by Arrow, or halved, or the Python way."""
        table = self._read(lines, first, stop)
        converted = None if table is None else self._from_arrow(lines, first, stop, table)
        if converted is not None:
            yield converted
        elif stop - first <= self.min_lines:
            yield self._python(lines, np.arange(first, stop))
        else:
            middle = (first + stop) // 2
            yield from self._convert_range(lines, first, middle)
            yield from self._convert_range(lines, middle, stop)

    def _read(self, lines: _Lines, first: int, stop: int) -> tuple[str, pa.Table] | None:
        """Arrow's reading of the records' lines, in the first wire form it accepts, or ``None``."""
        begin = int(lines.starts[lines.records[first]])
        end = int(lines.ends[lines.records[stop - 1]])
        body = pa.py_buffer(lines.data)[begin:end]
        for form in list(self._forms):
            try:
                table = pa_json.read_json(
                    body,
                    read_options=pa_json.ReadOptions(use_threads=False, block_size=READ_BLOCK_BYTES),
                    parse_options=self._options[form],
                )
                table.validate(full=True)  # UTF-8 of every string
            except (pa.ArrowException, ValueError):  # ValueError: invalid UTF-8 (UnicodeDecodeError)
                continue
            if table.num_rows != stop - first:
                return None
            with self._lock:
                if self._forms[0] != form:
                    self._forms.remove(form)
                    self._forms.insert(0, form)
            return form, table
        return None

    def _from_arrow(self, lines: _Lines, first: int, stop: int, read: tuple[str, pa.Table]) -> pa.Table | None:
        """The records as Arrow read them where exact, the others the Python way; ``None`` when the
        range must be read again (halved).
        """
        form, table = read
        unknown = [name for name in table.column_names if name not in self._known]
        nested_unknown = {
            name
            for f in self._fields
            for name in _extra_names(table.schema.field(f.name).type, self._wire[form].field(f.name).type)
        }
        names = set(unknown) | nested_unknown | {n for name in unknown for n in _nested_names(table.schema.field(name).type)}
        if any(set(name) & _SPECIAL_IN_NAME for name in names):
            return None
        rows = stop - first
        python = np.zeros(rows, dtype=bool)
        python[_unfit_rows(table, self._fields, self._wire[form])] = True
        located = _Locator(lines, first, stop)
        if names and b"\\" in located.body and b"\\u" in located.body:  # an escaped key name could hide an unknown key
            python[located.rows_with_escaped_key()] = True
        for name in nested_unknown:
            python[located.rows_with(b'"' + name.encode() + b'":')] = True
            for part in table.schema:
                if part.name in self._known:
                    python[_rows_with_child(table.column(part.name), name)] = True
        extra = None
        if unknown:
            extra = self._extra(table, unknown, located, python)
        keep = np.flatnonzero(~python)
        arrow_part = None
        if len(keep):
            arrow_part = self._arrow_rows(table, form, keep, extra, rows)
            if arrow_part is None:
                return None
        with self._lock:
            self.arrow_rows += len(keep)
        declined = np.flatnonzero(python)
        if not len(declined):
            assert arrow_part is not None
            return arrow_part
        python_part = self._python(lines, declined + first)
        if arrow_part is None:
            return python_part
        order = np.argsort(np.concatenate((keep, declined)), kind="stable")
        return pa.concat_tables([arrow_part, python_part]).take(pa.array(order, type=pa.int64()))

    def _arrow_rows(self, table: pa.Table, form: str, keep: np.ndarray, extra: pa.Array | None, rows: int) -> pa.Table | None:
        """The kept rows in the record schema, unknown keys left out; ``None`` if a cast refuses."""
        selected = pa.array(keep, type=pa.int64())
        arrays = []
        for f in self._fields:
            column = table.column(f.name)
            if len(keep) != rows:
                column = column.take(selected)
            wire = self._wire[form].field(f.name).type
            if not column.type.equals(wire):
                column = pa.chunked_array([_restrict(chunk, wire) for chunk in column.chunks], type=wire)
            try:
                arrays.append(column.cast(f.type))
            except (pa.ArrowException, ValueError):
                return None
        if EXTRA_FIELD in self.schema.names:
            if extra is None:
                arrays.append(pa.chunked_array([pa.nulls(len(keep), pa.string())]))
            else:
                arrays.append(pa.chunked_array([extra.take(selected) if len(keep) != rows else extra]))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    # -- unknown top-level keys -------------------------------------------------------------------

    def _extra(self, table: pa.Table, unknown: list[str], located: _Locator, python: np.ndarray) -> pa.Array:
        """The ``_extra`` text of each row from its unknown top-level keys; rows where it cannot be
        proven are marked in ``python``.
        """
        nested_elsewhere = self._known_nested | {n for name in unknown for n in _nested_names(table.schema.field(name).type)}
        rows = len(python)
        joined: pa.Array | None = None  # the '"key":value' members of each row, comma separated; null for none
        for name in sorted(unknown):
            column = table.column(name).combine_chunks()
            key = b'"' + name.encode() + b'":'
            arrow_valid = np.asarray(column.is_valid(), dtype=bool)
            if name in nested_elsewhere:  # a literal key may be a nested one: only a null value is told apart
                python[arrow_valid] = True
                python[located.rows_with_null(key)] = True
                continue
            positions = located.first_positions(key)  # -1: no literal key on the line; -2: more than one
            present = positions >= 0
            python[positions == -2] = True
            python[arrow_valid & ~present] = True  # a value, but no literal key: written with escapes
            checked = np.flatnonzero(present & ~python)
            at = positions[checked] + len(key)
            taken = pa.array(checked, type=pa.int64())
            # The file's text must be one of these spellings of Arrow's value, exactly; the
            # _extra text is then the compact one with the same members.
            encoded = _canonical(column).take(taken)
            proven = located.holds(at, encoded)
            for omit_nulls, spaced in ((False, True), (True, False), (True, True)):
                if proven.all():
                    break
                spelled = _canonical(column, spaced=spaced, omit_nulls=omit_nulls).take(taken)
                start = at + 1 if spaced else at
                fresh = ~proven & located.holds(start, spelled) & (located.space_at(at) if spaced else True)
                if fresh.any():
                    compact = _canonical(column, omit_nulls=omit_nulls).take(taken) if spaced else spelled
                    encoded = pc.if_else(pa.array(fresh), compact, encoded)
                    proven |= fresh
            python[checked[~proven]] = True
            if not proven.any():
                continue
            self.python.unknown_fields.add(name)
            where = np.full(rows, -1, dtype=np.int64)  # each row's place among the checked rows, if proven
            where[checked[proven]] = np.flatnonzero(proven)
            texts = encoded.take(pa.array(where, mask=where < 0))
            member = pc.binary_join_element_wise(pa.scalar(key), texts, pa.scalar(b""))
            if joined is None:
                joined = member
            else:
                both = pc.and_(joined.is_valid(), member.is_valid())
                joined = pc.if_else(
                    both, pc.binary_join_element_wise(joined, member, pa.scalar(b",")), pc.coalesce(joined, member)
                )
        if joined is None:
            return pa.nulls(rows, pa.string())
        text = pc.binary_join_element_wise(pa.scalar(b"{"), joined, pa.scalar(b"}"), pa.scalar(b""))
        return pc.if_else(pa.array(~python), text, pa.scalar(None, pa.binary())).cast(pa.string())

    # -- the Python way -----------------------------------------------------------------------------

    def _python(self, lines: _Lines, records: np.ndarray) -> pa.Table:
        """Records by ``json.loads`` and :class:`RawRecordConverter`, as the line reader does."""
        parsed = []
        for record in records.tolist():
            line = lines.line(record)
            try:
                value = json.loads(line)
            except ValueError as err:
                raise ExportFileError(self.path, lines.line_number(record), str(err)) from None
            if not isinstance(value, dict):
                raise ExportFileError(self.path, lines.line_number(record), f"a JSON {type(value).__name__}")
            parsed.append(value)
        with self._lock:
            self.python_rows += len(parsed)
        return pa.Table.from_batches([self.python.to_batch(parsed)], schema=self.schema)


# -- helpers ----------------------------------------------------------------------------------------


@dataclass
class _Locator:
    """Byte patterns in the lines of a range: which rows hold one, where it first is."""

    lines: _Lines
    first: int
    stop: int

    def __post_init__(self) -> None:
        indexes = self.lines.records[self.first : self.stop]
        self.base = int(self.lines.starts[indexes[0]])
        self.body = self.lines.data[self.base : int(self.lines.ends[indexes[-1]])]
        self.row_starts = self.lines.starts[indexes] - self.base

    def _occurrences(self, pattern: bytes) -> np.ndarray:
        """Where ``pattern`` starts in the range's bytes (it cannot overlap itself: a key or an escape)."""
        pieces = self.body.split(pattern)
        if len(pieces) == 1:
            return np.zeros(0, dtype=np.int64)
        lengths = np.fromiter(map(len, pieces[:-1]), dtype=np.int64, count=len(pieces) - 1)
        return np.cumsum(lengths) + np.arange(len(lengths), dtype=np.int64) * len(pattern)

    def holds(self, starts: np.ndarray, texts: pa.Array) -> np.ndarray:
        """Per text: whether the range's bytes at its start are exactly it, followed by what may
        follow a value in an object (a null text is never held).
        """
        body = np.frombuffer(self.body, dtype=np.uint8)
        _, offset_buffer, data_buffer = texts.buffers()
        offsets = np.frombuffer(offset_buffer, dtype=np.int32)[texts.offset : texts.offset + len(texts) + 1].astype(np.int64)
        lengths = np.diff(offsets)
        data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]] if data_buffer is not None else body[:0]
        ends = starts + lengths
        held = np.asarray(texts.is_valid(), dtype=bool) & (ends < len(body))
        relative = offsets - offsets[0]
        where = np.repeat(starts - relative[:-1], lengths) + np.arange(int(relative[-1]), dtype=np.int64)
        filled = np.flatnonzero(lengths > 0)  # (only null texts are empty: they are not held anyway)
        if len(filled):
            differ = body[np.minimum(where, len(body) - 1)] != data
            held[filled] &= ~np.logical_or.reduceat(differ, relative[:-1][filled])
        held &= lengths > 0
        return held & np.isin(body[np.minimum(ends, len(body) - 1)], _DELIMITERS)

    def space_at(self, starts: np.ndarray) -> np.ndarray:
        """Per start: whether the range's byte there is a space."""
        body = np.frombuffer(self.body, dtype=np.uint8)
        return (starts < len(body)) & (body[np.minimum(starts, len(body) - 1)] == 0x20)

    def rows_with_null(self, key: bytes) -> np.ndarray:
        """The rows whose line holds ``key`` followed by a null (whitespace allowed between)."""
        body = self.body
        found = [
            at for at in self._occurrences(key).tolist() if body[at + len(key) : at + len(key) + 64].lstrip().startswith(b"null")
        ]
        return np.unique(np.searchsorted(self.row_starts, np.asarray(found, dtype=np.int64), side="right") - 1)

    def rows_with_escaped_key(self) -> np.ndarray:
        """The rows whose line holds a key with a ``u`` escape (backslash, u) in its name."""
        found = [match.start() for match in _ESCAPED_KEY.finditer(self.body)]
        return np.unique(np.searchsorted(self.row_starts, np.asarray(found, dtype=np.int64), side="right") - 1)

    def rows_with(self, pattern: bytes) -> np.ndarray:
        """The rows whose line holds ``pattern``."""
        found = self._occurrences(pattern)
        return np.unique(np.searchsorted(self.row_starts, found, side="right") - 1)

    def first_positions(self, pattern: bytes) -> np.ndarray:
        """Per row: where ``pattern`` is in the range's bytes, ``-1`` if nowhere on its line, ``-2``
        if more than once.
        """
        positions = np.full(len(self.row_starts), -1, dtype=np.int64)
        found = self._occurrences(pattern)
        if len(found):
            rows = np.searchsorted(self.row_starts, found, side="right") - 1
            unique, first, counts = np.unique(rows, return_index=True, return_counts=True)
            positions[unique] = np.where(counts == 1, found[first], -2)
        return positions


def _unfit_rows(table: pa.Table, fields: list[pa.Field], wire: pa.Schema) -> np.ndarray:
    """The rows holding a timestamp, day or float that Arrow would not read as the Python rules do.

    The leaves of every field are checked together, one kind at a time (text timestamps, text
    days, floats): a few compute calls per block, not a few per leaf.
    """
    kinds: dict[tuple[str, pa.DataType], tuple[list[pa.Array], list[np.ndarray]]] = {}  # by kind and value type
    for f in fields:
        if not _has_checked_leaf(f.type):
            continue
        offset = 0
        for chunk in table.column(f.name).chunks:
            for leaf_type, wire_type, values, rows in _typed_leaves(chunk, f.type, wire.field(f.name).type, None):
                kind = _checked_kind(leaf_type, wire_type)
                if kind is not None and values.null_count < len(values):
                    found = kinds.setdefault((kind, values.type), ([], []))
                    found[0].append(values)
                    found[1].append(offset + (rows if rows is not None else np.arange(len(values), dtype=np.int64)))
            offset += len(chunk)
    bad_rows = [np.zeros(0, dtype=np.int64)]
    for (kind, _type), (arrays, positions) in kinds.items():
        values = arrays[0] if len(arrays) == 1 else pa.concat_arrays(arrays)
        bad_rows.append(np.concatenate(positions)[_unfit_values(values, kind)])
    return np.unique(np.concatenate(bad_rows))


def _checked_kind(type_: pa.DataType, wire: pa.DataType) -> str | None:
    """How a leaf's values are checked: ``timestamp`` or ``date`` text, ``float``; ``None``:
    not at all (integer timestamps are epoch milliseconds on both paths).
    """
    if pa.types.is_string(wire):
        return "timestamp" if pa.types.is_timestamp(type_) else "date"
    if pa.types.is_floating(wire):
        return "float"
    return None


def _typed_leaves(
    array: pa.Array, type_: pa.DataType, wire: pa.DataType, rows: np.ndarray | None
) -> Iterator[tuple[pa.DataType, pa.DataType, pa.Array, np.ndarray | None]]:
    """``(type, wire type, values, row of each value)`` of the timestamp, day and float leaves
    below an array (``rows`` ``None``: the array's own positions).
    """
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_) or pa.types.is_floating(type_):
        yield type_, wire, array, rows
    elif pa.types.is_list(type_) or pa.types.is_large_list(type_):
        if not _has_checked_leaf(type_.value_type):
            return
        values, parents = _list_values(array)
        yield from _typed_leaves(values, type_.value_type, wire.value_type, parents if rows is None else rows[parents])
    elif pa.types.is_struct(type_):
        for child in type_:
            if _has_checked_leaf(child.type):
                yield from _typed_leaves(pc.struct_field(array, child.name), child.type, wire.field(child.name).type, rows)


def _list_values(array: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The items of a list array (those its offsets span) and the position of each item's list."""
    offsets = np.asarray(array.offsets, dtype=np.int64)
    items = array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    parents = np.repeat(np.arange(len(array), dtype=np.int64), np.diff(offsets))
    return items, parents


def _has_checked_leaf(type_: pa.DataType) -> bool:
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_) or pa.types.is_floating(type_):
        return True
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return _has_checked_leaf(type_.value_type)
    if pa.types.is_struct(type_):
        return any(_has_checked_leaf(child.type) for child in type_)
    return False


def _unfit_values(values: pa.Array, kind: str) -> np.ndarray:
    """Which values (nulls are fine) Arrow would not read as the Python rules do (see :func:`_checked_kind`)."""
    if kind == "float":
        numbers = values.fill_null(1.0).to_numpy(zero_copy_only=False)
        return ~np.isfinite(numbers) | (np.signbit(numbers) & (numbers == 0))
    pattern = TIMESTAMP_PATTERN if kind == "timestamp" else DATE_PATTERN
    fits = pc.and_(pc.match_substring_regex(values, pattern), pc.invert(pc.starts_with(values, "0000")))
    return ~np.asarray(pc.fill_null(fits, True), dtype=bool)


def _extra_names(read: pa.DataType, wire: pa.DataType) -> set[str]:
    """Names of the struct fields Arrow found below a known field that its wire type lacks."""
    names: set[str] = set()
    if pa.types.is_list(read) and pa.types.is_list(wire):
        return _extra_names(read.value_type, wire.value_type)
    if pa.types.is_struct(read) and pa.types.is_struct(wire):
        for child in read:
            index = wire.get_field_index(child.name)
            if index < 0:
                names.add(child.name)
                names |= _nested_names(child.type)
            else:
                names |= _extra_names(child.type, wire.field(index).type)
    return names


def _rows_with_child(column: pa.ChunkedArray, name: str) -> np.ndarray:
    """Rows where a struct field called ``name``, at any depth below a known field, holds a value."""
    array = column.combine_chunks()
    found: list[np.ndarray] = []

    def walk(values: pa.Array, type_: pa.DataType, rows: np.ndarray | None) -> None:
        if pa.types.is_list(type_):
            items, parents = _list_values(values)
            walk(items, type_.value_type, parents if rows is None else rows[parents])
        elif pa.types.is_struct(type_):
            for child in type_:
                child_values = pc.struct_field(values, child.name)
                if child.name == name:
                    valid = np.asarray(child_values.is_valid(), dtype=bool)
                    found.append(rows[valid] if rows is not None else np.flatnonzero(valid))
                walk(child_values, child.type, rows)

    walk(array, array.type, None)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _restrict(array: pa.Array, type_: pa.DataType) -> pa.Array:
    """``array`` with only the struct fields of ``type_`` (it has more: keys the schema lacks)."""
    if array.type.equals(type_):
        return array
    if pa.types.is_list(type_):
        values = _restrict(array.values, type_.value_type)
        return pa.ListArray.from_arrays(array.offsets, values, type=type_, mask=array.is_null())
    if pa.types.is_struct(type_):
        children = [_restrict(array.field(child.name), child.type) for child in type_]
        return pa.StructArray.from_arrays(children, fields=list(type_), mask=array.is_null())
    return array


def _canonical(array: pa.Array, spaced: bool = False, omit_nulls: bool = False) -> pa.Array:
    """Each value as the Python path's ``_extra`` encoder writes it (UTF-8 bytes; ``null`` for
    nulls), or, with ``spaced``, as ``json.dumps`` writes it by default (a space after ``:`` and
    ``,``). Arrow gives an object every member any object of its column had, null where it had
    none: ``omit_nulls`` leaves the null members out, ``False`` writes them. The text is null where
    it cannot be built here: a string with a quote, backslash or control character, a float, a
    timestamp Arrow inferred from a string (the row goes the Python way).
    """
    type_ = array.type
    nulls = pc.is_null(array)
    if pa.types.is_null(type_):
        return pa.array([b"null"] * len(array), type=pa.binary())
    if pa.types.is_string(type_):
        special = pc.fill_null(pc.match_substring_regex(array, _SPECIAL_IN_STRING), False)
        quoted = pc.binary_join_element_wise(pa.scalar('"'), array, pa.scalar('"'), pa.scalar("")).cast(pa.binary())
        return _null_text(pc.if_else(special, pa.scalar(None, pa.binary()), quoted), nulls)
    if pa.types.is_integer(type_):
        return _null_text(pc.cast(array, pa.string()).cast(pa.binary()), nulls)
    if pa.types.is_boolean(type_):
        return _null_text(pc.if_else(array, pa.scalar(b"true"), pa.scalar(b"false")), nulls)
    colon, comma = (b": ", b", ") if spaced else (b":", b",")
    if pa.types.is_struct(type_):
        children = sorted(type_, key=lambda f: f.name)
        values = [pc.struct_field(array, child.name) for child in children]
        members = [
            pc.binary_join_element_wise(
                pa.scalar(b'"' + child.name.encode() + b'"' + colon), _canonical(value, spaced, omit_nulls), pa.scalar(b"")
            )
            for child, value in zip(children, values, strict=True)
        ]
        if not omit_nulls and len(members) > 1:
            body = pc.binary_join_element_wise(*members, pa.scalar(comma))
        else:  # members one by one: a comma before each but the first written
            body = pa.array([b""] * len(array), type=pa.binary())
            started = pa.array(np.zeros(len(array), dtype=bool))
            for member, value in zip(members, values, strict=True):
                written = pc.is_valid(value) if omit_nulls else pa.array(np.ones(len(array), dtype=bool))
                after = pc.binary_join_element_wise(body, member, pa.scalar(comma))
                body = pc.if_else(written, pc.if_else(started, after, member), body)
                started = pc.or_(started, written)
        return _null_text(pc.binary_join_element_wise(pa.scalar(b"{"), body, pa.scalar(b"}"), pa.scalar(b"")), nulls)
    if pa.types.is_list(type_):
        flat, _ = _list_values(array)
        offsets = pc.subtract(array.offsets, array.offsets[0])
        items = pa.ListArray.from_arrays(offsets, _canonical(flat, spaced, omit_nulls))
        body = pc.binary_join(items, pa.scalar(comma))
        return _null_text(pc.binary_join_element_wise(pa.scalar(b"["), body, pa.scalar(b"]"), pa.scalar(b"")), nulls)
    return _null_text(pa.nulls(len(array), pa.binary()), nulls)


def _null_text(text: pa.Array, nulls: pa.Array) -> pa.Array:
    """``text``, with ``null`` where the value is null."""
    return pc.if_else(nulls, pa.scalar(b"null"), text)


__all__ = ["DATE_PATTERN", "DEFAULT_MIN_LINES", "TIMESTAMP_PATTERN", "RawLinesConverter"]
