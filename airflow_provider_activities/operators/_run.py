"""What every People.ai-to-Parquet operator does with its output, shared by composition.

:class:`ParquetOutput` is one operator's dataset in the lake: the checked output path and its
Asset, the staged writer, publishing with the manifest, the run's summary, its log lines and its
asset event. The extract operators (:mod:`airflow_provider_activities.operators.peopleai`) and the
export operator (:mod:`airflow_provider_activities.operators.export`) each hold one; how they read
the API is their own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from airflow_provider_activities import __version__
from airflow_provider_activities.api.config import ClientConfig
from airflow_provider_activities.api.validation import is_template
from airflow_provider_activities.compat import Asset, AssetAlias, BaseHook, ObjectStoragePath, alias_event_extra
from airflow_provider_activities.hooks.peopleai import PeopleAIHook
from airflow_provider_activities.lineage import OutputStatistics, run_lineage
from airflow_provider_activities.storage.publish import discard_staging, new_staging_root, publish
from airflow_provider_activities.storage.writer import FileInfo, PartitionedParquetWriter

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_activities.compat import Context

SUPPORTED_SCHEMES = ("file", "s3", "s3a", "gs", "gcs", "abfs", "abfss", "az")
COMPRESSIONS = ("zstd", "snappy", "gzip", "lz4_raw", "brotli", "none")


def check_output_path(output_path: Any) -> str:
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


def check_writer_options(compression: Any, max_rows_per_file: Any) -> None:
    """The Parquet options every operator takes, checked at construction."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression={compression!r} is not supported: use one of {', '.join(COMPRESSIONS)}.")
    if not isinstance(max_rows_per_file, int) or isinstance(max_rows_per_file, bool) or max_rows_per_file < 1:
        raise ValueError(f"max_rows_per_file={max_rows_per_file!r} must be a positive integer.")


def dataset_asset(output_path: str, dataset: str) -> Asset:
    """The Asset of ``dataset`` below ``output_path``."""
    return Asset(uri=f"{output_path}/{dataset}", name=f"peopleai-{dataset}:{output_path}")


def dataset_alias(dataset: str) -> AssetAlias:
    """The alias of ``dataset`` (declared when ``output_path`` is templated)."""
    return AssetAlias(name=f"peopleai-{dataset}")


def default_outlets(output_path: Any, dataset: str) -> list[Asset | AssetAlias]:
    """The outlets an operator declares: its dataset's Asset, or the alias while the path is a template."""
    if is_template(output_path):
        return [dataset_alias(dataset)]
    return [dataset_asset(check_output_path(output_path), dataset)]


def connected_hook(peopleai_conn_id: str) -> PeopleAIHook:
    """A hook whose connection was read and checked, or a ``ValueError`` saying how to create it."""
    hook = PeopleAIHook(peopleai_conn_id=peopleai_conn_id)
    try:
        hook.config  # noqa: B018 - reads and checks the connection now
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(
            f"peopleai_conn_id={peopleai_conn_id!r}: the connection cannot be read ({type(err).__name__}: "
            f"{err}). Create it (type 'peopleai') in the UI or as AIRFLOW_CONN_{peopleai_conn_id.upper()}."
        ) from None
    return hook


@dataclass
class RunStats:
    """What a run read, for its manifest and summary.

    :param api: what was asked of the API (endpoint, filters, pages; or the export jobs).
    :param received: records received.
    :param duplicates: repeated identities dropped.
    :param outside: records outside the interval (or not this run's) dropped.
    """

    api: dict[str, Any]
    received: int
    duplicates: int
    outside: int


@dataclass
class LineageFacts:
    """What a run learnt that its OpenLineage facets name (no secret: a base URL and a path).

    :param base_url: the API's base URL, from the connection.
    :param endpoint_path: the endpoint read (or the export jobs path).
    :param statistics: what the run published; ``None`` before it did.
    """

    base_url: str
    endpoint_path: str
    statistics: OutputStatistics | None = None


def openlineage_facets(
    task: Any, schema: pa.Schema, endpoint_path: Callable[[ClientConfig], str], facts: LineageFacts | None
) -> OperatorLineage | None:
    """The ``OperatorLineage`` of an operator: the People.ai endpoint in, its dataset root out.

    Before the run (``facts`` is ``None``) the base URL and the endpoint come from the connection;
    after it, from what the run recorded, with its statistics. ``None`` when the OpenLineage
    provider is not installed.

    :param task: the operator (``output_path``, ``dataset`` and ``peopleai_conn_id``, rendered).
    :param schema: the dataset's Arrow schema.
    :param endpoint_path: the operator's endpoint for a connection's settings.
    :param facts: what the run recorded, or ``None`` before it ran.
    """
    if facts is None:
        config = connected_hook(task.peopleai_conn_id).config
        facts = LineageFacts(config.base_url, endpoint_path(config))
    return run_lineage(
        base_url=facts.base_url,
        endpoint_path=facts.endpoint_path,
        root=f"{check_output_path(task.output_path)}/{task.dataset}",
        schema=schema,
        statistics=facts.statistics,
    )


