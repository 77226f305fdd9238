"""PeopleAIHook: the People.ai Activity API over ``requests``.

What the hook does for every call: OAuth2 client-credentials auth with a cached token that is
refreshed before it expires (and minted again once on a 401); a rate limit of
``requests_per_second`` per API key across all hooks of the process (and ``max_concurrency``
requests in flight per hook); retries with backoff
for 429, 5xx, dropped connections, timeouts and invalid bodies; offset/limit pagination that
fetches pages ahead concurrently when ``meta.total`` is known and yields them in order; and
client-side bounds and de-duplication of every record. The rules live in
:mod:`airflow_provider_activities.api`, shared with the async trigger client.

With the connection extra ``rate_limit_redis_conn_id``, the rate and the cap on requests in
flight are one budget per API key for every process and host, kept in Redis
(:mod:`airflow_provider_activities.hooks._shared_budget`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import requests
import urllib3

from airflow_provider_activities import CONN_TYPE, DEFAULT_CONN_ID, get_provider_info
from airflow_provider_activities.api.config import ClientConfig
from airflow_provider_activities.api.export import (
    ExportJob,
    ExportJobSpec,
    check_export_activity_type,
    check_export_range,
    check_export_type,
    check_job_id,
    create_job_request,
    download_flow,
    job_data_request,
    job_status_request,
    parse_created_job,
    parse_export_job,
)
from airflow_provider_activities.api.flow import Flow, NeedToken, Pace, Response, Send, Sleep, call_flow, obtain_token
from airflow_provider_activities.api.pagination import PagePlan, PageSizes, page_flow, page_sizes, read_passes
from airflow_provider_activities.api.policy import (
    LocalBudget,
    RetryPolicy,
    SharedRateLimiter,
    TokenCache,
    shared_rate_limiter,
    shared_token_cache,
)
from airflow_provider_activities.api.protocol import ACTIVITIES_PATH, ApiRequest, Page, page_request, parse_page
from airflow_provider_activities.api.queries import (
    IngestCount,
    Query,
    activities_query,
    ingested_query,
    latest_ingested_ms,
    participants_query,
)
from airflow_provider_activities.api.validation import ms_to_datetime
from airflow_provider_activities.compat import BaseHook, connection_form_widgets, mask_secret, ui_field_behaviour
from airflow_provider_activities.export.files import ExportFile, ExportFileSink, iter_export_lines
from airflow_provider_activities.hooks._common import client_config, redis_budget
from airflow_provider_activities.hooks._session import Session, body_chunks, read_capped, without_query
from airflow_provider_activities.hooks._streams import BatchStream, RecordStream, batch_read_ahead_depth
from airflow_provider_activities.records.schemas import ACTIVITY_SCHEMA, PARTICIPANT_SCHEMA

if TYPE_CHECKING:
    from airflow_provider_activities.hooks._shared_budget import RedisRateBudget

T = TypeVar("T")
Sender = Callable[[ApiRequest], "Response | BaseException"]

PROGRESS_EVERY_SECONDS = 10.0



class PeopleAIHook(BaseHook):
    """Talks to the People.ai (Backstory) Activity API.

    :param peopleai_conn_id: the Airflow connection (type ``peopleai``): login is the API key,
        password the API secret, host the base URL (``https://api.people.ai`` when empty);
        extras ``auth_path`` (formerly ``token_path``), ``page_size``, ``requests_per_second``, ``max_concurrency``,
        ``timeout``, ``max_retries``, ``backoff_base``, ``backoff_max``, ``verify_ssl``,
        ``rate_limit_redis_conn_id`` (the ``redis`` connection of a rate budget shared by every
        process on the key), and for the bulk export ``export_jobs_path``, ``export_status_path``,
        ``export_data_path``.
    """

    conn_name_attr = "peopleai_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "People.ai"

    def __init__(self, peopleai_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.peopleai_conn_id = peopleai_conn_id
        self._token_lock = threading.Lock()
        self._session: requests.Session | None = None
        self._budget_lock = threading.Lock()
        self._budget: LocalBudget | RedisRateBudget | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(peopleai_conn_id={self.peopleai_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form behaviour for Airflow 2.11, 3.0 and 3.1, from the ``ui-field-behaviour``
        of ``get_provider_info()`` (which Airflow 3.2 and later read instead).
        """
        return ui_field_behaviour(get_provider_info()["connection-types"][0]["ui-field-behaviour"])

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Connection form extra fields for Airflow 2.11, 3.0 and 3.1, from the ``conn-fields`` of
        ``get_provider_info()`` (which Airflow 3.2 and later read instead).
        """
        return connection_form_widgets(get_provider_info()["connection-types"][0]["conn-fields"])

    # -- settings and transport -------------------------------------------------------------

    @cached_property
    def config(self) -> ClientConfig:
        """The connection's validated settings (read once per hook)."""
        return client_config(self.peopleai_conn_id, self.get_connection(self.peopleai_conn_id), self.log)

    @cached_property
    def _policy(self) -> RetryPolicy:
        return RetryPolicy.from_config(self.config)

    @cached_property
    def _limiter(self) -> SharedRateLimiter:
        """The process's limiter for this connection's API key, shared with every other hook on it."""
        config = self.config
        return shared_rate_limiter(config.base_url, config.client_id, config.requests_per_second)

    def _rate_budget(self) -> LocalBudget | RedisRateBudget:
        """Where requests take their slots, made on first use: the budget shared through the Redis
        of ``rate_limit_redis_conn_id`` when the connection names one (read here, so a missing or
        wrong connection fails before the first request), else the process's limiter.
        """
        with self._budget_lock:
            if self._budget is None:
                redis_conn_id = self.config.rate_limit_redis_conn_id
                if redis_conn_id is None:
                    self._budget = LocalBudget(self._limiter)
                else:
                    from airflow_provider_activities.hooks._shared_budget import RedisRateBudget

                    shared = redis_budget(self.config, self.get_connection(redis_conn_id))
                    self._budget = RedisRateBudget.connect(shared)
            return self._budget

    @cached_property
    def _tokens(self) -> TokenCache:
        """The process's token cache for this connection's credentials, shared with every hook on them."""
        config = self.config
        return shared_token_cache(config.base_url + config.token_path, config.client_id, config.client_secret)

    @cached_property
    def _in_flight(self) -> threading.BoundedSemaphore:
        return threading.BoundedSemaphore(self.config.max_concurrency)

    def get_conn(self) -> requests.Session:
        """The hook's ``requests.Session`` (one per hook, pooled for ``max_concurrency``). It takes
        proxies and the CA bundle from the environment once per origin and never reads
        ``~/.netrc`` (see :class:`~airflow_provider_activities.hooks._session.Session`).
        """
        if self._session is None:
            session = Session()
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=1, pool_maxsize=self.config.max_concurrency, max_retries=0
            )
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.verify = self.config.verify_ssl
            self._session = session
        return self._session

    def close(self) -> None:
        """Close the HTTP session, and the Redis client of a shared rate budget (both are opened
        again if the hook is used again).
        """
        if self._session is not None:
            self._session.close()
            self._session = None
        with self._budget_lock:
            budget, self._budget = self._budget, None
        if budget is not None and not isinstance(budget, LocalBudget):
            budget.close()

    def _send(self, request: ApiRequest) -> Response | BaseException:
        session = self.get_conn()
        with self._in_flight:
            try:
                answer = session.request(
                    request.method,
                    request.url(self.config),
                    params=request.params or None,
                    data=request.form,
                    json=request.json_body,
                    headers=request.headers(),
                    timeout=self.config.timeout,
                    stream=True,
                )
                with answer:
                    return Response(answer.status_code, answer.headers, read_capped(answer, request.body_cap()))
            except requests.RequestException as err:
                return err

    def _pace(self) -> str:
        """Take a slot of the rate budget and wait until it may be used; returns its lease."""
        wait, lease = self._rate_budget().acquire()
        if wait > 0:
            try:
                time.sleep(wait)
            except BaseException:  # interrupted (the task is being stopped): give the slot back
                self._release(lease)
                raise
        return lease

    def _release(self, lease: str) -> None:
        """Give back the slot of ``lease``: its request was answered, or failed, just now."""
        self._rate_budget().release(lease)

    def _token(self, need: NeedToken) -> str:
        with self._token_lock:
            return self._drive(obtain_token(self._tokens, need, self.config, self._policy, time.monotonic, mask_secret))

    def _send_to_sink(self, request: ApiRequest, sink: ExportFileSink) -> Response | BaseException:
        """Send ``request`` without following redirects; stream a 2xx body into ``sink`` (the
        answer then has an empty body), read other answers whole (errors and redirects are small).
        """
        session = self.get_conn()
        url = request.url(self.config)
        query = urlsplit(url).query
        if request.absolute_url and query:
            mask_secret(query)  # a pre-signed URL's query is a credential: masked wherever Airflow logs it
        with self._in_flight:
            try:
                with session.request(
                    request.method,
                    url,
                    params=request.params or None,
                    headers=request.headers(),
                    timeout=self.config.timeout,
                    stream=True,
                    allow_redirects=False,
                ) as answer:
                    if not 200 <= answer.status_code < 300:
                        return Response(answer.status_code, answer.headers, answer.content)
                    sink.begin()
                    try:
                        for chunk in body_chunks(answer):
                            sink.write(chunk)
                    finally:
                        sink.end()
                    return Response(answer.status_code, answer.headers, b"")
            except requests.RequestException as err:
                return without_query(err, request)
            except urllib3.exceptions.HTTPError as err:  # from the raw stream of _body_chunks
                return without_query(requests.ConnectionError(str(err)), request)

    def _drive(self, flow: Flow[T], send: Sender | None = None) -> T:
        """Run a call flow with this hook's transport (``send`` replaces the plain sender).

        The slot a ``Pace`` takes is held, by its lease, until the ``Send`` that follows is
        answered (or fails), and given back then; also should the flow end in between.
        """
        send = send or self._send
        lease: str | None = None
        try:
            action = next(flow)
            while True:
                if isinstance(action, Send):
                    held, lease = lease, None
                    try:
                        outcome: Any = send(action.request)
                    finally:
                        if held is not None:
                            self._release(held)
                elif isinstance(action, Pace):
                    lease = self._pace()
                    outcome = None
                elif isinstance(action, Sleep):
                    time.sleep(action.seconds)
                    outcome = None
                else:
                    outcome = self._token(action)
                action = flow.send(outcome)
        except StopIteration as finished:
            return finished.value
        finally:
            if lease is not None:
                self._release(lease)

    def run(self, request: ApiRequest, parse: Callable[[bytes], T]) -> T:
        """Send one request with auth, rate limit and retries; return ``parse(body)``."""
        return self._drive(call_flow(request, parse, self._policy))

    # -- pagination ---------------------------------------------------------------------------

    def _fetch_page(
        self, path: str, filters: dict[str, str], offset: int, parse: Callable[[bytes], Page] = parse_page
    ) -> Page:
        sizes = self._page_sizes(path)
        return self._drive(page_flow(path, filters, offset, sizes, self._policy, parse, self.log, self.config.max_response_bytes))

    def _page_sizes(self, path: str) -> PageSizes:
        """The page sizes of ``path``: the connection's ``page_size``, or what the process learnt."""
        return page_sizes(self.config.base_url, path, self.config.page_size)

    def _read_pages(self, query: Query, parse: Callable[[bytes], Page]) -> Iterator[Page]:
        """Every page of ``query``, in offset order, parsed by ``parse`` in the page threads; another
        pass when ``meta.total`` moved. Pages are fetched ahead, ``max_concurrency`` at a time.
        """
        started = time.monotonic()
        sizes = self._page_sizes(query.path)
        received_pages = 0
        with ThreadPoolExecutor(max_workers=self.config.max_concurrency, thread_name_prefix="peopleai-page") as pool:
            for plan in read_passes(query.path, sizes.limit(), self.log):
                last_report = time.monotonic()
                pending: dict[int, Future[Page]] = {}
                try:
                    while not plan.done:
                        depth = sizes.in_flight(self.config.max_concurrency)
                        for offset in plan.next_offsets(pending.keys(), depth):
                            pending[offset] = pool.submit(self._fetch_page, query.path, query.filters, offset, parse)
                        offset = plan.offset
                        page = pending.pop(offset).result()
                        plan.receive(offset, page.count, page.total, next_limit=sizes.limit())
                        for stale in [o for o in pending if o < plan.offset]:
                            pending.pop(stale).cancel()
                        received_pages += 1
                        self.log.debug(
                            "People.ai %s offset %d: %d records (total %s).", query.path, offset, page.count, plan.total
                        )
                        now = time.monotonic()
                        if now - last_report >= PROGRESS_EVERY_SECONDS:
                            last_report = now
                            self._log_progress(query, plan, received_pages, now - started)
                        yield page
                finally:
                    for future in pending.values():
                        future.cancel()

    def _log_progress(self, query: Query, plan: PagePlan, pages: int, elapsed: float) -> None:
        received = plan.offset
        percent = f", {100.0 * min(received, plan.total) / plan.total:.0f}%" if plan.total else ""
        self.log.info(
            "People.ai %s: %d records in %d pages, %.0f records/s%s.",
            query.path, received, pages, received / max(elapsed, 1e-9), percent,
        )

    def _stream(self, query: Query) -> RecordStream:
        # Pages of dicts are large in memory: park no more than are in flight.
        return RecordStream(query, self._pages_of(query), read_ahead_depth=self.config.max_concurrency)

    def _batch_stream(self, query: Query, schema: pa.Schema, id_field: str) -> BatchStream:
        return BatchStream(
            query,
            self._pages_of(query),
            read_ahead_depth=batch_read_ahead_depth(self._page_sizes(query.path).limit()),
            schema=schema,
            id_field=id_field,
            arrow_parsing=self.config.arrow_parsing,
        )

    def _pages_of(self, query: Query) -> Callable[[Callable[[bytes], Page]], Iterator[Page]]:
        """The page reader a stream runs for ``query``."""
        return lambda parse: self._read_pages(query, parse)

    # -- public reads -------------------------------------------------------------------------

    def stream_activities(self, start: datetime, end: datetime, activity_type: str | None = None) -> RecordStream:
        """Pages of activities whose ``timestamp`` is in ``[start, end)``, for bulk consumers.

        Like :meth:`iter_activities`, but yields lists of records with timestamps left as epoch
        milliseconds (the cheap form for Arrow), and exposes the read's statistics.
        """
        return self._stream(activities_query(start, end, activity_type))

    def stream_participants(self, start: datetime, end: datetime) -> RecordStream:
        """Pages of participants whose ``activity_timestamp`` is in ``[start, end)`` (see :meth:`stream_activities`)."""
        return self._stream(participants_query(start, end))

    def stream_activity_batches(self, start: datetime, end: datetime, activity_type: str | None = None) -> BatchStream:
        """The records of :meth:`stream_activities` as ``pa.RecordBatch`` of ``ACTIVITY_SCHEMA``, one per
        :data:`~airflow_provider_activities.hooks._streams.BATCH_ROWS` records received (see :class:`BatchStream`).

        The fastest read, and the one the operators use: most pages go from the wire to Arrow
        columns without a Python object per value (see :class:`BatchStream`). Fields the schema
        does not know are kept in the ``_extra`` column and named in ``stream.unknown_fields``.

        :raises SchemaMismatchError: (while iterating) for a value that does not fit its column.
        """
        return self._batch_stream(activities_query(start, end, activity_type), ACTIVITY_SCHEMA, "uid")

    def stream_participant_batches(self, start: datetime, end: datetime) -> BatchStream:
        """The records of :meth:`stream_participants` as batches of ``PARTICIPANT_SCHEMA``
        (see :meth:`stream_activity_batches`).
        """
        return self._batch_stream(participants_query(start, end), PARTICIPANT_SCHEMA, "activity_uid")

    def iter_activities(self, start: datetime, end: datetime, activity_type: str | None = None) -> Iterator[dict[str, Any]]:
        """Activities whose ``timestamp`` lies in ``[start, end)``, each ``uid`` once.

        :param start: inclusive, timezone-aware.
        :param end: exclusive, timezone-aware, after ``start``, at most 2 years later.
        :param activity_type: ``None`` for all types, or ``"email"``, ``"call"``, ``"meeting"``.
        :return: plain dicts; timestamp fields as timezone-aware UTC ``datetime``.
        :raises ValueError: for bad input, before any HTTP call.
        """
        stream = self.stream_activities(start, end, activity_type)
        yield from self._as_datetimes(stream)
        self._log_dropped(stream)

    def iter_participants(self, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
        """Participants whose ``activity_timestamp`` lies in ``[start, end)``, each
        (``activity_uid``, ``id``) once (``email`` standing in for a missing ``id``).

        :param start: inclusive, timezone-aware.
        :param end: exclusive, timezone-aware, after ``start``.
        :return: plain dicts; timestamp fields as timezone-aware UTC ``datetime``.
        """
        stream = self.stream_participants(start, end)
        yield from self._as_datetimes(stream)
        self._log_dropped(stream)

    def _as_datetimes(self, stream: RecordStream) -> Iterator[dict[str, Any]]:
        fields = stream.query.bounds.timestamp_fields
        for page in stream:
            for record in page:
                for name in fields:
                    if name in record:
                        record[name] = ms_to_datetime(record[name])
                yield record

    def _log_dropped(self, stream: RecordStream) -> None:
        stats = stream.stats
        self.log.info(
            "People.ai %s: %d records kept of %d received in %d pages (%d duplicates, %d outside the interval dropped).",
            stream.path, stats.kept, stats.seen, stream.pages, stats.duplicates, stats.outside,
        )

    def count_ingested(
        self, since: datetime, until: datetime | None = None, activity_type: str | None = None
    ) -> IngestCount:
        """How many activities were ingested in ``[since, until)``, and the latest ingestion time.

        The ingestion time is ``ingested_at`` where the API sends it, else ``created_at``; it is
        checked client-side, since the API ignores filters it does not know.

        :param since: inclusive, timezone-aware.
        :param until: exclusive, timezone-aware, or ``None`` for no upper bound.
        :param activity_type: ``None`` for all types, or ``"email"``, ``"call"``, ``"meeting"``.
        """
        stream = self._stream(ingested_query(since, until, activity_type))
        latest: int | None = None
        for page in stream:
            latest = latest_ingested_ms(page, latest)
        return IngestCount(count=stream.stats.kept, latest_ingested_at=ms_to_datetime(latest))

    def test_connection(self) -> tuple[bool, str]:
        """Mint a token and read one activity; ``(True, message)`` or ``(False, reason)``.

        The caller (the UI's test button, ``POST /api/v2/connections/test``, ``airflow connections
        test``) waits for the answer, so the test runs with the short budget of
        :meth:`ClientConfig.for_connection_test
        <airflow_provider_activities.api.config.ClientConfig.for_connection_test>`: a closed port, an
        unknown host or rejected credentials answer within seconds, not after minutes of retries.
        """
        probe = type(self)(peopleai_conn_id=self.peopleai_conn_id)
        try:
            probe.config = self.config.for_connection_test()  # (a cached property: set, it is kept)
            page = probe.run(page_request(ACTIVITIES_PATH, {}, 0, 1, probe.config.max_response_bytes), parse_page)
        except Exception as err:  # the UI shows the reason; it never holds a secret
            return False, str(err)
        finally:
            probe.close()
        total = f"{page.total} activities visible" if page.total is not None else "activities readable"
        return True, f"Connected to People.ai at {self.config.base_url}: token accepted, {total}."

    # -- bulk export (Raw Activity Data API) ------------------------------------------------------

    def create_export_job(
        self,
        start_date: date | datetime | str,
        end_date: date | datetime | str,
        export_type: str,
        activity_type: str = "all",
    ) -> ExportJob:
        """Start an export job of the days ``[start_date, end_date]`` (both inclusive, UTC).

        :param start_date: first day: a ``date``, ``"YYYY-MM-DD"``, or an aware UTC-midnight ``datetime``.
        :param end_date: last day, the same forms; at most 365 days after ``start_date`` for a
            snapshot, 14 for a delta (both ends counted).
        :param export_type: ``"snapshot"`` (by activity date) or ``"delta"`` (by processing date).
        :param activity_type: ``"all"``, ``"email"``, ``"meeting"`` or ``"call"``.
        :return: the job (``Queued`` as a rule).
        :raises ValueError: for bad input, before any HTTP call.
        :raises PeopleAIAPIError: when the API refuses it (a 429 or "too many jobs" answer after the
            retries: see :func:`~airflow_provider_activities.api.export.is_capacity_error`).
        """
        export_type = check_export_type(export_type)
        activity_type = check_export_activity_type(activity_type)
        first, last = check_export_range(start_date, end_date, export_type)
        return self.start_export_job(ExportJobSpec(first, last, export_type, activity_type))

    def start_export_job(self, spec: ExportJobSpec) -> ExportJob:
        """Start the export job ``spec`` describes (see :meth:`create_export_job`)."""
        job = self.run(create_job_request(self.config, spec), parse_created_job)
        self.log.info(
            "People.ai export job %s created: %s %s of %s to %s (%s).",
            job.job_id, spec.export_type, spec.activity_type, spec.start_date, spec.end_date, job.state,
        )
        return job

    def get_export_job(self, job_id: str) -> ExportJob:
        """The current state and parameters of an export job.

        :raises ValueError: for a malformed job id, before any HTTP call.
        :raises PeopleAIAPIError: e.g. 404 once the API no longer knows the job.
        """
        return self.run(job_status_request(self.config, job_id), parse_export_job)

    def download_export(self, job_id: str, path: str | os.PathLike[str], check_gzip: bool = True) -> ExportFile:
        """Download a completed job's data into the local file ``path``, as sent (gzip or not).

        The data endpoint may answer the JSON Lines or redirect to a file URL. Redirects are
        followed to ``https`` URLs (or ``http`` on loopback) only; the bearer token is sent to the
        API's own origin only, never to another host (a pre-signed file URL needs none). The body
        is streamed to disk chunk by chunk; a gzip body (recognised by its magic bytes, whatever
        the headers say; a ``Content-Encoding: gzip`` body is kept as the gzip it was sent as) is
        checked to be complete while it arrives. A dropped connection, a 5xx or
        a truncated gzip stream restarts the download, with the usual retries and backoff.

        :param check_gzip: inflate a gzip body while it arrives to check it. ``False`` leaves the
            check to the reader of the file (:func:`~airflow_provider_activities.export.files.iter_export_blocks`
            raises :class:`~airflow_provider_activities.export.files.ExportStreamError`), which
            then downloads again: the export operator does, to spare a whole inflate.
        :return: the file, whether it is gzip, its size and the size of the JSON Lines it holds
            (``None`` for a gzip file not checked).
        """
        target = os.fspath(path)
        sink = ExportFileSink(target, inflate=check_gzip)
        started = time.monotonic()
        try:
            found = self._drive(
                download_flow(job_data_request(self.config, job_id), self.config, self._policy, sink.result),
                send=lambda request: self._send_to_sink(request, sink),
            )
        finally:
            sink.close()
        seconds = time.monotonic() - started
        self.log.info(
            "People.ai export job %s: downloaded %d bytes (%s, %s bytes of JSON Lines) in %.1f s.",
            job_id, found.bytes, "gzip" if found.compressed else "plain",
            "unchecked" if found.content_bytes is None else found.content_bytes, seconds,
        )
        return found

    def iter_export_records(self, job_id: str, directory: str | None = None) -> Iterator[dict[str, Any]]:
        """Every record of a completed job's data, in file order, as the API wrote it.

        The data is first streamed to a temporary file (see :meth:`download_export`), then read one
        line at a time, so memory does not grow with the file; the file is removed when the
        iteration ends or is closed. Records are plain dicts (timestamps as sent, e.g.
        ``"2026-11-01T03:04:05Z"``); nothing is filtered or de-duplicated here.

        :param directory: where the temporary file goes (the system's temporary directory by default).
        :raises ValueError: for a malformed job id, at the call (before any HTTP call).
        :raises ExportFileError: for a line that is not a JSON object.
        """
        check_job_id(job_id)
        return self._iter_export_records(job_id, directory)

    def _iter_export_records(self, job_id: str, directory: str | None) -> Iterator[dict[str, Any]]:
        folder = tempfile.mkdtemp(prefix="peopleai-export-", dir=directory)
        try:
            found = self.download_export(job_id, os.path.join(folder, "data.jsonl"))
            yield from iter_export_lines(found.path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
