"""PeopleAIHook: the People.ai Activity API over ``requests``.

What the hook does for every call: OAuth2 client-credentials auth with a cached token that is
refreshed before it expires (and minted again once on a 401); a rate limit of
``requests_per_second`` per API key across all hooks of the process (and ``max_concurrency``
requests in flight per hook); retries with backoff
for 429, 5xx, dropped connections, timeouts and invalid bodies; offset/limit pagination that
fetches pages ahead concurrently when ``meta.total`` is known and yields them in order; and
client-side bounds and de-duplication of every record. The rules live in
:mod:`airflow_provider_activities.api`, shared with the async trigger client.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from typing import Any, Callable, Generator, Iterator, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import requests
import urllib3

from airflow_provider_activities import CONN_TYPE, DEFAULT_CONN_ID, get_provider_info
from airflow_provider_activities.api.arrow_pages import ArrowPageParser
from airflow_provider_activities.api.config import ClientConfig, EnvironmentProxies, config_from_connection
from airflow_provider_activities.api.export import (
    ExportFile,
    ExportFileSink,
    ExportJob,
    ExportJobSpec,
    check_export_activity_type,
    check_export_range,
    check_export_type,
    check_job_id,
    create_job_request,
    download_flow,
    iter_export_lines,
    job_data_request,
    job_status_request,
    parse_created_job,
    parse_export_job,
)
from airflow_provider_activities.api.flow import Flow, NeedToken, Pace, Response, Send, Sleep, call_flow, token_flow
from airflow_provider_activities.api.pagination import PagePlan
from airflow_provider_activities.api.policy import (
    RetryPolicy,
    SharedRateLimiter,
    TokenCache,
    shared_rate_limiter,
    shared_token_cache,
)
from airflow_provider_activities.api.protocol import ACTIVITIES_PATH, ApiRequest, Page, page_request, parse_page
from airflow_provider_activities.api.queries import (
    Query,
    activities_query,
    ingested_query,
    latest_ingested_ms,
    participants_query,
)
from airflow_provider_activities.api.records import FilterStats, ms_to_datetime
from airflow_provider_activities.compat import BaseHook, mask_secret
from airflow_provider_activities.parquet import RecordConverter, usable_cpus
from airflow_provider_activities.schemas import ACTIVITY_SCHEMA, PARTICIPANT_SCHEMA

T = TypeVar("T")
Sender = Callable[[ApiRequest], "Response | BaseException"]

PROGRESS_EVERY_SECONDS = 10.0
DOWNLOAD_CHUNK_BYTES = 1 << 20
READ_CHUNK_BYTES = 1 << 20  # a page (about 800 KB at 1000 records) in one or two reads
MAX_PASSES = 3  # reads of one query when meta.total keeps moving under it
BATCH_ROWS = 32_768
"""Records received (in whole pages) per batch a :class:`BatchStream` yields."""
_END = object()


def read_ahead(items: Iterator[T], depth: int, name: str = "peopleai-read-ahead") -> Iterator[T]:
    """``items``, produced by a thread of their own up to ``depth`` items ahead of the consumer.

    The hook's page generator schedules the next requests only when it is asked for a page, so
    while the consumer converts and writes a batch no new request would start. Run in its own
    thread, it keeps ``max_concurrency`` requests in flight meanwhile and parks up to ``depth``
    finished pages. An exception in the producer is raised to the consumer. Closing this
    generator (the streams do when their loop ends, fails or is left) stops the producer at its
    next item; it closes ``items`` in its own thread (cancelling what it had scheduled, waiting
    for the requests in flight), and the close waits for it.

    :param items: a generator (it is closed by the producer thread).
    :param depth: items parked between producer and consumer.
    :param name: the producer thread's name.
    """
    handoff: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: Any, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                handoff.put((item, error), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            put(_END, err)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        if threading.current_thread() is not producer:  # (garbage collection may close this in the producer)
            producer.join()


def _body_chunks(answer: requests.Response) -> Iterator[bytes]:
    """The body of a download, in chunks, as it crossed the wire when it is ``Content-Encoding:
    gzip``: the sink inflates it itself and so sees a gzip stream cut short, which urllib3's
    decoder lets pass silently (a truncated body would then look complete up to its last whole
    line). Other encodings are undone by the transport."""
    encoding = (answer.headers.get("Content-Encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return answer.raw.stream(DOWNLOAD_CHUNK_BYTES, decode_content=False)
    return answer.iter_content(DOWNLOAD_CHUNK_BYTES)


def _without_query(err: requests.RequestException, request: ApiRequest) -> BaseException:
    """``err`` with the query string of a pre-signed URL (a credential: ``Signature=...``) cut
    out of its message: ``requests`` names the whole URL in connection errors, and the message
    ends up in logs and in the final error."""
    url = request.absolute_url
    query = urlsplit(url).query if url else ""
    text = str(err)
    if not query or query not in text:
        return err
    try:
        clean = type(err)(text.replace(query, "<signed query omitted>"))
    except Exception:  # an exception class with another constructor
        clean = requests.ConnectionError(text.replace(query, "<signed query omitted>"))
    return clean


@dataclass(frozen=True)
class IngestCount:
    """The answer of :meth:`PeopleAIHook.count_ingested`.

    :param count: activities ingested in the window (each ``uid`` once).
    :param latest_ingested_at: the latest ingestion time seen, or ``None`` when none was.
    """

    count: int
    latest_ingested_at: datetime | None


@dataclass
class RecordStream:
    """Pages of records from one read, bounded and de-duplicated, timestamps as epoch ms.

    Iterate it once for lists of records; afterwards :attr:`stats`, :attr:`pages` and
    :attr:`total` tell what the read saw.

    :param path: the endpoint read.
    :param filters: the filters sent with every page.
    """

    path: str
    filters: dict[str, str]
    _pages: Iterator[Page] = field(repr=False)
    _query: Query = field(repr=False)
    pages: int = 0
    total: int | None = None

    @property
    def stats(self) -> FilterStats:
        """Records seen, kept, dropped as duplicates and dropped as outside the interval."""
        return self._query.record_filter.stats

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        record_filter = self._query.record_filter
        try:
            for page in self._pages:
                kept = record_filter.apply(page.records)
                if kept:
                    yield kept
        finally:
            self.close()

    def close(self) -> None:
        """Stop the read: the requests in flight are waited for, no new one starts (iterating to
        the end, or leaving the loop early, closes the stream too)."""
        close = getattr(self._pages, "close", None)
        if close is not None:
            close()

    def _parse(self, body: bytes) -> Page:
        """A page body as the stream wants it (called in a page thread)."""
        return parse_page(body)


@dataclass
class BatchStream(RecordStream):
    """Like :class:`RecordStream`, but yields ``pa.RecordBatch`` of :attr:`schema`.

    Pages are parsed straight into Arrow columns in the page threads where that gives exactly
    the Python parser's answer (see :mod:`airflow_provider_activities.api.arrow_pages`; the
    connection extra ``arrow_parsing``), and through ``json.loads`` and
    :class:`~airflow_provider_activities.parquet.RecordConverter` otherwise (bounded to the
    interval before they are converted). Consecutive Arrow pages are bounded and de-duplicated
    together; de-duplication is in Arrow for both kinds of pages (hashes in numpy, see
    :mod:`airflow_provider_activities.api.dedup`). The records and their order are the same as
    page by page. A batch is yielded each time :data:`BATCH_ROWS` records have been received
    (and at the end), whichever way its pages were parsed: the consumer gets the same batches,
    cut at the same places, with Arrow parsing on or off, so the Parquet files written from
    them are the same bytes. :attr:`arrow_pages` counts the pages Arrow took.

    :param schema: the record schema of the batches (``ACTIVITY_SCHEMA``, ``PARTICIPANT_SCHEMA``).
    :param id_field: the record identity named in schema errors (``uid``, ``activity_uid``).
    :param arrow_parsing: try Arrow's JSON reader first.
    """

    schema: pa.Schema = field(default=None, repr=False)  # type: ignore[assignment]
    id_field: str = "uid"
    arrow_parsing: bool = True
    arrow_pages: int = 0

    def __post_init__(self) -> None:
        self._converter = RecordConverter(self.schema, id_field=self.id_field)
        self._arrow = ArrowPageParser(self.schema, self._query.record_filter.timestamp_fields)
        self._parsing = threading.BoundedSemaphore(usable_cpus())

    @property
    def unknown_fields(self) -> set[str]:
        """Names of the fields received that the schema does not know (kept in ``_extra``)."""
        return self._converter.unknown_fields

    def __iter__(self) -> Iterator[pa.RecordBatch]:  # type: ignore[override]
        record_filter = self._query.record_filter
        kept: list[pa.RecordBatch] = []  # the group's new records inside the interval, in page order
        parsed: list[pa.RecordBatch] = []  # Arrow pages not yet bounded and de-duplicated
        received = 0
        try:
            for page in self._pages:
                if page.batch is not None:
                    self.arrow_pages += 1
                    parsed.append(page.batch)
                else:  # the Arrow pages before it first, to keep the page order
                    kept += self._filtered(parsed)
                    parsed = []
                    # Bounded before it is converted: a record outside the interval is dropped
                    # whatever its values, as on the dict path.
                    inside = self._converter.to_batch(record_filter.bound(page.records))
                    kept.append(record_filter.dedupe_batch(inside))
                received += page.count
                if received >= BATCH_ROWS:
                    kept += self._filtered(parsed)
                    yield from self._non_empty(kept)
                    kept, parsed, received = [], [], 0
            kept += self._filtered(parsed)
            yield from self._non_empty(kept)
        finally:
            self.close()

    def _filtered(self, parsed: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        """Arrow pages bounded and de-duplicated together: one batch, or none for no pages."""
        return [self._query.record_filter.apply_batch(_one_batch(parsed, self.schema))] if parsed else []

    def _non_empty(self, kept: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """``kept`` as one batch, unless it holds no rows."""
        batch = _one_batch(kept, self.schema)
        if batch.num_rows:
            yield batch

    def _parse(self, body: bytes) -> Page:
        # At most one parse per CPU at a time: more requests than CPUs may be in flight (they wait
        # on the network), but more parses than CPUs only thrash the caches (measured: 30% more CPU
        # per page with 10 parses on 2 CPUs).
        with self._parsing:
            return self._arrow(body) if self.arrow_parsing else parse_page(body)


def _one_batch(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch:
    """``batches`` (of ``schema``) as one batch; an empty one for none."""
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=schema)
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


def _read_capped(answer: requests.Response, cap: int) -> bytes:
    """The body, read in chunks; reading stops once it passes ``cap`` bytes (the call flow then
    refuses the answer), so an endless or oversized body never fills memory."""
    chunks: list[bytes] = []
    size = 0
    for chunk in answer.iter_content(chunk_size=READ_CHUNK_BYTES):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            break
    return b"".join(chunks)


class _Session(requests.Session):
    """A ``requests.Session`` that reads the environment once per origin, not on every request.

    With ``trust_env`` on, ``requests`` scans every environment variable and looks for
    ``~/.netrc`` on each request: a third of the client's CPU for a page. Here ``trust_env`` is
    off and the same settings come from a per-origin cache: the proxies of ``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` (for redirects too), and the CA bundle of
    ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` while verification is on (``verify=False``
    wins, unlike in ``requests``). ``~/.netrc`` is not read: its credentials would replace the
    hook's bearer token.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self.environment_proxies = EnvironmentProxies()
        self._ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        proxies = {**self.environment_proxies.for_url(url), **(proxies or {})}
        if self._ca_bundle and (verify is True or (verify is None and self.verify is True)):
            verify = self._ca_bundle
        return super().merge_environment_settings(url, proxies, stream, verify, cert)

    def rebuild_proxies(self, prepared_request: Any, proxies: Any) -> dict[str, str]:
        merged = dict(proxies or {})
        for scheme, proxy in self.environment_proxies.for_url(prepared_request.url).items():
            merged.setdefault(scheme, proxy)
        return super().rebuild_proxies(prepared_request, merged)


