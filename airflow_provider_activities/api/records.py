"""Record handling shared by every reader: timestamps, client-side bounds, de-duplication.

The API may ignore filters it does not know and may repeat records across pages, so every
record is bounded to the asked interval and de-duplicated here, whatever the server did.

Timestamps arrive as epoch milliseconds or as ISO-8601 strings (``Z`` or an offset); they are
normalised in place to epoch-millisecond ``int`` (UTC), the cheapest form to compare and the
one the Parquet writer takes without conversion.
"""

from __future__ import annotations

import pickle
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import IO, Any, Callable, Hashable, Iterable

import pyarrow as pa
import pyarrow.compute as pc

try:  # numpy comes with pyarrow almost everywhere; without it SeenKeys keeps every key in a set
    import numpy as np
except ImportError:  # pragma: no cover - exercised only where numpy is missing
    np = None  # type: ignore[assignment]

ACTIVITY_TIMESTAMP_FIELDS: tuple[str, ...] = (
    "timestamp",
    "created_at",
    "ingested_at",
    "meeting_start_time",
    "meeting_end_time",
)
PARTICIPANT_TIMESTAMP_FIELDS: tuple[str, ...] = ("activity_timestamp", "created_at")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Below this magnitude a number is taken as epoch seconds, above as epoch milliseconds
# (10**11 s is the year 5138; 10**11 ms is March 1973).
_SECONDS_CUTOFF = 100_000_000_000


def to_epoch_ms(value: Any) -> int | None:
    """Epoch milliseconds (UTC) of a timestamp in any form the API uses.

    Accepts ``None``, epoch milliseconds (or seconds, below 10**11), numeric strings, ISO-8601
    strings with ``Z`` or an offset (a string without one is taken as UTC, as the API says all
    its times are), and ``datetime`` (naive taken as UTC).

    :raises ValueError: for anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int):
        return value if abs(value) >= _SECONDS_CUTOFF else value * 1000
    if isinstance(value, float):
        return int(value) if abs(value) >= _SECONDS_CUTOFF else int(round(value * 1000))
    if isinstance(value, datetime):
        return _datetime_ms(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.lstrip("-").isdigit():
            return to_epoch_ms(int(text))
        return _datetime_ms(_parse_iso(text))
    raise ValueError(f"not a timestamp: {value!r}")


def _parse_iso(text: str) -> datetime:
    candidate = text[:-1] + "+00:00" if text[-1] in "Zz" else text
    try:
        return datetime.fromisoformat(candidate)
    except ValueError:
        pass
    # Python 3.10's fromisoformat takes only 3 or 6 fraction digits: pad or cut them.
    head, sep, tail = candidate.partition(".")
    if sep:
        digits = len(tail) - len(tail.lstrip("0123456789"))
        fraction, rest = tail[:digits], tail[digits:]
        try:
            return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}{rest}")
        except ValueError:
            pass
    raise ValueError(f"not an ISO-8601 timestamp: {text!r}")


def _datetime_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_datetime(value: int | None) -> datetime | None:
    """The timezone-aware UTC ``datetime`` of epoch milliseconds."""
    if value is None:
        return None
    return _EPOCH + timedelta(milliseconds=value)


def datetime_to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware ``datetime``."""
    return _datetime_ms(value)


def activity_key(record: dict[str, Any]) -> Hashable:
    """An activity's identity: its ``uid``."""
    return record.get("uid")


def activity_keys(batch: pa.RecordBatch) -> list[Hashable]:
    """:func:`activity_key` of every row of a batch."""
    return batch.column("uid").to_pylist()


def _participant_identity(activity_uid: Any, participant_id: Any, email: Any) -> Hashable:
    if participant_id is None:
        return (activity_uid, None, email)
    return (activity_uid, participant_id)


def participant_key(record: dict[str, Any]) -> Hashable:
    """A participant's identity: (``activity_uid``, ``id``), or the e-mail where ``id`` is missing."""
    return _participant_identity(record.get("activity_uid"), record.get("id"), record.get("email"))


def participant_keys(batch: pa.RecordBatch) -> list[Hashable]:
    """:func:`participant_key` of every row of a batch."""
    columns = (batch.column(name).to_pylist() for name in ("activity_uid", "id", "email"))
    return list(map(_participant_identity, *columns))


