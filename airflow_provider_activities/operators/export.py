"""The bulk export operator: whole UTC days of raw activity data into nested, Hive-partitioned Parquet.

Layout below ``output_path``::

    raw_activities/activity_date=YYYY-MM-DD/part-00000.parquet        (snapshot)
    raw_activities_delta/ingest_date=YYYY-MM-DD/part-00000.parquet    (delta)

Each partition also holds ``_manifest.json`` and ``_SUCCESS``; publishing follows the extract
operators' rules (:mod:`airflow_provider_activities.operators._run`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from datetime import time as time_of_day
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa

from airflow_provider_activities import DEFAULT_CONN_ID
from airflow_provider_activities.api.config import ClientConfig
from airflow_provider_activities.api.errors import PeopleAIAPIError, PeopleAIError
from airflow_provider_activities.api.export import (
    MAX_DAYS,
    RETENTION,
    ExportJob,
    check_export_activity_type,
    check_export_type,
    is_capacity_error,
    plan_export_jobs,
)
from airflow_provider_activities.api.validation import check_seconds, datetime_to_ms, parse_moment
from airflow_provider_activities.compat import AirflowFailException, BaseOperator, conf
from airflow_provider_activities.export.days import write_days, write_lanes
from airflow_provider_activities.export.files import ExportStreamError, gzip_stream_problem
from airflow_provider_activities.export.jobs import ExportJobs, wait_is_over
from airflow_provider_activities.export.spool import RawExportBuffer
from airflow_provider_activities.hooks.peopleai import PeopleAIHook
from airflow_provider_activities.operators._run import (
    LineageFacts,
    ParquetOutput,
    RunStats,
    check_output_path,
    check_writer_options,
    connected_hook,
    default_outlets,
    openlineage_facets,
)
from airflow_provider_activities.records.schemas import RAW_ACTIVITY_PER_RECORD_FIELDS, RAW_ACTIVITY_SCHEMA, file_schema
from airflow_provider_activities.task_state import StateStore, task_state_store
from airflow_provider_activities.triggers.peopleai import ERROR_AUTH, PeopleAIExportJobTrigger

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_activities.compat import Context

EXPORT_STATE_KEY = "peopleai_export_jobs"
"""The key under which the export operator keeps its jobs in the task's state store."""
EXPORT_DATASETS = {
    "snapshot": ("raw_activities", "timestamp", "activity_date"),
    "delta": ("raw_activities_delta", "ingest_timestamp", "ingest_date"),
}
"""By export type: the dataset directory, the field that places a record in a day, the day's partition key."""


EXPORT_ROW_GROUP_SIZE = 16_384
"""Rows per Parquet row group of the export operator's files (and the most rows its writer buffers)."""
EXPORT_READ_ATTEMPTS = 3
"""Downloads of a run's files at most when one's gzip stream turns out corrupt as it is converted."""


def _export_dataset(export_type: str, activity_type: str) -> str:
    name = EXPORT_DATASETS[export_type][0]
    return name if activity_type == "all" else f"{name}_{activity_type}"


