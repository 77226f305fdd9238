"""Pages parsed straight into Arrow columns, for the bulk readers (the operators).

Decoding a page with ``json.loads`` builds a Python object per value, and turning those into
Arrow columns costs as much again; both hold the GIL, so the hook's page threads cannot use a
second core. :class:`ArrowPageParser` hands the body to Arrow's JSON reader instead, with an
explicit schema: the page becomes columns in C++, with the GIL released, in the thread that
fetched it.

Arrow's reader is taken only where its answer is exactly the one the Python path
(:func:`~airflow_provider_activities.api.protocol.parse_page`, then the record filter and
:class:`~airflow_provider_activities.storage.writer.RecordConverter`) would give. Anything else is
declined, and the page goes the Python way, which keeps every rule and every error message:

* the body must be a ``{"data": [...], "meta": {...}}`` envelope, one JSON object, whose
  ``meta`` holds only ``limit``, ``offset``, ``total`` and ``message`` (a bare list is declined);
* every record must be an object (not null) with only fields the schema knows (a record with
  an unknown field needs ``_extra``), each of the schema's type: an ``int64`` field takes JSON
  integers only (``2.0`` is declined; the Python path accepts it), a string field strings only,
  a list field lists of its item type;
* timestamp fields must be JSON integers (epoch milliseconds, taken as they are, as the Python
  path does); a page with an ISO-8601 string or a float timestamp is declined;
* ``meta.total`` must be null or a non-negative integer;
* strings must be valid UTF-8 (Arrow's reader does not check; ``json.loads`` refuses the body);
* floats must be finite and not ``-0.0``: Arrow's reader also takes ``Inf`` and ``-NaN`` (not
  JSON to ``json.loads``), turns integers too large for a double into infinities (the Python
  path refuses them), and reads the integer ``-0`` as ``-0.0`` (``json.loads`` reads ``0``).
  Such pages go the Python way, which decides.

**Fields a page does not send.** Arrow's reader costs more for a page of records that
all lack one field of the schema than for the same page read with a schema without it. After
the first page it reads, the parser leaves out the fields that no record of that page had
(their columns were all null and their quoted names do not occur in the body); they come out
as null columns. A later page that fails a read with fields left out (one of them is back, or
the page would be declined anyway) is read again with every field, and from then on every page
is read with every field.

Arrow's reader refuses on its own a value of another type, an integer outside int64, a key
given twice in one object or a lone surrogate escape; a declined page costs one failed parse
(cheap: it stops at the first mismatch). Arrow never descends deeper than the schema:
with ``unexpected_field_behavior="error"`` an unknown key or a value of the wrong kind stops
the parse before its contents are read, so deeply nested answers (which the Python path
refuses with a clear error) cannot exhaust its stack.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from airflow_provider_activities.api.protocol import Page, parse_page

_META = pa.struct(
    [
        pa.field("limit", pa.int64()),
        pa.field("offset", pa.int64()),
        pa.field("total", pa.int64()),
        pa.field("message", pa.string()),
    ]
)
_EXTRA_FIELD = "_extra"


@dataclass
class ArrowPageParser:
    """Parses page bodies into ``pa.RecordBatch`` of ``schema``, or declines and parses them to dicts.

    :param schema: the record schema (e.g. ``ACTIVITY_SCHEMA``); its ``_extra`` column, if any,
        comes out null (a record with fields the schema does not know is declined).
    :param timestamp_fields: the fields of ``schema`` that hold timestamps (``timestamp[ms]``
        columns, sent as epoch-millisecond integers).
    """

    schema: pa.Schema
    timestamp_fields: Iterable[str]

    def __post_init__(self) -> None:
        timestamps = set(self.timestamp_fields)
        self.timestamp_fields = tuple(timestamps)
        self._wire_fields = [
            pa.field(schema_field.name, pa.int64() if schema_field.name in timestamps else schema_field.type)
            for schema_field in self.schema
            if schema_field.name != _EXTRA_FIELD
        ]
        self._float_fields = tuple(field.name for field in self.schema if pa.types.is_floating(field.type))
        self._every_field = self._parse_options(frozenset())
        self._left_out: tuple[frozenset[str], pa_json.ParseOptions] | None = None
        """The fields left out of the reads, and the options that leave them out; ``None``: none
        yet (before the first page) or never again (after a page that had one)."""
        self._learned = False  # the first page with records was seen (or a read failed): no more learning
        self._state_lock = threading.Lock()  # page threads parse at the same time

    def _parse_options(self, left_out: frozenset[str]) -> pa_json.ParseOptions:
        wire = pa.struct([field for field in self._wire_fields if field.name not in left_out])
        return pa_json.ParseOptions(
            explicit_schema=pa.schema([pa.field("data", pa.list_(wire)), pa.field("meta", _META)]),
            unexpected_field_behavior="error",
            newlines_in_values=True,
        )

    def __call__(self, body: bytes) -> Page:
        """The page: ``Page.batch`` set when Arrow took it, else ``Page.records`` from :func:`parse_page`.

        :raises InvalidResponseError: (from :func:`parse_page`) for a body that is not JSON.
        :raises RefusedResponseError: (from :func:`parse_page`) for a page of the wrong shape or types.
        """
        page = self.parse_arrow(body)
        return page if page is not None else parse_page(body)

    def parse_arrow(self, body: bytes) -> Page | None:
        """The page parsed by Arrow, or ``None`` when Arrow's answer could differ from the Python path's."""
        if body.lstrip()[:1] != b"{":
            return None
        left_out = self._left_out
        table = self._read(body, left_out[1]) if left_out is not None else None
        if table is None:
            if left_out is not None:
                with self._state_lock:  # this page fails with fields left out: read every field from now on
                    self._left_out, self._learned = None, True
            table = self._read(body, self._every_field)
            if table is not None and not self._learned:
                self._learn(table, body)
        if table is None or table.num_rows != 1:  # two JSON objects in one body: not JSON to json.loads
            return None
        data = table.column("data").chunk(0) if table.column("data").num_chunks == 1 else None
        if data is None or data.null_count:  # "data": null
            return None
        records = data.flatten()
        if records.null_count:  # a null record
            return None
        meta = table.column("meta").chunk(0) if table.column("meta").null_count == 0 else None
        total = meta.field("total")[0].as_py() if meta is not None else None
        if total is not None and total < 0:
            return None
        limit = meta.field("limit")[0].as_py() if meta is not None else None
        batch = self._to_batch(records)
        try:
            batch.validate(full=True)  # UTF-8 of every string
        except pa.ArrowInvalid:
            return None
        if not all(_plain_floats(batch.column(name)) for name in self._float_fields):
            return None
        return Page(records=[], total=total, batch=batch, limit=limit if limit and limit > 0 else None, body_bytes=len(body))

    @staticmethod
    def _read(body: bytes, options: pa_json.ParseOptions) -> pa.Table | None:
        # The parse of a page allocates tens of MB at once, in the page threads. From the system
        # allocator, whose large blocks go back to the OS when freed; Arrow's default pool keeps
        # them for reuse, and a process holding a few pages then peaks about 40 MB higher.
        try:
            return pa_json.read_json(
                pa.py_buffer(body),
                read_options=pa_json.ReadOptions(use_threads=False, block_size=len(body) + 1),
                parse_options=options,
                memory_pool=pa.system_memory_pool(),
            )
        except (pa.ArrowException, ValueError):  # ValueError: invalid UTF-8 (UnicodeDecodeError)
            return None

    def _learn(self, table: pa.Table, body: bytes) -> None:
        """Leave out of later reads the fields no record of this first page had: all null, and
        their quoted name nowhere in the body (an escaped name is not found, and then fails a read).
        """
        data = table.column("data")
        if data.num_chunks != 1 or data.null_count or not len(data.chunk(0).values):
            return  # no records to learn from: the next page
        records = data.chunk(0).values
        names = frozenset(
            field.name
            for index, field in enumerate(records.type)
            if records.field(index).null_count == len(records) and b'"' + field.name.encode() + b'"' not in body
        )
        with self._state_lock:
            if not self._learned:
                self._learned = True
                if names:
                    self._left_out = (names, self._parse_options(names))

    def _to_batch(self, records: pa.StructArray) -> pa.RecordBatch:
        columns = dict(zip((field.name for field in records.type), records.flatten(), strict=True))  # offsets applied
        arrays = []
        for schema_field in self.schema:
            column = columns.get(schema_field.name)
            if column is None:  # _extra, or a field left out of the read
                arrays.append(pa.nulls(len(records), schema_field.type))
            elif schema_field.name in self.timestamp_fields:
                arrays.append(column.view(schema_field.type))
            else:
                arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _plain_floats(column: pa.Array) -> bool:
    """Whether every value of a float column is finite and none is ``-0.0`` (nulls are fine)."""
    if column.null_count == len(column):
        return True
    values = column.fill_null(1.0).to_numpy(zero_copy_only=False)
    return bool(np.isfinite(values).all()) and not bool((np.signbit(values) & (values == 0)).any())
