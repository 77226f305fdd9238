"""The sandbox's own control endpoints, for driving a sandbox that runs in another process.

They live under the private prefix ``/_sandbox`` of the API server, which the People.ai API does
not have, and take HTTP Basic authentication with the sandbox's client id and secret. They are
not rate limited, delayed, failed by the fault knobs, nor logged in ``Sandbox.requests`` or
counted in ``Sandbox.stats``: a test counting its client's requests never sees them.

* ``POST /_sandbox/activities`` with a JSON object: ``count`` (required), then either ``day``
  (``YYYY-MM-DD``: timestamps spread evenly over that UTC day) or ``timestamp``, and optionally
  ``created_at`` and ``activity_type``; times as ISO-8601 or epoch milliseconds. Answers
  ``{"added": [activity, ...]}`` (times as epoch ms).
* ``GET /_sandbox/expected?start=...&end=...`` with optional ``type``, ``by``
  (``timestamp`` or ``created_at``), ``records`` (``activities`` or ``participants``) and
  ``count=1``: the ground truth of the window ``[start, end)`` as JSON Lines (times as epoch
  ms), or ``{"activities": n, "participants": m}``.
* ``GET /_sandbox/expected-export?start_date=...&end_date=...`` with optional ``export_type``,
  ``activity_type`` and ``count=1``: the records a correct client keeps of an export job of those
  days (both inclusive) as JSON Lines, or ``{"records": n}``.
* ``GET /_sandbox/stats``: ``{"requests": Sandbox.stats, "export": Sandbox.export.stats()}``
  (request counters, and how fast export files were built).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_activities.testing._data import ACTIVITY_TYPES, DAY_MS, to_ms
from airflow_provider_activities.testing._export import EXPORT_ACTIVITY_TYPES, EXPORT_TYPES
from airflow_provider_activities.testing._server import ErrorMaker, Handler, Request, Response, Route

if TYPE_CHECKING:
    from airflow_provider_activities.testing.sandbox import Sandbox

UTC = timezone.utc
ADMIN_PREFIX = "/_sandbox"
ADMIN_ACTIVITIES_PATH = ADMIN_PREFIX + "/activities"
ADMIN_EXPECTED_PATH = ADMIN_PREFIX + "/expected"
ADMIN_EXPECTED_EXPORT_PATH = ADMIN_PREFIX + "/expected-export"
ADMIN_STATS_PATH = ADMIN_PREFIX + "/stats"
MAX_INSERT = 100_000
"""The most activities one ``POST /_sandbox/activities`` inserts."""

_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TRUE = ("1", "true", "yes")


def parse_instant(value: Any, name: str) -> datetime:
    """An aware UTC instant from ``YYYY-MM-DD`` (its midnight), an ISO-8601 date-time (naive is
    UTC; ``Z`` or an offset), or epoch milliseconds (an int, or a string of digits).

    :param value: what was given.
    :param name: the parameter's name, for the error.
    :raises ValueError: naming the parameter and the accepted forms.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_instant(int(text), name)
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            pass
        else:
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    raise ValueError(
        f"{name} must be a day (YYYY-MM-DD), an ISO-8601 date-time such as 2026-11-03T12:00:00Z, "
        f"or epoch milliseconds; got {value!r}"
    )


def parse_day(value: Any, name: str) -> date:
    """A day from ``YYYY-MM-DD``.

    :param value: what was given.
    :param name: the parameter's name, for the error.
    :raises ValueError: naming the parameter.
    """
    if isinstance(value, str) and _DAY_RE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{name} must be a day as YYYY-MM-DD, got {value!r}")


