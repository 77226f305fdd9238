"""Operators that extract one data interval of activities or participants into Hive-partitioned Parquet.

Each run streams records from the API (bounded to the interval, each identity once) into Arrow
batches and Parquet row groups under a staging prefix, then publishes every partition its
interval owns at once (see :mod:`airflow_provider_activities.storage.publish` for the guarantee on each
store). A rerun of the same interval replaces exactly those partitions; with an unchanged
source its Parquet files are byte-identical.

Layout below ``output_path``::

    activities/activity_type={email|call|meeting}/activity_date=YYYY-MM-DD/part-00000.parquet
    participants/activity_date=YYYY-MM-DD/part-00000.parquet

Each partition also holds ``_manifest.json`` and ``_SUCCESS``. The bulk export operator lives in
:mod:`airflow_provider_activities.operators.export` and is importable from here too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_activities import DEFAULT_CONN_ID
from airflow_provider_activities.api.config import ClientConfig
from airflow_provider_activities.api.protocol import ACTIVITY_TYPES, PARTICIPANTS_PATH, activities_path
from airflow_provider_activities.api.validation import check_activity_type, is_template, parse_moment
from airflow_provider_activities.compat import BaseOperator, ObjectStoragePath
from airflow_provider_activities.hooks.peopleai import BatchStream, PeopleAIHook
from airflow_provider_activities.operators._run import (
    COMPRESSIONS,
    SUPPORTED_SCHEMES,
    LineageFacts,
    ParquetOutput,
    RunStats,
    check_output_path,
    check_writer_options,
    connected_hook,
    default_outlets,
    openlineage_facets,
)
from airflow_provider_activities.operators.export import EXPORT_STATE_KEY, PeopleAIExportActivitiesToParquetOperator
from airflow_provider_activities.records.schemas import (
    ACTIVITY_PER_RECORD_FIELDS,
    ACTIVITY_SCHEMA,
    EXTRA_FIELD,
    PARTICIPANT_SCHEMA,
    file_schema,
)
from airflow_provider_activities.storage.partitioning import OTHER_TYPE, PartitionPlan, plan_partitions

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_activities.compat import Context

__all__ = [
    "COMPRESSIONS",
    "EXPORT_STATE_KEY",
    "SUPPORTED_SCHEMES",
    "PeopleAIActivitiesToParquetOperator",
    "PeopleAIExportActivitiesToParquetOperator",
    "PeopleAIParticipantsToParquetOperator",
]


class _PeopleAIToParquetOperator(BaseOperator):
    """The shared run of the two extract operators: validate, stream, write, publish, report.

    Subclasses say which dataset they write (:attr:`dataset`), its schema, the time column that
    gives the ``activity_date``, and how to open the record stream.
    """

    dataset: ClassVar[str]
    schema: ClassVar[pa.Schema]
    time_column: ClassVar[str]
    type_column: ClassVar[str | None] = None
    plain_columns: ClassVar[frozenset[str]] = frozenset()
    """Columns written without a Parquet dictionary: values unique to each record."""

    template_fields: Sequence[str] = ("output_path", "start", "end", "peopleai_conn_id", "output_conn_id")
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        output_path: str,
        start: str | datetime = "{{ data_interval_start }}",
        end: str | datetime = "{{ data_interval_end }}",
        peopleai_conn_id: str = DEFAULT_CONN_ID,
        output_conn_id: str | None = None,
        partition_by: str = "day",
        compression: str = "zstd",
        max_rows_per_file: int = 1_000_000,
        **kwargs: Any,
    ) -> None:
        if partition_by not in ("day", "interval"):
            raise ValueError(f"partition_by={partition_by!r} is not supported: use 'day' or 'interval'.")
        check_writer_options(compression, max_rows_per_file)
        if not isinstance(peopleai_conn_id, str) or not peopleai_conn_id:
            raise ValueError("peopleai_conn_id must name an Airflow connection of type 'peopleai'.")
        outlets = kwargs.pop("outlets", None)
        if outlets is None:
            outlets = default_outlets(output_path, self.dataset)
        super().__init__(outlets=outlets, **kwargs)
        self.output_path = output_path
        self.start = start
        self.end = end
        self.peopleai_conn_id = peopleai_conn_id
        self.output_conn_id = output_conn_id
        self.partition_by = partition_by
        self.compression = compression
        self.max_rows_per_file = max_rows_per_file
        self._lineage: LineageFacts | None = None

    # -- what subclasses provide ------------------------------------------------------------

    def _endpoint_path(self, config: ClientConfig) -> str:
        """The endpoint the run reads."""
        raise NotImplementedError

    def _plan(self, start: datetime, end: datetime) -> PartitionPlan:
        return plan_partitions(start, end, self.partition_by, typed=False)

    def _open_stream(self, hook: PeopleAIHook, plan: PartitionPlan) -> BatchStream:
        """The record stream of the run's interval."""
        raise NotImplementedError

    def _select(self, batch: pa.RecordBatch, unknown_types: set[str]) -> tuple[pa.RecordBatch, int]:
        """Rows of a converted batch that belong to this run, and how many were dropped.

        :param unknown_types: activity types outside the known three seen so far (added to).
        """
        return batch, 0

    def _also_owned(self, dataset_root: ObjectStoragePath, plan: PartitionPlan) -> list[str]:
        """Partitions beyond ``plan.owned()`` that this run replaces too (none by default)."""
        return []

    # -- the run ------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """Extract the interval, publish its partitions, return a summary (rows, partitions)."""
        output_path = check_output_path(self.output_path)
        start = parse_moment(self.start, "start")
        end = parse_moment(self.end, "end")
        plan = self._plan(start, end)
        hook = connected_hook(self.peopleai_conn_id)
        self.output_conn_id = self.output_conn_id or None  # a template may render to ""
        output = ParquetOutput(
            self.dataset, output_path, self.output_conn_id, self.compression, self.max_rows_per_file, self.plain_columns
        )
        staging = output.new_staging()
        started = time.monotonic()

        stream = self._open_stream(hook, plan)
        partition_columns = [self.type_column] if self.type_column else []
        schema_in_files = file_schema(self.schema, partition_columns)
        dropped = 0
        unknown_types: set[str] = set()
        try:
            with output.staged_writer(staging, schema_in_files) as writer:
                for page in stream:
                    batch, rejected = self._select(page, unknown_types)
                    dropped += rejected
                    for partition, rows in plan.split(batch, self.time_column, self.type_column):
                        writer.write(partition, rows.drop_columns(partition_columns) if partition_columns else rows)
                for partition in plan.owned() + self._also_owned(output.dataset_root, plan):
                    writer.ensure_partition(partition)
                files = writer.close()
        finally:
            stream.close()  # stops the read-ahead, if the loop did not finish
            hook.close()
        if stream.unknown_fields:
            self.log.warning(
                "The API sent fields the %s schema does not know; kept in the _extra JSON column: %s",
                self.dataset,
                ", ".join(sorted(stream.unknown_fields)),
            )
        if unknown_types:
            self.log.warning(
                "The API sent activity types outside %s; written to activity_type=%s, the type kept in _extra: %s",
                ", ".join(ACTIVITY_TYPES),
                OTHER_TYPE,
                ", ".join(sorted(unknown_types)),
            )
        stats = stream.stats
        run = RunStats(
            api={"endpoint": stream.path, "filters": stream.filters, "pages": stream.pages, "total": stream.total},
            received=stats.seen,
            duplicates=stats.duplicates,
            outside=stats.outside + dropped,
        )
        summary = output.publish(self, context, staging, files, schema_in_files, (start, end), self.partition_by, run, started)
        self._lineage = LineageFacts(hook.config.base_url, stream.path, output.statistics)
        return summary

    # -- lineage ------------------------------------------------------------------------------

    def get_openlineage_facets_on_start(self) -> OperatorLineage | None:
        """OpenLineage: the endpoint read and the dataset root written, with its schema."""
        return openlineage_facets(self, self.schema, self._endpoint_path, None)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """OpenLineage: as on start, with the rows, bytes and files the run published."""
        return openlineage_facets(self, self.schema, self._endpoint_path, self._lineage)


