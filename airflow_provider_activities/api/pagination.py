"""Offset/limit pagination as a plan, with no I/O.

Rules (from the API facts): a page may hold fewer records than asked for (the server caps the
page size), so a short page is not the end. The stream ends on an empty page, or when the
next offset reaches ``meta.total``. Without ``meta.total`` (a bare-list answer) pages are read
one after another until an empty one.

When ``meta.total`` is known, the remaining pages can be fetched ahead, concurrently; their
offsets step by the page size the server actually serves (learnt from the first page), and a
page that comes back shorter than its step leaves a gap that is fetched next, in order.

Offset pagination over live data shifts when records are inserted or deleted while paging: a
record can then be served twice (dropped later as a duplicate) or skipped. A skip cannot be
seen in the records, but it moves ``meta.total``; :attr:`PagePlan.total_changed` tells the
reader to make another pass.

**Page sizes.** The rate limit counts requests, not records, so the client asks for pages as
large as the server takes and memory allows (:class:`PageSizes`), unless the connection sets
``page_size``. It starts at :data:`FIRST_PAGE_SIZE` and learns from the answers: a page shorter
than asked while records remain, or a ``meta.limit`` below the ``limit`` asked, is the server's
cap; a 400 to a ``limit`` above the largest one known to work means the limit is out of range,
and the page is asked again smaller (the size the error message names, else half, down to
:data:`MIN_PAGE_SIZE`). What a process learns is kept per base URL and endpoint, so the next
task in the same worker starts right. Memory bounds the size too: a page's body stays near
:data:`PAGE_BYTES_BUDGET`, and the pages in flight at once near :data:`IN_FLIGHT_BYTES_BUDGET`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_activities.api.errors import PeopleAIAPIError
from airflow_provider_activities.api.flow import Flow, call_flow
from airflow_provider_activities.api.policy import RetryPolicy
from airflow_provider_activities.api.protocol import Page, page_request

MAX_PAGE_SIZE = 100_000
"""The largest ``limit`` the API documents."""
FIRST_PAGE_SIZE = 25_000
"""The ``limit`` of a process's first page from an endpoint: large, yet its body (about 20 MB of
activities) stays near :data:`PAGE_BYTES_BUDGET` before the size of a record is known."""
MIN_PAGE_SIZE = 100
"""The smallest ``limit`` the client shrinks to after 400 answers."""
PAGE_BYTES_BUDGET = 32 * 1024 * 1024
"""The body size a page is sized for, once the size of a record is known. Larger pages mean fewer
requests against the rate limit, and more memory: a body, its parse and its Arrow columns at once."""
IN_FLIGHT_BYTES_BUDGET = 64 * 1024 * 1024
"""The bodies of all pages in flight at once: fewer pages are fetched ahead when they are large
(two pages of :data:`PAGE_BYTES_BUDGET`, so one is received while the other is parsed; one page
in flight would leave the API idle while it is parsed)."""


class Logger(Protocol):
    """What the core needs of a logger: ``logging.Logger`` and Airflow's task and hook loggers alike."""

    def info(self, msg: Any, /, *args: Any) -> Any:
        """Log ``msg % args`` at INFO."""

    def warning(self, msg: Any, /, *args: Any) -> Any:
        """Log ``msg % args`` at WARNING."""


MAX_PASSES = 3
"""Reads of one query when ``meta.total`` keeps moving under it."""


