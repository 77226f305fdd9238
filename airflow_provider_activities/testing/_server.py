"""The sandbox's HTTP plumbing: loopback servers, requests and answers, admission, the request log.

A :class:`Dispatcher` answers every request of the sandbox's two servers (the API on
``127.0.0.1`` and the export "file host"): it admits the request (rate and concurrency limits),
delays it (latency), routes it, checks its bearer token, applies outright failures from the fault
knobs, logs it and writes the answer. What each endpoint answers lives in
:mod:`airflow_provider_activities.testing._endpoints`; this module knows no endpoint.

Admin routes (the sandbox's own control endpoints, under a private prefix) skip all of that: they
are not admitted, delayed, failed or logged, so driving a sandbox never shows in what a test
observes of its clients.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from airflow_provider_activities.testing._faults import Failure, Faults

UTC = timezone.utc

_MESSAGES = {
    400: "Bad Request",
    401: "Invalid or expired token",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


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
class Request:
    """One request as the endpoints see it.

    :param method: the HTTP method.
    :param path: the path, without the query string.
    :param query: the query parameters (first value of each).
    :param headers: the request headers (case-insensitive ``get``).
    :param body: the request body.
    :param received: ``time.monotonic()`` when it was read.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: bytes
    received: float


@dataclass(frozen=True)
class FileBody:
    """An answer body served from a file: its first ``length`` bytes (sent with ``sendfile``).

    :param path: the file.
    :param length: how many bytes of it to send.
    """

    path: str
    length: int


