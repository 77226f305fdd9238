"""The streams the sync hook hands out: pages of one read, bounded, de-duplicated and (for
:class:`BatchStream`) converted to Arrow, fetched ahead by a thread of their own.

A stream owns its iteration: it is given the hook's page reader (a function that takes the
stream's page parser and yields the read's pages in offset order) and runs it in a read-ahead
thread when it is iterated, counting the pages it receives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from airflow_provider_activities._threads import read_ahead, usable_cpus
from airflow_provider_activities.api.protocol import Page, parse_page
from airflow_provider_activities.api.queries import FilterStats, Query
from airflow_provider_activities.records.arrow_pages import ArrowPageParser
from airflow_provider_activities.records.convert import RecordConverter
from airflow_provider_activities.records.filters import RecordFilter

BATCH_ROWS = 32_768
"""Records received (in whole pages) per batch a :class:`BatchStream` yields."""

PageReader = Callable[[Callable[[bytes], Page]], Iterator[Page]]
"""The hook's paging for one query: given a page parser, the read's pages in offset order."""


def batch_read_ahead_depth(page_size: int) -> int:
    """Pages a :class:`BatchStream` parks ahead: one batch's worth, so that fetching goes on while
    the consumer converts and writes the previous batch (at least 2 small pages, or 1 page as large
    as a batch).
    """
    if page_size >= BATCH_ROWS:
        return 1
    return max(2, -(-BATCH_ROWS // page_size))


@dataclass
class RecordStream:
    """Pages of records from one read, bounded and de-duplicated, timestamps as epoch ms.

    Iterate it once for lists of records; afterwards :attr:`stats`, :attr:`pages` and
    :attr:`total` tell what the read saw.

    :param query: the read: endpoint, filters and bounds.
    :param read_pages: the hook's paging for ``query`` (see :data:`PageReader`).
    :param read_ahead_depth: parsed pages parked ahead of the consumer.
    """

    query: Query
    read_pages: PageReader = field(repr=False)
    read_ahead_depth: int = 2
    pages: int = 0
    """Pages received so far."""
    total: int | None = None
    """The latest ``meta.total`` the API sent, or ``None``."""
    record_filter: RecordFilter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.record_filter = RecordFilter.of(self.query.bounds)
        self._pages: Iterator[Page] | None = None

    @property
    def path(self) -> str:
        """The endpoint read."""
        return self.query.path

    @property
    def filters(self) -> dict[str, str]:
        """The filters sent with every page."""
        return self.query.filters

    @property
    def stats(self) -> FilterStats:
        """Records seen, kept, dropped as duplicates and dropped as outside the interval."""
        return self.record_filter.stats

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        record_filter = self.record_filter
        try:
            for page in self._received():
                kept = record_filter.apply(page.records)
                if kept:
                    yield kept
        finally:
            self.close()

    def close(self) -> None:
        """Stop the read: the requests in flight are waited for, no new one starts (iterating to
        the end, or leaving the loop early, closes the stream too).
        """
        close = getattr(self._pages, "close", None)
        if close is not None:
            close()

    def _received(self) -> Iterator[Page]:
        """The read's pages, fetched ahead in a thread of their own, counted as they arrive."""
        self._pages = read_ahead(self.read_pages(self.parse), self.read_ahead_depth)
        for page in self._pages:
            self.pages += 1
            if page.total is not None:
                self.total = page.total
            yield page

    def parse(self, body: bytes) -> Page:
        """A page body as the stream wants it (called in a page thread)."""
        return parse_page(body)


