"""Fault injection knobs of the sandbox: thread-safe, combinable, resettable.

Every knob is a method of :class:`Faults` (reachable as ``sandbox.faults``). Counted faults
("the next N requests") are consumed by the requests they hit; rules added by several calls
stack and are consumed in the order they were added. ``reset()`` clears everything, or
``reset("fail_next", ...)`` only the named knobs.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

SERVER_ERROR_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})

KNOBS: tuple[str, ...] = (
    "fail_next",
    "fail_ratio",
    "drop_connection",
    "invalid_json",
    "token_endpoint_down",
    "expire_tokens_after",
    "cap_page_size",
    "bare_list",
    "ignore_filters",
    "latency",
    "overlap_pages",
    "insert_before_offset",
)
"""Names accepted by :meth:`Faults.reset`."""


@dataclass(frozen=True)
class Failure:
    """An error answer a fault decided on.

    :param status: the HTTP status (429, 500, 502, 503 or 504).
    :param retry_after: seconds for a ``Retry-After`` header, or ``None`` for none.
    :param fault: the knob that decided it (for the request log).
    """

    status: int
    retry_after: float | None
    fault: str


@dataclass
class _FailRule:
    remaining: int
    status: int
    path: str | None
    include_token: bool
    retry_after: float | None


@dataclass
class _Storm:
    ratio: float
    status: int
    until: float | None
    remaining: int | None
    path: str | None
    include_token: bool
    retry_after: float | None
    rng: random.Random


@dataclass
class _CountRule:
    remaining: int
    path: str | None


@dataclass
class _InsertRule:
    offset: int
    count: int
    path: str | None


def _check_status(status: int) -> int:
    if status not in SERVER_ERROR_STATUSES:
        raise ValueError(f"status must be one of {sorted(SERVER_ERROR_STATUSES)}, got {status}")
    return status


def _path_matches(rule_path: str | None, path: str) -> bool:
    return rule_path is None or rule_path == path


class Faults:
    """The fault knobs of one sandbox.

    :param seed: seeds the random choices of :meth:`fail_ratio` (unless it is given its own).
    """

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._init_state()

    def _init_state(self, names: tuple[str, ...] = KNOBS) -> None:
        if "fail_next" in names:
            self._fail_rules: list[_FailRule] = []
        if "fail_ratio" in names:
            self._storm: _Storm | None = None
        if "drop_connection" in names:
            self._drop_rules: list[_CountRule] = []
        if "invalid_json" in names:
            self._invalid_rules: list[_CountRule] = []
        if "token_endpoint_down" in names:
            self._token_down = 0
            self._token_down_status = 503
        if "expire_tokens_after" in names:
            self._token_max_uses: int | None = None
        if "cap_page_size" in names:
            self._page_cap: int | None = None
        if "bare_list" in names:
            self._bare_list = False
        if "ignore_filters" in names:
            self._ignore_filters = False
        if "latency" in names:
            self._latency = 0.0
        if "overlap_pages" in names:
            self._overlap = False
        if "insert_before_offset" in names:
            self._insert_rules: list[_InsertRule] = []

    # ----- knobs ------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        *,
        path: str | None = None,
        include_token: bool = False,
        retry_after: float | None = None,
    ) -> None:
        """Fail the next ``n`` data requests with ``status`` and an error envelope.

        :param n: how many requests fail.
        :param status: 429, 500, 502, 503 or 504.
        :param path: only requests to exactly this path (e.g. ``/v0/public/activities/email``);
            ``None`` for every data path.
        :param include_token: also fail token requests (``POST /auth/v1/tokens``).
        :param retry_after: send ``Retry-After: <seconds>`` (``None``: no header, like the real API).
        """
        rule = _FailRule(int(n), _check_status(status), path, include_token, retry_after)
        with self._lock:
            self._fail_rules.append(rule)

    def fail_ratio(
        self,
        ratio: float,
        status: int = 429,
        *,
        duration: float | None = None,
        count: int | None = None,
        path: str | None = None,
        include_token: bool = False,
        retry_after: float | None = None,
        seed: int | None = None,
    ) -> None:
        """Fail a random share of requests (a "429 storm"); replaces any earlier storm.

        :param ratio: the probability that a request fails, 0 to 1 (0 stops the storm).
        :param status: 429, 500, 502, 503 or 504.
        :param duration: seconds from now the storm lasts (``None``: until ``count`` or reset).
        :param count: stop after this many failures (``None``: no limit).
        :param path: only requests to exactly this path; ``None`` for every data path.
        :param include_token: also fail token requests.
        :param retry_after: send ``Retry-After: <seconds>`` with each failure.
        :param seed: seeds the choices (default: the sandbox seed), so a sequential run is reproducible.
        """
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be between 0 and 1, got {ratio}")
        storm = None
        if ratio > 0:
            storm = _Storm(
                ratio=ratio,
                status=_check_status(status),
                until=None if duration is None else time.monotonic() + duration,
                remaining=count,
                path=path,
                include_token=include_token,
                retry_after=retry_after,
                rng=random.Random(f"peopleai-sandbox-storm:{self._seed if seed is None else seed}"),
            )
        with self._lock:
            self._storm = storm

    def drop_connection(self, n: int = 1, *, path: str | None = None) -> None:
        """On the next ``n`` successful data answers, send the headers (full ``Content-Length``)
        and half of the body, then close the connection.

        :param n: how many answers are cut.
        :param path: only answers to exactly this path; ``None`` for every data path.
        """
        with self._lock:
            self._drop_rules.append(_CountRule(int(n), path))

    def invalid_json(self, n: int = 1, *, path: str | None = None) -> None:
        """Answer the next ``n`` successful data requests with status 200 and a truncated JSON body
        (its ``Content-Length`` matches the truncated body, so only the JSON is broken).

        :param n: how many answers are broken.
        :param path: only answers to exactly this path; ``None`` for every data path.
        """
        with self._lock:
            self._invalid_rules.append(_CountRule(int(n), path))

    def token_endpoint_down(self, n: int = 1, status: int = 503) -> None:
        """Fail the next ``n`` token requests with ``status`` (replaces an earlier setting; 0 clears).

        :param n: how many token requests fail.
        :param status: 429, 500, 502, 503 or 504.
        """
        with self._lock:
            self._token_down = int(n)
            self._token_down_status = _check_status(status)

    def expire_tokens_after(self, uses: int | None) -> None:
        """Make every token (current and future) invalid once it has been used ``uses`` times:
        its next use answers 401. ``None`` lifts the limit.

        :param uses: uses allowed per token, counted from its issue.
        """
        with self._lock:
            self._token_max_uses = None if uses is None else int(uses)

    def cap_page_size(self, size: int | None) -> None:
        """Serve at most ``size`` records per page whatever ``limit`` asks (``meta.limit`` still
        echoes the request). ``None`` removes the cap.

        :param size: the most records per page.
        """
        if size is not None and size < 1:
            raise ValueError(f"size must be >= 1 or None, got {size}")
        with self._lock:
            self._page_cap = size

    def bare_list(self, enabled: bool = True) -> None:
        """Answer pages as a bare JSON list of records instead of the ``{"data", "meta"}`` envelope.

        :param enabled: on or off.
        """
        with self._lock:
            self._bare_list = bool(enabled)

    def ignore_filters(self, enabled: bool = True) -> None:
        """Ignore ``from``/``to``/``ingested-from``/``ingested-to``: serve everything (of the path's type).

        :param enabled: on or off.
        """
        with self._lock:
            self._ignore_filters = bool(enabled)

    def set_latency(self, seconds: float) -> None:
        """Delay every request by ``seconds`` (on top of the sandbox's own ``latency``).

        :param seconds: the added delay; 0 removes it.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        with self._lock:
            self._latency = float(seconds)

    def overlap_pages(self, enabled: bool = True) -> None:
        """Serve the page at offset ``o > 0`` from record ``o - 1``: records ``o - 1`` to
        ``o - 2 + served`` (an off-by-one server). A client stepping by the page size then gets
        record ``limit - 1`` twice (pages 1 and 2 share it) and every later page one record
        earlier than asked; nothing is lost. ``offset=0`` is unaffected.

        :param enabled: on or off.
        """
        with self._lock:
            self._overlap = bool(enabled)

    def insert_before_offset(self, offset: int, count: int = 1, *, path: str | None = None) -> None:
        """When the first data request with an offset at or beyond ``offset`` arrives, insert
        ``count`` new activities at the front of that request's result (just before its first
        record, inside its filters) before answering it, so that page and later ones shift by
        ``count`` (or by their participants, on the participants path). Fires once.

        Like live data under a real offset-paging client, the client then reads ``count``
        records twice (the shift) and misses the inserted ones, which are behind its offset; they
        are in the ground truth (``expected_activities``) and in the next read.

        :param offset: the offset that triggers the insert.
        :param count: how many activities are inserted.
        :param path: only requests to exactly this path; ``None`` for every data path.
        """
        with self._lock:
            self._insert_rules.append(_InsertRule(int(offset), int(count), path))

    def reset(self, *names: str) -> None:
        """Clear the named knobs (see :data:`KNOBS`), or all of them when no name is given.

        :param names: knob names, e.g. ``"fail_next"``, ``"cap_page_size"``.
        """
        unknown = set(names) - set(KNOBS)
        if unknown:
            raise ValueError(f"unknown fault knobs {sorted(unknown)}; known: {', '.join(KNOBS)}")
        with self._lock:
            self._init_state(names or KNOBS)

    # ----- state read by the server -------------------------------------------------------------

    @property
    def page_cap(self) -> int | None:
        """The page size cap, or ``None``."""
        return self._page_cap

    @property
    def bare(self) -> bool:
        """Whether pages are bare lists."""
        return self._bare_list

    @property
    def filters_ignored(self) -> bool:
        """Whether date and ingestion filters are ignored."""
        return self._ignore_filters

    @property
    def latency(self) -> float:
        """The added delay per request, in seconds."""
        return self._latency

    @property
    def overlap(self) -> bool:
        """Whether pages overlap by one record."""
        return self._overlap

    @property
    def token_max_uses(self) -> int | None:
        """Uses allowed per token, or ``None``."""
        return self._token_max_uses

    def snapshot(self) -> dict[str, Any]:
        """The current setting of every knob (for debugging and assertions)."""
        with self._lock:
            storm = self._storm
            return {
                "fail_next": [(r.remaining, r.status, r.path, r.include_token, r.retry_after) for r in self._fail_rules],
                "fail_ratio": None if storm is None else (storm.ratio, storm.status, storm.remaining, storm.path),
                "drop_connection": [(r.remaining, r.path) for r in self._drop_rules],
                "invalid_json": [(r.remaining, r.path) for r in self._invalid_rules],
                "token_endpoint_down": self._token_down,
                "expire_tokens_after": self._token_max_uses,
                "cap_page_size": self._page_cap,
                "bare_list": self._bare_list,
                "ignore_filters": self._ignore_filters,
                "latency": self._latency,
                "overlap_pages": self._overlap,
                "insert_before_offset": [(r.offset, r.count, r.path) for r in self._insert_rules],
            }

    def take_failure(self, path: str, is_token: bool) -> Failure | None:
        """Decide whether a request fails outright, consuming the fault that makes it fail.

        :param path: the request's path.
        :param is_token: a token request (spared unless a knob includes them).
        """
        with self._lock:
            if is_token and self._token_down > 0:
                self._token_down -= 1
                return Failure(self._token_down_status, None, "token_endpoint_down")
            for rule in self._fail_rules:
                if rule.remaining > 0 and (rule.include_token or not is_token) and _path_matches(rule.path, path):
                    rule.remaining -= 1
                    return Failure(rule.status, rule.retry_after, "fail_next")
            self._fail_rules = [r for r in self._fail_rules if r.remaining > 0]
            storm = self._storm
            if storm is not None and (storm.include_token or not is_token) and _path_matches(storm.path, path):
                if (storm.until is not None and time.monotonic() >= storm.until) or storm.remaining == 0:
                    self._storm = None
                    return None
                if storm.rng.random() < storm.ratio:
                    if storm.remaining is not None:
                        storm.remaining -= 1
                    return Failure(storm.status, storm.retry_after, "fail_ratio")
            return None

    def take_body_fault(self, path: str) -> str | None:
        """``"drop_connection"``, ``"invalid_json"`` or ``None`` for a successful data answer.

        :param path: the request's path.
        """
        with self._lock:
            for name, rules in (("drop_connection", self._drop_rules), ("invalid_json", self._invalid_rules)):
                for rule in rules:
                    if rule.remaining > 0 and _path_matches(rule.path, path):
                        rule.remaining -= 1
                        return name
            return None

    def take_insert(self, path: str, offset: int) -> int:
        """How many activities to insert before answering a data request at ``offset`` (0: none).

        :param path: the request's path.
        :param offset: the request's ``offset``.
        """
        with self._lock:
            for rule in self._insert_rules:
                if offset >= rule.offset and _path_matches(rule.path, path):
                    self._insert_rules.remove(rule)
                    return rule.count
            return 0
