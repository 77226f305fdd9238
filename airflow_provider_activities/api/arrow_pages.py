"""Pages parsed straight into Arrow columns, for the bulk readers (the operators).

Decoding a page with ``json.loads`` builds a Python object per value, and turning those into
Arrow columns costs as much again; both hold the GIL, so the hook's page threads cannot use a
second core. :class:`ArrowPageParser` hands the body to Arrow's JSON reader instead, with an
explicit schema: the page becomes columns in C++, with the GIL released, in the thread that
fetched it.

Arrow's reader is taken only where its answer is exactly the one the Python path
(:func:`~airflow_provider_activities.api.protocol.parse_page`, then the record filter and
:class:`~airflow_provider_activities.parquet.RecordConverter`) would give. Anything else is
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

Arrow's reader refuses on its own a value of another type, an integer outside int64, a key
given twice in one object or a lone surrogate escape; a declined page costs one failed parse
(cheap: it stops at the first mismatch). Arrow never descends deeper than the schema:
with ``unexpected_field_behavior="error"`` an unknown key or a value of the wrong kind stops
the parse before its contents are read, so deeply nested answers (which the Python path
refuses with a clear error) cannot exhaust its stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

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
        record_fields = []
        for schema_field in self.schema:
            if schema_field.name == _EXTRA_FIELD:
                continue
            wire_type = pa.int64() if schema_field.name in timestamps else schema_field.type
            record_fields.append(pa.field(schema_field.name, wire_type))
        self._wire = pa.struct(record_fields)
        self._float_fields = tuple(field.name for field in self.schema if pa.types.is_floating(field.type))
        self._parse_options = pa_json.ParseOptions(
            explicit_schema=pa.schema([pa.field("data", pa.list_(self._wire)), pa.field("meta", _META)]),
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
        if not body.lstrip()[:1] == b"{":
            return None
        try:
            table = pa_json.read_json(
                pa.py_buffer(body),
                read_options=pa_json.ReadOptions(use_threads=False, block_size=len(body) + 1),
                parse_options=self._parse_options,
            )
        except (pa.ArrowException, ValueError):  # ValueError: invalid UTF-8 (UnicodeDecodeError)
            return None
        if table.num_rows != 1:  # two JSON objects in one body: not JSON to json.loads
            return None
        data = table.column("data").chunk(0) if table.column("data").num_chunks == 1 else None
        if data is None or data.null_count:  # "data": null
            return None
        records = data.flatten()
        if records.null_count:  # a null record
            return None
        total = table.column("meta").chunk(0).field("total")[0].as_py() if table.column("meta").null_count == 0 else None
        if total is not None and total < 0:
            return None
        batch = self._to_batch(records)
        try:
            batch.validate(full=True)  # UTF-8 of every string
        except pa.ArrowInvalid:
            return None
        if not all(_plain_floats(batch.column(name)) for name in self._float_fields):
            return None
        return Page(records=[], total=total, batch=batch)

    def _to_batch(self, records: pa.StructArray) -> pa.RecordBatch:
        columns = dict(zip((wire.name for wire in self._wire), records.flatten()))  # offsets applied
        arrays = []
        for schema_field in self.schema:
            if schema_field.name == _EXTRA_FIELD:
                arrays.append(pa.nulls(len(records), schema_field.type))
            elif schema_field.name in self.timestamp_fields:
                arrays.append(columns[schema_field.name].view(schema_field.type))
            else:
                arrays.append(columns[schema_field.name])
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _plain_floats(column: pa.Array) -> bool:
    """Whether every value of a float column is finite and none is ``-0.0`` (nulls are fine)."""
    if column.null_count == len(column):
        return True
    values = column.fill_null(1.0).to_numpy(zero_copy_only=False)
    return bool(np.isfinite(values).all()) and not bool((np.signbit(values) & (values == 0)).any())
