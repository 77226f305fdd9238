"""The Raw Activity Data (bulk export) API, with no network I/O: requests, job states, limits,
job planning and redirects (the downloaded file is :mod:`airflow_provider_activities.export.files`).

Shared by the sync hook (which creates jobs and downloads their data) and the async trigger
client (which polls job states), so both build the same requests and read jobs the same way.

The API:

* ``POST {export_jobs_path}`` with ``{"start_date", "end_date", "activity_type", "output_format",
  "export_type"}`` starts a job; days are ``YYYY-MM-DD``, both inclusive (``start_date`` from
  00:00 UTC, ``end_date`` to the end of that UTC day);
* ``GET {export_status_path}`` answers the job: ``job_id``, ``state`` (``Queued``, ``Running``,
  ``Completed``, ``Canceled``, ``Failed``) and its parameters and times;
* ``GET {export_data_path}`` answers the JSON Lines, or redirects to a file URL (which may need no
  bearer token); the file may be gzip-compressed whatever the headers say.

Limits: 2 jobs running and 10 queued at once; a snapshot covers at most a year (365 days here),
a delta at most 14 days; files are kept 10 days.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, TypeVar, cast
from urllib.parse import quote, urljoin, urlsplit

from airflow_provider_activities.api.config import ClientConfig, is_loopback
from airflow_provider_activities.api.errors import InvalidResponseError, PeopleAIAPIError
from airflow_provider_activities.api.flow import Flow, Response, call_flow
from airflow_provider_activities.api.policy import RetryPolicy
from airflow_provider_activities.api.protocol import ApiRequest, parse_json
from airflow_provider_activities.api.validation import to_day

T = TypeVar("T")
UTC = timezone.utc

EXPORT_TYPES: tuple[str, ...] = ("snapshot", "delta")
"""``snapshot``: activities whose activity date is in the range; ``delta``: activities processed
(ingested or reprocessed) in the range."""
EXPORT_ACTIVITY_TYPES: tuple[str, ...] = ("all", "email", "meeting", "call")
OUTPUT_FORMAT = "JSONLines"

QUEUED, RUNNING, COMPLETED, CANCELED, FAILED = "Queued", "Running", "Completed", "Canceled", "Failed"
JOB_STATES: tuple[str, ...] = (QUEUED, RUNNING, COMPLETED, CANCELED, FAILED)
FAILED_STATES: frozenset[str] = frozenset({CANCELED, FAILED})
"""States in which a job will never have data."""
TERMINAL_STATES: frozenset[str] = frozenset({COMPLETED, CANCELED, FAILED})
_STATE_NAMES = {state.lower(): state for state in JOB_STATES} | {"cancelled": CANCELED}

MAX_DAYS: dict[str, int] = {"snapshot": 365, "delta": 14}
"""Most days (both ends counted) one job may cover, by export type."""
MAX_RUNNING_JOBS = 2
"""Most export jobs running at once per organisation."""
MAX_QUEUED_JOBS = 10
"""Most export jobs waiting in the queue per organisation."""
RETENTION = timedelta(days=10)
"""How long the API keeps a job's files."""
MAX_REDIRECTS = 5
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,200}\Z")
_CAPACITY_RE = re.compile(r"too\s+many|concurren|queued|queue\s+is\s+full|job\s+limit", re.IGNORECASE)


# -- input ----------------------------------------------------------------------------------------


def check_export_type(export_type: Any) -> str:
    """``snapshot`` or ``delta``."""
    if export_type in EXPORT_TYPES:
        return export_type
    raise ValueError(f"export_type={export_type!r} is not an export type: use 'snapshot' or 'delta'.")


def check_export_activity_type(activity_type: Any) -> str:
    """``all`` (also for ``None`` or ``""``), ``email``, ``meeting`` or ``call``."""
    if activity_type is None or activity_type == "":
        return "all"
    if activity_type in EXPORT_ACTIVITY_TYPES:
        return activity_type
    raise ValueError(
        f"activity_type={activity_type!r} is not an export activity type: use one of {', '.join(EXPORT_ACTIVITY_TYPES)}."
    )


def check_export_range(start_date: Any, end_date: Any, export_type: str) -> tuple[date, date]:
    """Both days, in order, within the API's range limit for ``export_type`` (both ends counted)."""
    first, last = to_day(start_date, "start_date"), to_day(end_date, "end_date")
    if last < first:
        raise ValueError(f"end_date ({last}) is before start_date ({first}); both days are inclusive.")
    days = (last - first).days + 1
    limit = MAX_DAYS[export_type]
    if days > limit:
        raise ValueError(
            f"[{first}, {last}] covers {days} days, over the API's limit of {limit} days for a {export_type} "
            "export job: split the range (PeopleAIExportActivitiesToParquetOperator does this itself)."
        )
    return first, last


