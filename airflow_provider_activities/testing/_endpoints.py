"""The sandbox's API endpoints: the token endpoint, the activity and participant pages, the export routes.

Each endpoint is a method ``(request) -> response`` of an object that owns its state:
:class:`Tokens` (issued tokens, the token endpoint, bearer checks), :class:`ActivityPages` (the
data endpoints, page formatting and :class:`PageCache`), :class:`ExportRoutes` (the bulk export
endpoints of :class:`~airflow_provider_activities.testing._export.ExportService`, with the body
faults). :func:`api_routes` and :func:`file_host_routes` lay them out as
:class:`~airflow_provider_activities.testing._server.Route` tables for the dispatcher.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from airflow_provider_activities.testing._data import ACTIVITY_TYPES, DAY_MS, MIN_LAG_MS, Generator, to_ms
from airflow_provider_activities.testing._export import EXPORT_FILES_PATH, EXPORT_JOBS_PATH, ExportService
from airflow_provider_activities.testing._faults import Faults
from airflow_provider_activities.testing._server import ErrorMaker, Request, RequestLog, Response, Route
from airflow_provider_activities.testing._store import Filter, Item, Store, View

UTC = timezone.utc
TOKEN_PATH = "/auth/v1/tokens"
ACTIVITIES_PATH = "/v0/public/activities"
PARTICIPANTS_PATH = "/v0/public/activities/participants"
TIMESTAMP_FORMATS: tuple[str, ...] = ("epoch_ms", "iso", "mixed")
ACTIVITY_TIME_FIELDS: tuple[str, ...] = ("timestamp", "created_at", "meeting_start_time", "meeting_end_time")
PARTICIPANT_TIME_FIELDS: tuple[str, ...] = ("activity_timestamp", "created_at")
DEFAULT_PAGE_CACHE_BYTES = 128 * 1024 * 1024

_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# ----- tokens -----------------------------------------------------------------------------------


@dataclass
class _Token:
    expires_at: float
    uses: int = 0
    revoked: bool = False


class Tokens:
    """The token endpoint and the tokens it issued: minting, revoking, counting uses, bearer checks.

    :param seed: seeds the tokens (deterministic JWT-shaped strings).
    :param client_id: the API key the endpoint accepts.
    :param client_secret: the API secret the endpoint accepts (and signs tokens with).
    :param ttl: lifetime of a new token, in seconds.
    :param faults: the fault knobs (``expire_tokens_after``).
    :param log: counts ``tokens_issued``.
    :param error: makes error answers.
    """

    def __init__(
        self, seed: int, client_id: str, client_secret: str, ttl: float, faults: Faults, log: RequestLog, error: ErrorMaker
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.ttl = ttl
        """Lifetime of new tokens, in seconds."""
        self._seed = seed
        self._faults = faults
        self._log = log
        self._error = error
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}
        self._counter = 0

    def issue(self) -> str:
        """Mint a valid access token (counted in ``tokens_issued``)."""
        with self._lock:
            self._counter += 1
            number = self._counter
        token = self._make_jwt(number)
        with self._lock:
            self._tokens[token] = _Token(expires_at=time.monotonic() + self.ttl)
        self._log.count("tokens_issued")
        return token

    def revoke_all(self) -> int:
        """Revoke every token issued so far; returns how many were live."""
        with self._lock:
            live = [t for t in self._tokens.values() if not t.revoked]
            for token in live:
                token.revoked = True
            return len(live)

    def uses(self) -> dict[str, int]:
        """How many authenticated requests each token issued so far has served."""
        with self._lock:
            return {token: info.uses for token, info in self._tokens.items()}

    def authorize(self, request: Request) -> bool:
        """Whether ``request`` carries a live bearer token; counts a use of it when it does.

        :param request: the request.
        """
        header = request.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        max_uses = self._faults.token_max_uses
        with self._lock:
            info = self._tokens.get(token.strip())
            if info is None or info.revoked or time.monotonic() >= info.expires_at:
                return False
            if max_uses is not None and info.uses >= max_uses:
                return False
            info.uses += 1
            return True

    def credentials_match(self, client_id: str, client_secret: str) -> bool:
        """Whether these are the accepted credentials (compared in constant time).

        :param client_id: the client id given.
        :param client_secret: the client secret given.
        """
        return hmac.compare_digest(client_id.encode(), self.client_id.encode()) and hmac.compare_digest(
            client_secret.encode(), self.client_secret.encode()
        )

    def endpoint(self, request: Request) -> Response:
        """``POST /auth/v1/tokens``: form-encoded client credentials in, a bearer token out.

        :param request: the request.
        """
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
        if not self.credentials_match(form["client_id"], form["client_secret"]):
            return self._error(401, request.path, "Invalid client credentials")
        token = self.issue()
        ttl = self.ttl
        body = {"access_token": token, "token_type": "bearer", "expires_in": int(ttl) if float(ttl).is_integer() else ttl}
        return Response(200, json.dumps(body).encode())

    def _make_jwt(self, number: int) -> str:
        """A JWT-shaped token, deterministic from the seed, the client id and its serial number."""

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

        header = b64(b'{"alg":"HS256","typ":"JWT"}')
        jti = hashlib.sha256(f"{self._seed}:{self.client_id}:{number}".encode()).hexdigest()[:32]
        payload = b64(json.dumps({"sub": self.client_id, "jti": jti, "scope": "activity"}, separators=(",", ":")).encode())
        signature = b64(hmac.new(self.client_secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{signature}"


# ----- activity and participant pages --------------------------------------------------------------


class PageCache:
    """Encoded pages by content key, least recently used dropped beyond ``max_bytes``.

    :param max_bytes: the most bytes of pages kept.
    """

    def __init__(self, max_bytes: int = DEFAULT_PAGE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        """The most bytes of pages kept."""
        self._lock = threading.Lock()
        self._pages: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        """The page of ``key``, or ``None``.

        :param key: what the page holds: its query, data version, slice and format.
        """
        with self._lock:
            found = self._pages.get(key)
            if found is not None:
                self._pages.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], data: bytes) -> None:
        """Keep the page of ``key`` (dropping the least recently used beyond the cap).

        :param key: what the page holds.
        :param data: the encoded page.
        """
        with self._lock:
            if key in self._pages:
                return
            self._pages[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes and self._pages:
                _, evicted = self._pages.popitem(last=False)
                self._bytes -= len(evicted)


class ActivityPages:
    """The data endpoints: ``/v0/public/activities`` (and per type) and ``.../participants``.

    :param gen: the generated data.
    :param store: the data with live inserts, queried by filter.
    :param faults: the fault knobs (page shape, body faults, inserts while paging).
    :param error: makes error answers.
    :param insert: inserts activities (``Sandbox.add_activities``), for ``insert_before_offset``.
    :param cache: the page cache.
    :param timestamp_format: how times are served (``epoch_ms``, ``iso`` or ``mixed``).
    :param max_page_size: the largest ``limit`` accepted.
    """

    def __init__(
        self,
        gen: Generator,
        store: Store,
        faults: Faults,
        error: ErrorMaker,
        insert: Callable[..., list[dict[str, Any]]],
        cache: PageCache,
        timestamp_format: str,
        max_page_size: int,
    ) -> None:
        self.timestamp_format = timestamp_format
        """How timestamps are served."""
        self.max_page_size = max_page_size
        """The largest ``limit`` accepted; above it answers 400."""
        self.cache = cache
        self._gen = gen
        self._store = store
        self._faults = faults
        self._error = error
        self._insert = insert

    def endpoint(self, request: Request) -> Response:
        """One page: ``offset``, ``limit``, ``from``, ``to``, ``ingested-from``, ``ingested-to``.

        :param request: the request.
        """
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
        faults = self._faults
        if faults.filters_ignored:
            query = Filter(activity_type)
        else:
            query = Filter(activity_type, ts_from, ts_to, created_from, created_to)
        inserts = faults.take_insert(path, offset)
        if inserts:
            self._insert_front(query, inserts)
        view = self._store.view(query)
        total = view.participant_total if participants else view.activity_total
        served = min(limit, faults.page_cap or limit)
        first = offset - 1 if faults.overlap and offset > 0 else offset
        data = self._page_bytes(view, query, participants, first, served)
        if faults.bare:
            body = data
        else:
            meta = json.dumps({"limit": limit, "offset": offset, "total": total, "message": None}, separators=(",", ":"))
            body = b'{"data":' + data + b',"meta":' + meta.encode() + b"}"
        response = Response(200, body, fault=faults.take_body_fault(path))
        if response.fault == "invalid_json":
            response.cut_in_half()
        return response

    def _insert_front(self, query: Filter, count: int) -> None:
        """Insert ``count`` activities just before the first record ``query`` selects."""
        first = self._store.view(query).first_activity()
        if first is None:
            ts = query.ts_from if query.ts_from is not None else self._gen.start_ms
            created = query.created_from if query.created_from is not None else ts + MIN_LAG_MS
        else:
            ts = first["timestamp"] - 1
            if query.ts_from is not None and ts < query.ts_from:
                ts = first["timestamp"]
            created = first["created_at"]
        self._insert(count, timestamp=ts, created_at=created, activity_type=query.activity_type)

    def _page_bytes(self, view: View, query: Filter, participants: bool, offset: int, count: int) -> bytes:
        """The JSON array of one page, formatted and encoded (cached by content)."""
        key = (participants, query, view.version, offset, count, self.timestamp_format)
        found = self.cache.get(key)
        if found is not None:
            return found
        if participants:
            records = self._format_participants(view, offset, count)
        else:
            records = self._format_activities(view.activity_items(offset, count))
        data = json.dumps(records, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.cache.put(key, data)
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
    """``2026-11-01T03:04:05.123Z`` (or with another UTC ``suffix`` such as ``+00:00``) of epoch ms.

    :param value: epoch milliseconds.
    :param suffix: the UTC designator to end with.
    """
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


# ----- bulk export --------------------------------------------------------------------------------


class ExportRoutes:
    """The bulk export endpoints of an :class:`ExportService`, with the body faults on data answers.

    :param export: the export jobs and files.
    :param faults: the fault knobs (``drop_connection``, ``invalid_json``).
    :param error: makes error answers.
    """

    def __init__(self, export: ExportService, faults: Faults, error: ErrorMaker) -> None:
        self._export = export
        self._faults = faults
        self._error = error

    def create(self, request: Request) -> Response:
        """``POST /pull/v1/export/activities/jobs``.

        :param request: the request.
        """
        return self._export.create(request, self._error)

    def status_or_data(self, request: Request) -> Response:
        """``GET .../jobs/{job_id}`` and ``.../jobs/{job_id}/data``.

        :param request: the request.
        """
        response = self._export.status_or_data(request, self._error)
        return self._with_body_fault(request.path, response) if request.path.endswith("/data") else response

    def file(self, request: Request) -> Response:
        """A signed file URL on the API's own host (a bearer token there is ignored).

        :param request: the request.
        """
        return self._with_body_fault(request.path, self._export.file(request, self._error, foreign=False))

    def foreign_file(self, request: Request) -> Response:
        """A signed file URL on the file host (which refuses a bearer token besides the signature).

        :param request: the request.
        """
        return self._with_body_fault(request.path, self._export.file(request, self._error, foreign=True))

    def _with_body_fault(self, path: str, response: Response) -> Response:
        """Apply ``drop_connection`` / ``invalid_json`` (a body cut in half) to a data answer."""
        if response.status != 200:
            return response
        response.fault = self._faults.take_body_fault(path)
        if response.fault == "invalid_json":
            response.cut_in_half()
        return response


def api_routes(tokens: Tokens, pages: ActivityPages, export: ExportRoutes) -> list[Route]:
    """The API server's routes, in matching order.

    :param tokens: the token endpoint.
    :param pages: the data endpoints.
    :param export: the export endpoints.
    """
    return [
        Route("POST", TOKEN_PATH, tokens.endpoint, auth=False, token=True),
        Route("GET", ACTIVITIES_PATH, pages.endpoint),
        *(Route("GET", f"{ACTIVITIES_PATH}/{kind}", pages.endpoint) for kind in ACTIVITY_TYPES),
        Route("GET", PARTICIPANTS_PATH, pages.endpoint),
        # Bulk export (Raw Activity Data): jobs, their status and data, and the signed files.
        Route("POST", EXPORT_JOBS_PATH, export.create),
        Route("GET", EXPORT_JOBS_PATH, export.status_or_data, prefix=True),
        Route("GET", EXPORT_FILES_PATH, export.file, prefix=True, auth=False),
    ]


def file_host_routes(export: ExportRoutes) -> list[Route]:
    """The file host's routes: the signed export files only.

    :param export: the export endpoints.
    """
    return [Route("GET", EXPORT_FILES_PATH, export.foreign_file, prefix=True, auth=False)]


__all__ = [
    "ACTIVITIES_PATH",
    "ACTIVITY_TIME_FIELDS",
    "PARTICIPANTS_PATH",
    "PARTICIPANT_TIME_FIELDS",
    "TIMESTAMP_FORMATS",
    "TOKEN_PATH",
    "ActivityPages",
    "ExportRoutes",
    "PageCache",
    "Tokens",
    "api_routes",
    "file_host_routes",
    "iso_ms",
]