class PeopleAIActivitiesToParquetOperator(_PeopleAIToParquetOperator):
    """Extract the activities of one data interval into Hive-partitioned Parquet.

    Writes ``{output_path}/activities/activity_type=.../activity_date=YYYY-MM-DD/part-NNNNN.parquet``
    (``activity_type`` lives in the path only). A run owns every (type, day) partition its
    interval covers and replaces them whole; a day with no activities still gets a zero-row
    file and its manifest. With ``activity_type=None``, records of a type outside the three go to
    ``activity_type=other`` (their type kept in ``_extra``), a partition a rerun replaces too.

    :param output_path: where to write, as an object-storage URL (``file:///abs/dir``,
        ``s3://bucket/prefix``, ``gs://bucket/prefix``). Templated.
    :param activity_type: ``None`` for all three types, or ``"email"``, ``"call"``, ``"meeting"``. Templated.
    :param start: inclusive start of the interval; default ``{{ data_interval_start }}``. Templated.
    :param end: exclusive end of the interval; default ``{{ data_interval_end }}``. Templated.
    :param peopleai_conn_id: the ``peopleai`` connection.
    :param output_conn_id: the storage connection (e.g. an ``aws`` connection, with
        ``endpoint_url`` in its extras for S3-compatible stores); ``None`` for the default credentials.
    :param partition_by: ``"day"`` (start and end on UTC midnights; one partition per type and day)
        or ``"interval"`` (sub-daily schedules; one partition per type, keyed
        ``interval=YYYYMMDDTHHMMZ_YYYYMMDDTHHMMZ`` below the day).
    :param compression: Parquet compression codec (``zstd`` by default).
    :param max_rows_per_file: rows per Parquet file before the next ``part-NNNNN`` starts.
    :return: (XCom) ``{"dataset", "rows", "partitions": [{"partition", "uri", "rows"}],
        "duplicates_dropped", "outside_interval_dropped"}``.
    """

    dataset = "activities"
    schema = ACTIVITY_SCHEMA
    time_column = "timestamp"
    plain_columns = ACTIVITY_PER_RECORD_FIELDS
    type_column = "activity_type"
    template_fields: Sequence[str] = (*_PeopleAIToParquetOperator.template_fields, "activity_type")

    def __init__(
        self,
        *,
        output_path: str,
        activity_type: str | None = None,
        start: str | datetime = "{{ data_interval_start }}",
        end: str | datetime = "{{ data_interval_end }}",
        peopleai_conn_id: str = DEFAULT_CONN_ID,
        output_conn_id: str | None = None,
        partition_by: str = "day",
        compression: str = "zstd",
        max_rows_per_file: int = 1_000_000,
        **kwargs: Any,
    ) -> None:
        if not is_template(activity_type):
            check_activity_type(activity_type or None)
        super().__init__(
            output_path=output_path,
            start=start,
            end=end,
            peopleai_conn_id=peopleai_conn_id,
            output_conn_id=output_conn_id,
            partition_by=partition_by,
            compression=compression,
            max_rows_per_file=max_rows_per_file,
            **kwargs,
        )
        self.activity_type = activity_type

    def _plan(self, start: datetime, end: datetime) -> PartitionPlan:
        activity_type = self.activity_type or None
        return plan_partitions(start, end, self.partition_by, activity_type=activity_type, typed=True)

    def _open_stream(self, hook: PeopleAIHook, plan: PartitionPlan) -> BatchStream:
        return hook.stream_activity_batches(plan.start, plan.end, self.activity_type or None)

    def _endpoint_path(self, config: ClientConfig) -> str:
        return activities_path(self.activity_type or None)

    def _select(self, batch: pa.RecordBatch, unknown_types: set[str]) -> tuple[pa.RecordBatch, int]:
        """With one ``activity_type``, keep its rows only (a type-less row is taken as that type).

        With all types, a row of a type outside the known three goes to ``activity_type=other``;
        its type is kept in ``_extra`` (as ``"activity_type"``), since the path holds only "other".
        """
        wanted = self.activity_type or None
        if batch.num_rows == 0:
            return batch, 0
        if wanted is None:
            return _keep_unknown_types(batch, unknown_types), 0
        column = batch.schema.get_field_index("activity_type")
        types = pc.fill_null(batch.column(column), wanted)
        batch = batch.set_column(column, "activity_type", types)
        kept = batch.filter(pc.equal(types, wanted))
        return kept, batch.num_rows - kept.num_rows

    def _also_owned(self, dataset_root: ObjectStoragePath, plan: PartitionPlan) -> list[str]:
        """The ``activity_type=other`` partitions of this run's days that an earlier run left.

        A run over all types writes records of unknown types there; a rerun must replace those
        partitions as well, or records the source no longer has would stay.
        """
        if plan.types != ACTIVITY_TYPES:
            return []
        other = dataset_root / f"{self.type_column}={OTHER_TYPE}"
        dataset_root.fs.invalidate_cache()
        if not other.exists():
            return []
        return [partition for partition in plan.owned(types=(OTHER_TYPE,)) if (dataset_root / partition).exists()]


