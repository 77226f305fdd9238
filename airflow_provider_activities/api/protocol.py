"""What goes on the wire: request building and response parsing, with no I/O.

The sync hook (``requests``) and the async trigger client (``aiohttp``) both build their
requests and read their answers here, so URLs, parameters, envelopes and error bodies are
decided in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Mapping

from airflow_provider_activities.api.config import ClientConfig
from airflow_provider_activities.api.errors import InvalidResponseError

ACTIVITY_TYPES: tuple[str, ...] = ("email", "call", "meeting")
ACTIVITIES_PATH = "/v0/public/activities"
PARTICIPANTS_PATH = "/v0/public/activities/participants"


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

    :param records: the records, as the API sent them.
    :param total: ``meta.total`` when the API sent an envelope, else ``None``.
    """

    records: list[dict[str, Any]]
    total: int | None


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


def page_request(path: str, filters: Mapping[str, str], offset: int, limit: int) -> ApiRequest:
    """A GET of one page of a paginated collection."""
    params = dict(filters)
    params["offset"] = offset
    params["limit"] = limit
    return ApiRequest(method="GET", path=path, params=params, offset=offset)


def parse_json(body: bytes) -> Any:
    """Decode a JSON body; a truncated or invalid one raises :class:`InvalidResponseError`."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidResponseError(f"invalid JSON body ({len(body)} bytes): {err}") from None


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
    """Read a page: the ``{"data": [...], "meta": {"total": T}}`` envelope or a bare list."""
    payload = parse_json(body)
    if isinstance(payload, list):
        records, total = payload, None
    elif isinstance(payload, dict) and isinstance(payload.get("data"), list):
        records = payload["data"]
        meta = payload.get("meta") or {}
        total = meta.get("total") if isinstance(meta, dict) else None
        total = int(total) if isinstance(total, (int, float)) and not isinstance(total, bool) else None
    else:
        raise InvalidResponseError("page is neither a list nor a {'data': [...]} envelope")
    if not all(isinstance(record, dict) for record in records):
        raise InvalidResponseError("page holds something other than JSON objects")
    return Page(records=records, total=total)


def parse_error(body: bytes) -> tuple[str, str | None]:
    """Read the API's error envelope: its ``message`` and trace ``id`` (best effort)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict):
        message = payload.get("message") or payload.get("error_description") or payload.get("error")
        trace_id = payload.get("id")
        return (str(message) if message else "no error message"), (str(trace_id) if trace_id else None)
    text = body[:200].decode("utf-8", "replace").strip()
    return (text or "empty body"), None
