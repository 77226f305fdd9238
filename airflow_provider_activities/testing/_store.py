"""Queries over the generated records merged with live inserts, without scanning.

A query (:class:`Filter`) selects activities by type, by timestamp range and optionally by
``created_at`` range. Its answer is a :class:`View`: the generated activities it selects (an
index range, a typed index range, or, for ingestion filters, a cached index list) merged in
``(timestamp, uid)`` order with the matching live inserts. A view serves any slice of its
activities, or of their participants, in time proportional to the slice.
"""

from __future__ import annotations

import random
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from airflow_provider_activities.testing._data import (
    ACTIVITY_TYPES,
    EXTRA_INDEX_BASE,
    MAX_LAG_MS,
    MIN_LAG_MS,
    Generator,
)


@dataclass(frozen=True)
class Filter:
    """Which activities a query selects; all bounds are epoch ms, ``None`` for unbounded.

    :param activity_type: ``email``, ``call``, ``meeting`` or ``None`` for all.
    :param ts_from: inclusive lower bound on ``timestamp``.
    :param ts_to: exclusive upper bound on ``timestamp``.
    :param created_from: inclusive lower bound on ``created_at``.
    :param created_to: exclusive upper bound on ``created_at``.
    """

    activity_type: str | None = None
    ts_from: int | None = None
    ts_to: int | None = None
    created_from: int | None = None
    created_to: int | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether an activity record (times in epoch ms) is selected.

        :param record: an activity record, times in epoch ms.
        """
        if self.activity_type is not None and record["activity_type"] != self.activity_type:
            return False
        ts, created = record["timestamp"], record["created_at"]
        if self.ts_from is not None and ts < self.ts_from:
            return False
        if self.ts_to is not None and ts >= self.ts_to:
            return False
        if self.created_from is not None and created < self.created_from:
            return False
        return self.created_to is None or created < self.created_to

    @property
    def has_created_bounds(self) -> bool:
        """Whether the filter bounds ``created_at``."""
        return self.created_from is not None or self.created_to is not None


@dataclass
class Extra:
    """A live-inserted activity, its participants and its place in the order.

    :param activity: the activity record (times in epoch ms).
    :param participants: its participant records.
    :param number: its insertion number (0 for the first insert); ``EXTRA_INDEX_BASE`` plus it
        seeds its records.
    """

    activity: dict[str, Any]
    participants: list[dict[str, Any]]
    number: int

    @property
    def key(self) -> tuple[int, str]:
        """Its sort key: ``(timestamp, uid)``."""
        return (self.activity["timestamp"], self.activity["uid"])


class _Selected:
    """The generated activities a filter selects, ranked ``0 .. count - 1`` in order."""

    count: int

    def index(self, rank: int) -> int:
        """The global index of the activity of this rank."""
        raise NotImplementedError

    def rank_below(self, global_index: int) -> int:
        """How many selected activities have a global index below ``global_index``."""
        raise NotImplementedError

    def participants_before(self, rank: int) -> int:
        """How many participants the selected activities of rank below ``rank`` hold."""
        raise NotImplementedError

    def locate_participant(self, offset: int) -> tuple[int, int]:
        """``(rank, slot)`` of the ``offset``-th participant of the selected activities."""
        raise NotImplementedError


class _Range(_Selected):
    """Every generated activity of an index range."""

    def __init__(self, gen: Generator, lo: int, hi: int) -> None:
        self.gen, self.lo, self.hi = gen, lo, max(lo, hi)
        self.count = self.hi - self.lo
        self._base = gen.participants_before(self.lo)

    def index(self, rank: int) -> int:
        return self.lo + rank

    def rank_below(self, global_index: int) -> int:
        return min(max(global_index, self.lo), self.hi) - self.lo

    def participants_before(self, rank: int) -> int:
        return self.gen.participants_before(self.lo + rank) - self._base

    def locate_participant(self, offset: int) -> tuple[int, int]:
        index, slot = self.gen.locate_participant(self._base + offset)
        return index - self.lo, slot


class _Typed(_Selected):
    """The generated activities of one type in an index range."""

    def __init__(self, gen: Generator, activity_type: str, lo: int, hi: int) -> None:
        self.gen, self.type = gen, activity_type
        self.lo, self.hi = lo, max(lo, hi)
        self.first = gen.type_rank(activity_type, self.lo)
        self.count = gen.type_rank(activity_type, self.hi) - self.first
        self._base = gen.type_participants_before(activity_type, self.first)

    def index(self, rank: int) -> int:
        return self.gen.type_index(self.type, self.first + rank)

    def rank_below(self, global_index: int) -> int:
        return self.gen.type_rank(self.type, min(max(global_index, self.lo), self.hi)) - self.first

    def participants_before(self, rank: int) -> int:
        return self.gen.type_participants_before(self.type, self.first + rank) - self._base

    def locate_participant(self, offset: int) -> tuple[int, int]:
        k, slot = self.gen.type_locate_participant(self.type, self._base + offset)
        return k - self.first, slot


class _Listed(_Selected):
    """An explicit, sorted list of generated indexes (ingestion filters)."""

    def __init__(self, gen: Generator, indexes: array) -> None:
        self.gen, self.indexes = gen, indexes
        self.count = len(indexes)
        self._prefix: array | None = None
        self._lock = threading.Lock()

    def index(self, rank: int) -> int:
        return self.indexes[rank]

    def rank_below(self, global_index: int) -> int:
        return bisect_left(self.indexes, global_index)

    def _participant_prefix(self) -> array:
        with self._lock:
            if self._prefix is None:
                prefix = array("Q", [0])
                total = 0
                count = self.gen.participant_count
                for i in self.indexes:
                    total += count(i)
                    prefix.append(total)
                self._prefix = prefix
            return self._prefix

    def participants_before(self, rank: int) -> int:
        return self._participant_prefix()[rank]

    def locate_participant(self, offset: int) -> tuple[int, int]:
        prefix = self._participant_prefix()
        rank = bisect_right(prefix, offset) - 1
        return rank, offset - prefix[rank]


Item = tuple[int, Any]
"""One activity of a view: ``(global index, None)`` for a generated one, ``(-1, Extra)`` for an insert."""


class View:
    """The answer to one :class:`Filter`: generated and inserted activities merged in order.

    :param store: the store the view reads.
    :param selected: the generated activities selected.
    :param extras: the matching inserts, in ``(timestamp, uid)`` order.
    :param version: the store version (number of insert batches) the view reflects.
    """

    def __init__(self, store: Store, selected: _Selected, extras: list[Extra], version: int = 0) -> None:
        self.store = store
        self.version = version
        self.gen = store.gen
        self.selected = selected
        self.extras = extras
        self.activity_total = selected.count + len(extras)
        # Merged position of each insert, and the participant offsets its participants take.
        self._extra_positions: list[int] = []
        self._extra_part_starts: list[int] = []
        self._extra_part_ends: list[int] = []
        self._extra_part_cum: list[int] = [0]
        parts_of_extras = 0
        for j, extra in enumerate(extras):
            rank = selected.rank_below(store.generated_index_after(extra.key))
            self._extra_positions.append(rank + j)
            start = selected.participants_before(rank) + parts_of_extras
            self._extra_part_starts.append(start)
            parts_of_extras += len(extra.participants)
            self._extra_part_cum.append(parts_of_extras)
            self._extra_part_ends.append(start + len(extra.participants))
        self.participant_total = selected.participants_before(selected.count) + parts_of_extras

    def items(self, position: int) -> Iterator[Item]:
        """The activities from merged ``position`` on, in order.

        :param position: the first position, in merged order.
        """
        positions = self._extra_positions
        j = bisect_left(positions, position)
        selected = self.selected
        for p in range(position, self.activity_total):
            if j < len(positions) and positions[j] == p:
                yield -1, self.extras[j]
                j += 1
            else:
                yield selected.index(p - j), None

    def activities(self, offset: int, count: int) -> list[dict[str, Any]]:
        """Activities ``offset`` to ``offset + count - 1`` (fewer at the end), times in epoch ms.

        :param offset: the first position.
        :param count: how many at most.
        """
        out: list[dict[str, Any]] = []
        if count <= 0 or offset >= self.activity_total:
            return out
        activity = self.gen.activity
        for index, extra in self.items(offset):
            out.append(activity(index) if extra is None else dict(extra.activity))
            if len(out) >= count:
                break
        return out

    def activity_items(self, offset: int, count: int) -> list[Item]:
        """Like :meth:`activities`, as :data:`Item` (for formatting by record index).

        :param offset: the first position.
        :param count: how many at most.
        """
        out: list[Item] = []
        if count <= 0 or offset >= self.activity_total:
            return out
        for item in self.items(offset):
            out.append(item)
            if len(out) >= count:
                break
        return out

    def _locate_participant(self, offset: int) -> tuple[int, int]:
        """``(merged position, slot)`` of the activity holding participant ``offset``."""
        j = bisect_right(self._extra_part_ends, offset)  # inserts wholly before the offset
        if j < len(self.extras) and self._extra_part_starts[j] <= offset:
            return self._extra_positions[j], offset - self._extra_part_starts[j]
        rank, slot = self.selected.locate_participant(offset - self._extra_part_cum[j])
        return rank + j, slot

    def participant_items(self, offset: int, count: int) -> list[tuple[Item, list[dict[str, Any]], int]]:
        """Participants ``offset`` to ``offset + count - 1`` grouped by activity.

        :param offset: the first participant's position.
        :param count: how many at most.
        :returns: ``(item, participants, first slot)`` per activity touched, the participants
            already cut to the slice.
        """
        out: list[tuple[Item, list[dict[str, Any]], int]] = []
        if count <= 0 or offset >= self.participant_total:
            return out
        position, slot = self._locate_participant(offset)
        remaining = count
        for index, extra in self.items(position):
            people = self.gen.participants(index) if extra is None else [dict(p) for p in extra.participants]
            chunk = people[slot : slot + remaining]
            out.append(((index, extra), chunk, slot))
            remaining -= len(chunk)
            slot = 0
            if remaining <= 0:
                break
        return out

    def participants(self, offset: int, count: int) -> list[dict[str, Any]]:
        """Participants ``offset`` to ``offset + count - 1`` (fewer at the end), times in epoch ms.

        :param offset: the first participant's position.
        :param count: how many at most.
        """
        return [p for _, chunk, _ in self.participant_items(offset, count) for p in chunk]

    def first_activity(self) -> dict[str, Any] | None:
        """The first activity of the view, or ``None`` when it is empty."""
        found = self.activities(0, 1)
        return found[0] if found else None


class Store:
    """Generated records plus live inserts, with cached views.

    :param gen: the generator of the records.
    """

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self._lock = threading.RLock()
        self._extras: list[Extra] = []
        self._extra_keys: list[tuple[int, str]] = []
        self.version = 0
        self._views: OrderedDict[tuple[Filter, int], View] = OrderedDict()
        self._lists: OrderedDict[Filter, array] = OrderedDict()
        self._extra_rng = random.Random(f"peopleai-sandbox-inserts:{gen.seed}")

    # ----- live inserts -----------------------------------------------------------------------

    def add(
        self,
        count: int,
        timestamp: int | None = None,
        created_at: int | None = None,
        activity_type: str | None = None,
    ) -> list[dict[str, Any]]:
        """Insert ``count`` activities (each with participants); see ``Sandbox.add_activities``.

        :param count: how many.
        :param timestamp: their timestamp (epoch ms); default: random in the data period.
        :param created_at: their ``created_at`` (epoch ms); default: the timestamp plus one to 31 minutes.
        :param activity_type: ``email``, ``call`` or ``meeting``; default: random.
        """
        if activity_type is not None and activity_type not in ACTIVITY_TYPES:
            raise ValueError(f"activity_type must be one of {ACTIVITY_TYPES} or None, got {activity_type!r}")
        gen = self.gen
        added = []
        with self._lock:
            rng = self._extra_rng
            for _ in range(count):
                number = len(self._extras)
                ts = timestamp if timestamp is not None else gen.start_ms + int(rng.random() * gen.span_ms)
                created = created_at if created_at is not None else ts + MIN_LAG_MS + int(rng.random() * 30 * 60_000)
                kind = activity_type or rng.choices(ACTIVITY_TYPES, (0.55, 0.2, 0.25))[0]
                participants = rng.choices(range(1, 9), (5, 30, 25, 15, 10, 7, 5, 3))[0]
                index = EXTRA_INDEX_BASE + number
                activity = gen.make_activity(index, ts, created, kind, participants)
                extra = Extra(activity=activity, participants=gen.make_participants(index, activity), number=number)
                position = bisect_right(self._extra_keys, extra.key)
                self._extras.insert(position, extra)
                self._extra_keys.insert(position, extra.key)
                added.append(dict(activity))
            self.version += 1
            self._views.clear()
        return added

    @property
    def extras(self) -> list[Extra]:
        """The live inserts, in order (a copy)."""
        with self._lock:
            return list(self._extras)

    def generated_index_after(self, key: tuple[int, str]) -> int:
        """The number of generated activities ordered before ``key`` = ``(timestamp, uid)``.

        :param key: ``(timestamp, uid)``.
        """
        gen = self.gen
        ts, uid = key
        index = gen.index_at(ts)
        while index < gen.count and gen.timestamp_ms(index) == ts and gen.uid(index) < uid:
            index += 1
        return index

    # ----- views ------------------------------------------------------------------------------

    def view(self, query: Filter) -> View:
        """The view of ``query`` over the current data (cached until the next insert).

        :param query: which activities.
        """
        with self._lock:
            found = self._views.get((query, self.version))
            if found is not None:
                self._views.move_to_end((query, self.version))
                return found
            extras = [e for e in self._extras if query.matches(e.activity)]
            version = self.version
        view = View(self, self._selected(query), extras, version)
        with self._lock:
            self._views[(query, version)] = view
            while len(self._views) > 256:
                self._views.popitem(last=False)
        return view

    def _selected(self, query: Filter) -> _Selected:
        gen = self.gen
        lo = 0 if query.ts_from is None else gen.index_at(query.ts_from)
        hi = gen.count if query.ts_to is None else gen.index_at(query.ts_to)
        if not query.has_created_bounds:
            if query.activity_type is None:
                return _Range(gen, lo, hi)
            return _Typed(gen, query.activity_type, lo, hi)
        return _Listed(gen, self._listed(query, lo, hi))

    def _listed(self, query: Filter, lo: int, hi: int) -> array:
        """Generated indexes selected by a filter with ``created_at`` bounds (built once, cached)."""
        with self._lock:
            found = self._lists.get(query)
            if found is not None:
                self._lists.move_to_end(query)
                return found
        gen = self.gen
        # created_at lies in [timestamp + MIN_LAG, timestamp + MAX_LAG): only this index range can match.
        if query.created_from is not None:
            lo = max(lo, gen.index_at(query.created_from - MAX_LAG_MS))
        if query.created_to is not None:
            hi = min(hi, gen.index_at(query.created_to - MIN_LAG_MS))
        created_from = query.created_from if query.created_from is not None else -(1 << 62)
        created_to = query.created_to if query.created_to is not None else 1 << 62
        wanted = query.activity_type
        found = array("Q")
        # Activities far enough from both bounds match whatever their lag: no need to compute it.
        sure_lo = max(lo, gen.index_at(created_from - MIN_LAG_MS)) if query.created_from is not None else lo
        sure_hi = min(hi, gen.index_at(created_to - MAX_LAG_MS + 1)) if query.created_to is not None else hi
        if sure_lo >= sure_hi:
            sure_lo = sure_hi = hi
        lag, kind = gen.lag_ms, gen.activity_type
        for scan_lo, scan_hi, sure in ((lo, sure_lo, False), (sure_lo, sure_hi, True), (sure_hi, hi, False)):
            if scan_hi <= scan_lo:
                continue
            if not sure:
                for i, ts in zip(range(scan_lo, scan_hi), gen.timestamps(scan_lo, scan_hi), strict=True):
                    if wanted is not None and kind(i) != wanted:
                        continue
                    if created_from <= ts + lag(i) < created_to:
                        found.append(i)
            elif wanted is None:
                found.extend(range(scan_lo, scan_hi))
            else:
                first, last = gen.type_rank(wanted, scan_lo), gen.type_rank(wanted, scan_hi)
                found.extend(gen.type_index(wanted, k) for k in range(first, last))
        with self._lock:
            self._lists[query] = found
            while len(self._lists) > 16:
                self._lists.popitem(last=False)
        return found
