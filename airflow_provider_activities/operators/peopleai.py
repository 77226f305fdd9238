"""Operators that extract one data interval from People.ai into Hive-partitioned Parquet.

Each run streams records from the API (bounded to the interval, each identity once) into Arrow
batches and Parquet row groups under a staging prefix, then publishes every partition its
interval owns at once (see :mod:`airflow_provider_activities.publish` for the guarantee on each
store). A rerun of the same interval replaces exactly those partitions; with an unchanged
source its Parquet files are byte-identical.

Layout below ``output_path``::

    activities/activity_type={email|call|meeting}/activity_date=YYYY-MM-DD/part-00000.parquet
    participants/activity_date=YYYY-MM-DD/part-00000.parquet

Each partition also holds ``_manifest.json`` and ``_SUCCESS``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from datetime import time as time_of_day
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_activities import DEFAULT_CONN_ID, __version__
from airflow_provider_activities.api.errors import PeopleAIAPIError, PeopleAIError
from airflow_provider_activities.api.export import (
    MAX_DAYS,
    RETENTION,
    ExportJob,
    check_export_activity_type,
    check_export_type,
    is_capacity_error,
    iter_export_batches,
    plan_export_jobs,
)
from airflow_provider_activities.api.protocol import ACTIVITY_TYPES
from airflow_provider_activities.api.records import to_epoch_ms
from airflow_provider_activities.api.validation import check_activity_type, check_seconds
from airflow_provider_activities.compat import (
    AirflowFailException,
    Asset,
    AssetAlias,
    BaseHook,
    BaseOperator,
    ObjectStoragePath,
    conf,
)
from airflow_provider_activities.export_jobs import ExportJobs, wait_is_over
from airflow_provider_activities.hooks.peopleai import BatchStream, PeopleAIHook
from airflow_provider_activities.parquet import FileInfo, PartitionedParquetWriter
from airflow_provider_activities.partitioning import OTHER_TYPE, PartitionPlan, parse_moment, plan_partitions
from airflow_provider_activities.publish import discard_staging, new_staging_root, publish
from airflow_provider_activities.raw_export import RawExportBuffer
from airflow_provider_activities.schemas import (
    ACTIVITY_PER_RECORD_FIELDS,
    ACTIVITY_SCHEMA,
    EXTRA_FIELD,
    PARTICIPANT_SCHEMA,
    RAW_ACTIVITY_PER_RECORD_FIELDS,
    RAW_ACTIVITY_SCHEMA,
    file_schema,
)
from airflow_provider_activities.triggers.peopleai import ERROR_AUTH, PeopleAIExportJobTrigger

if TYPE_CHECKING:
    from airflow_provider_activities.compat import Context

SUPPORTED_SCHEMES = ("file", "s3", "s3a", "gs", "gcs", "abfs", "abfss", "az")
COMPRESSIONS = ("zstd", "snappy", "gzip", "lz4_raw", "brotli", "none")
_TEMPLATE = re.compile(r"{{|{%")


def _check_output_path(output_path: Any) -> str:
    """An object-storage URL with a supported scheme and no ``..`` segment."""
    if not isinstance(output_path, str) or not output_path.strip():
        raise ValueError("output_path must be a URL such as file:///data/lake or s3://bucket/prefix.")
    scheme, sep, rest = output_path.partition("://")
    if not sep:
        raise ValueError(
            f"output_path={output_path!r} has no scheme: write it as a URL, file:///abs/dir for a local "
            "directory or s3://bucket/prefix, gs://bucket/prefix for object storage."
        )
    if scheme.lower() not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"output_path={output_path!r}: scheme {scheme!r} is not supported; use one of "
            f"{', '.join(s + '://' for s in SUPPORTED_SCHEMES)}."
        )
    if any(segment in ("..", ".") for segment in rest.split("/")):
        raise ValueError(f"output_path={output_path!r} contains a '.' or '..' segment: give the plain path.")
    if scheme.lower() == "file" and not rest.startswith("/"):
        raise ValueError(f"output_path={output_path!r} must be absolute: file:///abs/dir (three slashes).")
    return output_path.rstrip("/")


def _dataset_asset(output_path: str, dataset: str) -> Asset:
    """The Asset of ``dataset`` below ``output_path``."""
    return Asset(uri=f"{output_path}/{dataset}", name=f"peopleai-{dataset}:{output_path}")


def _dataset_alias(dataset: str) -> AssetAlias:
    """The alias of ``dataset`` (declared when ``output_path`` is templated)."""
    return AssetAlias(name=f"peopleai-{dataset}")


class _PeopleAIToParquetOperator(BaseOperator):
    """The shared run of the extract operators: validate, stream, write, publish, report.

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
        dataset: str | None = None,
        **kwargs: Any,
    ) -> None:
        dataset = dataset or type(self).dataset
        if partition_by not in ("day", "interval"):
            raise ValueError(f"partition_by={partition_by!r} is not supported: use 'day' or 'interval'.")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression={compression!r} is not supported: use one of {', '.join(COMPRESSIONS)}.")
        if not isinstance(max_rows_per_file, int) or isinstance(max_rows_per_file, bool) or max_rows_per_file < 1:
            raise ValueError(f"max_rows_per_file={max_rows_per_file!r} must be a positive integer.")
        if not isinstance(peopleai_conn_id, str) or not peopleai_conn_id:
            raise ValueError("peopleai_conn_id must name an Airflow connection of type 'peopleai'.")
        outlets = kwargs.pop("outlets", None)
        if outlets is None:
            if isinstance(output_path, str) and _TEMPLATE.search(output_path):
                outlets = [_dataset_alias(dataset)]
            else:
                outlets = [_dataset_asset(_check_output_path(output_path), dataset)]
        super().__init__(outlets=outlets, **kwargs)
        self.dataset = dataset
        self.output_path = output_path
        self.start = start
        self.end = end
        self.peopleai_conn_id = peopleai_conn_id
        self.output_conn_id = output_conn_id
        self.partition_by = partition_by
        self.compression = compression
        self.max_rows_per_file = max_rows_per_file

    # -- what subclasses provide ------------------------------------------------------------

    def _asset(self, output_path: str) -> Asset:
        """The Asset of this operator's dataset below ``output_path`` (declared when the path is static)."""
        return _dataset_asset(output_path, self.dataset)

    def _asset_alias(self) -> AssetAlias:
        """The alias declared when ``output_path`` is templated; the run adds the rendered Asset to it."""
        return _dataset_alias(self.dataset)

    def _plan(self, start: datetime, end: datetime) -> PartitionPlan:
        return plan_partitions(start, end, self.partition_by, typed=False)

    def _open_stream(self, hook: PeopleAIHook, plan: PartitionPlan) -> BatchStream:
        raise NotImplementedError

    def _select(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, int]:
        """Rows of a converted batch that belong to this run, and how many were dropped."""
        return batch, 0

    def _also_owned(self, dataset_root: ObjectStoragePath, plan: PartitionPlan) -> list[str]:
        """Partitions beyond ``plan.owned()`` that this run replaces too (none by default)."""
        return []

    # -- the run ------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """Extract the interval, publish its partitions, return a summary (rows, partitions)."""
        output_path = _check_output_path(self.output_path)
        start = parse_moment(self.start, "start")
        end = parse_moment(self.end, "end")
        plan = self._plan(start, end)
        hook = self._hook()
        root = self._output_root(output_path)
        dataset_root = root / self.dataset
        staging = new_staging_root(dataset_root)
        started = time.monotonic()

        stream = self._open_stream(hook, plan)
        partition_columns = [self.type_column] if self.type_column else []
        schema_in_files = file_schema(self.schema, partition_columns)
        dropped = 0
        self._unknown_types: set[str] = set()
        try:
            with self._staged_writer(staging, schema_in_files) as writer:
                for page in stream:
                    batch, rejected = self._select(page)
                    dropped += rejected
                    for partition, rows in plan.split(batch, self.time_column, self.type_column):
                        writer.write(partition, rows.drop_columns(partition_columns) if partition_columns else rows)
                for partition in plan.owned() + self._also_owned(dataset_root, plan):
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
        if self._unknown_types:
            self.log.warning(
                "The API sent activity types outside %s; written to activity_type=%s, the type kept in _extra: %s",
                ", ".join(ACTIVITY_TYPES),
                OTHER_TYPE,
                ", ".join(sorted(self._unknown_types)),
            )
        stats = stream.stats
        return self._publish(
            context,
            output_path=output_path,
            staging=staging,
            dataset_root=dataset_root,
            files=files,
            schema=schema_in_files,
            interval=(start, end),
            api={"endpoint": stream.path, "filters": stream.filters, "pages": stream.pages, "total": stream.total},
            received=stats.seen,
            duplicates=stats.duplicates,
            outside=stats.outside + dropped,
            started=started,
        )

    @contextmanager
    def _staged_writer(
        self, staging: ObjectStoragePath, schema: pa.Schema, **sizes: int
    ) -> Iterator[PartitionedParquetWriter]:
        """A Parquet writer into ``staging``; on any error the writer is aborted and the staging
        directory removed, so a failed run leaves nothing behind for readers.

        :param sizes: row-group and buffer sizes for the writer (its defaults otherwise).
        """
        writer = PartitionedParquetWriter(
            staging,
            schema,
            compression=self.compression,
            max_rows_per_file=self.max_rows_per_file,
            plain_columns=self.plain_columns,
            **sizes,
        )
        try:
            yield writer
        except BaseException:
            writer.abort()
            discard_staging(staging)
            raise

    def _publish(
        self,
        context: Context,
        *,
        output_path: str,
        staging: ObjectStoragePath,
        dataset_root: ObjectStoragePath,
        files: dict[str, list[FileInfo]],
        schema: pa.Schema,
        interval: tuple[datetime, datetime],
        api: dict[str, Any],
        received: int,
        duplicates: int,
        outside: int,
        started: float,
    ) -> dict[str, Any]:
        """Publish the staged partitions with their manifest; log, record the asset event, and
        return the run's summary (the XCom value)."""
        manifest = {
            "dataset": self.dataset,
            "interval": {"start": interval[0].isoformat(), "end": interval[1].isoformat()},
            "partition_by": self.partition_by,
            "api": api,
            "records_received": received,
            "duplicates_dropped": duplicates,
            "outside_interval_dropped": outside,
            "provider_version": __version__,
            "dag_id": self.dag_id,
            "run_id": context.get("run_id"),
            "task_id": self.task_id,
            "finished_at": datetime.now(timezone.utc).isoformat(),
        }
        published = publish(staging, dataset_root, files, manifest, schema=schema)
        seconds = time.monotonic() - started
        summary = {
            "dataset": self.dataset,
            "rows": sum(p.rows for p in published),
            # The URI from output_path: str(ObjectStoragePath) would carry the connection id (s3://conn@bucket/...).
            "partitions": [
                {"partition": p.partition, "uri": f"{output_path}/{self.dataset}/{p.partition}", "rows": p.rows}
                for p in published
            ],
            "duplicates_dropped": duplicates,
            "outside_interval_dropped": outside,
        }
        self._log_summary(summary, seconds)
        self._record_asset_event(context, output_path, summary)
        return summary

    def _hook(self) -> PeopleAIHook:
        hook = PeopleAIHook(peopleai_conn_id=self.peopleai_conn_id)
        try:
            hook.config
        except ValueError:
            raise
        except Exception as err:
            raise ValueError(
                f"peopleai_conn_id={self.peopleai_conn_id!r}: the connection cannot be read ({type(err).__name__}: "
                f"{err}). Create it (type 'peopleai') in the UI or as AIRFLOW_CONN_{self.peopleai_conn_id.upper()}."
            ) from None
        return hook

    def _output_root(self, output_path: str) -> ObjectStoragePath:
        self.output_conn_id = self.output_conn_id or None  # a template may render to ""
        if self.output_conn_id:
            try:
                BaseHook.get_connection(self.output_conn_id)
            except Exception as err:
                raise ValueError(
                    f"output_conn_id={self.output_conn_id!r}: the storage connection cannot be read "
                    f"({type(err).__name__}). Create it, or leave output_conn_id unset for the default credentials."
                ) from None
        return ObjectStoragePath(output_path, conn_id=self.output_conn_id)

    def _log_summary(self, summary: dict[str, Any], seconds: float) -> None:
        for partition in summary["partitions"]:
            self.log.info("%s/%s: %d rows", self.dataset, partition["partition"], partition["rows"])
        self.log.info(
            "Wrote %d %s rows in %d partitions in %.1f s (%.0f records/s); dropped %d duplicates and %d records "
            "outside the interval.",
            summary["rows"],
            self.dataset,
            len(summary["partitions"]),
            seconds,
            summary["rows"] / max(seconds, 1e-9),
            summary["duplicates_dropped"],
            summary["outside_interval_dropped"],
        )

    def _record_asset_event(self, context: Context, output_path: str, summary: dict[str, Any]) -> None:
        """Put rows and partitions in the extra of the asset event this run emits."""
        events = context.get("outlet_events")
        if events is None:
            return
        asset, alias = self._asset(output_path), self._asset_alias()
        extra = {"rows": summary["rows"], "partitions": [p["partition"] for p in summary["partitions"]]}
        for outlet in self.outlets:
            if isinstance(outlet, Asset) and outlet.uri == asset.uri:
                events[outlet].extra.update(extra)
            elif isinstance(outlet, AssetAlias) and outlet.name == alias.name:
                events[outlet].add(asset, extra=extra)


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
        if not (isinstance(activity_type, str) and _TEMPLATE.search(activity_type)):
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

    def _select(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, int]:
        """With one ``activity_type``, keep its rows only (a type-less row is taken as that type).

        With all types, a row of a type outside the known three goes to ``activity_type=other``;
        its type is kept in ``_extra`` (as ``"activity_type"``), since the path holds only "other".
        """
        wanted = self.activity_type or None
        if batch.num_rows == 0:
            return batch, 0
        if wanted is None:
            return _keep_unknown_types(batch, self._unknown_types), 0
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
    for row, (is_unknown, kind) in enumerate(zip(unknown.to_pylist(), types.to_pylist())):
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