@dataclass
class PagePlan:
    """Where the next pages start.

    :param limit: the page size asked for.
    :param offset: the first offset not yet covered by a received page.
    :param total: the latest ``meta.total`` seen, or ``None``.
    :param step: the page size the server serves (``limit`` until a page shows a cap).
    """

    limit: int
    offset: int = 0
    total: int | None = None
    step: int | None = None
    done: bool = False
    first_total: int | None = None

    @property
    def total_changed(self) -> bool:
        """Whether ``meta.total`` moved during the read: records were inserted or deleted while
        paging, so offsets shifted and a record may have been skipped. Read again to be sure.
        """
        return self.first_total is not None and self.total != self.first_total

    def receive(self, offset: int, count: int, total: int | None, next_limit: int | None = None) -> None:
        """Record that the page at ``offset`` held ``count`` records; pages arrive in offset order.

        :param next_limit: the ``limit`` later pages are asked with, when it changed (the page
            sizes learnt from this page): read-ahead offsets then step by it.
        """
        if total is not None:
            if self.first_total is None:
                self.first_total = total
            self.total = total
        if next_limit is not None and next_limit != self.limit:
            # A page holding all it was asked for showed no cap: later pages step by the new size.
            full = count >= self.limit
            self.limit = next_limit
            self.step = next_limit if full else (min(count, next_limit) if count > 0 else None)
        if self.step is None and count > 0:
            self.step = min(count, self.limit)
        if count == 0:
            self.done = True
            return
        self.offset = max(self.offset, offset + count)
        if self.total is not None and self.offset >= self.total:
            self.done = True

    def next_offsets(self, in_flight: Collection[int], depth: int) -> list[int]:
        """Offsets to request now, given the offsets already in flight.

        First the current offset (if it is not in flight yet: the start, or a gap a short page
        left); then, once ``meta.total`` and the served page size are known, read-ahead offsets
        until ``depth`` requests are in flight. Offsets below :attr:`offset` still in flight are
        stale (a longer page already covered them); the caller drops their results.
        """
        if self.done:
            return []
        wanted = [] if self.offset in in_flight else [self.offset]
        if self.total is None or self.step is None:
            return wanted
        planned = set(in_flight) | set(wanted)
        cursor = max(planned) + self.step
        while len(planned) < depth and cursor < self.total:
            wanted.append(cursor)
            planned.add(cursor)
            cursor += self.step
        return wanted


def read_passes(path: str, limit: int, log: Logger) -> Iterator[PagePlan]:
    """The passes of one read: a fresh :class:`PagePlan` each, for the caller to page through.

    Another pass follows while the last one saw ``meta.total`` move (records inserted or deleted
    while paging may have been skipped), up to :data:`MAX_PASSES`; each such pass is logged.
    The sync and async hooks share this loop; only how they fetch a pass's pages differs.

    :param path: the endpoint read (named in the warning).
    :param limit: the page size asked for.
    :param log: the hook's logger.
    """
    for number in range(1, MAX_PASSES + 1):
        plan = PagePlan(limit=limit)
        yield plan
        if not plan.total_changed:
            return
        log.warning(
            "People.ai %s: meta.total moved from %s to %s while paging (records inserted or deleted); "
            "%s to pick up records the shift may have skipped.",
            path, plan.first_total, plan.total,
            "reading again" if number < MAX_PASSES else f"gave up after {MAX_PASSES} passes",
        )


# -- page sizes ------------------------------------------------------------------------------------