@dataclass
class FilterStats:
    """What a :class:`RecordFilter` saw.

    :param seen: records received.
    :param kept: records passed on.
    :param duplicates: repeated identities dropped.
    :param outside: records outside the interval dropped (the API ignored or widened a filter).
    """

    seen: int = 0
    kept: int = 0
    duplicates: int = 0
    outside: int = 0


class SeenKeys:
    """The identities seen so far, exactly, in about 16 bytes each once there are many.

    The latest ``block_size`` identities are kept as they are, in a set (:attr:`recent`). When
    that set is full it becomes a frozen block: the sorted 64-bit ``hash()`` of each identity in
    memory (a numpy array), the identities themselves pickled to a temporary file. The hashes of
    every frozen block are also kept merged in one sorted array, so a page is checked against
    all blocks with one ``searchsorted`` (:meth:`old`): an identity whose hash no block holds is
    new, which is the answer for nearly every record. One whose hash a block holds is looked up
    exactly in that block's identities, read back from the file (the last block read is kept),
    so a hash collision never drops a record.

    A Python set of 1M uids takes about 120 MB; this takes 16 MB plus one block. Without numpy
    every identity stays in the set.

    :param block_size: identities kept as they are before a block is frozen.
    """

    def __init__(self, block_size: int = 65_536) -> None:
        self.block_size = block_size
        self.recent: set[Hashable] = set()
        self._hashes: list[Any] = []  # one sorted numpy int64 array per frozen block
        self._merged: Any = None  # every frozen hash, sorted
        self._spans: list[tuple[int, int]] = []  # (offset, length) of each block's pickled identities
        self._spool: IO[bytes] | None = None
        self._loaded: tuple[int, frozenset[Hashable]] | None = None

    def __len__(self) -> int:
        return len(self.recent) + sum(len(block) for block in self._hashes)

    def old(self, keys: list[Hashable]) -> set[Hashable]:
        """Those of ``keys`` that a frozen block holds (exact); the others are not in any block."""
        if self._merged is None or not keys:
            return set()
        hashes = np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys))
        hits = _positions_in(self._merged, hashes)
        found: set[Hashable] = set()
        if not len(hits):
            return found
        for number, block in enumerate(self._hashes):
            in_block = hits[_positions_in(block, hashes[hits])]
            if len(in_block):
                exact = self._block(number)
                found.update(keys[i] for i in in_block.tolist() if keys[i] in exact)
        return found

    def add(self, key: Hashable) -> None:
        """Remember ``key`` (the caller checked it is new)."""
        self.recent.add(key)

    def end_page(self) -> None:
        """Freeze the recent identities into a block once there are ``block_size`` of them (called
        between pages, so that :meth:`old` of a page stays true while the page is filtered)."""
        if len(self.recent) >= self.block_size and np is not None:
            self._freeze()

    def close(self) -> None:
        """Remove the temporary file (it is removed at exit anyway)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def _freeze(self) -> None:
        keys = list(self.recent)
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(prefix="peopleai-seen-")
        data = pickle.dumps(keys, protocol=pickle.HIGHEST_PROTOCOL)
        self._spool.seek(0, 2)
        self._spans.append((self._spool.tell(), len(data)))
        self._spool.write(data)
        block = np.sort(np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys)))
        self._hashes.append(block)
        # Two sorted runs: the stable sort (timsort) merges them in linear time.
        self._merged = block if self._merged is None else np.sort(np.concatenate([self._merged, block]), kind="stable")
        self.recent = set()

    def _block(self, number: int) -> frozenset[Hashable]:
        if self._loaded is None or self._loaded[0] != number:
            assert self._spool is not None
            offset, length = self._spans[number]
            self._spool.seek(offset)
            self._loaded = (number, frozenset(pickle.loads(self._spool.read(length))))
        return self._loaded[1]


def _positions_in(sorted_hashes: Any, hashes: Any) -> Any:
    """The positions of ``hashes`` that ``sorted_hashes`` holds (a numpy int array)."""
    at = np.minimum(np.searchsorted(sorted_hashes, hashes), len(sorted_hashes) - 1)
    return np.flatnonzero(sorted_hashes[at] == hashes)


@dataclass
class RecordFilter:
    """Normalises timestamps, bounds records to ``[start_ms, end_ms)`` on one field, drops repeats.

    :param time_field: the field bounded (``timestamp``, ``activity_timestamp``, ``created_at``).
    :param start_ms: inclusive lower bound, epoch ms.
    :param end_ms: exclusive upper bound, epoch ms; ``None`` for no upper bound.
    :param key: the record identity used to drop repeats (hashable; picklable once there are
        more than a block of them, see :class:`SeenKeys`).
    :param timestamp_fields: fields normalised to epoch ms.
    :param fallback_time_field: used when ``time_field`` is missing or null (e.g. ``created_at``
        when a deployment does not send ``ingested_at``).
    :param batch_key: ``key`` of every row of a ``pa.RecordBatch`` (for :meth:`apply_batch`).
    """

    time_field: str
    start_ms: int
    end_ms: int | None
    key: Callable[[dict[str, Any]], Hashable]
    timestamp_fields: tuple[str, ...]
    fallback_time_field: str | None = None
    batch_key: Callable[[pa.RecordBatch], list[Hashable]] | None = None
    stats: FilterStats = field(default_factory=FilterStats)
    _seen: SeenKeys = field(default_factory=SeenKeys, repr=False)

    def apply(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records of one page that are new and inside the interval, timestamps normalised."""
        inside: list[dict[str, Any]] = []
        stats = self.stats
        start_ms, end_ms, time_field, fallback = self.start_ms, self.end_ms, self.time_field, self.fallback_time_field
        for record in records:
            stats.seen += 1
            for name in self.timestamp_fields:
                value = record.get(name)
                if value is not None and type(value) is not int:
                    record[name] = to_epoch_ms(value)
            moment = record.get(time_field)
            if moment is None and fallback is not None:
                moment = record.get(fallback)
            if moment is None or moment < start_ms or (end_ms is not None and moment >= end_ms):
                stats.outside += 1
                continue
            inside.append(record)
        key = self.key
        return [inside[index] for index in self._new([key(record) for record in inside])]

    def apply_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """:meth:`apply` for a page parsed into Arrow: its rows that are new and inside the interval.

        :param batch: a page's records, timestamp columns as ``timestamp[ms]``.
        """
        assert self.batch_key is not None, "apply_batch needs a batch_key"
        stats = self.stats
        stats.seen += batch.num_rows
        moment = pc.cast(batch.column(self.time_field), pa.int64())
        if self.fallback_time_field is not None:
            moment = pc.coalesce(moment, pc.cast(batch.column(self.fallback_time_field), pa.int64()))
        inside = pc.greater_equal(moment, self.start_ms)
        if self.end_ms is not None:
            inside = pc.and_(inside, pc.less(moment, self.end_ms))
        inside = pc.fill_null(inside, False)
        if not pc.all(inside).as_py():
            kept = batch.filter(inside)
            stats.outside += batch.num_rows - kept.num_rows
            batch = kept
        new = self._new(self.batch_key(batch))
        return batch if len(new) == batch.num_rows else batch.take(pa.array(new, type=pa.int64()))

    def _new(self, identities: list[Hashable]) -> list[int]:
        """The positions of the identities not seen before (nor earlier in the list); remembers them."""
        seen, stats = self._seen, self.stats
        old = seen.old(identities)
        recent = seen.recent
        if not old and recent.isdisjoint(identities):
            # Nothing seen before (the usual page): set operations only, unless the page repeats itself.
            size = len(recent)
            recent.update(identities)
            if len(recent) - size == len(identities):
                new = list(range(len(identities)))
            else:
                first: dict[Hashable, int] = {}
                for index, identity in enumerate(identities):
                    first.setdefault(identity, index)
                new = list(first.values())
        else:
            new = []
            for index, identity in enumerate(identities):
                if identity in recent or identity in old:
                    continue
                seen.add(identity)
                new.append(index)
        seen.end_page()
        stats.duplicates += len(identities) - len(new)
        stats.kept += len(new)
        return new