EXPORT_STATE_KEY = "peopleai_export_jobs"
"""The key under which the export operator keeps its jobs in the task's state store."""
EXPORT_DATASETS = {"snapshot": ("raw_activities", "timestamp", "activity_date"), "delta": ("raw_activities_delta", "ingest_timestamp", "ingest_date")}
"""By export type: the dataset directory, the field that places a record in a day, the day's partition key."""


EXPORT_ROW_GROUP_SIZE = 16_384
"""Rows per Parquet row group of the export operator's files (and the most rows its writer buffers)."""


def _export_dataset(export_type: str, activity_type: str) -> str:
    name = EXPORT_DATASETS[export_type][0]
    return name if activity_type == "all" else f"{name}_{activity_type}"


class PeopleAIExportActivitiesToParquetOperator(_PeopleAIToParquetOperator):
    """Export whole UTC days of raw activity data with the bulk API into nested, Hive-partitioned Parquet.

    The Raw Activity Data API works in jobs: the operator maps its interval to whole UTC days,
    splits them into jobs within the API's limits (365 days for a ``snapshot``, 14 for a
    ``delta``, or ``max_days_per_job``), submits them (never more than 2 of its own unfinished
    at once; a 429 or "too many jobs" answer is waited out, not failed), waits until every job is
    ``Completed``, then downloads each job's JSON Lines (following the redirect to the file host
    without the bearer token; gzip or not), and writes:

    * ``snapshot``: ``{output_path}/raw_activities/activity_date=YYYY-MM-DD/part-NNNNN.parquet``,
      the day being the UTC day of ``timestamp``: history, by activity date;
    * ``delta``: ``{output_path}/raw_activities_delta/ingest_date=YYYY-MM-DD/part-NNNNN.parquet``,
      the day being the UTC day of ``ingest_timestamp``: what the vendor processed that day.

    With an ``activity_type`` other than ``"all"`` the dataset directory gets the type as a
    suffix (``raw_activities_email``), so runs of different types never replace each other's data.

    Records are bounded to the requested days on the client and de-duplicated by ``uid`` within
    each day partition (the latest ``ingest_timestamp`` wins); rows are ordered by the day's
    time field then ``uid``, so a rerun over unchanged data writes byte-identical files. The
    nested schema is :data:`~airflow_provider_activities.schemas.RAW_ACTIVITY_SCHEMA`; fields it
    does not know go to ``_extra``. Conversion streams through a local spool on disk, so memory
    does not grow with the size of the export; the worker needs local disk (``TMPDIR``) for one
    downloaded file at a time and for the spool, about the uncompressed size of the export. Publishing, manifests, ``_SUCCESS``, idempotency
    and Assets follow the same rules as the other extract operators: the run owns every day
    partition of its range and replaces them whole (a day without records gets a zero-row file).

    **Waiting.** ``deferrable=True`` waits in the triggerer
    (:class:`~airflow_provider_activities.triggers.peopleai.PeopleAIExportJobTrigger`), freeing
    the worker slot; the task resumes to submit further jobs or to download and write. Otherwise
    the worker polls every ``poll_interval`` seconds. ``execution_timeout`` bounds each wait.

    **Retries.** The job ids are kept in the task's state store (Airflow's
    ``task_state_store``) as soon as each job is created, before any wait: a retry of the task
    reuses jobs that still exist, are not ``Failed``/``Canceled`` and whose files are still
    retained (10 days), instead of starting new ones. A successful run forgets them, so clearing
    the run later exports afresh. A ``Failed`` or ``Canceled`` job fails the task, naming the job
    and its state; the retry submits a new job.

    :param output_path: where to write, as an object-storage URL (``file:///abs/dir``,
        ``s3://bucket/prefix``, ``gs://bucket/prefix``). Templated.
    :param export_type: ``"delta"`` (activities processed on the days; the daily catch-up) or
        ``"snapshot"`` (activities whose activity date is on the days; history).
    :param activity_type: ``"all"``, ``"email"``, ``"meeting"`` or ``"call"``.
    :param start: first instant, a UTC midnight; default ``{{ data_interval_start }}``. Templated.
    :param end: end (exclusive), a UTC midnight; default ``{{ data_interval_end }}``. The last
        day exported is the day before ``end``. Templated.
    :param deferrable: wait for the jobs in the triggerer; default ``[operators] default_deferrable``.
    :param poll_interval: seconds between two polls of the jobs' states.
    :param peopleai_conn_id: the ``peopleai`` connection. Templated.
    :param output_conn_id: the storage connection, or ``None`` for the default credentials. Templated.
    :param compression: Parquet compression codec (``zstd`` by default).
    :param max_rows_per_file: rows per Parquet file before the next ``part-NNNNN`` starts.
    :param max_days_per_job: days per export job, at most the API's limit (the default).
    :return: (XCom) ``{"dataset", "rows", "partitions": [{"partition", "uri", "rows"}],
        "duplicates_dropped", "outside_interval_dropped", "jobs": [job ids]}``.
    """

    dataset = "raw_activities"
    schema = RAW_ACTIVITY_SCHEMA
    time_column = "timestamp"
    plain_columns = RAW_ACTIVITY_PER_RECORD_FIELDS

    def __init__(
        self,
        *,
        output_path: str,
        export_type: str = "delta",
        activity_type: str = "all",
        start: str | datetime = "{{ data_interval_start }}",
        end: str | datetime = "{{ data_interval_end }}",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60,
        peopleai_conn_id: str = DEFAULT_CONN_ID,
        output_conn_id: str | None = None,
        compression: str = "zstd",
        max_rows_per_file: int = 1_000_000,
        max_days_per_job: int | None = None,
        **kwargs: Any,
    ) -> None:
        if "partition_by" in kwargs:
            raise ValueError("partition_by is not a parameter of the export operator: it always writes one partition per UTC day.")
        export_type = check_export_type(export_type)
        activity_type = check_export_activity_type(activity_type)
        if max_days_per_job is not None and (
            isinstance(max_days_per_job, bool)
            or not isinstance(max_days_per_job, int)
            or not 1 <= max_days_per_job <= MAX_DAYS[export_type]
        ):
            raise ValueError(
                f"max_days_per_job={max_days_per_job!r} must be a whole number of days from 1 to "
                f"{MAX_DAYS[export_type]} (the API's limit for a {export_type} job), or None for that limit."
            )
        super().__init__(
            output_path=output_path,
            start=start,
            end=end,
            peopleai_conn_id=peopleai_conn_id,
            output_conn_id=output_conn_id,
            partition_by="day",
            compression=compression,
            max_rows_per_file=max_rows_per_file,
            dataset=_export_dataset(export_type, activity_type),
            **kwargs,
        )
        self.export_type = export_type
        self.activity_type = activity_type
        self.deferrable = deferrable
        self.poll_interval = check_seconds(poll_interval, "poll_interval")
        self.max_days_per_job = max_days_per_job
        self.time_column, self.date_key = EXPORT_DATASETS[export_type][1:]

    # -- the run ------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """Check the input, find or submit the jobs, wait for them (deferring or polling), then
        download, write and publish. Returns the run's summary."""
        output_path, interval, jobs = self._prepare()
        self._output_root(output_path)  # the storage connection, checked before any API call
        hook = self._hook()
        try:
            self._reuse_jobs(hook, jobs, context)
            return self._advance(context, hook, jobs, output_path, interval)
        finally:
            hook.close()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after :class:`PeopleAIExportJobTrigger` fired: take the jobs' states from the
        event, then go on as :meth:`execute` does (submit more, wait again, or download and write).

        :raises AirflowFailException: on an ``error`` event for rejected credentials.
        :raises PeopleAIError: on any other ``error`` event (task retries apply).
        """
        event = event or {}
        status = event.get("status")
        if status == "error":
            message = f"Waiting for People.ai export jobs failed: {event.get('message')}"
            if event.get("error_type") == ERROR_AUTH:
                raise AirflowFailException(message)
            raise PeopleAIError(message)
        if status != "done":
            raise PeopleAIError(f"People.ai export operator got an unexpected trigger event: {event!r}")
        output_path, interval, jobs = self._prepare()
        jobs.restore(event.get("run_state"))
        for payload in event.get("jobs") or []:
            jobs.update(ExportJob.from_dict(payload))
        hook = self._hook()
        try:
            return self._advance(context, hook, jobs, output_path, interval)
        finally:
            hook.close()

    def _prepare(self) -> tuple[str, tuple[datetime, datetime], ExportJobs]:
        """The checked output path, interval and job plan; raises ``ValueError`` before any call."""
        output_path = _check_output_path(self.output_path)
        start = parse_moment(self.start, "start")
        end = parse_moment(self.end, "end")
        if end <= start:
            raise ValueError(
                f"[start, end) = [{start.isoformat()}, {end.isoformat()}) is empty or inverted: an export covers whole "
                "UTC days from start up to end (exclusive). With a plain cron schedule Airflow 3 gives zero-width "
                'intervals: use CronDataIntervalTimetable("0 0 * * *", timezone="UTC").'
            )
        if start.time() != time_of_day(0) or end.time() != time_of_day(0):
            raise ValueError(
                f"[start, end) = [{start.isoformat()}, {end.isoformat()}) is not aligned to UTC days: export jobs cover "
                "whole UTC days, so start and end must be UTC midnights (schedule the DAG with "
                'CronDataIntervalTimetable("0 0 * * *", timezone="UTC")).'
            )
        first, last = start.date(), (end - timedelta(days=1)).date()
        specs = plan_export_jobs(first, last, self.export_type, self.activity_type, self.max_days_per_job)
        return output_path, (start, end), ExportJobs(specs)

    def _reuse_jobs(self, hook: PeopleAIHook, jobs: ExportJobs, context: Context) -> None:
        """Take back the jobs an earlier try of this task kept, where they can still serve."""
        store = context.get("task_state_store")
        if store is None:
            self.log.info("No task state store (Airflow < 3.3?): a retry of this task starts new export jobs.")
            return
        now = datetime.now(timezone.utc)
        for spec, kept in jobs.restore(store.get(EXPORT_STATE_KEY)):
            try:
                job = hook.get_export_job(kept.job_id)
            except PeopleAIAPIError as err:
                if err.status not in (404, 410):
                    raise
                self.log.info("Export job %s of %s is gone (%s): submitting a new one.", kept.job_id, spec.key, err.status)
                jobs.forget(spec)
                continue
            if jobs.reusable(job, now):
                self.log.info("Reusing export job %s of %s from an earlier try (%s).", job.job_id, spec.key, job.state)
                jobs.record(spec, job)
            else:
                self.log.info("Not reusing export job %s of %s (%s): submitting a new one.", job.job_id, spec.key, job.state)
                jobs.forget(spec)

    def _advance(
        self, context: Context, hook: PeopleAIHook, jobs: ExportJobs, output_path: str, interval: tuple[datetime, datetime]
    ) -> dict[str, Any]:
        """Submit what may be submitted, then wait (defer or poll) until every job is done."""
        while True:
            self._submit(context, hook, jobs)
            failed = jobs.failed()
            if failed is not None:
                spec, job = failed
                raise PeopleAIError(
                    f"People.ai export job {job.job_id} ({spec.export_type} {spec.activity_type} of {spec.start_date} to "
                    f"{spec.end_date}) ended {job.state}. A retry of the task submits a new job."
                )
            if jobs.all_completed():
                return self._download_and_write(context, hook, jobs, output_path, interval)
            waiting = jobs.unfinished()
            wait_for = "any" if jobs.unsubmitted() else "all"
            self.log.info(
                "Waiting for People.ai export jobs %s (%s); %d more to submit.",
                ", ".join(f"{job.job_id} {job.state}" for job in waiting) or "(none: the API is at its job limit)",
                wait_for,
                len(jobs.unsubmitted()),
            )
            if self.deferrable:
                self.defer(
                    trigger=PeopleAIExportJobTrigger(
                        job_ids=[job.job_id for job in waiting],
                        peopleai_conn_id=self.peopleai_conn_id,
                        poll_interval=self.poll_interval,
                        wait_for=wait_for,
                        run_state=jobs.to_state(),
                    ),
                    method_name="execute_complete",
                    timeout=self.execution_timeout,
                )
            self._poll(hook, jobs, waiting, wait_for)

    def _poll(self, hook: PeopleAIHook, jobs: ExportJobs, waiting: list[ExportJob], wait_for: str) -> None:
        """Non-deferrable waiting: poll until the wait is over by the trigger's rule (``all``/``any``)."""
        while True:
            time.sleep(self.poll_interval)
            if not waiting:
                return
            waiting = [hook.get_export_job(job.job_id) for job in waiting]
            for job in waiting:
                jobs.update(job)
            if wait_is_over(list(waiting), wait_for):
                return
            self.log.info("People.ai export jobs: %s.", ", ".join(f"{job.job_id} {job.state}" for job in waiting))

    def _submit(self, context: Context, hook: PeopleAIHook, jobs: ExportJobs) -> None:
        """Submit specs while fewer than 2 of this run's jobs are unfinished; keep each job id
        in the task state store at once. A capacity refusal stops submitting for this round."""
        for spec in jobs.unsubmitted()[: jobs.free_slots()]:
            try:
                job = hook.start_export_job(spec)
            except PeopleAIAPIError as err:
                if not is_capacity_error(err):
                    raise
                self.log.info("People.ai refused a new export job for now (%s): waiting %.0f s.", err, self.poll_interval)
                return
            jobs.record(spec, job)
            self._keep_jobs(context, jobs)

    def _keep_jobs(self, context: Context, jobs: ExportJobs) -> None:
        store = context.get("task_state_store")
        if store is not None:
            store.set(EXPORT_STATE_KEY, jobs.to_state(), retention=RETENTION)

    def _download_and_write(
        self, context: Context, hook: PeopleAIHook, jobs: ExportJobs, output_path: str, interval: tuple[datetime, datetime]
    ) -> dict[str, Any]:
        """Download every job's file, convert, bound, de-duplicate and write by day; publish."""
        started = time.monotonic()
        start, end = interval
        dataset_root = self._output_root(output_path) / self.dataset
        staging = new_staging_root(dataset_root)
        schema_in_files = file_schema(self.schema, [])
        days = [(start + timedelta(days=i)).date().isoformat() for i in range((end - start).days)]
        # nested export rows are a few KiB each: smaller row groups keep the writer's buffer small
        sizes = {"row_group_size": EXPORT_ROW_GROUP_SIZE, "max_buffered_rows": EXPORT_ROW_GROUP_SIZE}
        with tempfile.TemporaryDirectory(prefix="peopleai-export-") as local:
            buffer = RawExportBuffer(local, self.time_column, to_epoch_ms(start), to_epoch_ms(end), schema=self.schema)
            try:
                with self._staged_writer(staging, schema_in_files, **sizes) as writer:
                    for number, (_spec, job) in enumerate(jobs.completed_jobs()):
                        found = hook.download_export(job.job_id, os.path.join(local, f"job-{number:03d}.jsonl"))
                        for records in iter_export_batches(found.path):
                            buffer.add(records)
                        os.remove(found.path)
                    for day, batches in buffer.day_batches():
                        partition = f"{self.date_key}={day.isoformat()}"
                        for batch in batches:
                            writer.write(partition, batch)
                    for day_text in days:
                        writer.ensure_partition(f"{self.date_key}={day_text}")
                    files = writer.close()
            finally:
                buffer.close()
        if buffer.converter.unknown_fields:
            self.log.warning(
                "The export holds fields the %s schema does not know; kept in the _extra JSON column: %s",
                self.dataset,
                ", ".join(sorted(buffer.converter.unknown_fields)),
            )
        counts = buffer.counts
        job_list = [
            {"job_id": job.job_id, "start_date": spec.start_date.isoformat(), "end_date": spec.end_date.isoformat()}
            for spec, job in jobs.completed_jobs()
        ]
        summary = self._publish(
            context,
            output_path=output_path,
            staging=staging,
            dataset_root=dataset_root,
            files=files,
            schema=schema_in_files,
            interval=interval,
            api={"export_type": self.export_type, "activity_type": self.activity_type, "jobs": job_list},
            received=counts.received,
            duplicates=counts.duplicates,
            outside=counts.outside,
            started=started,
        )
        summary["jobs"] = [entry["job_id"] for entry in job_list]
        store = context.get("task_state_store")
        if store is not None:
            store.delete(EXPORT_STATE_KEY)
        return summary