def check_job_id(job_id: Any) -> str:
    """A job id as the API issues them (letters, digits, ``. _ : -``), never a path: ``.`` and
    ``..`` are refused too (HTTP clients resolve them as dot segments, reaching another path).
    """
    if isinstance(job_id, str) and _JOB_ID_RE.match(job_id) and job_id.strip(".") != "":
        return job_id
    raise ValueError(f"job_id={job_id!r} is not an export job id.")


# -- jobs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportJobSpec:
    """What one export job asks for.

    :param start_date: first day (inclusive).
    :param end_date: last day (inclusive).
    :param export_type: ``snapshot`` or ``delta``.
    :param activity_type: ``all``, ``email``, ``meeting`` or ``call``.
    """

    start_date: date
    end_date: date
    export_type: str
    activity_type: str = "all"

    @property
    def key(self) -> str:
        """A stable name, e.g. ``snapshot/all/2026-11-01/2026-11-03`` (where job ids are remembered)."""
        return f"{self.export_type}/{self.activity_type}/{self.start_date}/{self.end_date}"

    def body(self) -> dict[str, str]:
        """The JSON body that creates the job."""
        return {
            "start_date": self.start_date.isoformat(),
            "end_date": self.end_date.isoformat(),
            "activity_type": self.activity_type,
            "output_format": OUTPUT_FORMAT,
            "export_type": self.export_type,
        }


def plan_export_jobs(
    first_day: date, last_day: date, export_type: str, activity_type: str = "all", max_days: int | None = None
) -> list[ExportJobSpec]:
    """Consecutive jobs covering ``[first_day, last_day]``, each within the range limit.

    :param max_days: days per job; the API's limit for ``export_type`` by default (and at most).
    """
    export_type = check_export_type(export_type)
    activity_type = check_export_activity_type(activity_type)
    limit = MAX_DAYS[export_type]
    step = limit if max_days is None else max(1, min(int(max_days), limit))
    if last_day < first_day:
        raise ValueError(f"last_day ({last_day}) is before first_day ({first_day}).")
    specs = []
    cursor = first_day
    while cursor <= last_day:
        end = min(last_day, cursor + timedelta(days=step - 1))
        specs.append(ExportJobSpec(cursor, end, export_type, activity_type))
        cursor = end + timedelta(days=1)
    return specs


@dataclass(frozen=True)
class ExportJob:
    """An export job as the API describes it.

    :param job_id: the job's id.
    :param state: ``Queued``, ``Running``, ``Completed``, ``Canceled`` or ``Failed`` (another
        value the API may add is kept as sent, and treated as not finished).
    """

    job_id: str
    state: str
    export_type: str | None = None
    output_format: str | None = None
    activity_type: str | None = None
    start_date: str | None = None
    end_date: str | None = None
    job_created_time: str | None = None
    job_start_time: str | None = None
    job_end_time: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the job reached a final state."""
        return self.state in TERMINAL_STATES

    @property
    def completed(self) -> bool:
        """Whether its data can be downloaded."""
        return self.state == COMPLETED

    @property
    def failed(self) -> bool:
        """Whether it ended ``Failed`` or ``Canceled``."""
        return self.state in FAILED_STATES

    def created_at(self) -> datetime | None:
        """``job_created_time`` as an aware datetime, or ``None`` when absent or unreadable."""
        return _parse_time(self.job_created_time)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serializable fields (for XCom, task state and trigger events)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ExportJob:
        """The job of :meth:`as_dict` (unknown keys ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{key: value for key, value in payload.items() if key in names})


def normalize_state(state: Any) -> str:
    """The canonical spelling of a job state (``completed`` -> ``Completed``, ``CANCELLED`` -> ``Canceled``)."""
    text = str(state).strip()
    return _STATE_NAMES.get(text.lower(), text)


def parse_created_job(body: bytes) -> ExportJob:
    """Read the answer to a job creation: like :func:`parse_export_job`, a missing state taken as ``Queued``."""
    return parse_export_job(body, default_state=QUEUED)


def parse_export_job(body: bytes, default_state: str | None = None) -> ExportJob:
    """Read a job answer: the job object itself, or one wrapped as ``{"data": {...}}``.

    :param default_state: the state of an answer without one; ``None`` makes that invalid.
    """
    payload = parse_json(body)
    if isinstance(payload, dict) and isinstance(payload.get("data"), dict) and "job_id" not in payload:
        payload = payload["data"]
    if not isinstance(payload, dict):
        raise InvalidResponseError("export job answer is not a JSON object")
    job_id, state = payload.get("job_id"), payload.get("state", default_state)
    if not isinstance(job_id, (str, int)) or isinstance(job_id, bool) or str(job_id) == "":
        raise InvalidResponseError("export job answer has no job_id")
    if not isinstance(state, str) or not state.strip():
        raise InvalidResponseError(f"export job {job_id} answer has no state")

    def text(name: str) -> str | None:
        value = payload.get(name)
        return None if value is None else str(value)

    return ExportJob(
        job_id=str(job_id),
        state=normalize_state(state),
        export_type=text("export_type"),
        output_format=text("output_format"),
        activity_type=text("activity_type"),
        start_date=text("start_date"),
        end_date=text("end_date"),
        job_created_time=text("job_created_time"),
        job_start_time=text("job_start_time"),
        job_end_time=text("job_end_time"),
    )


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def is_retained(job: ExportJob, now: datetime, margin: timedelta = timedelta(hours=6)) -> bool:
    """Whether a job's files should still be there (created less than 10 days ago, with a margin);
    a job without a readable creation time is taken as retained (the API answers 404 otherwise).
    """
    created = job.created_at()
    return created is None or now - created < RETENTION - margin


