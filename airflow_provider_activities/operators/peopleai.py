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
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_activities import DEFAULT_CONN_ID, __version__
from airflow_provider_activities.api.protocol import ACTIVITY_TYPES
from airflow_provider_activities.api.validation import check_activity_type
from airflow_provider_activities.compat import Asset, AssetAlias, BaseHook, BaseOperator, ObjectStoragePath
from airflow_provider_activities.hooks.peopleai import PeopleAIHook, RecordStream
from airflow_provider_activities.parquet import PartitionedParquetWriter, RecordConverter
from airflow_provider_activities.partitioning import OTHER_TYPE, PartitionPlan, parse_moment, plan_partitions
from airflow_provider_activities.publish import discard_staging, new_staging_root, publish
from airflow_provider_activities.schemas import ACTIVITY_SCHEMA, EXTRA_FIELD, PARTICIPANT_SCHEMA, file_schema

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


class _PeopleAIToParquetOperator(BaseOperator):
    """The shared run of the extract operators: validate, stream, write, publish, report.

    Subclasses say which dataset they write (:attr:`dataset`), its schema, the time column that
    gives the ``activity_date``, and how to open the record stream.
    """

    dataset: ClassVar[str]
    schema: ClassVar[pa.Schema]
    time_column: ClassVar[str]
    id_column: ClassVar[str]
    type_column: ClassVar[str | None] = None

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
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression={compression!r} is not supported: use one of {', '.join(COMPRESSIONS)}.")
        if not isinstance(max_rows_per_file, int) or isinstance(max_rows_per_file, bool) or max_rows_per_file < 1:
            raise ValueError(f"max_rows_per_file={max_rows_per_file!r} must be a positive integer.")
        if not isinstance(peopleai_conn_id, str) or not peopleai_conn_id:
            raise ValueError("peopleai_conn_id must name an Airflow connection of type 'peopleai'.")
        outlets = kwargs.pop("outlets", None)
        if outlets is None:
            if isinstance(output_path, str) and _TEMPLATE.search(output_path):
                outlets = [self._asset_alias()]
            else:
                outlets = [self._asset(_check_output_path(output_path))]
        super().__init__(outlets=outlets, **kwargs)
        self.output_path = output_path
        self.start = start
        self.end = end
        self.peopleai_conn_id = peopleai_conn_id
        self.output_conn_id = output_conn_id
        self.partition_by = partition_by
        self.compression = compression
        self.max_rows_per_file = max_rows_per_file

    # -- what subclasses provide ------------------------------------------------------------

    @classmethod
    def _asset(cls, output_path: str) -> Asset:
        """The Asset of this operator's dataset below ``output_path`` (declared when the path is static)."""
        return Asset(uri=f"{output_path}/{cls.dataset}", name=f"peopleai-{cls.dataset}:{output_path}")

    @classmethod
    def _asset_alias(cls) -> AssetAlias:
        """The alias declared when ``output_path`` is templated; the run adds the rendered Asset to it."""
        return AssetAlias(name=f"peopleai-{cls.dataset}")

    def _plan(self, start: datetime, end: datetime) -> PartitionPlan:
        return plan_partitions(start, end, self.partition_by, typed=False)

    def _open_stream(self, hook: PeopleAIHook, plan: PartitionPlan) -> RecordStream:
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
        converter = RecordConverter(self.schema, id_field=self.id_column)
        partition_columns = [self.type_column] if self.type_column else []
        schema_in_files = file_schema(self.schema, partition_columns)
        writer = PartitionedParquetWriter(
            staging, schema_in_files, compression=self.compression, max_rows_per_file=self.max_rows_per_file
        )
        dropped = 0
        self._unknown_types: set[str] = set()
        try:
            for page in stream:
                batch, rejected = self._select(converter.to_batch(page))
                dropped += rejected
                for partition, rows in plan.split(batch, self.time_column, self.type_column):
                    writer.write(partition, rows.drop_columns(partition_columns) if partition_columns else rows)
            for partition in plan.owned() + self._also_owned(dataset_root, plan):
                writer.ensure_partition(partition)
            files = writer.close()
        except BaseException:
            writer.abort()
            discard_staging(staging)
            raise
        finally:
            hook.close()
        if converter.unknown_fields:
            self.log.warning(
                "The API sent fields the %s schema does not know; kept in the _extra JSON column: %s",
                self.dataset,
                ", ".join(sorted(converter.unknown_fields)),
            )
        if self._unknown_types:
            self.log.warning(
                "The API sent activity types outside %s; written to activity_type=%s, the type kept in _extra: %s",
                ", ".join(ACTIVITY_TYPES),
                OTHER_TYPE,
                ", ".join(sorted(self._unknown_types)),
            )
        stats = stream.stats
        manifest = {
            "dataset": self.dataset,
            "interval": {"start": start.isoformat(), "end": end.isoformat()},
            "partition_by": self.partition_by,
            "api": {"endpoint": stream.path, "filters": stream.filters, "pages": stream.pages, "total": stream.total},
            "records_received": stats.seen,
            "duplicates_dropped": stats.duplicates,
            "outside_interval_dropped": stats.outside + dropped,
            "provider_version": __version__,
            "dag_id": self.dag_id,
            "run_id": context.get("run_id"),
            "task_id": self.task_id,
            "finished_at": datetime.now(timezone.utc).isoformat(),
        }
        published = publish(staging, dataset_root, files, manifest, schema=schema_in_files)
        seconds = time.monotonic() - started
        total_rows = sum(p.rows for p in published)
        summary = {
            "dataset": self.dataset,
            "rows": total_rows,
            # The URI from output_path: str(ObjectStoragePath) would carry the connection id (s3://conn@bucket/...).
            "partitions": [
                {"partition": p.partition, "uri": f"{output_path}/{self.dataset}/{p.partition}", "rows": p.rows}
                for p in published
            ],
            "duplicates_dropped": stats.duplicates,
            "outside_interval_dropped": stats.outside + dropped,
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
    id_column = "uid"
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

    def _open_stream(self, hook: PeopleAIHook, plan: PartitionPlan) -> RecordStream:
        return hook.stream_activities(plan.start, plan.end, self.activity_type or None)

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
    id_column = "activity_uid"

    def _open_stream(self, hook: PeopleAIHook, plan: PartitionPlan) -> RecordStream:
        return hook.stream_participants(plan.start, plan.end)
