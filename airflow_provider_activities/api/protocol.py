"""What goes on the wire: request building and response parsing, with no I/O.

The sync hook (``requests``) and the async trigger client (``aiohttp``) both build their
requests and read their answers here, so URLs, parameters, envelopes and error bodies are
decided in one place.

Answers are distrusted: a body over the size cap (:func:`max_response_bytes`), JSON nested
deeper than the decoder allows, or a page of the wrong shape or types (``data`` not a list,
``meta.total`` not a count, records that are not objects, timestamps that are neither numbers
nor strings) raises :class:`RefusedResponseError`, naming what is wrong, before any record
reaches a writer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from airflow_provider_activities.api.config import ClientConfig
from airflow_provider_activities.api.errors import InvalidResponseError

ACTIVITY_TYPES: tuple[str, ...] = ("email", "call", "meeting")
ACTIVITY_TIMESTAMP_FIELDS: tuple[str, ...] = (
    "timestamp",
    "created_at",
    "ingested_at",
    "meeting_start_time",
    "meeting_end_time",
)
PARTICIPANT_TIMESTAMP_FIELDS: tuple[str, ...] = ("activity_timestamp", "created_at")
ACTIVITIES_PATH = "/v0/public/activities"
PARTICIPANTS_PATH = "/v0/public/activities/participants"

#: The smallest body cap: answers up to 64 MiB are always read (see :func:`max_response_bytes`).
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: Body allowance per record asked for (``limit``), when that is more than the default cap.
RESPONSE_BYTES_PER_RECORD = 16 * 1024
#: Fields holding timestamps in activities or participants: numbers, strings or null.
TIMESTAMP_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(ACTIVITY_TIMESTAMP_FIELDS + PARTICIPANT_TIMESTAMP_FIELDS))
_TIMESTAMP_TYPES = (int, float, str)


class RefusedResponseError(InvalidResponseError):
    """A whole answer the client refuses: too large, nested too deep, or not the shape and types
    the API documents. Unlike a truncated body it is not retried (the same request would get the
    same answer): the call fails at once, naming what is wrong.
    """


def max_response_bytes(limit: int | None = None, configured: int | None = None) -> int:
    """The largest answer body accepted, in bytes.

    :param limit: the records asked for (a page's ``limit``), if any.
    :param configured: the connection extra ``max_response_bytes``; wins when set.
    :return: ``configured``, else 64 MiB or 16 KiB per record asked for, whichever is more
        (pages of the sandbox's activities take under 1 KiB a record).
    """
    if configured is not None:
        return configured
    return max(DEFAULT_MAX_RESPONSE_BYTES, (limit or 0) * RESPONSE_BYTES_PER_RECORD)


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request, transport-neutral.

    :param method: ``GET`` or ``POST``.
    :param path: the path below the base URL.
    :param params: query parameters.
    :param form: a form-encoded body (the token endpoint).
    :param json_body: a JSON body (export jobs).
    :param authenticated: whether a bearer token must be attached.
    :param offset: the page offset, for error messages.
    :param bearer: the token attached by the call flow (never set by builders, never logged).
    :param absolute_url: a whole URL to send to instead of ``base_url + path`` (a redirect
        target, e.g. a pre-signed file URL whose query string is a credential: never logged;
        ``path`` then holds its path only, for messages).
    :param max_body_bytes: the largest answer body accepted (the connection extra
        ``max_response_bytes``); ``None`` for the default of :func:`max_response_bytes`.
    """

    method: str
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    form: Mapping[str, str] | None = field(default=None, repr=False)
    json_body: Mapping[str, Any] | None = None
    authenticated: bool = True
    offset: int | None = None
    bearer: str | None = field(default=None, repr=False)
    absolute_url: str | None = field(default=None, repr=False)
    max_body_bytes: int | None = None

    def body_cap(self) -> int:
        """The largest answer body accepted for this request, in bytes."""
        limit = self.params.get("limit")
        return max_response_bytes(limit if isinstance(limit, int) else None, self.max_body_bytes)

    def url(self, config: ClientConfig) -> str:
        """The absolute URL (without the query string of ``params``)."""
        if self.absolute_url is not None:
            return self.absolute_url
        return config.base_url + self.path

    def headers(self) -> dict[str, str]:
        """Headers to send, the bearer token included when one is attached."""
        headers = {"Accept": "application/json"}
        if self.form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.bearer is not None:
            headers["Authorization"] = f"Bearer {self.bearer}"
        return headers

    def with_bearer(self, token: str) -> ApiRequest:
        """A copy carrying ``token``."""
        return replace(self, bearer=token)


@dataclass(frozen=True)
class Token:
    """An access token and how long it lives.

    :param access_token: the bearer token (never logged).
    :param expires_in: its lifetime in seconds, as the API said.
    """

    access_token: str = field(repr=False)
    expires_in: float


@dataclass(frozen=True)
class Page:
    """One page of records.

    :param records: the records, as the API sent them (empty when ``batch`` holds them).
    :param total: ``meta.total`` when the API sent an envelope, else ``None``.
    :param batch: the records as a ``pyarrow.RecordBatch``, when the page was parsed straight
        into Arrow (:mod:`airflow_provider_activities.records.arrow_pages`); ``None`` otherwise.
    :param limit: ``meta.limit`` when the API sent a valid one (the page size it applied), else ``None``.
    :param body_bytes: the size of the body the page was read from.
    """

    records: list[dict[str, Any]]
    total: int | None
    batch: Any = None
    limit: int | None = None
    body_bytes: int = 0

    @property
    def count(self) -> int:
        """How many records the page holds."""
        return self.batch.num_rows if self.batch is not None else len(self.records)


def token_request(config: ClientConfig) -> ApiRequest:
    """The client-credentials token request, form-encoded as the vendor requires."""
    return ApiRequest(
        method="POST",
        path=config.token_path,
        form={
            "grant_type": "client_credentials",
            "client_id": config.client_id,
            "client_secret": config.client_secret,
        },
        authenticated=False,
    )


def activities_path(activity_type: str | None) -> str:
    """The Activity API path for one type, or all types when ``activity_type`` is ``None``."""
    return ACTIVITIES_PATH if activity_type is None else f"{ACTIVITIES_PATH}/{activity_type}"


def day_filters(start: datetime, end: datetime, prefix: str = "") -> dict[str, str]:
    """Day-granular filters covering ``[start, end)``: ``from`` is start's day, ``to`` end's last day.

    The API's date filters are whole days (both inclusive) and may be ignored, so the client
    always bounds records itself; these filters only cut the volume.

    :param prefix: ``""`` for the activity date, ``"ingested-"`` for the ingestion date.
    """
    last_day: date = (end - timedelta(milliseconds=1)).date()
    return {f"{prefix}from": start.date().isoformat(), f"{prefix}to": last_day.isoformat()}


def page_request(
    path: str, filters: Mapping[str, str], offset: int, limit: int, max_body_bytes: int | None = None
) -> ApiRequest:
    """A GET of one page of a paginated collection.

    :param max_body_bytes: the connection extra ``max_response_bytes`` (``None``: the default).
    """
    params: dict[str, str | int] = dict(filters)
    params["offset"] = offset
    params["limit"] = limit
    return ApiRequest(method="GET", path=path, params=params, offset=offset, max_body_bytes=max_body_bytes)


def parse_json(body: bytes) -> Any:
    """Decode a JSON body.

    :raises InvalidResponseError: for a truncated or invalid body (retried).
    :raises RefusedResponseError: for JSON nested deeper than the decoder allows (a
        ``RecursionError`` inside :func:`json.loads`; not retried).
    """
    try:
        return json.loads(body)
    except RecursionError:
        raise RefusedResponseError(
            f"JSON body ({len(body)} bytes) nested deeper than the decoder allows (about {sys.getrecursionlimit()} levels)"
        ) from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidResponseError(f"invalid JSON body ({len(body)} bytes): {err}") from None


def _kind(value: Any) -> str:
    """A JSON-ish name of ``value``'s type, and a short sample of it, for messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    name = names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)
    sample = repr(value)
    return name if value is None else f"{name} ({sample[:60]}{'...' if len(sample) > 60 else ''})"


def parse_token(body: bytes) -> Token:
    """Read a token response: ``{"access_token", "token_type", "expires_in"}``."""
    payload = parse_json(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("access_token"), str):
        raise InvalidResponseError("token response has no access_token")
    expires_in = payload.get("expires_in")
    try:
        lifetime = float(expires_in) if expires_in is not None else 7200.0
    except (TypeError, ValueError):
        lifetime = 7200.0
    return Token(access_token=payload["access_token"], expires_in=lifetime)


def parse_page(body: bytes) -> Page:
    """Read a page: the ``{"data": [...], "meta": {"total": T}}`` envelope or a bare list.

    :raises InvalidResponseError: for a body that is not JSON (retried).
    :raises RefusedResponseError: naming what is wrong, for a page of the wrong shape or types:
        ``data`` not a list, ``meta`` not an object, ``meta.total`` not a non-negative integer,
        a record that is not an object, or a timestamp field (:data:`TIMESTAMP_FIELDS`) that is
        neither a number, a string nor null.
    """
    payload = parse_json(body)
    if isinstance(payload, list):
        records, total = payload, None
    elif isinstance(payload, dict):
        if "data" not in payload:
            raise RefusedResponseError(f"page is an object without 'data' (keys: {', '.join(map(str, list(payload)[:10]))})")
        records = payload["data"]
        if not isinstance(records, list):
            raise RefusedResponseError(f"page 'data' is {_kind(records)}, not a list of records")
        total = _meta_total(payload.get("meta"))
    else:
        raise RefusedResponseError(f"page is {_kind(payload)}, not a list nor a {{'data': [...]}} envelope")
    _check_records(records)
    limit = _meta_limit(payload.get("meta")) if isinstance(payload, dict) else None
    return Page(records=records, total=total, limit=limit, body_bytes=len(body))


def _meta_limit(meta: Any) -> int | None:
    """``meta.limit`` when it is a positive whole number, else ``None`` (only a hint: never refused)."""
    limit = meta.get("limit") if isinstance(meta, dict) else None
    if type(limit) is float and limit.is_integer():
        limit = int(limit)
    return limit if type(limit) is int and limit > 0 else None


def _meta_total(meta: Any) -> int | None:
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise RefusedResponseError(f"page 'meta' is {_kind(meta)}, not an object")
    total = meta.get("total")
    if total is None:
        return None
    if type(total) is float and total.is_integer():
        total = int(total)
    if type(total) is not int or total < 0:
        raise RefusedResponseError(f"page 'meta.total' is {_kind(total)}, not a count of records")
    return total


def _check_records(records: list[Any]) -> None:
    """Every record is an object whose timestamp fields are numbers, strings or null."""
    fields, allowed = TIMESTAMP_FIELDS, _TIMESTAMP_TYPES
    for index, record in enumerate(records):
        if type(record) is not dict:
            raise RefusedResponseError(f"record {index} of the page is {_kind(record)}, not an object")
        for name in fields:
            value = record.get(name)
            if value is not None and (type(value) not in allowed):
                uid = record.get("uid", record.get("activity_uid"))
                raise RefusedResponseError(
                    f"record {index} of the page (uid {uid!r}): field {name!r} is {_kind(value)}, "
                    "not a timestamp (epoch milliseconds or an ISO-8601 string)"
                )


def parse_error(body: bytes) -> tuple[str, str | None]:
    """Read the API's error envelope: its ``message`` and trace ``id`` (best effort)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        payload = None
    if isinstance(payload, dict):
        message = payload.get("message") or payload.get("error_description") or payload.get("error")
        trace_id = payload.get("id")
        return (str(message) if message else "no error message"), (str(trace_id) if trace_id else None)
    text = body[:200].decode("utf-8", "replace").strip()
    return (text or "empty body"), None