def _keep_unknown_types(batch: pa.RecordBatch, seen: set[str]) -> pa.RecordBatch:
    """Put the ``activity_type`` of rows of unknown types into their ``_extra`` JSON; add the types to ``seen``."""
    types = batch.column(batch.schema.get_field_index("activity_type"))
    unknown = pc.and_(pc.is_valid(types), pc.invert(pc.is_in(types, value_set=pa.array(ACTIVITY_TYPES))))
    if not pc.any(unknown).as_py():
        return batch
    index = batch.schema.get_field_index(EXTRA_FIELD)
    extras = batch.column(index).to_pylist()
    for row, (is_unknown, kind) in enumerate(zip(unknown.to_pylist(), types.to_pylist(), strict=True)):
        if is_unknown:
            seen.add(kind)
            kept = json.loads(extras[row]) if extras[row] else {}
            kept["activity_type"] = kind
            extras[row] = json.dumps(kept, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return batch.set_column(index, batch.schema.field(index), pa.array(extras, type=pa.string()))


class PeopleAIParticipantsToParquetOperator(_PeopleAIToParquetOperator):
    """Extract the participants of one data interval's activities into Hive-partitioned Parquet.

    Writes ``{output_path}/participants/activity_date=YYYY-MM-DD/part-NNNNN.parquet``, the day
    being the UTC day of ``activity_timestamp``; each (``activity_uid``, ``id``) once.

    :param output_path: where to write, as an object-storage URL. Templated.
    :param start: inclusive start; default ``{{ data_interval_start }}``. Templated.
    :param end: exclusive end; default ``{{ data_interval_end }}``. Templated.
    :param peopleai_conn_id: the ``peopleai`` connection.
    :param output_conn_id: the storage connection, or ``None``.
    :param partition_by: ``"day"`` or ``"interval"`` (see the activities operator).
    :param compression: Parquet compression codec.
    :param max_rows_per_file: rows per Parquet file.
    :return: (XCom) the same summary as the activities operator.
    """

    dataset = "participants"
    schema = PARTICIPANT_SCHEMA
    time_column = "activity_timestamp"

    def _open_stream(self, hook: PeopleAIHook, plan: PartitionPlan) -> BatchStream:
        return hook.stream_participant_batches(plan.start, plan.end)

    def _endpoint_path(self, config: ClientConfig) -> str:
        return PARTICIPANTS_PATH
