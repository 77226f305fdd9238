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
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, Protocol


class Logger(Protocol):
    """What the core needs of a logger: ``logging.Logger`` and Airflow's task and hook loggers alike."""

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

    def receive(self, offset: int, count: int, total: int | None) -> None:
        """Record that the page at ``offset`` held ``count`` records; pages arrive in offset order."""
        if total is not None:
            if self.first_total is None:
                self.first_total = total
            self.total = total
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