class PeopleAIExportActivitiesToParquetOperator(BaseOperator):
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

    Records are bounded to the requested days on the client and de-duplicated by ``uid`` (the
    latest ``ingest_timestamp`` wins, then the later record): a snapshot keeps one version of each
    activity in the whole run, in the day of that version (an activity whose timestamp moved
    leaves the earlier day); a delta keeps one per day (an activity processed on two days is in
    both). Rows are ordered by the day's time field then ``uid``, so a rerun over unchanged data
    writes byte-identical files. The nested schema is
    :data:`~airflow_provider_activities.records.schemas.RAW_ACTIVITY_SCHEMA`; fields it does not
    know go to ``_extra``. Files are read with Arrow's JSON reader where that gives exactly the
    record-by-record Python conversion's values (the connection extra ``arrow_parsing``; see
    :mod:`airflow_provider_activities.export.lines`), and the rows go through a local spool on
    disk, so memory does not grow with the size of the export; the worker needs local disk
    (``TMPDIR``) for one downloaded file at a time and for the spool, about the uncompressed Arrow
    size of the export.
    Publishing, manifests, ``_SUCCESS``, idempotency and Assets follow the same rules as the extract
    operators: the run owns every day partition of its range and replaces them whole (a day
    without records gets a zero-row file).

    **Waiting.** ``deferrable=True`` waits in the triggerer
    (:class:`~airflow_provider_activities.triggers.peopleai.PeopleAIExportJobTrigger`), freeing
    the worker slot; the task resumes to submit further jobs or to download and write. Otherwise
    the worker polls every ``poll_interval`` seconds. ``execution_timeout`` bounds each wait.

    **Retries.** The job ids are kept in the task's state store (Airflow's ``task_state_store``
    on 3.3 and later; small marker objects below the dataset root's ``_task_state`` elsewhere) as
    soon as each job is created, before any wait: a retry of the task
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

    schema: ClassVar[pa.Schema] = RAW_ACTIVITY_SCHEMA
    plain_columns: ClassVar[frozenset[str]] = RAW_ACTIVITY_PER_RECORD_FIELDS
    """Columns written without a Parquet dictionary: values unique to each record."""
    partition_by: ClassVar[str] = "day"
    """Always one partition per UTC day (named in the manifest)."""

    template_fields: Sequence[str] = ("output_path", "start", "end", "peopleai_conn_id", "output_conn_id")
    ui_color = "#e8f4fd"

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
            raise ValueError(
                "partition_by is not a parameter of the export operator: it always writes one partition per UTC day."
            )
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
        check_writer_options(compression, max_rows_per_file)
        if not isinstance(peopleai_conn_id, str) or not peopleai_conn_id:
            raise ValueError("peopleai_conn_id must name an Airflow connection of type 'peopleai'.")
        dataset = _export_dataset(export_type, activity_type)
        outlets = kwargs.pop("outlets", None)
        if outlets is None:
            outlets = default_outlets(output_path, dataset)
        super().__init__(outlets=outlets, **kwargs)
        self.dataset = dataset
        self.output_path = output_path
        self.start = start
        self.end = end
        self.peopleai_conn_id = peopleai_conn_id
        self.output_conn_id = output_conn_id
        self.compression = compression
        self.max_rows_per_file = max_rows_per_file
        self.export_type = export_type
        self.activity_type = activity_type
        self.deferrable = deferrable
        self.poll_interval = check_seconds(poll_interval, "poll_interval")
        self.max_days_per_job = max_days_per_job
        self._lineage: LineageFacts | None = None
        self.time_column, self.date_key = EXPORT_DATASETS[export_type][1:]

    # -- the run ------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """Check the input, find or submit the jobs, wait for them (deferring or polling), then
        download, write and publish. Returns the run's summary.
        """
        output_path, interval, jobs = self._prepare()
        self._output(output_path).root  # noqa: B018 - the storage connection, checked before any API call
        hook = connected_hook(self.peopleai_conn_id)
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
        hook = connected_hook(self.peopleai_conn_id)
        try:
            return self._advance(context, hook, jobs, output_path, interval)
        finally:
            hook.close()

    def _prepare(self) -> tuple[str, tuple[datetime, datetime], ExportJobs]:
        """The checked output path, interval and job plan; raises ``ValueError`` before any call."""
        output_path = check_output_path(self.output_path)
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
        store = self._state_store(context)
        if store is None:
            self.log.info("No task instance in the context: a retry of this task starts new export jobs.")
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
        in the task state store at once. A capacity refusal stops submitting for this round.
        """
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
        store = self._state_store(context)
        if store is not None:
            store.set(EXPORT_STATE_KEY, jobs.to_state(), retention=RETENTION)

    def _state_store(self, context: Context) -> StateStore | None:
        """Where the run keeps its job ids across tries: Airflow's ``task_state_store`` (3.3 and
        later), else marker objects below the dataset root (:mod:`airflow_provider_activities.task_state`).
        """
        return task_state_store(context, self._output(check_output_path(self.output_path)).dataset_root)

    def _output(self, output_path: str) -> ParquetOutput:
        self.output_conn_id = self.output_conn_id or None  # a template may render to ""
        return ParquetOutput(
            self.dataset, output_path, self.output_conn_id, self.compression, self.max_rows_per_file, self.plain_columns
        )

    def _download_and_write(
        self, context: Context, hook: PeopleAIHook, jobs: ExportJobs, output_path: str, interval: tuple[datetime, datetime]
    ) -> dict[str, Any]:
        """Download every job's file, convert, bound, de-duplicate and write by day; publish."""
        started = time.monotonic()
        start, end = interval
        output = self._output(output_path)
        staging = output.new_staging()
        schema_in_files = file_schema(self.schema, [])
        days = [(start + timedelta(days=i)).date() for i in range((end - start).days)]
        # nested export rows are a few KiB each: smaller row groups keep the writer's buffer small
        sizes = {"row_group_size": EXPORT_ROW_GROUP_SIZE, "max_buffered_rows": EXPORT_ROW_GROUP_SIZE}
        with tempfile.TemporaryDirectory(prefix="peopleai-export-") as local, contextlib.ExitStack() as stack:
            lanes = write_lanes(len(days))
            writers = [stack.enter_context(output.staged_writer(staging, schema_in_files, **sizes)) for _ in range(lanes)]
            buffer = self._read_jobs(hook, jobs, local, interval)
            try:
                files = write_days(buffer, writers, days, self.date_key)
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
        run = RunStats(
            api={"export_type": self.export_type, "activity_type": self.activity_type, "jobs": job_list},
            received=counts.received,
            duplicates=counts.duplicates,
            outside=counts.outside,
        )
        summary = output.publish(self, context, staging, files, schema_in_files, interval, self.partition_by, run, started)
        self._lineage = LineageFacts(hook.config.base_url, hook.config.export_jobs_path, output.statistics)
        summary["jobs"] = [entry["job_id"] for entry in job_list]
        store = self._state_store(context)
        if store is not None:
            store.delete(EXPORT_STATE_KEY)
        return summary

    def _read_jobs(
        self, hook: PeopleAIHook, jobs: ExportJobs, local: str, interval: tuple[datetime, datetime]
    ) -> RawExportBuffer:
        """Download and convert every job's file into a new buffer (spooled below ``local``).

        A gzip file is not inflated while it downloads (that would be a second whole inflate
        before its conversion can start): its stream is checked as it is converted. A file found
        corrupt or cut short then is downloaded again, with the files before it, into a fresh
        buffer, up to :data:`EXPORT_READ_ATTEMPTS` times in all.
        """
        start, end = interval
        for attempt in range(1, EXPORT_READ_ATTEMPTS + 1):
            buffer = RawExportBuffer(
                tempfile.mkdtemp(prefix="spool-", dir=local),
                self.time_column,
                datetime_to_ms(start),
                datetime_to_ms(end),
                schema=self.schema,
                across_days=self.export_type == "snapshot",
                arrow=hook.config.arrow_parsing,
            )
            try:
                for number, (_spec, job) in enumerate(jobs.completed_jobs()):
                    found = hook.download_export(job.job_id, os.path.join(local, f"job-{number:03d}.jsonl"), check_gzip=False)
                    converting = time.monotonic()
                    received, by_arrow = buffer.counts.received, buffer.counts.arrow
                    try:
                        buffer.add_file(found.path)
                    except ValueError as err:  # a corrupt stream, or a line not JSON or not fitting, which it may garble
                        problem = str(err) if isinstance(err, ExportStreamError) else gzip_stream_problem(found.path)
                        if problem is None:
                            raise
                        raise ExportStreamError(f"People.ai export job {job.job_id}: {problem}") from None
                    finally:
                        os.remove(found.path)
                    self.log.info(
                        "People.ai export job %s: %d records converted in %.1f s (%d read by Arrow, the others in Python).",
                        job.job_id,
                        buffer.counts.received - received,
                        time.monotonic() - converting,
                        buffer.counts.arrow - by_arrow,
                    )
                return buffer
            except ExportStreamError as err:
                buffer.close()
                shutil.rmtree(buffer.spool.directory, ignore_errors=True)
                if attempt == EXPORT_READ_ATTEMPTS:
                    raise PeopleAIError(f"{err} ({EXPORT_READ_ATTEMPTS} downloads; a retry of the task tries again).") from None
                self.log.warning("%s. Downloading the run's files again (%d of %d).", err, attempt + 1, EXPORT_READ_ATTEMPTS)
            except BaseException:
                buffer.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- lineage ------------------------------------------------------------------------------

    def get_openlineage_facets_on_start(self) -> OperatorLineage | None:
        """OpenLineage: the export jobs endpoint and the dataset root written, with its schema."""
        return openlineage_facets(self, self.schema, _export_jobs_path, None)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """OpenLineage: as on start, with the rows, bytes and files the run published."""
        return openlineage_facets(self, self.schema, _export_jobs_path, self._lineage)


def _export_jobs_path(config: ClientConfig) -> str:
    """The endpoint an export run names as its input: where jobs are created (never a file URL)."""
    return config.export_jobs_path
