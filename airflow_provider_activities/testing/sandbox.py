"""A local imitation of the People.ai Activity API, for demos, tests and benchmarks.

:class:`Sandbox` runs a real HTTP/1.1 server on ``127.0.0.1`` (a free port by default) that
serves deterministic synthetic activities and participants (see :mod:`._data`), with the
vendor's token endpoint, envelopes, errors, rate limits, and many injectable faults
(:class:`~airflow_provider_activities.testing._faults.Faults`, as ``sandbox.faults``)::

    from datetime import datetime, timezone
    from airflow_provider_activities.testing.sandbox import Sandbox

    with Sandbox(seed=1, activities=5000, rate_limit=None) as sandbox:
        os.environ["AIRFLOW_CONN_PEOPLEAI_DEFAULT"] = sandbox.connection_json()
        sandbox.faults.fail_next(2, status=503)
        ...  # run the DAG or the hook
        expected = sandbox.expected_activities(datetime(2026, 11, 2, tzinfo=timezone.utc),
                                               datetime(2026, 11, 3, tzinfo=timezone.utc))

From a shell: ``python -m airflow_provider_activities.testing.sandbox --port 8765`` prints the
base URL, the credentials and an ``AIRFLOW_CONN_PEOPLEAI_DEFAULT=...`` line, and serves until
SIGINT or SIGTERM.

Endpoints: ``POST /auth/v1/tokens`` (form-encoded client credentials) and ``GET`` on
``/v0/public/activities``, ``/v0/public/activities/{email,call,meeting}`` and
``/v0/public/activities/participants`` with ``offset``, ``limit``, ``from``, ``to``,
``ingested-from`` and ``ingested-to`` (days, both inclusive; other parameters are ignored,
like the real API). The server holds no wall-clock state in its data: the same seed serves
the same bytes.

Bulk export (Raw Activity Data): ``POST /pull/v1/export/activities/jobs``, ``GET
/pull/v1/export/activities/jobs/{job_id}`` and ``.../{job_id}/data``, which redirects to a
pre-signed ``/pull/v1/export/files/{job_id}.jsonl.gz`` on this server or on a second loopback
"file host"; see :mod:`._export` and ``sandbox.export`` (its knobs, jobs and ground truth), and
:meth:`Sandbox.expected_export_records`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from airflow_provider_activities.api.policy import forget_endpoint
from airflow_provider_activities.testing._data import ACTIVITY_TYPES, DAY_MS, MIN_LAG_MS, Generator, to_ms
from airflow_provider_activities.testing._export import EXPORT_FILES_PATH, ExportService
from airflow_provider_activities.testing._faults import KNOBS, Failure, Faults
from airflow_provider_activities.testing._store import Filter, Item, Store, View

__all__ = ["Faults", "KNOBS", "RequestRecord", "Sandbox", "TIMESTAMP_FORMATS", "main"]

UTC = timezone.utc
TOKEN_PATH = "/auth/v1/tokens"
ACTIVITIES_PATH = "/v0/public/activities"
PARTICIPANTS_PATH = "/v0/public/activities/participants"
EXPORT_JOBS_PATH = "/pull/v1/export/activities/jobs"
TIMESTAMP_FORMATS: tuple[str, ...] = ("epoch_ms", "iso", "mixed")
ACTIVITY_TIME_FIELDS: tuple[str, ...] = ("timestamp", "created_at", "meeting_start_time", "meeting_end_time")
PARTICIPANT_TIME_FIELDS: tuple[str, ...] = ("activity_timestamp", "created_at")

_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MESSAGES = {
    400: "Bad Request",
    401: "Invalid or expired token",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_PAGE_CACHE_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class RequestRecord:
    """One request the sandbox answered, as kept in :attr:`Sandbox.requests`.

    :param time: ``time.monotonic()`` when the request was read.
    :param method: the HTTP method.
    :param path: the path, without the query string.
    :param query: the query parameters (first value of each).
    :param status: the status answered (200 also for a dropped or broken body).
    :param fault: the fault knob or limit that shaped the answer (``"rate_limit"``,
        ``"concurrency"``, ``"fail_next"``, ``"drop_connection"``, ...), or ``None``.
    """

    time: float
    method: str
    path: str
    query: dict[str, str]
    status: int
    fault: str | None = None


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: bytes
    received: float


@dataclass
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None


@dataclass
class _Token:
    expires_at: float
    uses: int = 0
    revoked: bool = False


@dataclass(frozen=True)
class _Route:
    """One endpoint: ``handler(request) -> response`` for ``method`` on ``path``.

    :param prefix: match every path below ``path`` too (for ids in the path).
    :param auth: the bearer token is checked before the handler runs.
    :param token: a token endpoint (token faults apply, data faults only with ``include_token``).
    """

    method: str
    path: str
    handler: Callable[[_Request], _Response]
    prefix: bool = False
    auth: bool = True
    token: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, sandbox: Sandbox, port: int, host: str = "127.0.0.1", file_host: bool = False) -> None:
        self.sandbox = sandbox
        self.file_host = file_host
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (getfqdn), which can be slow.
        TCPServer.server_bind(self)
        self.server_name = self.server_address[0]
        self.server_port = self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client went away or timed out; nothing to report
        self.sandbox._errors.append(traceback.format_exc())
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "PeopleAISandbox/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def version_string(self) -> str:
        """The ``Server`` header."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Silence the default per-request stderr log (see :attr:`Sandbox.requests`)."""

    def _dispatch(self) -> None:
        self.server.sandbox._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _dispatch