@dataclass
class Response:
    """One answer: status, body (bytes, or a :class:`FileBody`), headers and the fault that shaped it.

    :param status: the HTTP status.
    :param body: the body.
    :param headers: extra headers (``Content-Type`` defaults to JSON).
    :param fault: the fault knob or limit behind the answer; ``"drop_connection"`` makes the
        server send half of the body and close the connection.
    """

    status: int
    body: bytes | FileBody
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None

    @property
    def length(self) -> int:
        """The body's length in bytes."""
        return self.body.length if isinstance(self.body, FileBody) else len(self.body)

    def cut_in_half(self) -> None:
        """Keep the first half of the body (at least one byte): a complete answer with broken content."""
        half = max(1, self.length // 2)
        self.body = FileBody(self.body.path, half) if isinstance(self.body, FileBody) else self.body[:half]


class ErrorMaker(Protocol):
    """Makes an error answer (see :class:`Errors`)."""

    def __call__(self, status: int, path: str, message: str | None = None, fault: str | None = None) -> Response:
        """An error answer with the vendor's envelope."""
        ...


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """One endpoint: ``handler(request) -> response`` for ``method`` on ``path``.

    :param method: the HTTP method it answers.
    :param path: the path it answers.
    :param handler: what answers.
    :param prefix: match every path below ``path`` too (for ids in the path).
    :param auth: the bearer token is checked before the handler runs.
    :param token: a token endpoint (token faults apply, data faults only with ``include_token``).
    """

    method: str
    path: str
    handler: Handler
    prefix: bool = False
    auth: bool = True
    token: bool = False

    def matches(self, path: str) -> bool:
        """Whether this route serves ``path`` (whatever the method).

        :param path: a request path.
        """
        return path == self.path or (self.prefix and path.startswith(self.path + "/"))


def find_route(routes: list[Route], method: str, path: str) -> Route | None:
    """The route of ``method`` on ``path``; ``None`` when the path is unknown or the first route
    serving it takes another method (the API answers both with 404).

    :param routes: the routes, in matching order.
    :param method: the request's method.
    :param path: the request's path.
    """
    for route in routes:
        if route.matches(path):
            return route if route.method == method else None
    return None


class Errors:
    """Error answers in the vendor's envelope, with trace ids deterministic from the seed.

    :param seed: seeds the trace ids (``id`` in the envelope).
    """

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._counter = 0

    def __call__(self, status: int, path: str, message: str | None = None, fault: str | None = None) -> Response:
        """An error answer: ``{"code", "id", "message", "path", "timestamp"}``.

        :param status: the HTTP status.
        :param path: the request path (``path`` in the envelope).
        :param message: the message; default: the status's usual one.
        :param fault: the fault knob or limit behind it, for the request log.
        """
        with self._lock:
            self._counter += 1
            number = self._counter
        trace = hashlib.sha256(f"trace:{self._seed}:{number}".encode()).hexdigest()
        envelope = {
            "code": status,
            "id": f"{trace[:8]}-{trace[8:12]}-{trace[12:16]}-{trace[16:20]}-{trace[20:32]}",
            "message": message or _MESSAGES.get(status, "Error"),
            "path": path,
            "timestamp": datetime.now(UTC).strftime("%d-%m-%Y %H:%M:%S"),
        }
        return Response(status, json.dumps(envelope).encode(), fault=fault)


class RequestLog:
    """The requests answered, counters of what happened, and unexpected server errors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._stats: Counter[str] = Counter()
        self._errors: list[str] = []

    def add(self, record: RequestRecord) -> None:
        """Log one answered request and count its status and fault.

        :param record: the request and its answer.
        """
        with self._lock:
            self._records.append(record)
            self._stats["requests"] += 1
            self._stats[str(record.status)] += 1
            if record.fault:
                self._stats[record.fault] += 1

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (e.g. ``"tokens_issued"``).

        :param name: the counter.
        :param n: how much to add.
        """
        with self._lock:
            self._stats[name] += n

    def add_error(self, text: str) -> None:
        """Keep the traceback of an unexpected server error.

        :param text: the traceback.
        """
        with self._lock:
            self._errors.append(text)

    @property
    def records(self) -> list[RequestRecord]:
        """Every request logged, in order of arrival."""
        with self._lock:
            return sorted(self._records, key=lambda record: record.time)

    @property
    def stats(self) -> dict[str, int]:
        """The counters."""
        with self._lock:
            return dict(self._stats)

    @property
    def errors(self) -> list[str]:
        """The tracebacks kept."""
        with self._lock:
            return list(self._errors)

    def reset(self) -> None:
        """Forget the requests and the counters (not the errors)."""
        with self._lock:
            self._records.clear()
            self._stats.clear()


class Admission:
    """The rate and concurrency limits: a sliding one-second window and a count of requests in flight.

    :param rate_limit: requests accepted in any sliding second; ``None`` disables both limits.
    :param max_concurrency: requests accepted in flight at once (``None``: unlimited).
    """

    def __init__(self, rate_limit: float | None, max_concurrency: int | None) -> None:
        self.rate_limit = rate_limit
        """Requests accepted per sliding second (``None``: no rate or concurrency limit)."""
        self.max_concurrency = max_concurrency
        """Requests accepted in flight at once (``None``: unlimited)."""
        self._lock = threading.Lock()
        self._window: deque[float] = deque()
        self._in_flight = 0

    def enter(self) -> None:
        """A request is in flight (until :meth:`leave`)."""
        with self._lock:
            self._in_flight += 1

    def leave(self) -> None:
        """A request is answered."""
        with self._lock:
            self._in_flight -= 1

    def admit(self, now: float) -> str | None:
        """``None`` if a request read at ``now`` is within the limits (it then counts in the
        window), else the limit it broke: ``"concurrency"`` or ``"rate_limit"``.

        :param now: when the request was read (``time.monotonic()``).
        """
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


class Dispatcher:
    """Answers the requests of both servers: admission, latency, routing, token check, outright
    failures, the request log, and the answer on the wire.

    :param routes: the API's routes (on the API server).
    :param file_routes: the file host's routes (no limits, no token check).
    :param admin_routes: the sandbox's control routes (on the API server, under ``admin_prefix``):
        answered directly, never admitted, delayed, failed or logged.
    :param admin_prefix: the path prefix of the admin routes.
    :param admission: the rate and concurrency limits.
    :param log: where answered requests are logged.
    :param error: makes error answers.
    :param faults: the fault knobs (outright failures and added latency).
    :param authorize: whether a request carries a valid bearer token (and uses it).
    :param latency: seconds every admitted request is delayed by.
    :param observers: ``(path prefix, callback(host, request, status))`` called for every logged
        request below that prefix, whatever was answered.
    """

    def __init__(
        self,
        routes: list[Route],
        file_routes: list[Route],
        admin_routes: list[Route],
        admin_prefix: str,
        admission: Admission,
        log: RequestLog,
        error: ErrorMaker,
        faults: Faults,
        authorize: Callable[[Request], bool],
        latency: float = 0.0,
        observers: tuple[tuple[str, Callable[[str, Request, int], None]], ...] = (),
    ) -> None:
        self.routes = routes
        self.file_routes = file_routes
        self.admin_routes = admin_routes
        self.admin_prefix = admin_prefix
        self.admission = admission
        self.log = log
        self.error = error
        self.faults = faults
        self.authorize = authorize
        self.latency = latency
        """Seconds every admitted request is delayed by (on top of ``faults.latency``)."""
        self.observers = observers

    def serve(self, handler: _Handler) -> None:
        """Read, answer, log and write one request (called by the handler thread).

        :param handler: the connection's handler, with the request line and headers read.
        """
        received = time.monotonic()
        split = urlsplit(handler.path)
        query = {key: values[0] for key, values in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        request = Request(handler.command, split.path, query, handler.headers, body, received)
        server = handler.server
        if not server.file_host and request.path.startswith(self.admin_prefix + "/"):
            _send(handler, request, self._answer_admin(request))
            return
        self.admission.enter()
        try:
            response = self._answer_file_host(request) if server.file_host else self._answer(request)
        except Exception:
            self.log.add_error(traceback.format_exc())
            response = self.error(500, request.path, "sandbox error")
        finally:
            # Done before the answer is written, so a client that has read it sees the request
            # logged and no longer in flight.
            self.admission.leave()
        for prefix, observe in self.observers:
            if request.path.startswith(prefix):
                observe(server.server_name, request, response.status)
        self.log.add(RequestRecord(received, request.method, request.path, query, response.status, response.fault))
        try:
            _send(handler, request, response)
        except OSError:  # the client went away
            handler.close_connection = True

    def _answer(self, request: Request) -> Response:
        limited = self.admission.admit(request.received)
        if limited is not None:
            return self.error(429, request.path, fault=limited)
        delay = self.latency + self.faults.latency
        if delay > 0:
            time.sleep(delay)
        route = find_route(self.routes, request.method, request.path)
        if route is None:
            return self.error(404, request.path, f"No handler for {request.method} {request.path}")
        failure: Failure | None = self.faults.take_failure(request.path, route.token)
        if failure is not None:
            response = self.error(failure.status, request.path, fault=failure.fault)
            if failure.retry_after is not None:
                response.headers["Retry-After"] = f"{failure.retry_after:g}"
            return response
        if route.auth and not self.authorize(request):
            return self.error(401, request.path)
        return route.handler(request)

    def _answer_file_host(self, request: Request) -> Response:
        """The file host serves signed export files only, with no rate limit (a file store)."""
        route = find_route(self.file_routes, request.method, request.path)
        if route is None:
            return self.error(404, request.path, f"No handler for {request.method} {request.path}")
        failure = self.faults.take_failure(request.path, False)
        if failure is not None:
            return self.error(failure.status, request.path, fault=failure.fault)
        return route.handler(request)

    def _answer_admin(self, request: Request) -> Response:
        try:
            route = find_route(self.admin_routes, request.method, request.path)
            if route is None:
                return self.error(404, request.path, f"No handler for {request.method} {request.path}")
            return route.handler(request)
        except Exception:
            self.log.add_error(traceback.format_exc())
            return self.error(500, request.path, "sandbox error")


def _send(handler: _Handler, request: Request, response: Response) -> None:
    """Write ``response``: status, headers, then the body (half of it, and a closed connection,
    for ``drop_connection``).
    """
    length = response.length
    handler.send_response(response.status)
    if not any(name.lower() == "content-type" for name in response.headers):
        handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(length))
    for name, value in response.headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    if response.fault == "drop_connection":
        _write_body(handler, response.body, length // 2)
        handler.wfile.flush()
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)
        return
    if request.method != "HEAD":
        _write_body(handler, response.body, length)


def _write_body(handler: _Handler, body: bytes | FileBody, count: int) -> None:
    """Send the first ``count`` bytes of ``body``; a file goes by ``sendfile``, without passing
    through Python.
    """
    if count <= 0:
        return
    if isinstance(body, FileBody):
        handler.wfile.flush()
        with open(body.path, "rb") as file:
            handler.connection.sendfile(file, 0, count)
    else:
        handler.wfile.write(body[:count] if count < len(body) else body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, dispatcher: Dispatcher, port: int, host: str, file_host: bool) -> None:
        self.dispatcher = dispatcher
        self.file_host = file_host
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        """Bind without ``HTTPServer.server_bind``'s host name lookup (``getfqdn``), which can be slow."""
        TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep unexpected errors (see :attr:`Sandbox.errors`); a client that went away is not one."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        self.dispatcher.log.add_error(traceback.format_exc())
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Shut every open connection down (kept-alive ones too)."""
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "PeopleAISandbox/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 300
    server: _Server

    def setup(self) -> None:
        """Track the connection, so that stopping the server closes it."""
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        """Forget the connection."""
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def version_string(self) -> str:
        """The ``Server`` header."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr log (see :attr:`Sandbox.requests`)."""

    def _dispatch(self) -> None:
        self.server.dispatcher.serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _dispatch


class Listener:
    """One loopback HTTP/1.1 server answering through a :class:`Dispatcher`, in a daemon thread.

    :param dispatcher: what answers.
    :param port: the TCP port; 0 picks a free one.
    :param host: the loopback address to bind.
    :param file_host: the export file host (its own routes, no limits).
    :param name: the serving thread's name.
    """

    def __init__(self, dispatcher: Dispatcher, port: int, host: str, file_host: bool, name: str) -> None:
        self._server = _Server(dispatcher, port, host, file_host)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        self._thread.start()

    @property
    def host(self) -> str:
        """The bound address."""
        return self._server.server_name

    @property
    def port(self) -> int:
        """The bound port."""
        return self._server.server_port

    @property
    def url(self) -> str:
        """``http://<host>:<port>``."""
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop serving, close every open connection and release the port."""
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)


def bind_file_host(dispatcher: Dispatcher) -> Listener:
    """The export file host: ``127.0.0.2`` (another loopback host), or another port of
    ``127.0.0.1`` where that address cannot be bound (e.g. macOS).

    :param dispatcher: what answers.
    """
    try:
        return Listener(dispatcher, 0, "127.0.0.2", True, "peopleai-sandbox-files")
    except OSError:
        return Listener(dispatcher, 0, "127.0.0.1", True, "peopleai-sandbox-files")


__all__ = [
    "Admission",
    "Dispatcher",
    "ErrorMaker",
    "Errors",
    "FileBody",
    "Listener",
    "Request",
    "RequestLog",
    "RequestRecord",
    "Response",
    "Route",
    "bind_file_host",
    "find_route",
]