@dataclass
class BatchStream(RecordStream):
    """Like :class:`RecordStream`, but yields ``pa.RecordBatch`` of :attr:`schema`.

    Pages are parsed straight into Arrow columns in the page threads where that gives exactly
    the Python parser's answer (see :mod:`airflow_provider_activities.records.arrow_pages`; the
    connection extra ``arrow_parsing``), and through ``json.loads`` and
    :class:`~airflow_provider_activities.records.convert.RecordConverter` otherwise (bounded to the
    interval before they are converted). Consecutive Arrow pages are bounded and de-duplicated
    together; de-duplication is in Arrow for both kinds of pages (hashes in numpy, see
    :mod:`airflow_provider_activities.records.dedup`). The records and their order are the same as
    page by page. Batches hold exactly :data:`BATCH_ROWS` kept records (the last one the rest),
    whichever way its pages were parsed and whatever the page sizes: the consumer gets the same
    batches, cut at the same places, with Arrow parsing on or off and with any page size, so the
    Parquet files written from them are the same bytes. :attr:`arrow_pages` counts the pages Arrow took.

    :param schema: the record schema of the batches (``ACTIVITY_SCHEMA``, ``PARTICIPANT_SCHEMA``).
    :param id_field: the record identity named in schema errors (``uid``, ``activity_uid``).
    :param arrow_parsing: try Arrow's JSON reader first.
    """

    schema: pa.Schema = field(default=None, repr=False)
    id_field: str = "uid"
    arrow_parsing: bool = True
    arrow_pages: int = 0
    """Pages Arrow's JSON reader took (the others went through ``json.loads``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._converter = RecordConverter(self.schema, id_field=self.id_field)
        self._arrow = ArrowPageParser(self.schema, self.query.bounds.timestamp_fields)
        self._parsing = threading.BoundedSemaphore(usable_cpus())

    @property
    def unknown_fields(self) -> set[str]:
        """Names of the fields received that the schema does not know (kept in ``_extra``)."""
        return self._converter.unknown_fields

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        record_filter = self.record_filter
        kept: list[pa.RecordBatch] = []  # the group's new records inside the interval, in page order
        parsed: list[pa.RecordBatch] = []  # Arrow pages not yet bounded and de-duplicated
        received = 0
        try:
            for page in self._received():
                if page.batch is not None:
                    self.arrow_pages += 1
                    parsed.append(page.batch)
                else:  # the Arrow pages before it first, to keep the page order
                    kept += self._filtered(parsed)
                    parsed = []
                    # Bounded before it is converted: a record outside the interval is dropped
                    # whatever its values, as on the dict path.
                    inside = self._converter.to_batch(record_filter.bound(page.records))
                    kept.append(record_filter.dedupe_batch(inside))
                received += page.count
                if received >= BATCH_ROWS:
                    kept += self._filtered(parsed)
                    yield from self._cut(kept, last=False)
                    parsed, received = [], 0
            kept += self._filtered(parsed)
            yield from self._cut(kept, last=True)
        finally:
            self.close()

    def _filtered(self, parsed: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        """Arrow pages bounded and de-duplicated together: one batch, or none for no pages."""
        return [self.record_filter.apply_batch(_one_batch(parsed, self.schema))] if parsed else []

    def _cut(self, kept: list[pa.RecordBatch], last: bool) -> Iterator[pa.RecordBatch]:
        """Batches of exactly :data:`BATCH_ROWS` kept rows taken from the front of ``kept`` (and,
        when ``last``, the rest); what is left stays in ``kept``.

        Cut by kept rows, not by pages, the batches (and so the Parquet row groups written from
        them) are the same whatever the page sizes the client asked for or learnt.
        """
        batch = _one_batch(kept, self.schema)
        kept.clear()
        start = 0
        while batch.num_rows - start >= BATCH_ROWS:
            yield batch.slice(start, BATCH_ROWS)
            start += BATCH_ROWS
        if start < batch.num_rows:
            rest = batch.slice(start)
            if last:
                yield rest
            else:
                kept.append(rest)

    def parse(self, body: bytes) -> Page:
        """A page body parsed into Arrow where that is exact, else into dicts (in a page thread)."""
        # At most one parse per CPU at a time: more requests than CPUs may be in flight (they wait
        # on the network), but more parses than CPUs only thrash the caches.
        with self._parsing:
            return self._arrow(body) if self.arrow_parsing else parse_page(body)


def _one_batch(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch:
    """``batches`` (of ``schema``) as one batch; an empty one for none."""
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=schema)
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)