class Sandbox:
    """A People.ai Activity API imitation on ``127.0.0.1``; use as a context manager or ``start()``/``stop()``.

    :param seed: seeds all data (any integer); the same seed serves the same bytes.
    :param activities: how many generated activities (millions are fine: records are made on demand).
    :param start: the first instant of the data (aware; a naive datetime is taken as UTC).
    :param days: how many days the activities spread over (weekdays and business hours busier).
    :param client_id: the API key the token endpoint accepts.
    :param client_secret: the API secret the token endpoint accepts.
    :param port: the TCP port; 0 picks a free one (see :attr:`port`, :attr:`base_url`).
    :param rate_limit: the most requests (token requests included) accepted in any sliding
        one-second window; more answer 429 without ``Retry-After``. ``None`` disables rate and
        concurrency limits.
    :param max_concurrency: the most requests in flight at once; more answer 429 (only when
        ``rate_limit`` is set).
    :param token_ttl: lifetime of an access token, in seconds (``expires_in``).
    :param timestamp_format: how timestamps are served: ``"epoch_ms"`` (ints), ``"iso"``
        (``2026-11-01T03:04:05.123Z``) or ``"mixed"`` (by record: epoch ms, ``Z`` or ``+00:00``).
    :param latency: seconds every request is delayed by (more with ``faults.set_latency``).
    :param max_page_size: the largest ``limit`` accepted; above it answers 400.
    """

    def __init__(
        self,
        seed: int = 0,
        activities: int = 3000,
        start: datetime = datetime(2026, 11, 1, tzinfo=UTC),
        days: float = 7,
        client_id: str = "sandbox-client-id",
        client_secret: str = "sandbox-client-secret",
        port: int = 0,
        rate_limit: float | None = 5.0,
        max_concurrency: int | None = 10,
        token_ttl: float = 7200,
        timestamp_format: str = "epoch_ms",
        latency: float = 0.0,
        max_page_size: int = 100_000,
    ) -> None:
        if timestamp_format not in TIMESTAMP_FORMATS:
            raise ValueError(f"timestamp_format must be one of {TIMESTAMP_FORMATS}, got {timestamp_format!r}")
        if rate_limit is not None and rate_limit < 1:
            raise ValueError(f"rate_limit must be >= 1 (requests per sliding second) or None, got {rate_limit}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 or None, got {max_concurrency}")
        if max_page_size < 1:
            raise ValueError(f"max_page_size must be >= 1, got {max_page_size}")
        self.seed = seed
        """The data seed."""
        self._client_id = client_id
        self._client_secret = client_secret
        self._requested_port = port
        self.rate_limit: float | None = rate_limit
        """Requests accepted per sliding second (``None``: no rate or concurrency limit); settable."""
        self.max_concurrency: int | None = max_concurrency
        """Requests accepted in flight at once (``None``: unlimited); settable."""
        self.token_ttl: float = token_ttl
        """Lifetime of new tokens, in seconds; settable."""
        self.timestamp_format = timestamp_format
        """How timestamps are served (``epoch_ms``, ``iso`` or ``mixed``); settable."""
        self.latency: float = latency
        """Seconds every request is delayed by; settable."""
        self.max_page_size = max_page_size
        """The largest ``limit`` accepted; settable."""
        self.faults = Faults(seed)
        """The fault knobs (see :class:`~airflow_provider_activities.testing._faults.Faults`)."""
        self._gen = Generator(seed, activities, start, days)
        self._store = Store(self._gen)
        self._lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._stats: Counter[str] = Counter()
        self._errors: list[str] = []
        self._window: deque[float] = deque()
        self._in_flight = 0
        self._tokens: dict[str, _Token] = {}
        self._token_counter = 0
        self._trace_counter = 0
        self._page_cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._page_cache_bytes = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._file_server: _Server | None = None
        self._file_thread: threading.Thread | None = None
        self.export = ExportService(self._gen, self._store, client_secret)
        """The bulk export API: its knobs (``export.settings``), jobs and files (see :mod:`._export`)."""
        self._routes: list[_Route] = [
            _Route("POST", TOKEN_PATH, self._token_endpoint, auth=False, token=True),
            _Route("GET", ACTIVITIES_PATH, self._data_endpoint),
            *(_Route("GET", f"{ACTIVITIES_PATH}/{kind}", self._data_endpoint) for kind in ACTIVITY_TYPES),
            _Route("GET", PARTICIPANTS_PATH, self._data_endpoint),
            # Bulk export (Raw Activity Data): jobs, their status and data, and the signed files.
            _Route("POST", EXPORT_JOBS_PATH, self._export_create),
            _Route("GET", EXPORT_JOBS_PATH, self._export_status_or_data, prefix=True),
            _Route("GET", EXPORT_FILES_PATH, self._export_file, prefix=True, auth=False),
        ]

    # ----- life cycle -----------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind the port and serve in a daemon thread; returns ``self``. Idempotent."""
        if self._server is not None:
            return self
        self._server = _Server(self, self._requested_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="peopleai-sandbox", daemon=True
        )
        self._thread.start()
        self._file_server = self._bind_file_host()
        self._file_thread = threading.Thread(
            target=self._file_server.serve_forever, kwargs={"poll_interval": 0.05}, name="peopleai-sandbox-files", daemon=True
        )
        self._file_thread.start()
        self.export.base_url = self.base_url
        self.export.file_host_url = self.file_host_url
        # A loopback port is reused over a test session: tokens or pacing cached in this process
        # for an earlier server at this address would only earn 401s.
        forget_endpoint(self.base_url)
        return self

    def _bind_file_host(self) -> _Server:
        """The file host: ``127.0.0.2`` (another loopback host), or another port of ``127.0.0.1``
        where that address cannot be bound (e.g. macOS)."""
        try:
            return _Server(self, 0, host="127.0.0.2", file_host=True)
        except OSError:
            return _Server(self, 0, host="127.0.0.1", file_host=True)

    def stop(self) -> None:
        """Stop serving, close every open connection and release the port. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        for running, thread in ((server, self._thread), (self._file_server, self._file_thread)):
            if running is None:
                continue
            running.shutdown()
            running.close_connections()
            running.server_close()
            if thread is not None:
                thread.join(timeout=5)
        self._thread = self._file_server = self._file_thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    # ----- addresses and credentials ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port served (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the sandbox is not started: use `with Sandbox(...) as sandbox:` or call start()")
        return self._server.server_port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (after :meth:`start`)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def file_host_url(self) -> str:
        """``http://127.0.0.2:<port>``: the second loopback host serving export files (after :meth:`start`)."""
        if self._file_server is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://{self._file_server.server_name}:{self._file_server.server_port}"

    @property
    def data_start(self) -> datetime:
        """The first instant generated activities can have (UTC)."""
        return datetime.fromtimestamp(self._gen.start_ms / 1000, tz=UTC)

    @property
    def data_end(self) -> datetime:
        """The end (exclusive) of the generated activities' period (UTC)."""
        return datetime.fromtimestamp(self._gen.end_ms / 1000, tz=UTC)

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (e.g. ``/v0/public/activities``)."""
        return self.base_url + path

    @property
    def client_id(self) -> str:
        """The API key the token endpoint accepts."""
        return self._client_id

    @property
    def client_secret(self) -> str:
        """The API secret the token endpoint accepts."""
        return self._client_secret

    def connection_json(self, **extra: Any) -> str:
        """The JSON for ``AIRFLOW_CONN_PEOPLEAI_DEFAULT`` (or any ``peopleai`` connection).

        :param extra: connection extras, e.g. ``page_size=500`` or ``requests_per_second=4``.
        """
        return json.dumps(
            {
                "conn_type": "peopleai",
                "host": self.base_url,
                "login": self.client_id,
                "password": self.client_secret,
                "extra": extra,
            }
        )

    # ----- observation ------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request answered since the start or :meth:`reset_log`, in order of arrival."""
        with self._lock:
            return sorted(self._log, key=lambda record: record.time)

    def reset_log(self) -> None:
        """Forget the request log and the counters of :attr:`stats`."""
        with self._lock:
            self._log.clear()
            self._stats.clear()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``"requests"``, one per status answered (``"200"``, ``"429"``, ...),
        ``"rate_limited"``, ``"concurrency_limited"``, ``"tokens_issued"``, ``"inserted"`` and
        one per fault knob that fired (``"fail_next"``, ``"drop_connection"``, ...)."""
        with self._lock:
            return dict(self._stats)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of unexpected server errors (a bug in the sandbox; should stay empty)."""
        return list(self._errors)

    # ----- tokens -------------------------------------------------------------------------------------

    def issue_token(self) -> str:
        """Mint a valid access token directly (no HTTP request, not logged)."""
        with self._lock:
            self._token_counter += 1
            number = self._token_counter
        token = self._make_jwt(number)
        with self._lock:
            self._tokens[token] = _Token(expires_at=time.monotonic() + self.token_ttl)
            self._stats["tokens_issued"] += 1
        return token

    def revoke_tokens(self) -> int:
        """Revoke every token issued so far (their next use answers 401); returns how many."""
        with self._lock:
            live = [t for t in self._tokens.values() if not t.revoked]
            for token in live:
                token.revoked = True
            return len(live)

    def token_uses(self) -> dict[str, int]:
        """How many authenticated requests each token issued so far has served."""
        with self._lock:
            return {token: info.uses for token, info in self._tokens.items()}

    def _make_jwt(self, number: int) -> str:
        """A JWT-shaped token, deterministic from the seed, the client id and its serial number."""

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

        header = b64(b'{"alg":"HS256","typ":"JWT"}')
        jti = hashlib.sha256(f"{self.seed}:{self.client_id}:{number}".encode()).hexdigest()[:32]
        payload = b64(json.dumps({"sub": self.client_id, "jti": jti, "scope": "activity"}, separators=(",", ":")).encode())
        signature = b64(hmac.new(self.client_secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{signature}"

    # ----- data: ground truth and live inserts ------------------------------------------------------

    def expected_activities(
        self,
        start: datetime | int,
        end: datetime | int,
        activity_type: str | None = None,
        *,
        by: str = "timestamp",
    ) -> list[dict[str, Any]]:
        """The activities a correct client should extract, in served order, times as epoch ms ints.

        :param start: inclusive lower bound (aware datetime, or epoch ms).
        :param end: exclusive upper bound.
        :param activity_type: ``email``, ``call``, ``meeting`` or ``None`` for all.
        :param by: the bounded field: ``"timestamp"`` (activity time) or ``"created_at"``
            (ingestion time).
        """
        return self._view(self._bounds(start, end, activity_type, by)).activities(0, 1 << 62)

    def expected_participants(self, start: datetime | int, end: datetime | int) -> list[dict[str, Any]]:
        """The participants of activities whose timestamp is in ``[start, end)``, in served order.

        :param start: inclusive lower bound (aware datetime, or epoch ms).
        :param end: exclusive upper bound.
        """
        return self._view(self._bounds(start, end, None, "timestamp")).participants(0, 1 << 62)

    def activity_count(
        self,
        start: datetime | int | None = None,
        end: datetime | int | None = None,
        activity_type: str | None = None,
        *,
        by: str = "timestamp",
    ) -> int:
        """How many activities are in ``[start, end)`` (``None``: unbounded); cheap at any size.

        :param start: inclusive lower bound (aware datetime, or epoch ms), or ``None``.
        :param end: exclusive upper bound, or ``None``.
        :param activity_type: ``email``, ``call``, ``meeting`` or ``None`` for all.
        :param by: ``"timestamp"`` or ``"created_at"`` (the latter scans the candidate range once).
        """
        return self._view(self._bounds(start, end, activity_type, by)).activity_total

    def participant_count(self, start: datetime | int | None = None, end: datetime | int | None = None) -> int:
        """How many participants the activities in ``[start, end)`` hold (``None``: unbounded).

        :param start: inclusive lower bound (aware datetime, or epoch ms), or ``None``.
        :param end: exclusive upper bound, or ``None``.
        """
        return self._view(self._bounds(start, end, None, "timestamp")).participant_total

    def add_activities(
        self,
        n: int,
        timestamp: datetime | int | None = None,
        created_at: datetime | int | None = None,
        activity_type: str | None = None,
    ) -> list[dict[str, Any]]:
        """Insert ``n`` activities (each with participants) into the served data and the ground truth.

        :param n: how many.
        :param timestamp: their timestamp (aware datetime or epoch ms); default: random in the
            data period.
        :param created_at: their ``created_at``; default: the timestamp plus one to 31 minutes.
        :param activity_type: ``email``, ``call`` or ``meeting``; default: random.
        :returns: the inserted activities, times as epoch ms.
        """
        added = self._store.add(
            n,
            timestamp=None if timestamp is None else to_ms(timestamp),
            created_at=None if created_at is None else to_ms(created_at),
            activity_type=activity_type,
        )
        with self._lock:
            self._stats["inserted"] += len(added)
        return added

    def expected_export_records(
        self, start_date: date | str, end_date: date | str, export_type: str = "snapshot", activity_type: str = "all"
    ) -> list[dict[str, Any]]:
        """What a correct client writes from an export job of these days, records as served.

        Snapshot: records whose ``timestamp`` is in ``[start_date, end_date]`` (UTC days, both
        inclusive); delta: records whose ``ingest_timestamp`` is. Each ``uid`` once per UTC day of
        that field, the latest ``ingest_timestamp`` winning; ordered by that field, then ``uid``.
        Times are as the file writes them (``export.settings.timestamp_format``).

        :param start_date: first day (``date`` or ``YYYY-MM-DD``).
        :param end_date: last day.
        :param export_type: ``snapshot`` or ``delta``.
        :param activity_type: ``all``, ``email``, ``meeting`` or ``call``.
        """
        return self.export.expected_records(start_date, end_date, export_type, activity_type)

    def export_file_records(
        self, start_date: date | str, end_date: date | str, export_type: str = "snapshot", activity_type: str = "all"
    ) -> list[dict[str, Any]]:
        """The records an export job of these days puts in its file, in order (with the duplicates
        and out-of-range records the ``export.settings`` knobs add)."""
        return self.export.file_records(start_date, end_date, export_type, activity_type)

    def _bounds(self, start: Any, end: Any, activity_type: str | None, by: str) -> Filter:
        if activity_type is not None and activity_type not in ACTIVITY_TYPES:
            raise ValueError(f"activity_type must be one of {ACTIVITY_TYPES} or None, got {activity_type!r}")
        low = None if start is None else to_ms(start)
        high = None if end is None else to_ms(end)
        if by == "timestamp":
            return Filter(activity_type, ts_from=low, ts_to=high)
        if by == "created_at":
            return Filter(activity_type, created_from=low, created_to=high)
        raise ValueError(f"by must be 'timestamp' or 'created_at', got {by!r}")

    def _view(self, query: Filter) -> View:
        return self._store.view(query)

    # ----- HTTP -------------------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        """Answer one request (called by the handler thread)."""
        received = time.monotonic()
        split = urlsplit(handler.path)
        query = {key: values[0] for key, values in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        request = _Request(handler.command, split.path, query, handler.headers, body, received)
        with self._lock:
            self._in_flight += 1
        try:
            if handler.server.file_host:
                response = self._answer_file_host(request, handler.server.server_name)
            else:
                response = self._answer(request)
        except Exception:
            self._errors.append(traceback.format_exc())
            response = self._error(500, request.path, "sandbox error")
        finally:
            # Done before the answer is written, so a client that has read it sees the request
            # logged and no longer in flight.
            with self._lock:
                self._in_flight -= 1
        if request.path.startswith(EXPORT_FILES_PATH + "/"):
            self.export.note_file_request(handler.server.server_name, request, response.status)
        record = RequestRecord(received, request.method, request.path, query, response.status, response.fault)
        with self._lock:
            self._log.append(record)
            self._stats["requests"] += 1
            self._stats[str(record.status)] += 1
            if record.fault:
                self._stats[record.fault] += 1
        try:
            self._send(handler, request, response)
        except OSError:  # the client went away
            handler.close_connection = True

    def _answer(self, request: _Request) -> _Response:
        limited = self._admit(request.received)
        if limited is not None:
            return self._error(429, request.path, fault=limited)
        delay = self.latency + self.faults.latency
        if delay > 0:
            time.sleep(delay)
        route = self._route(request.method, request.path)
        if route is None:
            return self._error(404, request.path, f"No handler for {request.method} {request.path}")
        failure: Failure | None = self.faults.take_failure(request.path, route.token)
        if failure is not None:
            response = self._error(failure.status, request.path, fault=failure.fault)
            if failure.retry_after is not None:
                response.headers["Retry-After"] = f"{failure.retry_after:g}"
            return response
        if route.auth and not self._authorize(request):
            return self._error(401, request.path)
        return route.handler(request)

    def _answer_file_host(self, request: _Request, host: str) -> _Response:
        """The file host serves signed export files only, with no rate limit (a file store)."""
        if request.method != "GET" or not request.path.startswith(EXPORT_FILES_PATH + "/"):
            return self._error(404, request.path, f"No handler for {request.method} {request.path}")
        failure = self.faults.take_failure(request.path, False)
        if failure is not None:
            return self._error(failure.status, request.path, fault=failure.fault)
        return self._with_body_fault(request.path, self.export.file(request, self._error, host, foreign=True))

    def _admit(self, now: float) -> str | None:
        """``None`` if the request is within the limits, else the limit it broke."""
        with self._lock:
            if self.rate_limit is None:
                return None
            if self.max_concurrency is not None and self._in_flight > self.max_concurrency:
                return "concurrency"
            window = self._window
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) + 1 > self.rate_limit:
                return "rate_limit"
            window.append(now)
            return None

    def _route(self, method: str, path: str) -> _Route | None:
        for route in self._routes:
            if path == route.path or (route.prefix and path.startswith(route.path + "/")):
                return route if route.method == method else None
        return None

    def _authorize(self, request: _Request) -> bool:
        header = request.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        with self._lock:
            info = self._tokens.get(token.strip())
            if info is None or info.revoked or time.monotonic() >= info.expires_at:
                return False
            max_uses = self.faults.token_max_uses
            if max_uses is not None and info.uses >= max_uses:
                return False
            info.uses += 1
            return True

    def _send(self, handler: _Handler, request: _Request, response: _Response) -> None:
        body = response.body
        handler.send_response(response.status)
        if not any(name.lower() == "content-type" for name in response.headers):
            handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        for name, value in response.headers.items():
            handler.send_header(name, value)
        if response.fault == "drop_connection":
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        handler.end_headers()
        if request.method != "HEAD":
            handler.wfile.write(body)

    def _error(self, status: int, path: str, message: str | None = None, fault: str | None = None) -> _Response:
        """An error answer with the vendor's envelope."""
        with self._lock:
            self._trace_counter += 1
            number = self._trace_counter
        trace = hashlib.sha256(f"trace:{self.seed}:{number}".encode()).hexdigest()
        envelope = {
            "code": status,
            "id": f"{trace[:8]}-{trace[8:12]}-{trace[12:16]}-{trace[16:20]}-{trace[20:32]}",
            "message": message or _MESSAGES.get(status, "Error"),
            "path": path,
            "timestamp": datetime.now(UTC).strftime("%d-%m-%Y %H:%M:%S"),
        }
        return _Response(status, json.dumps(envelope).encode(), fault=fault)

    # ----- endpoints --------------------------------------------------------------------------------

    def _token_endpoint(self, request: _Request) -> _Response:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return self._error(400, request.path, "Content-Type must be application/x-www-form-urlencoded")
        try:
            form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8"), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            return self._error(400, request.path, "Malformed form body")
        if form.get("grant_type") != "client_credentials":
            return self._error(400, request.path, "grant_type must be client_credentials")
        if not form.get("client_id") or not form.get("client_secret"):
            return self._error(400, request.path, "client_id and client_secret are required")
        if not (
            hmac.compare_digest(form["client_id"], self.client_id)
            and hmac.compare_digest(form["client_secret"], self.client_secret)
        ):
            return self._error(401, request.path, "Invalid client credentials")
        token = self.issue_token()
        ttl = self.token_ttl
        body = {"access_token": token, "token_type": "bearer", "expires_in": int(ttl) if float(ttl).is_integer() else ttl}
        return _Response(200, json.dumps(body).encode())

    def _export_create(self, request: _Request) -> _Response:
        return self.export.create(request, self._error)

    def _export_status_or_data(self, request: _Request) -> _Response:
        response = self.export.status_or_data(request, self._error)
        return self._with_body_fault(request.path, response) if request.path.endswith("/data") else response

    def _export_file(self, request: _Request) -> _Response:
        return self._with_body_fault(request.path, self.export.file(request, self._error, "127.0.0.1", foreign=False))

    def _with_body_fault(self, path: str, response: _Response) -> _Response:
        """Apply ``drop_connection`` / ``invalid_json`` (a body cut in half) to a data answer."""
        if response.status != 200:
            return response
        body_fault = self.faults.take_body_fault(path)
        if body_fault == "invalid_json":
            response.body = response.body[: max(1, len(response.body) // 2)]
        response.fault = body_fault
        return response

    def _data_endpoint(self, request: _Request) -> _Response:
        path = request.path
        participants = path == PARTICIPANTS_PATH
        activity_type = None if participants or path == ACTIVITIES_PATH else path.rsplit("/", 1)[1]
        try:
            offset = _int_param(request.query, "offset", 0)
            limit = _int_param(request.query, "limit", 1000)
            ts_from = _day_param(request.query, "from", 0)
            ts_to = _day_param(request.query, "to", DAY_MS)
            created_from = _day_param(request.query, "ingested-from", 0)
            created_to = _day_param(request.query, "ingested-to", DAY_MS)
        except ValueError as error:
            return self._error(400, path, str(error))
        if offset < 0:
            return self._error(400, path, f"offset must be >= 0, got {offset}")
        if not 1 <= limit <= self.max_page_size:
            return self._error(400, path, f"limit must be between 1 and {self.max_page_size}, got {limit}")
        faults = self.faults
        if faults.filters_ignored:
            query = Filter(activity_type)
        else:
            query = Filter(activity_type, ts_from, ts_to, created_from, created_to)
        inserts = faults.take_insert(path, offset)
        if inserts:
            self._insert_front(query, inserts)
        view = self._view(query)
        total = view.participant_total if participants else view.activity_total
        served = min(limit, faults.page_cap or limit)
        first = offset - 1 if faults.overlap and offset > 0 else offset
        data = self._page_bytes(view, query, participants, first, served)
        if faults.bare:
            body = data
        else:
            meta = json.dumps({"limit": limit, "offset": offset, "total": total, "message": None}, separators=(",", ":"))
            body = b'{"data":' + data + b',"meta":' + meta.encode() + b"}"
        body_fault = faults.take_body_fault(path)
        if body_fault == "invalid_json":
            body = body[: max(1, len(body) // 2)]
        return _Response(200, body, fault=body_fault)

    def _insert_front(self, query: Filter, count: int) -> None:
        """Insert ``count`` activities just before the first record ``query`` selects."""
        first = self._view(query).first_activity()
        if first is None:
            ts = query.ts_from if query.ts_from is not None else self._gen.start_ms
            created = query.created_from if query.created_from is not None else ts + MIN_LAG_MS
        else:
            ts = first["timestamp"] - 1
            if query.ts_from is not None and ts < query.ts_from:
                ts = first["timestamp"]
            created = first["created_at"]
        self.add_activities(count, timestamp=ts, created_at=created, activity_type=query.activity_type)

    def _page_bytes(self, view: View, query: Filter, participants: bool, offset: int, count: int) -> bytes:
        """The JSON array of one page, formatted and encoded (cached by content)."""
        key = (participants, query, view.version, offset, count, self.timestamp_format)
        with self._lock:
            found = self._page_cache.get(key)
            if found is not None:
                self._page_cache.move_to_end(key)
                return found
        if participants:
            records = self._format_participants(view, offset, count)
        else:
            records = self._format_activities(view.activity_items(offset, count))
        data = json.dumps(records, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        with self._lock:
            if key not in self._page_cache:
                self._page_cache[key] = data
                self._page_cache_bytes += len(data)
                while self._page_cache_bytes > _PAGE_CACHE_BYTES and self._page_cache:
                    _, evicted = self._page_cache.popitem(last=False)
                    self._page_cache_bytes -= len(evicted)
        return data

    def _format_activities(self, items: list[Item]) -> list[dict[str, Any]]:
        gen = self._gen
        records = []
        mode = self.timestamp_format
        for index, extra in items:
            record = gen.activity(index) if extra is None else dict(extra.activity)
            if mode != "epoch_ms":
                number = index if extra is None else gen.count + extra.number
                _format_times(record, ACTIVITY_TIME_FIELDS, mode, number)
            records.append(record)
        return records

    def _format_participants(self, view: View, offset: int, count: int) -> list[dict[str, Any]]:
        gen = self._gen
        records = []
        mode = self.timestamp_format
        for (index, extra), chunk, first_slot in view.participant_items(offset, count):
            if mode != "epoch_ms":
                number = index if extra is None else gen.count + extra.number
                for slot, record in enumerate(chunk, start=first_slot):
                    _format_times(record, PARTICIPANT_TIME_FIELDS, mode, number + slot)
            records.extend(chunk)
        return records


def _int_param(query: dict[str, str], name: str, default: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {text!r}") from None


def _day_param(query: dict[str, str], name: str, shift_ms: int) -> int | None:
    """Epoch ms of the day's midnight plus ``shift_ms`` (``DAY_MS`` for an inclusive upper bound)."""
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        if not _DAY_RE.match(text):
            raise ValueError
        day = date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} must be a date as YYYY-MM-DD, got {text!r}") from None
    return to_ms(datetime(day.year, day.month, day.day, tzinfo=UTC)) + shift_ms


def iso_ms(value: int, suffix: str = "Z") -> str:
    """``2026-11-01T03:04:05.123Z`` (or with another UTC ``suffix`` such as ``+00:00``) of epoch ms."""
    seconds, millis = divmod(value, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}{suffix}"


def _format_times(record: dict[str, Any], fields: tuple[str, ...], mode: str, number: int) -> None:
    """Rewrite the epoch-ms times of ``record`` in place for ``mode`` (record ``number`` picks the mixed form)."""
    if mode == "iso":
        suffix: str | None = "Z"
    else:
        suffix = (None, "Z", "+00:00")[number % 3]
    if suffix is None:
        return
    for name in fields:
        value = record.get(name)
        if value is not None:
            record[name] = iso_ms(value, suffix)


# ----- pytest fixtures, re-exported lazily (importing this module never imports pytest) -----------

_FIXTURES = ("peopleai_sandbox", "peopleai_sandbox_factory", "peopleai_connection")


def __getattr__(name: str) -> Any:
    if name in _FIXTURES:
        from airflow_provider_activities.testing import pytest_plugin

        return getattr(pytest_plugin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----- command line --------------------------------------------------------------------------------


def _parse_start(text: str) -> datetime:
    value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    """Run a sandbox until SIGINT or SIGTERM; print how to reach it first.

    Prints four ``KEY=value`` lines to stdout, flushed: ``PEOPLEAI_SANDBOX_URL``,
    ``PEOPLEAI_CLIENT_ID``, ``PEOPLEAI_CLIENT_SECRET`` and ``AIRFLOW_CONN_PEOPLEAI_DEFAULT``
    (JSON). Exits 0 on a signal.
    """
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_activities.testing.sandbox",
        description="Serve a local imitation of the People.ai Activity API on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--activities", type=int, default=3000, help="number of generated activities")
    parser.add_argument("--start", type=_parse_start, default=datetime(2026, 11, 1, tzinfo=UTC), help="first day (YYYY-MM-DD, UTC)")
    parser.add_argument("--days", type=float, default=7, help="days the activities spread over")
    parser.add_argument("--client-id", default="sandbox-client-id", help="accepted API key")
    parser.add_argument("--client-secret", default="sandbox-client-secret", help="accepted API secret")
    parser.add_argument("--rate-limit", type=float, default=5.0, help="requests per sliding second (default 5)")
    parser.add_argument("--no-rate-limit", action="store_true", help="disable rate and concurrency limits")
    parser.add_argument("--max-concurrency", type=int, default=10, help="requests in flight at once (default 10)")
    parser.add_argument("--token-ttl", type=float, default=7200, help="token lifetime in seconds")
    parser.add_argument("--timestamp-format", choices=TIMESTAMP_FORMATS, default="epoch_ms", help="how times are served")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--max-page-size", type=int, default=100_000, help="largest accepted limit")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sandbox = Sandbox(
        seed=args.seed,
        activities=args.activities,
        start=args.start,
        days=args.days,
        client_id=args.client_id,
        client_secret=args.client_secret,
        port=args.port,
        rate_limit=None if args.no_rate_limit else args.rate_limit,
        max_concurrency=args.max_concurrency,
        token_ttl=args.token_ttl,
        timestamp_format=args.timestamp_format,
        latency=args.latency,
        max_page_size=args.max_page_size,
    )
    with sandbox:
        print(f"PEOPLEAI_SANDBOX_URL={sandbox.base_url}")
        print(f"PEOPLEAI_CLIENT_ID={sandbox.client_id}")
        print(f"PEOPLEAI_CLIENT_SECRET={sandbox.client_secret}")
        print(f"AIRFLOW_CONN_PEOPLEAI_DEFAULT={sandbox.connection_json()}", flush=True)
        print("Serving the People.ai sandbox API; stop with Ctrl-C or SIGTERM.", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