def spread_over_day(day: date, count: int) -> list[int]:
    """``count`` timestamps (epoch ms) spread evenly over the UTC ``day``: the middles of
    ``count`` equal slices, so none falls on either midnight.

    :param day: the UTC day.
    :param count: how many timestamps.
    """
    midnight = to_ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
    return [midnight + (2 * i + 1) * DAY_MS // (2 * count) for i in range(count)]


class AdminRoutes:
    """The ``/_sandbox`` control endpoints of one sandbox.

    :param sandbox: the sandbox they drive (through its public methods).
    :param error: makes error answers (the vendor's envelope, as the rest of the server).
    :param credentials_match: whether a client id and secret are the sandbox's.
    """

    def __init__(self, sandbox: Sandbox, error: ErrorMaker, credentials_match: Callable[[str, str], bool]) -> None:
        self._sandbox = sandbox
        self._error = error
        self._credentials_match = credentials_match

    def routes(self) -> list[Route]:
        """The admin routes (their own Basic authentication; no bearer token)."""
        return [
            Route("POST", ADMIN_ACTIVITIES_PATH, self._guarded(self.add_activities), auth=False),
            Route("GET", ADMIN_EXPECTED_PATH, self._guarded(self.expected), auth=False),
            Route("GET", ADMIN_EXPECTED_EXPORT_PATH, self._guarded(self.expected_export), auth=False),
            Route("GET", ADMIN_STATS_PATH, self._guarded(self.stats), auth=False),
        ]

    def _guarded(self, handler: Handler) -> Handler:
        """``handler`` behind Basic authentication with the client id and secret; a ``ValueError``
        it raises answers 400 with its message.
        """

        def guarded(request: Request) -> Response:
            if not self._authenticated(request):
                response = self._error(401, request.path, "Basic authentication with the sandbox's client id and secret required")
                response.headers["WWW-Authenticate"] = 'Basic realm="peopleai-sandbox"'
                return response
            try:
                return handler(request)
            except ValueError as error:
                return self._error(400, request.path, str(error))

        return guarded

    def _authenticated(self, request: Request) -> bool:
        scheme, _, encoded = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            client_id, _, client_secret = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return self._credentials_match(client_id, client_secret)

    def add_activities(self, request: Request) -> Response:
        """``POST /_sandbox/activities``: insert activities into the served data and the ground truth.

        :param request: the request.
        """
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ValueError('the body must be a JSON object such as {"count": 10, "day": "2026-11-03"}')
        unknown = sorted(set(body) - {"count", "day", "timestamp", "created_at", "activity_type"})
        if unknown:
            raise ValueError(f"unknown fields {unknown}: use count, day, timestamp, created_at, activity_type")
        count = body.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_INSERT:
            raise ValueError(f"count must be an integer from 1 to {MAX_INSERT}, got {count!r}")
        activity_type = body.get("activity_type")
        if activity_type is not None and activity_type not in ACTIVITY_TYPES:
            raise ValueError(f"activity_type must be one of {', '.join(ACTIVITY_TYPES)}, got {activity_type!r}")
        if body.get("day") is not None and body.get("timestamp") is not None:
            raise ValueError("give day (timestamps spread over that day) or timestamp (all at that instant), not both")
        created_at = None if body.get("created_at") is None else parse_instant(body["created_at"], "created_at")
        sandbox = self._sandbox
        if body.get("day") is not None:
            day = parse_day(body["day"], "day")
            added = []
            for moment in spread_over_day(day, count):
                added += sandbox.add_activities(1, timestamp=moment, created_at=created_at, activity_type=activity_type)
        else:
            timestamp = None if body.get("timestamp") is None else parse_instant(body["timestamp"], "timestamp")
            added = sandbox.add_activities(count, timestamp=timestamp, created_at=created_at, activity_type=activity_type)
        return _json(200, {"added": added})

    def expected(self, request: Request) -> Response:
        """``GET /_sandbox/expected``: the activities or participants of a window, or their counts.

        :param request: the request.
        """
        query = request.query
        for name in ("start", "end"):
            if not query.get(name):
                raise ValueError(f"{name} is required (a day YYYY-MM-DD, an ISO-8601 date-time or epoch ms)")
        start, end = parse_instant(query["start"], "start"), parse_instant(query["end"], "end")
        activity_type = query.get("type") or None
        if activity_type is not None and activity_type not in ACTIVITY_TYPES:
            raise ValueError(f"type must be one of {', '.join(ACTIVITY_TYPES)}, got {activity_type!r}")
        by = query.get("by") or "timestamp"
        if by not in ("timestamp", "created_at"):
            raise ValueError(f"by must be timestamp or created_at, got {by!r}")
        records = query.get("records") or "activities"
        if records not in ("activities", "participants"):
            raise ValueError(f"records must be activities or participants, got {records!r}")
        sandbox = self._sandbox
        if _flag(query, "count"):
            return _json(
                200,
                {
                    "activities": sandbox.activity_count(start, end, activity_type, by=by),
                    "participants": sandbox.participant_count(start, end, activity_type, by=by),
                },
            )
        if records == "participants":
            return _json_lines(sandbox.expected_participants(start, end, activity_type, by=by))
        return _json_lines(sandbox.expected_activities(start, end, activity_type, by=by))

    def expected_export(self, request: Request) -> Response:
        """``GET /_sandbox/expected-export``: what a correct client keeps of an export job of some days.

        :param request: the request.
        """
        query = request.query
        start_date = parse_day(query.get("start_date"), "start_date")
        end_date = parse_day(query.get("end_date"), "end_date")
        export_type = query.get("export_type") or "snapshot"
        if export_type not in EXPORT_TYPES:
            raise ValueError(f"export_type must be one of {', '.join(EXPORT_TYPES)}, got {export_type!r}")
        activity_type = query.get("activity_type") or "all"
        if activity_type not in EXPORT_ACTIVITY_TYPES:
            raise ValueError(f"activity_type must be one of {', '.join(EXPORT_ACTIVITY_TYPES)}, got {activity_type!r}")
        records = self._sandbox.expected_export_records(start_date, end_date, export_type, activity_type)
        if _flag(query, "count"):
            return _json(200, {"records": len(records)})
        return _json_lines(records)

    def stats(self, request: Request) -> Response:
        """``GET /_sandbox/stats``: the request counters and the export file counters.

        :param request: the request.
        """
        return _json(200, {"requests": self._sandbox.stats, "export": self._sandbox.export.stats()})


def _flag(query: dict[str, str], name: str) -> bool:
    return (query.get(name) or "").lower() in _TRUE


def _json(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def _json_lines(records: list[dict[str, Any]]) -> Response:
    body = "".join(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n" for record in records)
    return Response(200, body.encode("utf-8"), headers={"Content-Type": "application/x-ndjson; charset=utf-8"})


__all__ = ["ADMIN_PREFIX", "AdminRoutes", "parse_day", "parse_instant", "spread_over_day"]