@dataclass
class ParquetOutput:
    """One operator's dataset in the lake, and how a run writes and publishes it.

    :param dataset: the dataset directory below ``output_path`` (``activities``, ``raw_activities`` ...).
    :param output_path: the checked output URL.
    :param output_conn_id: the storage connection, or ``None`` for the default credentials.
    :param compression: the Parquet codec.
    :param max_rows_per_file: rows per Parquet file.
    :param plain_columns: columns written without a Parquet dictionary.
    """

    dataset: str
    output_path: str
    output_conn_id: str | None
    compression: str
    max_rows_per_file: int
    plain_columns: frozenset[str] = frozenset()
    statistics: OutputStatistics | None = None
    """Rows, bytes and files of what :meth:`publish` published (for the lineage facets)."""

    @cached_property
    def root(self) -> ObjectStoragePath:
        """The output path, opened with the storage connection (checked first, once)."""
        if self.output_conn_id:
            try:
                BaseHook.get_connection(self.output_conn_id)
            except Exception as err:
                raise ValueError(
                    f"output_conn_id={self.output_conn_id!r}: the storage connection cannot be read "
                    f"({type(err).__name__}). Create it, or leave output_conn_id unset for the default credentials."
                ) from None
        return ObjectStoragePath(self.output_path, conn_id=self.output_conn_id)

    @cached_property
    def dataset_root(self) -> ObjectStoragePath:
        """Where the dataset's partitions live."""
        return self.root / self.dataset

    def new_staging(self) -> ObjectStoragePath:
        """A fresh staging directory for one run below the dataset root."""
        return new_staging_root(self.dataset_root)

    @contextmanager
    def staged_writer(self, staging: ObjectStoragePath, schema: pa.Schema, **sizes: Any) -> Iterator[PartitionedParquetWriter]:
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

    def publish(
        self,
        task: Any,
        context: Context,
        staging: ObjectStoragePath,
        files: dict[str, list[FileInfo]],
        schema: pa.Schema,
        interval: tuple[datetime, datetime],
        partition_by: str,
        stats: RunStats,
        started: float,
    ) -> dict[str, Any]:
        """Publish the staged partitions with their manifest; log, record the asset event, and
        return the run's summary (the XCom value).

        :param task: the operator (its ids go into the manifest, its outlets get the event).
        """
        manifest = {
            "dataset": self.dataset,
            "interval": {"start": interval[0].isoformat(), "end": interval[1].isoformat()},
            "partition_by": partition_by,
            "api": stats.api,
            "records_received": stats.received,
            "duplicates_dropped": stats.duplicates,
            "outside_interval_dropped": stats.outside,
            "provider_version": __version__,
            "dag_id": task.dag_id,
            "run_id": context.get("run_id"),
            "task_id": task.task_id,
            "finished_at": datetime.now(timezone.utc).isoformat(),
        }
        published = publish(staging, self.dataset_root, files, manifest, schema=schema)
        self.statistics = OutputStatistics.of_files(files)
        seconds = time.monotonic() - started
        summary = {
            "dataset": self.dataset,
            "rows": sum(p.rows for p in published),
            # The URI from output_path: str(ObjectStoragePath) would carry the connection id (s3://conn@bucket/...).
            "partitions": [
                {"partition": p.partition, "uri": f"{self.output_path}/{self.dataset}/{p.partition}", "rows": p.rows}
                for p in published
            ],
            "duplicates_dropped": stats.duplicates,
            "outside_interval_dropped": stats.outside,
        }
        self._log_summary(task.log, summary, seconds)
        self._record_asset_event(context, task.outlets, summary)
        return summary

    def _log_summary(self, log: logging.Logger, summary: dict[str, Any], seconds: float) -> None:
        for partition in summary["partitions"]:
            log.info("%s/%s: %d rows", self.dataset, partition["partition"], partition["rows"])
        log.info(
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

    def _record_asset_event(self, context: Context, outlets: Sequence[Any], summary: dict[str, Any]) -> None:
        """Put rows and partitions in the extra of the asset event this run emits."""
        events = context.get("outlet_events")
        if events is None:
            return
        asset, alias = dataset_asset(self.output_path, self.dataset), dataset_alias(self.dataset)
        extra = {"rows": summary["rows"], "partitions": [p["partition"] for p in summary["partitions"]]}
        for outlet in outlets:
            if isinstance(outlet, Asset) and outlet.uri == asset.uri:
                events[outlet].extra.update(extra)
            elif isinstance(outlet, AssetAlias) and outlet.name == alias.name:
                events[outlet].add(asset, extra=alias_event_extra(extra))