@dataclass
class PageSizes:
    """What one process learnt of the page sizes one endpoint takes (thread-safe).

    :param fixed: the connection's ``page_size``: always asked, nothing learnt; ``None`` to learn.
    """

    fixed: int | None = None
    cap: int | None = None
    """The most records the server served in one page (its cap), once seen."""
    refused: int | None = None
    """The smallest ``limit`` the server answered 400 to."""
    works: int | None = None
    """The largest ``limit`` the server answered 2xx to."""
    record_bytes: float | None = None
    """The largest body size per record seen."""
    _trial: int | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def limit(self) -> int:
        """The ``limit`` to ask for next."""
        if self.fixed is not None:
            return self.fixed
        with self._lock:
            if self.record_bytes is None:
                size = FIRST_PAGE_SIZE
            else:  # whole thousands, so that a slightly larger record seen later leaves the size as it is
                size = int(PAGE_BYTES_BUDGET // max(self.record_bytes, 1.0))
                size = size - size % 1000 if size >= 2000 else size
            size = min(size, MAX_PAGE_SIZE)
            if self.works is not None and self.works < size < self.works * 5 // 4:
                # Not worth a probe: every page in flight would ask an untried size the server may
                # refuse, for a gain of less than a quarter fewer requests.
                size = self.works
            if self.cap is not None:
                size = min(size, self.cap)
            if self.refused is not None:  # never above a size known to work again
                size = min(size, self.works if self.works is not None and self.works < self.refused else self._trial or size)
            return max(MIN_PAGE_SIZE, size)

    def in_flight(self, max_concurrency: int) -> int:
        """Pages to keep in flight at once: ``max_concurrency``, fewer when pages are large."""
        if self.record_bytes is None:
            return max_concurrency
        page_bytes = self.limit() * self.record_bytes
        return max(1, min(max_concurrency, int(IN_FLIGHT_BYTES_BUDGET // max(page_bytes, 1.0))))

    def served(self, asked: int, page: Page, offset: int) -> None:
        """Learn from a 2xx page asked with ``limit=asked`` at ``offset``."""
        if self.fixed is not None:
            return
        with self._lock:
            self.works = max(self.works or 0, asked)
            remaining = page.total is not None and offset + page.count < page.total
            if page.limit is not None and 0 < page.limit < asked:
                self.cap = min(self.cap or page.limit, page.limit)
            elif 0 < page.count < asked and remaining:
                self.cap = min(self.cap or page.count, page.count)
            if page.count and page.body_bytes:
                per_record = page.body_bytes / page.count
                self.record_bytes = max(self.record_bytes or 0.0, per_record)

    def refused_limit(self, asked: int, message: str) -> int | None:
        """The ``limit`` to try after a 400 to ``limit=asked``, or ``None`` when the 400 is not about
        the page size (the size asked is known to work, or is already the smallest).
        """
        if self.fixed is not None or asked <= MIN_PAGE_SIZE:
            return None
        with self._lock:
            if self.works is not None and asked <= self.works:
                return None
            self.refused = min(self.refused or asked, asked)
            named = [int(n) for n in re.findall(r"\d+", message or "") if MIN_PAGE_SIZE <= int(n) < asked]
            self._trial = max(named) if named else max(MIN_PAGE_SIZE, asked // 2)
            return self._trial


_PAGE_SIZES: dict[tuple[str, str], PageSizes] = {}
_PAGE_SIZES_LOCK = threading.Lock()


def learnt_page_sizes(base_url: str, path: str) -> PageSizes:
    """The process's :class:`PageSizes` of one endpoint at one API (shared by every hook)."""
    key = (base_url.rstrip("/"), path)
    with _PAGE_SIZES_LOCK:
        sizes = _PAGE_SIZES.get(key)
        if sizes is None:
            sizes = _PAGE_SIZES[key] = PageSizes()
        return sizes


def page_sizes(base_url: str, path: str, page_size: int | None) -> PageSizes:
    """The page sizes a read uses: fixed when the connection sets ``page_size``, else learnt."""
    return PageSizes(fixed=page_size) if page_size is not None else learnt_page_sizes(base_url, path)


def forget_page_sizes(base_url: str) -> None:
    """Drop what the process learnt of the API at ``base_url`` (a new server at a reused address)."""
    base = base_url.rstrip("/")
    with _PAGE_SIZES_LOCK:
        for key in [key for key in _PAGE_SIZES if key[0] == base]:
            del _PAGE_SIZES[key]


def page_flow(
    path: str,
    filters: dict[str, str],
    offset: int,
    sizes: PageSizes,
    policy: RetryPolicy,
    parse: Callable[[bytes], Page],
    log: Logger,
    max_body_bytes: int | None = None,
) -> Flow[Page]:
    """One page at ``offset``, asked with the size :class:`PageSizes` gives; a 400 that is about
    the size is answered by asking again smaller (see :meth:`PageSizes.refused_limit`).

    Shared by the sync and async hooks, like every call flow.
    """
    while True:
        limit = sizes.limit()
        try:
            page = yield from call_flow(page_request(path, filters, offset, limit, max_body_bytes), parse, policy)
        except PeopleAIAPIError as err:
            smaller = sizes.refused_limit(limit, err.message) if err.status == 400 else None
            if smaller is None:
                raise
            log.info(
                "People.ai %s refused limit=%d (HTTP 400: %s); asking for %d records per page.", path, limit, err.message, smaller
            )
            continue
        sizes.served(limit, page, offset)
        return page
