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
SIGINT or SIGTERM (see :mod:`._cli` for its options and subcommands).

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

Control endpoints of the sandbox itself, under the private prefix ``/_sandbox`` and behind HTTP
Basic authentication with the client id and secret, let another process insert activities and
read the ground truth (see :mod:`._admin`); they stay out of the request log and the limits.

The parts: :mod:`._server` (the HTTP servers, admission, the request log), :mod:`._endpoints`
(what each endpoint answers), :mod:`._store` and :mod:`._data` (the data), :mod:`._export` (the
bulk export), and this module's :class:`Sandbox`, which builds them and is what a test holds.
"""

from __future__ import annotations

import json
import sys
from datetime import date, datetime, timezone
from typing import Any

from airflow_provider_activities.api.policy import forget_endpoint
from airflow_provider_activities.testing._admin import ADMIN_PREFIX, AdminRoutes
from airflow_provider_activities.testing._data import ACTIVITY_TYPES, Generator, to_ms
from airflow_provider_activities.testing._endpoints import (
    TIMESTAMP_FORMATS,
    ActivityPages,
    ExportRoutes,
    PageCache,
    Tokens,
    api_routes,
    file_host_routes,
    iso_ms,
)
from airflow_provider_activities.testing._export import EXPORT_FILES_PATH, ExportService
from airflow_provider_activities.testing._faults import KNOBS, Faults
from airflow_provider_activities.testing._server import (
    Admission,
    Dispatcher,
    Errors,
    Listener,
    RequestLog,
    RequestRecord,
    bind_file_host,
)
from airflow_provider_activities.testing._store import Filter, Store, View

__all__ = ["KNOBS", "TIMESTAMP_FORMATS", "Faults", "RequestRecord", "Sandbox", "iso_ms", "main"]

UTC = timezone.utc
_PAGE_CACHE_BYTES = 128 * 1024 * 1024
"""The page cache's cap, read when a :class:`Sandbox` is made (a benchmark raises it beforehand)."""

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

    _pages_type: type[ActivityPages] = ActivityPages
    """What serves the data endpoints; a subclass may encode pages its own way (the benchmark's
    sandbox keeps every record encoded, so that pages of any size come from its cache)."""


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
        self.faults = Faults(seed)
        """The fault knobs (see :class:`~airflow_provider_activities.testing._faults.Faults`)."""
        self._requested_port = port
        self._gen = Generator(seed, activities, start, days)
        self._store = Store(self._gen)
        self._log = RequestLog()
        errors = Errors(seed)
        self._admission = Admission(rate_limit, max_concurrency)
        self._tokens = Tokens(seed, client_id, client_secret, token_ttl, self.faults, self._log, errors)
        self.export = ExportService(self._gen, self._store, client_secret)
        """The bulk export API: its knobs (``export.settings``), jobs and files (see :mod:`._export`)."""
        self._pages = self._pages_type(
            self._gen,
            self._store,
            self.faults,
            errors,
            self.add_activities,
            PageCache(_PAGE_CACHE_BYTES),
            timestamp_format,
            max_page_size,
        )
        exports = ExportRoutes(self.export, self.faults, errors)
        self._dispatcher = Dispatcher(
            routes=api_routes(self._tokens, self._pages, exports),
            file_routes=file_host_routes(exports),
            admin_routes=AdminRoutes(self, errors, self._tokens.credentials_match).routes(),
            admin_prefix=ADMIN_PREFIX,
            admission=self._admission,
            log=self._log,
            error=errors,
            faults=self.faults,
            authorize=self._tokens.authorize,
            latency=latency,
            observers=((EXPORT_FILES_PATH + "/", self.export.note_file_request),),
        )
        self._api: Listener | None = None
        self._files: Listener | None = None

    # ----- settings -------------------------------------------------------------------------------

    @property
    def rate_limit(self) -> float | None:
        """Requests accepted per sliding second (``None``: no rate or concurrency limit); settable."""
        return self._admission.rate_limit

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        self._admission.rate_limit = value

    @property
    def max_concurrency(self) -> int | None:
        """Requests accepted in flight at once (``None``: unlimited); settable."""
        return self._admission.max_concurrency

    @max_concurrency.setter
    def max_concurrency(self, value: int | None) -> None:
        self._admission.max_concurrency = value

    @property
    def token_ttl(self) -> float:
        """Lifetime of new tokens, in seconds; settable."""
        return self._tokens.ttl

    @token_ttl.setter
    def token_ttl(self, value: float) -> None:
        self._tokens.ttl = value

    @property
    def timestamp_format(self) -> str:
        """How timestamps are served (``epoch_ms``, ``iso`` or ``mixed``); settable."""
        return self._pages.timestamp_format

    @timestamp_format.setter
    def timestamp_format(self, value: str) -> None:
        self._pages.timestamp_format = value

    @property
    def latency(self) -> float:
        """Seconds every request is delayed by; settable."""
        return self._dispatcher.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._dispatcher.latency = value

    @property
    def max_page_size(self) -> int:
        """The largest ``limit`` accepted; settable."""
        return self._pages.max_page_size

    @max_page_size.setter
    def max_page_size(self, value: int) -> None:
        self._pages.max_page_size = value

    # ----- life cycle -----------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind the port and serve in a daemon thread; returns ``self``. Idempotent."""
        if self._api is not None:
            return self
        self._api = Listener(self._dispatcher, self._requested_port, "127.0.0.1", False, "peopleai-sandbox")
        self._files = bind_file_host(self._dispatcher)
        self.export.base_url = self.base_url
        self.export.file_host_url = self.file_host_url
        # A loopback port is reused over a test session: tokens or pacing cached in this process
        # for an earlier server at this address would only earn 401s.
        forget_endpoint(self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and release the port. Idempotent."""
        api, files = self._api, self._files
        self._api = self._files = None
        for listener in (api, files):
            if listener is not None:
                listener.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._api is not None

    # ----- addresses and credentials ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port served (after :meth:`start`)."""
        if self._api is None:
            raise RuntimeError("the sandbox is not started: use `with Sandbox(...) as sandbox:` or call start()")
        return self._api.port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (after :meth:`start`)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def file_host_url(self) -> str:
        """``http://127.0.0.2:<port>``: the second loopback host serving export files (after :meth:`start`)."""
        if self._files is None:
            raise RuntimeError("the sandbox is not started")
        return self._files.url

    @property
    def data_start(self) -> datetime:
        """The first instant generated activities can have (UTC)."""
        return datetime.fromtimestamp(self._gen.start_ms / 1000, tz=UTC)

    @property
    def data_end(self) -> datetime:
        """The end (exclusive) of the generated activities' period (UTC)."""
        return datetime.fromtimestamp(self._gen.end_ms / 1000, tz=UTC)

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (e.g. ``/v0/public/activities``).

        :param path: an absolute path on this server.
        """
        return self.base_url + path

    @property
    def client_id(self) -> str:
        """The API key the token endpoint accepts."""
        return self._tokens.client_id

    @property
    def client_secret(self) -> str:
        """The API secret the token endpoint accepts."""
        return self._tokens.client_secret

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
        return self._log.records

    def reset_log(self) -> None:
        """Forget the request log and the counters of :attr:`stats`."""
        self._log.reset()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``"requests"``, one per status answered (``"200"``, ``"429"``, ...),
        ``"rate_limit"`` and ``"concurrency"`` (requests refused by the limits),
        ``"tokens_issued"``, ``"inserted"`` (activities added, by any means) and one per fault knob
        that fired (``"fail_next"``, ``"drop_connection"``, ...). Requests to the private
        ``/_sandbox`` endpoints are not counted.
        """
        return self._log.stats

    @property
    def errors(self) -> list[str]:
        """Tracebacks of unexpected server errors (a bug in the sandbox; should stay empty)."""
        return self._log.errors

    # ----- tokens -------------------------------------------------------------------------------------

    def issue_token(self) -> str:
        """Mint a valid access token directly (no HTTP request, not logged)."""
        return self._tokens.issue()

    def revoke_tokens(self) -> int:
        """Revoke every token issued so far (their next use answers 401); returns how many."""
        return self._tokens.revoke_all()

    def token_uses(self) -> dict[str, int]:
        """How many authenticated requests each token issued so far has served."""
        return self._tokens.uses()

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

    def expected_participants(
        self,
        start: datetime | int,
        end: datetime | int,
        activity_type: str | None = None,
        *,
        by: str = "timestamp",
    ) -> list[dict[str, Any]]:
        """The participants of the activities in ``[start, end)``, in served order.

        :param start: inclusive lower bound (aware datetime, or epoch ms).
        :param end: exclusive upper bound.
        :param activity_type: only the participants of ``email``, ``call`` or ``meeting``
            activities; ``None`` for all.
        :param by: the bounded field of the activities: ``"timestamp"`` or ``"created_at"``.
        """
        return self._view(self._bounds(start, end, activity_type, by)).participants(0, 1 << 62)

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

    def participant_count(
        self,
        start: datetime | int | None = None,
        end: datetime | int | None = None,
        activity_type: str | None = None,
        *,
        by: str = "timestamp",
    ) -> int:
        """How many participants the activities in ``[start, end)`` hold (``None``: unbounded).

        :param start: inclusive lower bound (aware datetime, or epoch ms), or ``None``.
        :param end: exclusive upper bound, or ``None``.
        :param activity_type: only ``email``, ``call`` or ``meeting`` activities; ``None`` for all.
        :param by: the bounded field of the activities: ``"timestamp"`` or ``"created_at"``.
        """
        return self._view(self._bounds(start, end, activity_type, by)).participant_total

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
        self._log.count("inserted", len(added))
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
        and out-of-range records the ``export.settings`` knobs add).

        :param start_date: first day (``date`` or ``YYYY-MM-DD``).
        :param end_date: last day (inclusive).
        :param export_type: ``snapshot`` or ``delta``.
        :param activity_type: ``all``, ``email``, ``meeting`` or ``call``.
        """
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



# ----- pytest fixtures, re-exported lazily (importing this module never imports pytest) -----------

_FIXTURES = ("peopleai_sandbox", "peopleai_sandbox_factory", "peopleai_connection")


def __getattr__(name: str) -> Any:
    if name in _FIXTURES:
        from airflow_provider_activities.testing import pytest_plugin

        return getattr(pytest_plugin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox's command line (see :mod:`._cli`): serve, or drive a running sandbox.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    :returns: the exit status.
    """
    from airflow_provider_activities.testing._cli import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