def is_capacity_error(error: PeopleAIAPIError) -> bool:
    """Whether the API refused a new job because too many are running or queued (to wait out).

    A 429, or a 4xx whose message speaks of too many / concurrent / queued jobs.
    """
    if error.status == 429:
        return True
    return error.status is not None and 400 <= error.status < 500 and bool(_CAPACITY_RE.search(error.message or ""))


# -- requests -------------------------------------------------------------------------------------


def create_job_request(config: ClientConfig, spec: ExportJobSpec) -> ApiRequest:
    """``POST {export_jobs_path}`` with the job's JSON body."""
    return ApiRequest(method="POST", path=config.export_jobs_path, json_body=spec.body())


def _job_path(template: str, job_id: str) -> str:
    return template.replace("{job_id}", quote(check_job_id(job_id), safe=""))


def job_status_request(config: ClientConfig, job_id: str) -> ApiRequest:
    """``GET {export_status_path}`` of one job."""
    return ApiRequest(method="GET", path=_job_path(config.export_status_path, job_id))


def job_data_request(config: ClientConfig, job_id: str) -> ApiRequest:
    """``GET {export_data_path}`` of one job (the data, or a redirect to it)."""
    return ApiRequest(method="GET", path=_job_path(config.export_data_path, job_id))


# -- redirects ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redirect:
    """A 3xx answer of the download: where it points (may be relative)."""

    status: int
    location: str | None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"https": 443, "http": 80}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def same_origin(url: str, other: str) -> bool:
    """Whether two URLs share scheme, host and port (the bearer token goes to the API's origin only)."""
    return _origin(url) == _origin(other)


def public_url(url: str) -> str:
    """``scheme://host[:port]/path`` without query or fragment: a pre-signed URL's query is a credential."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def redirect_target(current_url: str, location: str | None, request: ApiRequest, status: int) -> str:
    """The absolute URL a redirect points to, if it may be followed.

    Followed: ``https`` URLs, and ``http`` to a loopback host. Anything else is refused before
    any connection, so a redirect can never make the client fetch (or send anything) in clear.

    :raises PeopleAIAPIError: for a redirect without ``Location`` or to a refused URL.
    """
    if not location:
        raise PeopleAIAPIError(request.method, request.path, status, "redirect without a Location header")
    target = urljoin(current_url, location.strip())
    parts = urlsplit(target)
    host = parts.hostname or ""
    allowed = parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host))
    if not allowed or not host:
        raise PeopleAIAPIError(
            request.method,
            request.path,
            status,
            f"redirect to {public_url(target)} refused: only https URLs (or http to a loopback host) are followed",
        )
    return target


def download_flow(
    request: ApiRequest,
    config: ClientConfig,
    policy: RetryPolicy,
    finish: Callable[[bytes], T],
    max_redirects: int = MAX_REDIRECTS,
) -> Flow[T]:
    """Fetch the export data, following redirects: each hop is a :func:`call_flow` (auth, retries).

    The bearer token goes only to the API's own origin (scheme, host and port of ``base_url``): a
    hop to another origin (a file store's pre-signed URL) is sent without it. The driver streams a
    2xx body to its sink; ``finish`` then checks the sink and returns the result (raising
    :class:`InvalidResponseError` to have the hop retried, e.g. for a truncated gzip stream).
    """
    current, current_url = request, request.url(config)
    for _ in range(max_redirects + 1):
        outcome: object = yield from call_flow(current, finish, policy, on_redirect=_as_redirect)
        if not isinstance(outcome, Redirect):
            return cast(T, outcome)  # what ``finish`` returned
        target = redirect_target(current_url, outcome.location, current, outcome.status)
        mine = same_origin(target, config.base_url)
        current = ApiRequest(
            method="GET",
            path=urlsplit(target).path or "/",
            authenticated=mine,
            absolute_url=target,
        )
        current_url = target
    raise PeopleAIAPIError(request.method, request.path, None, f"more than {max_redirects} redirects")


def _as_redirect(response: Response) -> Redirect:
    location = None
    for name, value in response.headers.items():
        if name.lower() == "location":
            location = value
            break
    return Redirect(response.status, location)
