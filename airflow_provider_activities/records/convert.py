"""API records to Arrow batches, one set of value rules for every record kind.

:class:`RecordConverter` turns a page of records (plain dicts) into one ``pa.RecordBatch`` of
an explicit flat schema, column by column: each column's values are gathered into one Python
list and converted with one ``pa.array`` call. A cheap scan of the value types of each column
guards that call, because ``pa.array`` alone is lenient where it must not be (it truncates
``1.5`` into an int64 column, splits the string ``"ab"`` into the list ``["a", "b"]``, takes
``True`` as ``1.0``). Columns whose values all have the expected Python types take that fast
path; the others are normalised value by value (ISO-8601 strings and datetimes to epoch
milliseconds, integral floats to ints) and a value that does not fit raises
:class:`SchemaMismatchError`.

:class:`RawRecordConverter` does the same for the nested records of the bulk export, with the
same value rules at every depth (one set for every record kind: the export keeps no copy of its
own), record by record; unknown keys at any depth go to ``_extra`` by path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from itertools import chain
from typing import Any

import pyarrow as pa

from airflow_provider_activities.api.validation import to_epoch_ms
from airflow_provider_activities.records.schemas import EXTRA_FIELD, RAW_ACTIVITY_SCHEMA

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_REPR_LIMIT = 200
_NONE = type(None)


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


_DAY_MS = 86_400_000
_EPOCH_DAY = date(1970, 1, 1)


def _to_date(value: Any) -> date | None:
    """A day: ``YYYY-MM-DD``, a ``date``, or the UTC day of a timestamp (ISO-8601 string,
    epoch-ms int, ``datetime``; naive means UTC).
    """
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
            return date.fromordinal(_EPOCH_DAY.toordinal() + ms // _DAY_MS)
    raise _Unfit("expected a day as YYYY-MM-DD")


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
    if pa.types.is_date32(type_):
        return frozenset({date, _NONE}), _to_date
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
      :func:`airflow_provider_activities.records.filters.to_epoch_ms`, the parser the API client uses.
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
            for value, record in zip(values, records, strict=True):
                try:
                    normalised.append(normalise(value))
                except _Unfit as unfit:
                    raise self._mismatch(name, type_, value, record, str(unfit)) from None
            return pa.array(normalised, type=type_)
        try:
            return pa.array(values, type=type_)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            for value, record in zip(values, records, strict=True):
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


# -- nested records of the bulk export ----------------------------------------------------------


class _PathUnfit(Exception):
    """A value of a nested record that does not fit, with where it is (``participants[1].time_spent``)."""

    def __init__(self, path: str, value: Any, type_: pa.DataType, reason: str) -> None:
        super().__init__(reason)
        self.path, self.value, self.type, self.reason = path, value, type_, reason


Normaliser = Callable[[Any, str, dict[str, Any]], Any]
"""``(value, path, unknown) -> value in the form pa.array takes``; unknown nested keys are added
to ``unknown`` by path."""


def _nested_rule(type_: pa.DataType) -> Normaliser:
    """The normaliser of one Arrow type of a nested schema: the scalar rules above at the leaves,
    lists and structs around them (recursively).
    """
    scalar = _scalar_rule(type_)
    if scalar is not None:
        rule = scalar[1]

        def leaf(value: Any, path: str, unknown: dict[str, Any]) -> Any:
            if value is None:
                return None
            try:
                return rule(value)
            except _Unfit as unfit:
                raise _PathUnfit(path, value, type_, str(unfit)) from None

        return leaf
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        item = _nested_rule(type_.value_type)

        def as_list(value: Any, path: str, unknown: dict[str, Any]) -> Any:
            if value is None:
                return None
            if not isinstance(value, (list, tuple)):
                raise _PathUnfit(path, value, type_, f"expected a list, got {type(value).__name__}")
            return [item(element, f"{path}[{index}]", unknown) for index, element in enumerate(value)]

        return as_list
    if pa.types.is_struct(type_):
        children = [(type_.field(i).name, _nested_rule(type_.field(i).type)) for i in range(type_.num_fields)]
        known = frozenset(name for name, _ in children)

        def as_struct(value: Any, path: str, unknown: dict[str, Any]) -> Any:
            if value is None:
                return None
            if not isinstance(value, dict):
                raise _PathUnfit(path, value, type_, f"expected an object, got {type(value).__name__}")
            out = {name: child(value.get(name), f"{path}.{name}", unknown) for name, child in children}
            if not value.keys() <= known:
                for name in value.keys() - known:
                    unknown[f"{path}.{name}"] = value[name]
            return out

        return as_struct
    raise TypeError(f"no conversion for the Arrow type {type_}")


def encode_extra(unknown: dict[str, Any]) -> str:
    """The ``_extra`` text of a record's unknown fields: compact JSON, keys sorted, non-ASCII kept.

    :param unknown: the unknown fields by name (nested ones by path, ``crm_status.new_key``).
    """
    return _EXTRA_ENCODER.encode(unknown)


class RawRecordConverter:
    """Converts lists of export records into ``pa.RecordBatch`` of a nested schema.

    Values follow the rules of :class:`RecordConverter` (one set for every record kind), applied at
    every depth: timestamps as epoch ms or ISO-8601 with ``Z`` or an offset, days as ``YYYY-MM-DD``,
    integral floats as integers, booleans as ``true``/``false`` only; lists and objects where the
    schema has lists and structs. Keys the schema does not know, at any depth, go to ``_extra`` by
    path (see :func:`encode_extra`).

    :param schema: the record schema, :data:`~airflow_provider_activities.records.schemas.RAW_ACTIVITY_SCHEMA`
        by default; its last field ``_extra`` (when present) receives the unknown fields.
    :param id_field: the field naming a record in error messages.
    """

    def __init__(self, schema: pa.Schema = RAW_ACTIVITY_SCHEMA, id_field: str = "uid") -> None:
        self.schema = schema
        self.id_field = id_field
        self.unknown_fields: set[str] = set()
        """Unknown field names seen so far (nested ones by path, list indexes as ``[]``)."""
        self._columns = [(f.name, f.type, _nested_rule(f.type)) for f in schema if f.name != EXTRA_FIELD]
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
                for values, (name, _type, normalise) in zip(columns, self._columns, strict=True):
                    values.append(normalise(record.get(name), name, unknown))
            except _PathUnfit as unfit:
                raise SchemaMismatchError(
                    unfit.path, record.get(self.id_field), unfit.value, unfit.type, unfit.reason, id_field=self.id_field
                ) from None
            if not record.keys() <= known:
                for name in record.keys() - known:
                    unknown[name] = record[name]
            if unknown:
                self.unknown_fields.update(_without_indexes(path) for path in unknown)
                extras.append(encode_extra(unknown) if self._has_extra else None)
            else:
                extras.append(None)
        arrays = [pa.array(values, type=type_) for values, (_name, type_, _n) in zip(columns, self._columns, strict=True)]
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