class PeopleAIHook(BaseHook):
    """Talks to the People.ai (Backstory) Activity API.

    :param peopleai_conn_id: the Airflow connection (type ``peopleai``): login is the API key,
        password the API secret, host the base URL (``https://api.people.ai`` when empty);
        extras ``token_path``, ``page_size``, ``requests_per_second``, ``max_concurrency``,
        ``timeout``, ``max_retries``, ``backoff_base``, ``backoff_max``, ``verify_ssl``, and for the
        bulk export ``export_jobs_path``, ``export_status_path``, ``export_data_path``.
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(peopleai_conn_id={self.peopleai_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form behaviour (also declared in ``get_provider_info()``)."""
        return get_provider_info()["connection-types"][0]["ui-field-behaviour"]

    # -- settings and transport -------------------------------------------------------------

    @cached_property
    def config(self) -> ClientConfig:
        """The connection's validated settings (read once per hook)."""
        config = config_from_connection(self.peopleai_conn_id, self.get_connection(self.peopleai_conn_id))
        if config.unknown_extras:
            self.log.warning("Connection %r has extras this provider ignores: %s", self.peopleai_conn_id, ", ".join(config.unknown_extras))
        if not config.verify_ssl:
            self.log.warning("Connection %r turns TLS certificate verification off (verify_ssl=false).", self.peopleai_conn_id)
        return config

    @cached_property
    def _policy(self) -> RetryPolicy:
        return RetryPolicy(self.config.max_retries, self.config.backoff_base, self.config.backoff_max)

    @cached_property
    def _limiter(self) -> SharedRateLimiter:
        """The process's limiter for this connection's API key, shared with every other hook on it."""
        config = self.config
        return shared_rate_limiter(config.base_url, config.client_id, config.requests_per_second)

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
        ``~/.netrc`` (see :class:`_Session`)."""
        if self._session is None:
            session = _Session()
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=1, pool_maxsize=self.config.max_concurrency, max_retries=0
            )
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.verify = self.config.verify_ssl
            self._session = session
        return self._session

    def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            self._session.close()
            self._session = None

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
                    return Response(answer.status_code, answer.headers, _read_capped(answer, request.body_cap()))
            except requests.RequestException as err:
                return err
            finally:
                self._release()

    def _pace(self) -> None:
        wait = self._limiter.acquire(time.monotonic)
        if wait > 0:
            time.sleep(wait)

    def _release(self) -> None:
        self._limiter.release(time.monotonic())

    def _token(self, need: NeedToken) -> str:
        with self._token_lock:
            if need.stale is not None:
                self._tokens.invalidate(need.stale)
            token = self._tokens.get(time.monotonic())
            if token is None:
                asked_at = time.monotonic()
                minted = self._drive(token_flow(self.config, self._policy))
                mask_secret(minted.access_token)
                self._tokens.store(minted.access_token, minted.expires_in, asked_at)
                token = minted.access_token
            return token

    def _send_to_sink(self, request: ApiRequest, sink: ExportFileSink) -> Response | BaseException:
        """Send ``request`` without following redirects; stream a 2xx body into ``sink`` (the
        answer then has an empty body), read other answers whole (errors and redirects are small)."""
        session = self.get_conn()
        with self._in_flight:
            try:
                with session.request(
                    request.method,
                    request.url(self.config),
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
                        for chunk in _body_chunks(answer):
                            sink.write(chunk)
                    finally:
                        sink.end()
                    return Response(answer.status_code, answer.headers, b"")
            except requests.RequestException as err:
                return _without_query(err, request)
            except urllib3.exceptions.HTTPError as err:  # from the raw stream of _body_chunks
                return _without_query(requests.ConnectionError(str(err)), request)
            finally:
                self._release()

    def _drive(self, flow: Flow[T], send: Sender | None = None) -> T:
        """Run a call flow with this hook's transport (``send`` replaces the plain sender)."""
        send = send or self._send
        try:
            action = next(flow)
            while True:
                if isinstance(action, Send):
                    outcome: Any = send(action.request)
                elif isinstance(action, Pace):
                    self._pace()
                    outcome = None
                elif isinstance(action, Sleep):
                    time.sleep(action.seconds)
                    outcome = None
                else:
                    outcome = self._token(action)
                action = flow.send(outcome)
        except StopIteration as finished:
            return finished.value

    def run(self, request: ApiRequest, parse: Callable[[bytes], T]) -> T:
        """Send one request with auth, rate limit and retries; return ``parse(body)``."""
        return self._drive(call_flow(request, parse, self._policy))

    # -- pagination ---------------------------------------------------------------------------

    def _fetch_page(self, path: str, filters: dict[str, str], offset: int, parse: Callable[[bytes], Page] = parse_page) -> Page:
        return self.run(page_request(path, filters, offset, self.config.page_size, self.config.max_response_bytes), parse)

    def _iter_pages(self, query: Query, stream: RecordStream) -> Iterator[Page]:
        """Every page of ``query``, in offset order; another pass when ``meta.total`` moved."""
        started = time.monotonic()
        depth = self.config.max_concurrency
        with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="peopleai-page") as pool:
            for number in range(1, MAX_PASSES + 1):
                plan = yield from self._read_pass(query, stream, pool, depth, started)
                if not plan.total_changed:
                    return
                self.log.warning(
                    "People.ai %s: meta.total moved from %s to %s while paging (records inserted or deleted); "
                    "%s to pick up records the shift may have skipped.",
                    query.path, plan.first_total, plan.total,
                    "reading again" if number < MAX_PASSES else f"gave up after {MAX_PASSES} passes",
                )

    def _read_pass(
        self, query: Query, stream: RecordStream, pool: ThreadPoolExecutor, depth: int, started: float
    ) -> Generator[Page, None, PagePlan]:
        plan = PagePlan(limit=self.config.page_size)
        last_report = time.monotonic()
        pending: dict[int, Future[Page]] = {}
        try:
            while not plan.done:
                for offset in plan.next_offsets(pending.keys(), depth):
                    pending[offset] = pool.submit(self._fetch_page, query.path, query.filters, offset, stream._parse)
                offset = plan.offset
                page = pending.pop(offset).result()
                plan.receive(offset, page.count, page.total)
                for stale in [o for o in pending if o < plan.offset]:
                    pending.pop(stale).cancel()
                stream.pages += 1
                stream.total = plan.total
                self.log.debug("People.ai %s offset %d: %d records (total %s).", query.path, offset, page.count, plan.total)
                now = time.monotonic()
                if now - last_report >= PROGRESS_EVERY_SECONDS:
                    last_report = now
                    self._log_progress(query, stream, plan, now - started)
                yield page
        finally:
            for future in pending.values():
                future.cancel()
        return plan

    def _log_progress(self, query: Query, stream: RecordStream, plan: PagePlan, elapsed: float) -> None:
        received = plan.offset
        percent = f", {100.0 * min(received, plan.total) / plan.total:.0f}%" if plan.total else ""
        self.log.info(
            "People.ai %s: %d records in %d pages, %.0f records/s%s.",
            query.path, received, stream.pages, received / max(elapsed, 1e-9), percent,
        )

    def _stream(self, query: Query) -> RecordStream:
        stream = RecordStream(path=query.path, filters=dict(query.filters), _pages=iter(()), _query=query)
        # Pages of dicts take about 1.7 MB per 1000 records: park no more than are in flight.
        stream._pages = read_ahead(self._iter_pages(query, stream), self.config.max_concurrency)
        return stream

    def _batch_stream(self, query: Query, schema: pa.Schema, id_field: str) -> BatchStream:
        stream = BatchStream(
            path=query.path,
            filters=dict(query.filters),
            _pages=iter(()),
            _query=query,
            schema=schema,
            id_field=id_field,
            arrow_parsing=self.config.arrow_parsing,
        )
        # One batch's worth of pages parked (about 11 MB of activities parsed into Arrow), so that
        # fetching goes on while the consumer converts and writes the previous batch.
        stream._pages = read_ahead(self._iter_pages(query, stream), max(2, -(-BATCH_ROWS // self.config.page_size)))
        return stream

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
        :data:`BATCH_ROWS` records received (see :class:`BatchStream`).

        The fastest read, and the one the operators use: most pages go from the wire to Arrow
        columns without a Python object per value (see :class:`BatchStream`). Fields the schema
        does not know are kept in the ``_extra`` column and named in ``stream.unknown_fields``.

        :raises SchemaMismatchError: (while iterating) for a value that does not fit its column.
        """
        return self._batch_stream(activities_query(start, end, activity_type), ACTIVITY_SCHEMA, "uid")

    def stream_participant_batches(self, start: datetime, end: datetime) -> BatchStream:
        """The records of :meth:`stream_participants` as batches of ``PARTICIPANT_SCHEMA`` (see :meth:`stream_activity_batches`)."""
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
        fields = stream._query.record_filter.timestamp_fields
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
        """Mint a token and read one activity; ``(True, message)`` or ``(False, reason)``."""
        try:
            page = self.run(page_request(ACTIVITIES_PATH, {}, 0, 1, self.config.max_response_bytes), parse_page)
        except Exception as err:  # the UI shows the reason; it never holds a secret
            return False, str(err)
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

    def download_export(self, job_id: str, path: str | os.PathLike[str]) -> ExportFile:
        """Download a completed job's data into the local file ``path``, as sent (gzip or not).

        The data endpoint may answer the JSON Lines or redirect to a file URL. Redirects are
        followed to ``https`` URLs (or ``http`` on loopback) only; the bearer token is sent to the
        API's own origin only, never to another host (a pre-signed file URL needs none). The body
        is streamed to disk chunk by chunk; a gzip body (recognised by its magic bytes, whatever
        the headers say; a ``Content-Encoding: gzip`` body is kept as the gzip it was sent as) is
        checked to be complete while it arrives. A dropped connection, a 5xx or
        a truncated gzip stream restarts the download, with the usual retries and backoff.

        :return: the file, whether it is gzip, its size and the size of the JSON Lines it holds.
        """
        target = os.fspath(path)
        sink = ExportFileSink(target)
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
            "People.ai export job %s: downloaded %d bytes (%s, %d bytes of JSON Lines) in %.1f s.",
            job_id, found.bytes, "gzip" if found.compressed else "plain", found.content_bytes, seconds,
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
